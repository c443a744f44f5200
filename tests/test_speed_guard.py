"""Never slower than eager: optimize() measures each plan against the model and
keeps the faster (the timings are replaced here, so the choices are exact)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch import speed
from brainslug.frontend_torch.kernel_module import StackKernel


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3)
        self.bn = nn.BatchNorm2d(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """Turns the measurement on, with a fresh cache; returns the list the fake
    timer appends each measured plan's layout to."""
    monkeypatch.setenv("BRAINSLUG_SPEED_CHECK", "1")
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BRAINSLUG_CACHE", raising=False)
    return []


def fake_timer(monkeypatch, calls: list[str], plan_ms: dict[str, Any], model_ms: Any):
    """Timings by layout (a number, or batch -> number) and batch; each
    measurement appends its layout to `calls` (with `@batch` past batch 1)."""
    real = speed.medians

    def at(ms: Any, batch: int) -> float:
        return (ms[batch] if isinstance(ms, dict) else ms * batch) / 1e3

    def medians(candidates, x, rounds=5, warmup=2):
        if "plan" not in candidates:  # conv="auto" timing its convolutions
            return real(candidates, x, rounds, warmup)
        layout = candidates["plan"].info.layout
        batch = x.shape[0]
        calls.append(layout if batch == 1 else f"{layout}@{batch}")
        return {"plan": at(plan_ms[layout], batch), "model": at(model_ms, batch)}

    monkeypatch.setattr(speed, "medians", medians)


def model() -> nn.Module:
    torch.manual_seed(0)
    m = Net().eval()
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    return m


def stacks(opt: nn.Module) -> int:
    return 0 if opt.plan is None else sum(isinstance(k, StackKernel) for k in opt.plan.modules())


def check(m: nn.Module, opt: nn.Module) -> None:
    for batch in (1, 3):
        x = torch.randn(batch, 3, 11, 9)
        with torch.no_grad():
            ref = m(x)
            assert (opt(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_a_faster_plan_is_kept(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 1.0, "NCHW": 9.0}, 2.0)
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    assert measured == ["NHWC"] and opt.info.layout == "NHWC" and stacks(opt) == 1
    assert any("NHWC plan measured at batch 1: 1.00 ms, the model 2.00 ms" in n
               for n in opt.info.notes)
    check(m, opt)


def test_a_slower_layout_gives_way_to_the_other(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 3.0, "NCHW": 1.5}, 2.0)
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    # (a slower plan is measured twice before it is dropped)
    assert measured == ["NHWC", "NHWC", "NHWC@8", "NHWC@8", "NCHW"] \
        and opt.info.layout == "NCHW" and stacks(opt) == 1
    assert any("NHWC plan (slower, not used)" in n for n in opt.info.notes)
    check(m, opt)


def test_when_every_plan_is_slower_the_model_runs_as_it_is(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 3.0, "NCHW": 2.5}, 2.0)
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    assert opt.plan is None and stacks(opt) == 0
    assert [n for n, _ in opt.info.fallbacks] == ["<model>"]
    assert "Fallbacks (layers BrainSlug could not optimize" in brainslug.report(opt)
    check(m, opt)


def test_a_fixed_layout_is_the_only_one_tried(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 3.0, "NCHW": 1.0}, 2.0)
    opt = brainslug.optimize(model(), [0, 3, 11, 9], layout="NHWC")
    assert measured == ["NHWC", "NHWC", "NHWC@8", "NHWC@8"] and opt.plan is None


def test_the_verdict_is_cached(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 1.0, "NCHW": 9.0}, 2.0)
    brainslug.optimize(model(), [0, 3, 11, 9])
    opt = brainslug.optimize(model(), [0, 3, 11, 9])
    assert measured == ["NHWC"] and stacks(opt) == 1


def test_training_models_and_the_switch_skip_it(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 3.0, "NCHW": 3.0}, 2.0)
    assert brainslug.optimize(model().train(), [0, 3, 11, 9]).plan is not None
    monkeypatch.setenv("BRAINSLUG_SPEED_CHECK", "0")
    assert brainslug.optimize(model(), [0, 3, 11, 9]).plan is not None
    assert measured == []


def test_real_timing_runs_both() -> None:
    m = model()
    seen = speed.medians({"plan": m, "model": m}, torch.randn(1, 3, 11, 9), rounds=2, warmup=1)
    assert set(seen) == {"plan", "model"} and all(t > 0 for t in seen.values())


@pytest.mark.parametrize("n", [2, 3])
def test_candidates_alternate_and_never_run_twice_in_a_row(n: int, monkeypatch) -> None:
    monkeypatch.setattr(speed, "_separated", lambda times: False)  # all rounds
    calls: list[str] = []

    def candidate(name: str):
        return lambda x: calls.append(name)

    names = ["plan", "model", "other"][:n]
    speed.medians({k: candidate(k) for k in names}, torch.randn(1, 3, 5, 5), rounds=6, warmup=1)
    assert all(a != b for a, b in zip(calls, calls[1:], strict=False)), calls
    assert all(calls.count(k) == 7 for k in names)
    # each candidate follows each other one as often, to one (after the warm-up)
    timed = calls[n:]
    pairs = list(zip(timed, timed[1:], strict=False))
    counts = [pairs.count((a, b)) for a in names for b in names if a != b]
    assert max(counts) - min(counts) <= 1, pairs


def test_close_medians_are_measured_again_for_longer(measured, monkeypatch) -> None:
    """Within CLOSE of each other, a second, longer measurement decides."""
    seen: list[int] = []
    answers = iter([{"plan": 1.02e-3, "model": 1.0e-3}, {"plan": 0.97e-3, "model": 1.0e-3}])
    real = speed.medians

    def medians(candidates, x, rounds=5, warmup=1):
        if "plan" not in candidates:  # conv="auto" timing its convolutions
            return real(candidates, x, rounds, warmup)
        seen.append(rounds)
        return next(answers)

    monkeypatch.setattr(speed, "medians", medians)
    opt = brainslug.optimize(model(), [0, 3, 11, 9])
    assert seen == [speed.ROUNDS, speed.CLOSE_ROUNDS]
    assert stacks(opt) == 1


def test_a_plan_slowed_once_by_interference_is_kept(measured, monkeypatch) -> None:
    """A slower first measurement is measured again; each side keeps its lower
    median, so a plan slowed by another process for a moment is not dropped
    (and the cached verdict is the good one)."""
    answers = iter([{"plan": 4.4e-3, "model": 1.8e-3}, {"plan": 1.2e-3, "model": 1.9e-3}])
    real = speed.medians

    def medians(candidates, x, rounds=5, warmup=1):
        if "plan" not in candidates:  # conv="auto" timing its convolutions
            return real(candidates, x, rounds, warmup)
        return next(answers)

    monkeypatch.setattr(speed, "medians", medians)
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    assert stacks(opt) == 1
    assert any("1.20 ms, the model 1.80 ms" in n for n in opt.info.notes)
    again = brainslug.optimize(m, [0, 3, 11, 9])  # from the cache: no more answers needed
    assert stacks(again) == 1
    check(m, opt)


def test_a_timing_taken_while_other_optimizations_run_does_not_drop_the_plan(
        measured, monkeypatch) -> None:
    """Four threads optimizing at once compile on the same cores: a slower
    timing then says little. The plan is kept, the report says why, and the
    verdict is not cached (the next optimize() measures again)."""
    fake_timer(monkeypatch, measured, {"NHWC": 3.0, "NCHW": 3.0}, 2.0)
    monkeypatch.setattr(speed, "others_running", lambda: True)
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    assert stacks(opt) == 1 and opt.info.layout == "NHWC"
    assert any("not trusted to drop the plan" in n for n in opt.info.notes)
    check(m, opt)
    monkeypatch.setattr(speed, "others_running", lambda: False)
    opt = brainslug.optimize(m, [0, 3, 11, 9])  # alone: measured again, and dropped
    assert opt.plan is None
    assert measured.count("NHWC") == 4  # twice each time (slower: measured again)


def test_optimize_counts_the_optimizations_in_progress(measured, monkeypatch) -> None:
    seen: list[bool] = []

    def medians(candidates, x, rounds=5, warmup=1):
        if "plan" in candidates:
            seen.append(speed.others_running())
        return {k: 1e-3 for k in candidates}

    monkeypatch.setattr(speed, "medians", medians)
    brainslug.optimize(model(), [0, 3, 11, 9], layout="NHWC", conv="library")
    with speed.optimizing():  # as if another thread were optimizing
        brainslug.optimize(model(), [0, 3, 13, 9], layout="NHWC", conv="library")
    assert seen == [False, False, True, True] and speed._active == 0  # (close: twice)


def test_a_tie_within_the_timings_resolution_keeps_the_plan(measured, monkeypatch) -> None:
    fake_timer(monkeypatch, measured, {"NHWC": 2.05, "NCHW": 9.0}, 2.0)  # 2.5% slower
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    assert stacks(opt) == 1 and opt.info.layout == "NHWC"
    fake_timer(monkeypatch, measured, {"NHWC": 2.1, "NCHW": 9.0}, 2.0)  # 5%: dropped
    assert brainslug.optimize(model(), [0, 3, 13, 9]).plan is None


def test_a_plan_slower_at_batch_1_runs_from_the_batch_where_it_pays(measured, monkeypatch,
                                                                    tmp_path) -> None:
    """Per-call overhead weighs most at batch 1: a plan slower there but faster
    at larger batches runs from the smallest measured batch where it is faster
    (and at every larger one measured); smaller batches run the model."""
    plan = {1: 2.2, 2: 4.3, 4: 7.0, 8: 12.0}
    fake_timer(monkeypatch, measured, {"NHWC": plan, "NCHW": 9.0}, 2.0)
    m = model()
    opt = brainslug.optimize(m, [0, 3, 11, 9])
    assert measured == ["NHWC", "NHWC", "NHWC@8", "NHWC@2", "NHWC@2", "NHWC@4"]
    assert opt.info.layout == "NHWC" and opt.info.min_batch == 4 and stacks(opt) == 1
    report = brainslug.report(opt)
    assert "runs batches of 4 and more; smaller batches run the model as it is" in report
    calls: list[int] = []
    plan_forward = opt.plan.forward
    opt.plan.forward = lambda *a: calls.append(a[0].shape[0]) or plan_forward(*a)
    for batch in (1, 3, 4, 6):
        x = torch.randn(batch, 3, 11, 9)
        with torch.no_grad():
            ref = m(x)
            assert (opt(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert calls == [4, 6]
    brainslug.save(opt, tmp_path / "m.bslug")
    assert brainslug.load(tmp_path / "m.bslug").info.min_batch == 4
    measured.clear()
    again = brainslug.optimize(model(), [0, 3, 11, 9])  # the verdicts are cached
    assert measured == [] and again.info.min_batch == 4


def test_no_larger_batch_pays_or_the_model_is_slow(measured, monkeypatch) -> None:
    # slower at batch 8 too: no smaller batch is measured
    fake_timer(monkeypatch, measured, {"NHWC": {1: 2.2, 8: 17.0}}, 2.0)
    opt = brainslug.optimize(model(), [0, 3, 11, 9], layout="NHWC")
    assert measured == ["NHWC", "NHWC", "NHWC@8", "NHWC@8"] and opt.plan is None
    # a model slower than MAX_MODEL_SECONDS at batch 1 is not measured at larger batches
    measured.clear()
    slow = speed.MAX_MODEL_SECONDS * 1e3 * 2
    fake_timer(monkeypatch, measured, {"NHWC": slow * 1.5}, slow)
    opt = brainslug.optimize(model(), [0, 3, 11, 8], layout="NHWC")
    assert measured == ["NHWC", "NHWC"] and opt.plan is None
    # a fixed batch has no other batch to run
    measured.clear()
    fake_timer(monkeypatch, measured, {"NHWC": {2: 5.0, 8: 1.0}}, {2: 4.0, 8: 2.0})
    opt = brainslug.optimize(model(), [2, 3, 11, 9], layout="NHWC")
    assert measured == ["NHWC@2", "NHWC@2"] and opt.plan is None

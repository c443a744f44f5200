"""brainslug.bench: statistics, interleaving, checking, failures, JSON and the roofline.

Fast only: a tiny model through the Python API, squeezenet1_1 at 64x64 through
the command line (the hidden --hw option)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from brainslug.bench import (
    BuildContext,
    Contender,
    Skip,
    balanced_orders,
    bench_model,
    compare,
    summarize,
    time_interleaved,
    to_json,
)
from brainslug.bench.__main__ import main

ROW_KEYS = {
    "model",
    "batch",
    "contender",
    "median_ms",
    "ratio_vs_brainslug_median",
    "ratio_vs_brainslug_min",
    "ratio_vs_brainslug_max",
    "max_abs_diff",
}


# ------------------------------------------------------------------ statistics


def test_summarize_per_round_ratios() -> None:
    times = {
        "eager": [0.002, 0.002, 0.009, 0.004],
        "brainslug": [0.001, 0.002, 0.003, 0.001],
    }
    s = summarize(times)
    # per-round ratios 2, 1, 3, 4: median 2.5, min 1, max 4 (not median/median = 3/1.5)
    assert s["eager"].ratio_median == pytest.approx(2.5)
    assert s["eager"].ratio_min == pytest.approx(1.0)
    assert s["eager"].ratio_max == pytest.approx(4.0)
    assert s["eager"].median_ms == pytest.approx(3.0)
    assert s["brainslug"].median_ms == pytest.approx(1.5)
    assert (s["brainslug"].ratio_median, s["brainslug"].ratio_min, s["brainslug"].ratio_max) == (
        1.0,
        1.0,
        1.0,
    )


def test_summarize_without_brainslug_has_no_ratios() -> None:
    s = summarize({"eager": [0.001, 0.003], "onnxruntime": [0.002, 0.002]})
    assert s["eager"].median_ms == pytest.approx(2.0)
    assert all(
        v.ratio_median is None and v.ratio_min is None and v.ratio_max is None for v in s.values()
    )


def test_summarize_rejects_unequal_rounds() -> None:
    with pytest.raises(ValueError, match="rounds"):
        summarize({"eager": [1.0], "brainslug": [1.0, 2.0]})


def test_time_interleaved_order_and_failure() -> None:
    log: list[str] = []
    now = [0.0]

    def clock() -> float:
        return now[0]

    def make(name: str, cost: float):
        def f() -> None:
            log.append(name)
            now[0] += cost

        return f

    calls = {"n": 0}

    def flaky() -> None:
        log.append("C")
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")

    times, errors = time_interleaved(
        {"A": make("A", 1.0), "B": make("B", 2.0), "C": flaky}, rounds=3, warmup=1, clock=clock
    )
    # warm-up A B C, then round 1 A B C, round 2 B C(raises) A, round 3 A B
    # (C A B without C): the first three of `balanced_orders(3)`
    assert log == ["A", "B", "C", "A", "B", "C", "B", "C", "A", "A", "B"]
    assert times == {"A": [1.0, 1.0, 1.0], "B": [2.0, 2.0, 2.0]}
    assert errors == {"C": "RuntimeError: boom"}


@pytest.mark.parametrize("n", range(1, 10))
def test_balanced_orders_vary_each_contenders_predecessor_evenly(n: int) -> None:
    orders = balanced_orders(n)
    assert all(sorted(o) == list(range(n)) for o in orders)
    pairs: dict[tuple[int, int], int] = {}
    for o in orders:
        for a, b in itertools.pairwise(o):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    if n > 2:  # every ordered pair, equally often
        assert len(pairs) == n * (n - 1) and len(set(pairs.values())) == 1
    rounds = [x for _ in range(3) for o in orders for x in o]
    if n > 1:  # never the same twice in a row, across rounds too
        assert all(a != b for a, b in itertools.pairwise(rounds))
    if n == 3:
        assert orders[:3] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]


def test_compare() -> None:
    ref = torch.tensor([[100.0, -2.0]])
    assert compare(ref + 0.05, ref) == (pytest.approx(0.05, rel=1e-3), None)  # <= 1e-3 * 100
    diff, why = compare(ref + torch.tensor([[0.0, 0.2]]), ref)
    assert diff == pytest.approx(0.2, rel=1e-3) and "max|Δ|" in why
    assert compare(torch.ones(1, 3), ref)[1] is not None  # shape
    assert compare(ref * float("nan"), ref)[1] is not None  # not finite
    assert compare((ref, ref), [ref, ref])[1] is None  # several outputs


# ------------------------------------------------------------ the Python API


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(y, 1))


def _wrong(model: nn.Module, ctx: BuildContext) -> Contender:
    return Contender("wrong", lambda x: model(x) + 1.0)


def _broken(model: nn.Module, ctx: BuildContext) -> Contender:
    raise RuntimeError("cannot build this one")


def _skipped(model: nn.Module, ctx: BuildContext) -> Contender:
    raise Skip("not here")


def _raises(model: nn.Module, ctx: BuildContext) -> Contender:
    def run(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no kernel for this shape")

    return Contender("raises", run)


def test_bench_model_reports_failures_and_times_the_rest() -> None:
    torch.manual_seed(0)
    lines: list[str] = []
    res = bench_model(
        "tiny",
        Tiny(),
        8,
        [1, 3],
        [
            "eager",
            "eager_channels_last",
            "wrong",
            "broken",
            "skipped",
            "raises",
            "brainslug",
            "brainslug_fold",
        ],
        builders={"wrong": _wrong, "broken": _broken, "skipped": _skipped, "raises": _raises},
        repeats=5,
        warmup=1,
        log=lines.append,
    )
    rows = {(r.contender, r.batch): r for r in res.rows}
    assert len(res.rows) == 16
    for b in (1, 3):
        assert rows["eager", b].status == "ok" and rows["eager", b].max_abs_diff == 0.0
        assert rows["brainslug", b].status == "ok"
        assert rows["brainslug", b].ratio_vs_brainslug_median == 1.0
        assert rows["brainslug", b].max_abs_diff < 1e-4
        e = rows["eager_channels_last", b]
        assert e.status == "ok" and e.median_ms > 0
        assert e.ratio_vs_brainslug_min <= e.ratio_vs_brainslug_median <= e.ratio_vs_brainslug_max
        w = rows["wrong", b]
        assert w.status == "FAILED" and w.median_ms is None and w.max_abs_diff == pytest.approx(1)
        assert rows["broken", b].status == "error" and "cannot build" in rows["broken", b].note
        assert rows["skipped", b].status == "skipped"
        assert rows["raises", b].status == "error" and rows["raises", b].median_ms is None
        assert rows["brainslug_fold", b].status in ("ok", "skipped")
    assert res.optimize_cold_s > 0 and res.optimize_warm_s > 0
    text = "\n".join(lines)
    assert "FAILED" in text and "tiny  batch 3" in text

    doc = json.loads(json.dumps(to_json([res])))
    assert {"results", "optimize_cold_s", "optimize_warm_s", "optimize"} <= set(doc)
    assert all(ROW_KEYS <= set(r) for r in doc["results"])
    assert doc["optimize"]["tiny"]["cold_s"] == doc["optimize_cold_s"]


def test_bench_model_without_brainslug_has_null_ratios() -> None:
    res = bench_model(
        "tiny",
        Tiny(),
        8,
        [2],
        ["eager", "eager_channels_last"],
        repeats=3,
        warmup=0,
        log=lambda s: None,
    )
    assert [r.status for r in res.rows] == ["ok", "ok"]
    assert all(r.ratio_vs_brainslug_median is None for r in res.rows)
    assert res.optimize_cold_s is None


# --------------------------------------------------------------- command line


def test_cli_models_json(tmp_path, capsys) -> None:
    out = tmp_path / "all.json"
    rc = main(
        [
            "--framework",
            "torch",
            "--models",
            "squeezenet1_1",
            "--batch",
            "1,2",
            "--hw",
            "64",
            "--contenders",
            "eager,onnxruntime,brainslug,brainslug_fold",
            "--repeats",
            "3",
            "--warmup",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "squeezenet1_1  batch 2" in text and "ratio vs brainslug" in text
    doc = json.loads(out.read_text())
    assert doc["optimize_cold_s"] > 0 and doc["optimize_warm_s"] > 0
    rows = doc["results"]
    assert [(r["batch"], r["contender"]) for r in rows] == [
        (b, c) for b in (1, 2) for c in ("eager", "onnxruntime", "brainslug", "brainslug_fold")
    ]
    for r in rows:
        assert ROW_KEYS <= set(r) and r["model"] == "squeezenet1_1"
        if r["contender"] in ("eager", "onnxruntime", "brainslug"):
            assert r["status"] == "ok", r
            assert r["median_ms"] > 0 and r["max_abs_diff"] < 1e-3
            assert r["ratio_vs_brainslug_min"] <= r["ratio_vs_brainslug_median"]
            assert r["ratio_vs_brainslug_median"] <= r["ratio_vs_brainslug_max"]
        if r["contender"] == "brainslug":
            assert r["ratio_vs_brainslug_median"] == 1.0


def test_cli_stacks_json(tmp_path, capsys) -> None:
    import brainslug.pytorch as brainslug
    from brainslug.bench import load_model
    from brainslug.bench.stack_calls import stack_kernels

    out = tmp_path / "st.json"
    rc = main(
        [
            "--models",
            "squeezenet1_1",
            "--batch",
            "2",
            "--hw",
            "64",
            "--stacks",
            "--repeats",
            "3",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    assert "of copy" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["copy_gbps"] > 0
    n_kernels = len(
        stack_kernels(brainslug.optimize(load_model("squeezenet1_1")[0], [0, 3, 64, 64]))
    )
    assert len(doc["stacks"]) == n_kernels > 0
    for s in doc["stacks"]:
        assert {"name", "layers", "bytes", "ms", "gbps"} <= set(s)
        assert s["name"].startswith("stack") and s["layers"]
        assert s["bytes"] > 0 and s["ms"] > 0
        assert s["gbps"] == pytest.approx(s["bytes"] / (s["ms"] / 1e3) / 1e9)
        assert s["copy_fraction"] == pytest.approx(s["gbps"] / doc["copy_gbps"])
        # the roof: memory time or, for a stack with convolutions, compute time
        compute_s = s["flops"] / (doc["peak_gflops"] * 1e9) if s["flops"] else 0.0
        roof_s = max(s["bytes"] / (doc["copy_gbps"] * 1e9), compute_s)
        assert s["roof_fraction"] == pytest.approx(roof_s / (s["ms"] / 1e3))
        assert s["fma_roof_fraction"] == s["roof_fraction"]  # squeezenet has no SiLU
        assert s["math"] == {} and s["math_ms"] == 0.0


def test_stack_math_counts_the_activations_elements() -> None:
    """The report's `math` of a stack: elements per batch item of its SiLU,
    sigmoid, tanh and GELU layers by kind (GELU's tanh form apart); none for
    ReLU."""
    import brainslug.pytorch as brainslug

    m = torch.nn.Sequential(
        torch.nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False),
        torch.nn.BatchNorm2d(10), torch.nn.SiLU(), torch.nn.ReLU(),
        torch.nn.GELU(approximate="tanh"), torch.nn.GELU(), torch.nn.SiLU(),
    ).eval()
    opt = brainslug.optimize(m, [0, 6, 13, 11], conv="brainslug", layout="NHWC")
    (stack,) = opt.info.stacks
    n = 10 * 7 * 6
    assert stack.math == {"nn.silu": 2 * n, "nn.gelu:tanh": n, "nn.gelu": n}


def test_roofline_counts_vector_math_in_the_roof(monkeypatch) -> None:
    """A stack's roof is max(memory time, flops / peak + its activations'
    elements at their measured cost / threads); "FMA roof" leaves the cost
    out."""
    import brainslug.bench.roofline as roofline
    import brainslug.pytorch as brainslug

    monkeypatch.setattr(roofline, "seconds_per_element", lambda kind: 1e-9)
    monkeypatch.setattr(roofline, "math_seconds",
                        lambda elements, threads: sum(elements.values()) * 1e-9 / threads)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(6, 10, 3, padding=1, bias=False), torch.nn.BatchNorm2d(10),
        torch.nn.SiLU(),
    ).eval()
    opt = brainslug.optimize(m, [0, 6, 13, 11], conv="brainslug", layout="NHWC")
    doc = roofline.roofline(opt, torch.randn(3, 6, 13, 11), repeats=3, copy_bytes=1 << 20)
    (s,) = doc["stacks"]
    assert s["math"] == {"nn.silu": 3 * 10 * 13 * 11}
    assert doc["math_ns_per_element"] == {"nn.silu": pytest.approx(1.0)}
    threads = torch.get_num_threads()
    math_s = 3 * 10 * 13 * 11 * 1e-9 / threads
    assert s["math_ms"] == pytest.approx(math_s * 1e3)
    memory_s = s["bytes"] / (doc["copy_gbps"] * 1e9)
    fma_s = s["flops"] / (doc["peak_gflops"] * 1e9)
    assert s["roof_fraction"] == pytest.approx(max(memory_s, fma_s + math_s) / (s["ms"] / 1e3))
    assert s["fma_roof_fraction"] == pytest.approx(max(memory_s, fma_s) / (s["ms"] / 1e3))
    text = roofline.format_roofline(doc, "t")
    assert "math ms" in text and "FMA roof" in text and "silu 1.000" in text
    assert s["ms_in_pass"] > 0
    assert s["in_pass_roof_fraction"] == pytest.approx(
        max(memory_s, fma_s + math_s) / (s["ms_in_pass"] / 1e3))
    assert "in pass" in text


def test_time_in_pass_times_every_stack_call_in_a_real_pass() -> None:
    """One median time per stack call of a forward pass, in call order, taken
    while the plan runs as it does (its runners are restored after)."""
    import brainslug.pytorch as brainslug
    from brainslug.bench.stack_calls import capture_stack_calls, stack_kernels, time_in_pass

    m = torch.nn.Sequential(
        torch.nn.Conv2d(6, 10, 3, padding=1, bias=False), torch.nn.BatchNorm2d(10),
        torch.nn.SiLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(10, 7, 1),
        torch.nn.ReLU(),
    ).eval()
    opt = brainslug.optimize(m, [0, 6, 13, 11], conv="brainslug", layout="NHWC")
    x = torch.randn(2, 6, 13, 11)
    runners = [k.runner for _, k in stack_kernels(opt)]
    times = time_in_pass(opt, x, rounds=3)
    assert len(times) == len(capture_stack_calls(opt, x)) >= 1
    assert all(t > 0 for t in times)
    assert [k.runner for _, k in stack_kernels(opt)] == runners
    with torch.no_grad():
        assert torch.allclose(opt(x), m(x), atol=1e-5)


def test_math_seconds_divides_the_elements_cost_among_threads() -> None:
    from brainslug.bench.math_rate import math_seconds

    cost = {"nn.silu": 2e-10, "nn.gelu": 3e-10}.__getitem__
    assert math_seconds({"nn.silu": 1000, "nn.gelu": 10}, 2, cost) == pytest.approx(
        (1000 * 2e-10 + 10 * 3e-10) / 2)
    assert math_seconds({}, 2, cost) == 0.0


@pytest.mark.parametrize("groups", [1, 2])
def test_stack_flops_are_twice_the_multiply_adds(groups: int) -> None:
    """The report's flops of a stack: 2 per multiply-add of its convolutions
    (strided, grouped or not; the plan packs the weights in blocks of output
    channels, 10 padded to 16), per batch item; 0 for a stack without one."""
    import brainslug.pytorch as brainslug

    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(6, 10, 3, stride=2, padding=1, groups=groups, bias=False),
        torch.nn.BatchNorm2d(10), torch.nn.ReLU(),
    ).eval()
    opt = brainslug.optimize(m, [0, 6, 13, 11], conv="brainslug", layout="NHWC")
    (conv_stack,) = [s for s in opt.info.stacks if any("conv2d" in x for x in s.layers)]
    out_hw = 7 * 6
    assert conv_stack.flops == 2 * (10 * out_hw) * (6 // groups * 3 * 3)
    pool = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(2)).eval()
    (stack,) = brainslug.optimize(pool, [0, 6, 13, 11]).info.stacks
    assert stack.flops == 0


def test_cli_tf_unknown_model() -> None:
    # --framework tf takes keras.applications names (tests/test_tf_frontend.py runs one)
    p = subprocess.run(
        [sys.executable, "-m", "brainslug.bench", "--framework", "tf", "--models", "resnet50"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert p.returncode == 2
    assert "keras.applications" in p.stderr and "resnet50" in p.stderr


def test_cli_unknown_contender() -> None:
    assert main(["--models", "resnet18", "--contenders", "eager,fast"]) == 2


def test_torch_compile_freezing_is_its_own_compile() -> None:
    # a second torch.compile of the same class must not reuse the first one's graph
    from torch._dynamo.utils import counters

    from brainslug.bench.contenders import torch_compile, torch_compile_freezing

    model = Tiny().eval()
    ctx = BuildContext([0, 3, 8, 8], torch.randn(2, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    before = counters["frames"]["total"]
    with torch.no_grad():
        ref = model(x)
        for build in (torch_compile, torch_compile_freezing):
            assert compare(build(model, ctx).run(x), ref)[1] is None
    assert counters["frames"]["total"] - before == 2


def test_json_has_no_nan() -> None:
    def shape(model: nn.Module, ctx: BuildContext) -> Contender:
        return Contender("nan", lambda x: model(x) * float("nan"))

    res = bench_model(
        "tiny",
        Tiny(),
        8,
        [1],
        ["eager", "nan"],
        builders={"nan": shape},
        repeats=2,
        warmup=0,
        log=lambda s: None,
    )
    assert res.rows[1].status == "FAILED"
    text = json.dumps(to_json([res]), allow_nan=False)
    assert json.loads(text)["results"][1]["max_abs_diff"] is None


def test_bench_models_give_informative_outputs() -> None:
    """The correctness check before timing compares outputs that depend on the
    layers: mobilenet_v3_small's are about 1e-9 at initialisation."""
    from brainslug.bench.contenders import load_model

    model, size = load_model("mobilenet_v3_small")
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert size == 224 and out.abs().max().item() > 1e-2


def test_perturb_moves_norms_heads_and_layer_scales() -> None:
    from brainslug.testing.weights import perturb

    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(5 * 9, 4))
    scale = nn.Parameter(torch.full((4,), 1e-6))
    model.register_parameter("layer_scale", scale)
    nn.init.zeros_(model[3].weight)
    nn.init.zeros_(model[3].bias)
    perturb(model, seed=3)
    assert model[1].running_var.min() >= 0.5 and model[1].running_mean.abs().max() > 0
    assert model[3].weight.abs().max() > 0 and model[3].bias.abs().max() > 0
    assert (scale - 1).abs().max() < 0.5 and (scale - 1).abs().max() > 0


def test_cli_compile_time_json(tmp_path, capsys) -> None:
    """--compile-time: a cold optimize() in a fresh process compiles stacks and
    times the convolutions (each compile step summed over the stacks), a warm
    one compiles nothing; the stages add up to at most the call."""
    out = tmp_path / "ct.json"
    assert main(["--models", "resnet18", "--hw", "40", "--compile-time",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resnet18: cold optimize()" in text and "LLVM optimization" in text
    (run,) = json.loads(out.read_text())["runs"]
    cold, warm = run["cold_profile"], run["warm_profile"]
    assert cold["units"] > 0 and warm["units"] == 0 and not warm["passes"]
    assert {"capture", "convolution choice: timing",
            "plan: stacks formed and compiled"} <= set(cold["stages"])
    assert "conv2d, batch_norm, relu" in cold["kinds"] and not warm["kinds"]
    assert sum(n for n, _ in cold["kinds"].values()) == cold["units"] and "" not in cold["kinds"]
    assert {"bs-fuse", "bs-register-tile", "LLVM IR built (llvmlite)",
            "LLVM optimization + code generation"} <= set(cold["passes"])
    assert 0 < sum(cold["stages"].values()) <= run["cold_s"]
    assert 0 < sum(warm["stages"].values()) <= run["warm_s"] < run["cold_s"]


def test_cli_compile_time_is_for_torch_on_the_cpu() -> None:
    assert main(["--models", "resnet18", "--compile-time", "--stacks"]) == 2
    assert main(["--framework", "tf", "--models", "ResNet50", "--compile-time"]) == 2


def test_roofline_runs_an_in_place_stack_in_place() -> None:
    """A stack that the plan runs in place (a residual add over its operand's
    buffer) is timed in place: its captured output is its residual's copy, not
    a fresh buffer that would add a stream of writes."""
    import brainslug.pytorch as brainslug
    from brainslug.bench.stack_calls import capture_stack_calls

    class Residual(nn.Module):  # a bottleneck: `y` dies at the add, read pointwise
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(21, 21, 1)
            self.b = nn.Conv2d(21, 13, 3, padding=1)
            self.c = nn.Conv2d(13, 21, 1)
            self.d = nn.Conv2d(21, 5, 1)  # (the model's output is never in place)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.a(x))
            return self.d(torch.relu(self.c(torch.relu(self.b(y))) + y))

    model = Residual().eval()
    opt = brainslug.optimize(model, [0, 21, 9, 9], conv="brainslug")
    x = torch.randn(2, 21, 9, 9)
    calls = capture_stack_calls(opt, x)
    in_place = [c for c in calls
                if any(o is i for o in c.buffers[-c.num_outputs:]
                       for i in c.buffers[:-c.num_outputs])]
    others = [c for c in calls if c not in in_place]
    assert in_place and others, [c.name for c in calls]
    for c in calls:
        c()  # runs on its captured buffers

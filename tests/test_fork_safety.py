"""A child forked after optimize(), and after calls, runs the optimized model:
GNU OpenMP's team does not survive fork, so the child's kernels get threads of
their own and PyTorch's operators one thread (as in DataLoader workers)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.runtime import threads


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                      nn.MaxPool2d(3, 2, 1), nn.Conv2d(24, 24, 3, padding=1),
                      nn.BatchNorm2d(24), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(24, 7))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _in_child(fn: Any, timeout: float = 120.0) -> Any:
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def run() -> None:
        try:
            q.put(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            q.put(("error", repr(e)))

    p = ctx.Process(target=run)
    p.start()
    p.join(timeout)
    alive = p.is_alive()
    if alive:
        p.kill()
        p.join()
    assert not alive, "the forked child hung"
    status, value = q.get(timeout=10)
    assert status == "ok", value
    return value


@pytest.mark.parametrize("calls_before_fork", [False, True])
def test_forked_child_runs_the_plan(calls_before_fork: bool) -> None:
    m = _model()
    opt = brainslug.optimize(m, [0, 3, 45, 43])
    assert opt.plan is not None
    x = torch.randn(3, 3, 45, 43)
    with torch.no_grad():
        ref = m(x)
        if calls_before_fork:
            opt(x)

    def child() -> tuple[float, float, str]:
        with torch.no_grad():
            got = opt(x)
            eager = m(x)  # PyTorch works in the child too
        return ((got - ref).abs().max().item(), (eager - ref).abs().max().item(),
                type(threads.default_pool()).__name__)

    err, eager_err, pool = _in_child(child)
    assert err <= 1e-5 * max(1.0, ref.abs().max().item())
    assert eager_err == 0.0
    if threads.loaded_libgomp() is not None:
        assert pool == "NativePool"


def test_forked_child_of_a_child_and_loaded_plans(tmp_path: Any) -> None:
    m = _model()
    opt = brainslug.optimize(m, [0, 3, 33, 31])
    path = tmp_path / "m.bslug"
    brainslug.save(opt, path)
    x = torch.randn(2, 3, 33, 31)
    with torch.no_grad():
        want = opt(x)

    def grandchild() -> bool:
        with torch.no_grad():
            return torch.equal(opt(x), want)

    def child() -> bool:
        back = brainslug.load(path)  # load after fork, as a pre-fork server's worker would
        with torch.no_grad():
            first = torch.equal(back(x), want)
        return first and _in_child(grandchild)

    assert _in_child(child)

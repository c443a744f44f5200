"""Memory under load: buffers per batch size are bounded, can be released, go
with the thread that made them, and 10,000 calls at alternating batch sizes
keep the resident set flat."""

from __future__ import annotations

import gc
import os
import threading

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug


class Flip(nn.Module):
    """A layer that runs in PyTorch between two stacks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=[3]) * 1.0


def _model(flip: bool = False) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      *([Flip()] if flip else []),
                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
                      nn.MaxPool2d(2), nn.Conv2d(16, 8, 1), nn.Hardswish())
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_buffers_of_old_batch_sizes_are_released() -> None:
    m = _model()
    opt = brainslug.optimize(m, [0, 3, 21, 19])
    assert opt.plan is not None
    opt.max_batch_sizes = 3
    per_item = None
    with torch.no_grad():
        for b in range(1, 10):
            x = torch.randn(b, 3, 21, 19)
            assert (opt(x) - m(x)).abs().max().item() <= 1e-5
            if b == 1:
                per_item = opt.buffer_bytes()
            assert sorted(opt._batches) == list(range(max(1, b - 2), b + 1))
    assert per_item and per_item > 0
    # the three batch sizes kept: 7, 8 and 9
    assert opt.buffer_bytes() <= per_item * (7 + 8 + 9) * 1.01
    opt.release_buffers([9])
    assert sorted(opt._batches) == [7, 8]
    opt.release_buffers()
    assert opt.buffer_bytes() == 0
    with torch.no_grad():  # made again on demand, and still right
        x = torch.randn(8, 3, 21, 19)
        assert (opt(x) - m(x)).abs().max().item() <= 1e-5


def test_a_threads_buffers_go_with_the_thread() -> None:
    m = _model()
    opt = brainslug.optimize(m, [0, 3, 21, 19])
    x = torch.randn(5, 3, 21, 19)
    with torch.no_grad():
        opt(x)
    mine = opt.buffer_bytes()
    seen: list[int] = []

    def work() -> None:
        with torch.no_grad():
            opt(torch.randn(6, 3, 21, 19))
        seen.append(opt.buffer_bytes())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    del t
    gc.collect()
    # the thread's activations went with it; what stays is the kernels' shared
    # scratch for its batch size (kept for the last `max_batch_sizes` sizes)
    assert seen[0] > mine
    assert opt.buffer_bytes() - mine <= (seen[0] - mine) // 10


def test_release_while_another_thread_calls() -> None:
    m = _model()
    opt = brainslug.optimize(m, [0, 3, 21, 19])
    xs = {b: torch.randn(b, 3, 21, 19) for b in (1, 2, 3)}
    with torch.no_grad():
        refs = {b: m(x) for b, x in xs.items()}
    errors: list[float] = []
    stop, serving = threading.Event(), threading.Event()

    def serve() -> None:
        k = 0
        while not stop.is_set():
            b = 1 + k % 3
            with torch.no_grad():
                errors.append((opt(xs[b]) - refs[b]).abs().max().item())
            serving.set()
            k += 1

    t = threading.Thread(target=serve)
    t.start()
    serving.wait(timeout=60)  # (releases from the first call on)
    for _ in range(300):
        opt.release_buffers()
    stop.set()
    t.join()
    assert errors and max(errors) <= 1e-5


def test_rss_stays_flat_over_10000_calls_at_alternating_batch_sizes() -> None:
    m = _model()
    opt = brainslug.optimize(m, [0, 3, 21, 19])
    xs = [torch.randn(b, 3, 21, 19) for b in (1, 4, 2, 7)]
    with torch.no_grad():
        for k in range(1000):  # warm-up: every batch size's buffers made
            opt(xs[k % len(xs)])
        gc.collect()
        before = _rss()
        for k in range(10_000):
            opt(xs[k % len(xs)])
        gc.collect()
        grown = _rss() - before
    # bound: 4 MiB (one batch-7 activation of this model is about 0.2 MiB)
    assert grown <= 4 << 20, f"resident set grew by {grown / 2**20:.1f} MiB"


def test_kernels_reuse_their_arena_views_until_released() -> None:
    """A kernel's output views into the arena are made once per thread and
    batch size, and go with the storage: results stay right across batch
    sizes, releases and a view that a framework layer changed in place."""
    from brainslug.frontend_torch.kernel_module import StackKernel

    m = _model(flip=True)  # (the first stack's output goes to PyTorch's flip)
    opt = brainslug.optimize(m, [0, 3, 21, 19])
    kernels = [k for k in opt.plan.modules() if isinstance(k, StackKernel) and k._arena is not None
               and any(s is not None for s in k._out_slots)]
    assert kernels and kernels[0].stack_name == "stack0", opt.plan.code
    arena = kernels[0]._arena
    with torch.no_grad():
        for b in (2, 3, 2, 2, 3):
            x = torch.randn(b, 3, 21, 19)
            assert (opt(x) - m(x)).abs().max().item() <= 1e-5
        assert set(arena._local.store.views) == {2, 3}
        first = arena.views(2)[id(kernels[0])]
        opt(torch.randn(2, 3, 21, 19))
        assert arena.views(2)[id(kernels[0])] is first  # made once
        (_, view, _), = [c for c in first if c is not None][:1]
        view.unsqueeze_(0)  # a shape changed in place: made again
        x = torch.randn(2, 3, 21, 19)
        assert (opt(x) - m(x)).abs().max().item() <= 1e-5
        assert arena.views(2)[id(kernels[0])] is not first
        opt.release_buffers([3])
        assert set(arena._local.store.views) == {2} and opt.buffer_bytes() > 0
        opt.release_buffers()
        assert not arena._local.store.views
        x = torch.randn(3, 3, 21, 19)
        assert (opt(x) - m(x)).abs().max().item() <= 1e-5


def test_optimize_leaves_no_buffers_behind(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The timing at optimize() (the convolutions' choice, the plan against the
    model) runs the plan's kernels at batch sizes the user may never call:
    what they allocated for those goes when the timing ends."""
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))  # compile and time, don't reuse
    monkeypatch.setenv("BRAINSLUG_SPEED_CHECK", "1")
    m = _model(flip=True)
    opt = brainslug.optimize(m, [0, 3, 21, 19], conv="auto")
    text = brainslug.report(opt)
    assert "plan measured at batch 1" in text and " ms, library " in text, text  # (both timed)
    assert opt.buffer_bytes() == 0
    x = torch.randn(2, 3, 21, 19)
    with torch.no_grad():
        assert (opt(x) - m(x)).abs().max().item() <= 1e-5
    assert opt.buffer_bytes() > 0

"""Consecutive stack kernels run as one native call (`StackSequence`,
`runtime.sequence.PhaseProgram`): the same results as kernel by kernel and as
eager, weights that change, a framework layer between stacks, a stand-in
runner, concurrent callers, and every kind of thread pool."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch import kernel_sequence
from brainslug.frontend_torch.bind import _getitem
from brainslug.frontend_torch.kernel_module import StackKernel
from brainslug.frontend_torch.kernel_sequence import StackSequence
from brainslug.frontend_torch.weight_watch import PackedWeight
from brainslug.runtime import jit, threads
from brainslug.runtime.aligned import aligned_empty


def _perturb(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


class Flip(nn.Module):
    """A layer that runs in PyTorch between stacks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=[3]) * 1.0


def _model(flip: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv2d(5, 37, 3, padding=1), nn.BatchNorm2d(37), nn.ReLU(),
        nn.Conv2d(37, 19, 1), nn.BatchNorm2d(19), nn.SiLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    if flip:
        layers.append(Flip())
    layers += [nn.Conv2d(19, 23, 3, padding=1, groups=1), nn.BatchNorm2d(23), nn.ReLU(),
               nn.Conv2d(23, 23, 3, padding=1, groups=23), nn.BatchNorm2d(23), nn.Hardswish()]
    return _perturb(nn.Sequential(*layers))


def _runs(opt: nn.Module) -> list[StackSequence]:
    return [m for m in opt.modules() if isinstance(m, StackSequence)]


def _close(got: torch.Tensor, ref: torch.Tensor) -> None:
    err = ((got - ref).abs() / ref.abs().clamp(min=1)).max().item()
    assert err <= 1e-4, err


def _one_by_one(opt: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setattr(kernel_sequence._Prepared, "__call__", lambda self, args: None)
        return opt(x).clone()


@pytest.mark.parametrize("batch", [1, 3])
def test_consecutive_stacks_run_in_one_native_call(batch: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    opt = brainslug.optimize(model, [0, 5, 13, 13], conv="brainslug")
    runs = _runs(opt)
    kernels = [m for m in opt.modules() if isinstance(m, StackKernel)]
    assert len(runs) == 1 and len(runs[0].kernels) == len(kernels) >= 4, opt.plan.code
    x = torch.randn(batch, 5, 13, 13)
    x[0, 0, 0, 0] = float("nan")
    x[-1, 1, 5, 6] = float("inf")
    with torch.no_grad():
        ref = model(x)
        first = opt(x).clone()  # kernel by kernel, checked; prepares the run
        calls = []
        monkeypatch.setattr(StackKernel, "forward",
                            lambda self, *a: calls.append(self) or pytest.fail("called"))
        native = opt(x).clone()
        monkeypatch.undo()
        assert not calls
        again = _one_by_one(opt, x, monkeypatch)
    assert torch.equal(native.isnan(), ref.isnan())
    finite = ref.isfinite()
    _close(native[finite], ref[finite])
    assert torch.allclose(native, first, rtol=0, atol=0, equal_nan=True)
    assert torch.allclose(native, again, rtol=0, atol=0, equal_nan=True)


def _warm(batch: int) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """The model, its plan after two calls (the second one native), an input."""
    model = _model()
    opt = brainslug.optimize(model, [0, 5, 13, 13], conv="brainslug")
    x = torch.randn(batch, 5, 13, 13)
    with torch.no_grad():
        opt(x)
        opt(x)
    return model, opt, x


def test_weight_changes_reach_a_native_run() -> None:
    model, opt, x = _warm(2)
    with torch.no_grad():
        model[0].weight.mul_(-0.7)  # a packed convolution weight, in place
        model[1].running_var.mul_(3.0)  # a batch norm's statistics, in place
        model[4].bias.data = torch.randn(19)  # a new tensor through .data
        _close(opt(x), model(x))
        _close(opt(x), model(x))
        model[4].weight = nn.Parameter(torch.rand(19) + 0.5)  # a new parameter
        model[7].running_var = torch.rand(23) + 0.5  # a new buffer
        model[0].weight = nn.Parameter(torch.randn(37, 5, 3, 3))  # a new packed weight
        _close(opt(x), model(x))
        _close(opt(x), model(x))
        model[3].weight = nn.Parameter(torch.randn(19, 37, 3, 3))  # of another shape
        with pytest.raises(ValueError, match="optimize\\(\\) the model again"):
            opt(x)


def test_a_framework_layer_between_stacks_splits_the_run() -> None:
    model = _model(flip=True)
    opt = brainslug.optimize(model, [0, 5, 13, 13], conv="brainslug")
    runs = _runs(opt)
    assert len(runs) == 2, opt.plan.code
    code = opt.plan.code
    assert code.index("bs_run0") < code.index("flip") < code.index("bs_run1")
    x = torch.randn(3, 5, 13, 13)
    with torch.no_grad():
        for _ in range(2):
            _close(opt(x), model(x))


def test_a_stand_in_runner_is_called_kernel_by_kernel() -> None:
    model, opt, x = _warm(1)
    with torch.no_grad():
        seen: list[str] = []
        for k in _runs(opt)[0].kernels:
            real = k.runner

            def recorder(bufs, batch, real=real, name=k.stack_name):  # type: ignore[no-untyped-def]
                seen.append(name)
                real(bufs, batch)

            k.runner = recorder
        _close(opt(x), model(x))
    assert seen == [k.stack_name for k in _runs(opt)[0].kernels]


def test_concurrent_callers_get_their_own_results() -> None:
    model = _model()
    opt = brainslug.optimize(model, [0, 5, 13, 13], conv="brainslug")
    inputs = [torch.randn(b, 5, 13, 13) for b in (1, 2, 3, 2)]
    with torch.no_grad():
        refs = [model(x) for x in inputs]
    errors: list[str] = []

    def serve(k: int) -> None:
        try:
            with torch.no_grad():
                for _ in range(30):
                    got = opt(inputs[k])
                    err = ((got - refs[k]).abs() / refs[k].abs().clamp(min=1)).max().item()
                    if err > 1e-4:
                        errors.append(f"caller {k}: {err}")
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"caller {k}: {e!r}")

    workers = [threading.Thread(target=serve, args=(k,)) for k in range(len(inputs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors


def _at_once(fn: Any, n: int = 4) -> list[Any]:
    """`fn()` on n threads started together; their results."""
    start, got = threading.Barrier(n), []

    def call() -> None:
        start.wait()
        got.append(fn())

    workers = [threading.Thread(target=call) for _ in range(n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return got


def test_concurrent_first_calls_pack_a_weight_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers that find a weight unpacked at once get one packed copy: a copy
    made twice freed the first under the kernel that read it."""
    packs = []
    original = PackedWeight.pack

    def slow_pack(self: PackedWeight, w: torch.Tensor) -> torch.Tensor:
        packs.append(w)
        time.sleep(0.05)
        return original(self, w)

    monkeypatch.setattr(PackedWeight, "pack", slow_pack)
    packed = PackedWeight(torch.randn(19, 37, 3, 3), block=16)
    got = _at_once(packed.current)
    assert len(packs) == 1 and all(t is got[0] for t in got)


def test_concurrent_scratch_requests_get_one_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fills taken at once on a new batch size point at the one cached scratch
    (a second buffer cached over the first left a fill pointing at freed memory)."""
    _, opt, _ = _warm(1)
    runner = next(k.runner for k in _runs(opt)[0].kernels
                  if k.runner.abi.needs_scratch(k.runner.num_args))

    def slow_empty(*args: Any, **kw: Any) -> np.ndarray:
        time.sleep(0.01)
        return aligned_empty(*args, **kw)

    monkeypatch.setattr(jit, "aligned_empty", slow_empty)
    batch = 29
    args = [torch.empty([batch if s < 0 else s for s in shape])
            for shape in runner.shapes[:runner.num_args]]
    fills = _at_once(lambda: runner.shape_slots(args, batch))
    scratch = {a.ctypes.data for bufs in runner._scratch.values() for a in bufs}
    for _, pairs in fills:
        assert pairs == fills[0][1]
        pointers = {v for s, v in pairs if any(s == w.pointer for w in runner.abi.layout)}
        assert pointers <= scratch and pointers


@pytest.mark.parametrize("kind", ["python", "native", "omp"])
def test_every_pool_runs_the_phases(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind != "python" and not threads.native_pool_supported():
        pytest.skip("native pools need Linux x86-64")
    if kind == "omp" and threads.loaded_libgomp() is None:
        pytest.skip("no libgomp in this process")
    monkeypatch.setattr(jit, "PARALLEL_THRESHOLD", 0)  # every parallel phase on the pool
    monkeypatch.setattr(jit, "PYTHON_POOL_THRESHOLD", 0)
    pool = {"python": threads.ThreadPool, "native": threads.NativePool,
            "omp": threads.OmpPool}[kind](2)
    model = _model()
    opt = brainslug.optimize(model, [0, 5, 13, 13], conv="brainslug")
    run = _runs(opt)[0]
    for k in run.kernels:
        k.runner.pool = pool
    run.release()
    x = torch.randn(3, 5, 13, 13)
    try:
        with torch.no_grad():
            ref = model(x)
            for _ in range(3):
                _close(opt(x), ref)
    finally:
        for k in run.kernels:
            k.runner.pool = None
        if kind != "omp":
            pool.shutdown()


def _two_kernels(tail: Any) -> torch.fx.GraphModule:
    """A graph of kernel k1 (two outputs) whose first output feeds kernel k2;
    `tail(graph, x, k1, k2)` adds the rest and returns the graph's outputs."""
    graph = torch.fx.Graph()
    root = nn.Module()
    root.add_module("k1", StackKernel("k1", object(), ["x"], [(-1, 4), (-1, 4)]))
    root.add_module("k2", StackKernel("k2", object(), ["a"], [(-1, 4)]))
    x = graph.placeholder("x")
    k1 = graph.call_module("k1", (x,))
    a = graph.call_function(_getitem, (k1, 0))
    k2 = graph.call_module("k2", (a,))
    graph.output(tail(graph, x, k1, k2))
    return torch.fx.GraphModule(root, graph)


def test_grouping_keeps_every_pick_of_a_kernels_outputs() -> None:
    """A kernel of two outputs whose second output is picked after a PyTorch
    layer: the pick reads the sequence's flat outputs."""
    gm = _two_kernels(lambda g, x, k1, k2: (
        k2, g.call_function(torch.relu, (x,)), g.call_function(_getitem, (k1, 1))))
    assert kernel_sequence.group_kernel_runs(gm, _getitem) == 1
    nodes = list(gm.graph.nodes)
    (seq,) = [n for n in nodes if n.op == "call_module"]
    assert isinstance(gm.get_submodule(str(seq.target)), StackSequence)
    assert seq.args == (nodes[0],)
    out = nodes[-1].args[0]
    picks = [o if o.target is _getitem else None for o in (out[0], out[2])]
    assert [(p.args[0], p.args[1]) for p in picks] == [(seq, 2), (seq, 1)]  # type: ignore[union-attr]
    assert out[1].target is torch.relu
    assert gm.get_submodule(str(seq.target)).wiring == [[0], [(0, 0)]]


def test_a_kernels_tuple_used_whole_is_not_grouped() -> None:
    gm = _two_kernels(lambda g, x, k1, k2: (k2, k1))
    assert kernel_sequence.group_kernel_runs(gm, _getitem) == 0

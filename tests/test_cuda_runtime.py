"""The CUDA runtime and the CUDA plan of optimize().

On a machine with a CUDA device and cuda-python, compiled stacks and whole
models run on torch CUDA tensors against PyTorch's eager CUDA results. Without
one those tests skip, and the rest check what needs no GPU: the backend choice
and its error messages, launch shapes, and the whole CUDA plan (capture, nvptx
pipeline, graph rewrite, kernel calls) run on the CPU emulator of the kernels.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn as tnn

import brainslug.runtime.cuda as cuda_rt
from brainslug.dialects import loop
from brainslug.frontend_torch import cuda_kernel
from brainslug.frontend_torch.optimize import optimize

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_nvptx import HALO_BUDGET, HALO_POOLS, STACKS, bn_relu_pool, close, lower  # noqa: E402


def _gpu_reason() -> str | None:
    try:
        cuda_rt.driver()
    except ImportError:
        return "cuda-python is not installed (pip install 'brainslug[cuda]')"
    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False"
    return None


GPU_REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")


class Net(tnn.Module):
    """Conv stem, BN-ReLU-maxpool, a residual add, a dense-style cat, avg pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = tnn.Conv2d(3, 13, 3, padding=1)
        self.bn = tnn.BatchNorm2d(13)
        self.pool = tnn.MaxPool2d(3, 2, 1)
        self.conv2 = tnn.Conv2d(13, 13, 3, padding=1)
        self.bn2 = tnn.BatchNorm2d(13)
        self.bn3 = tnn.BatchNorm2d(26)
        self.avg = tnn.AvgPool2d(2, 2)
        for bn in (self.bn, self.bn2, self.bn3):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(-2, 2)
            bn.bias.data.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.conv(x))))
        y = F.relu(self.bn2(self.conv2(x)) + x)
        z = torch.cat([x, y], 1)
        return self.avg(F.relu(self.bn3(z)))


# ---------------------------------------------------------------------- without a GPU


def test_runtime_imports_without_gpu() -> None:
    assert isinstance(cuda_rt.available(), bool)
    assert callable(cuda_rt.compile_cuda_kernels)


def _hide_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda.bindings", "cuda.bindings.driver", "cuda.cuda"):
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_cuda_python_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_cuda_python(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install 'brainslug\[cuda\]'"):
        cuda_rt.driver()


def test_optimize_of_a_cuda_model_without_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_cuda_python(monkeypatch)
    monkeypatch.setattr(cuda_kernel, "is_cuda_model", lambda m: True)
    with pytest.raises(ImportError, match="cuda-python"):
        optimize(Net().eval(), [0, 3, 15, 15])


def test_backend_choice_follows_the_model_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not cuda_kernel.is_cuda_model(Net())
    assert not cuda_kernel.is_cuda_model(tnn.ReLU())  # no parameters: the CPU
    calls = []
    monkeypatch.setattr(cuda_kernel, "is_cuda_model", lambda m: True)
    monkeypatch.setattr(
        cuda_kernel, "optimize_cuda", lambda m, spec, **o: calls.append((spec, o)) or "cuda plan"
    )
    assert optimize(Net(), (0, 3, 15, 15), arch="sm_90") == "cuda plan"
    assert calls == [([0, 3, 15, 15], {"arch": "sm_90"})]


def test_cuda_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown optimize"):
        cuda_kernel.optimize_cuda(Net(), [0, 3, 15, 15], threads=4)
    with pytest.raises(ValueError, match="NCHW"):
        cuda_kernel.optimize_cuda(Net(), [0, 3, 15, 15], layout="NHWC")


def _runner(name: str, layout: str = "NCHW") -> cuda_rt.CudaKernelRunner:
    text, _, _ = STACKS[name](layout, 1)
    module = lower(text)
    info = next(op for op in module.ops if isinstance(op, loop.KernelInfoOp))
    return cuda_rt.CudaKernelRunner(info, [None] * len(info.phases), owner=None)


def test_launch_shapes() -> None:
    r = _runner("bn_relu")
    # phase 0 (BN factors, no parallel dims): one block of 37 lanes
    assert r.launch_shape(0, 8, 132) == ((1, 1, 1), (37, 1, 1))
    # phase 1: rows of W=13 lanes, 256 // 13 rows per block, rows = 8 * 37 * 13
    grid, block = r.launch_shape(1, 8, 132)
    assert block == (13, 19, 1) and grid == (-(-8 * 37 * 13 // 19), 1, 1)
    # a large batch: the grid is capped (the kernels are grid-strided)
    assert r.launch_shape(1, 100000, 132)[0][0] == 132 * cuda_rt.BLOCKS_PER_SM


def test_launch_shape_of_a_tile_phase() -> None:
    """A block-mode tile phase (BN-ReLU-maxpool, one channel plane a tile):
    a block of the threads it asks for per tile, up to a few waves of blocks
    (the blocks stride over the tiles)."""
    from brainslug.lowering.gpu.analysis import TILE_THREADS

    r = _runner("bn_relu_maxpool")
    assert r.tiles == [0, 37] and r.lanes[1] == TILE_THREADS
    assert r.launch_shape(1, 8, 132) == ((37 * 8, 1, 1), (TILE_THREADS, 1, 1))
    assert r.launch_shape(1, 100000, 132) == ((132 * cuda_rt.BLOCKS_PER_SM, 1, 1), (TILE_THREADS, 1, 1))
    # the BN factors and the tile are separate launches
    assert [(la.first, la.count) for la in r.launches] == [(0, 1), (1, 1)]


def test_kernel_params_point_at_the_slots() -> None:
    r = _runner("add_relu")
    p = r._kernel_params(0x1234560)
    args = (ctypes.c_void_p * 3).from_address(p)
    assert [ctypes.c_int64.from_address(a).value for a in args] == [0, 0, 0x1234560]
    assert r._kernel_params(0x1234560) == p  # reused


def test_runner_rejects_cpu_tensors() -> None:
    r = _runner("add_relu")
    x = torch.zeros(1, 37, 13, 13)
    with pytest.raises(ValueError, match="CUDA tensor"):
        r._check(0, x)


def test_shape_check_fast_path_covers_leading_dynamic_extents() -> None:
    """`_check` compares a buffer's static extents in one slice where the
    dynamic ones lead (the batch); other shapes take the full check."""
    assert cuda_rt._leading_dynamic((-1, 37, 13, 13)) == 1
    assert cuda_rt._leading_dynamic((37, 13)) == 0
    assert cuda_rt._leading_dynamic((-1, -1, 5)) == 2
    assert cuda_rt._leading_dynamic((5, -1)) is None
    r = _runner("add_relu")
    assert [lead for _, lead in r._expected] == [1] * len(r.shapes)


def _emulated_plan(monkeypatch: pytest.MonkeyPatch):
    from brainslug.testing.cuda_emulator import EmulatedCudaKernels

    monkeypatch.setattr(cuda_rt, "compile_cuda_kernels", lambda m, arch, dev: EmulatedCudaKernels(m))


@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_plan_on_the_emulator(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """The CUDA plan end to end (stacks lowered for nvptx, kernels called by
    CudaStackKernel), with the kernels run by the CPU emulator."""
    from brainslug.frontend_torch.tracing import trace

    _emulated_plan(monkeypatch)
    model = Net().eval()
    gm, info, _ = cuda_kernel.compile_cuda_plan(
        trace(model), [0, 3, 15, 15], torch.device("cpu"), "sm_80"
    )
    kernels = [m for m in gm.modules() if isinstance(m, cuda_kernel.CudaStackKernel)]
    assert len(kernels) == 2 and info.target == "nvptx"
    assert ("conv", "nn.conv2d") in info.library  # convolutions stay in the framework
    x = torch.randn(batch, 3, 15, 15)
    with torch.no_grad():
        close(gm(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("plan_ms, runs_from", [
    ({1: 0.5}, 1),                          # faster at batch 1: kept
    ({1: 2.0, 8: 9.0}, None),               # slower at 1 and at 8: the model runs
    ({1: 2.0, 8: 7.0, 2: 2.5, 4: 3.5}, 4),  # pays from batch 4 (not at 2)
])
def test_cuda_plan_is_kept_only_where_it_measured_faster(
    monkeypatch: pytest.MonkeyPatch, tmp_path, plan_ms: dict[int, float], runs_from: int | None
) -> None:
    """Never slower than eager on the GPU either: optimize() of a CUDA model
    times the plan against the model (here the kernels are emulated and the
    timings given: the model 1 ms a batch item), as on the CPU."""
    from brainslug.frontend_torch import speed

    _emulated_plan(monkeypatch)
    monkeypatch.setattr(cuda_kernel, "require_cuda_python", lambda: None)
    # (the emulated kernels take CPU tensors)
    monkeypatch.setattr(cuda_kernel.CudaBrainSlugModule, "check_input", lambda self, x: None)
    monkeypatch.setenv("BRAINSLUG_SPEED_CHECK", "1")
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    timed: list[int] = []

    def medians(candidates, x, rounds=5, warmup=1):
        batch = x.shape[0]
        timed.append(batch)
        with torch.no_grad():  # both candidates run, as when timed
            candidates["plan"](x), candidates["model"](x)
        return {"plan": plan_ms[batch] * 1e-3, "model": batch * 1e-3}

    monkeypatch.setattr(speed, "medians", medians)
    model = Net().eval()
    opt = cuda_kernel.optimize_cuda(model, [0, 3, 15, 15], arch="sm_80")
    assert set(timed) == set(plan_ms)
    report = "\n".join(opt.info.notes)
    if runs_from is None:
        assert opt.plan is None and "measured slower than the model" in opt.info.fallbacks[0][1]
    else:
        assert opt.plan is not None and getattr(opt.info, "min_batch", 1) == runs_from
        assert "the CUDA plan" in report
    for batch in (1, 3, 4):
        x = torch.randn(batch, 3, 15, 15)
        with torch.no_grad():
            close(opt(x).numpy(), model(x).numpy())
    before = len(timed)  # a warm optimize() takes the verdict from the cache
    again = cuda_kernel.optimize_cuda(model, [0, 3, 15, 15], arch="sm_80")
    assert len(timed) == before and (again.plan is None) == (runs_from is None)


# ---------------------------------------------------------------------- on a GPU


def _run_on_gpu(module, inputs: list[np.ndarray], batch: int) -> np.ndarray:
    """The output of a one-stack module's kernel on the GPU."""
    from brainslug.testing.executor import graph_function

    kernels = cuda_rt.compile_cuda_kernels(module)
    fn = graph_function(module)
    (launch,) = [op for op in fn.body.block.ops if isinstance(op, loop.LaunchOp)]
    args = list(fn.body.block.args)
    dev = [torch.from_numpy(x).cuda() for x in inputs]
    ins = [dev[args.index(v)] for v in launch.operands]
    outs = [
        torch.empty([batch if d < 0 else d for d in r.type.get_shape()], device="cuda")
        for r in launch.results
    ]
    kernels[launch.callee_name]([*ins, *outs])
    torch.cuda.synchronize()
    return outs[0].cpu().numpy()


@needs_gpu
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", sorted(STACKS))
@pytest.mark.parametrize("batch", [1, 3])
def test_stack_on_gpu(name: str, layout: str, batch: int) -> None:
    text, inputs, ref = STACKS[name](layout, batch)
    close(_run_on_gpu(lower(text), inputs, batch), ref(*inputs))


@needs_gpu
@pytest.mark.parametrize("pool", sorted(HALO_POOLS))
@pytest.mark.parametrize("batch", [1, 3])
def test_halo_tiles_on_gpu(pool: str, batch: int) -> None:
    """BN-ReLU-pool tiles with halos, a block per tile (shared memory, barriers)."""
    from brainslug.passes.tile_depth_first import TileDepthFirstPass

    text, inputs, ref = bn_relu_pool(pool, batch)
    module = lower(text, tile=TileDepthFirstPass(cache=HALO_BUDGET))
    close(_run_on_gpu(module, inputs, batch), ref(*inputs))


@needs_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_optimize_cuda_model(batch: int) -> None:
    model = Net().cuda().eval()
    opt = optimize(model, [0, 3, 15, 15])
    assert isinstance(opt, cuda_kernel.CudaBrainSlugModule)
    assert any(isinstance(m, cuda_kernel.CudaStackKernel) for m in opt.plan.modules())
    x = torch.randn(batch, 3, 15, 15, device="cuda")
    with torch.no_grad():
        out, ref = opt(x), model(x)
    torch.cuda.synchronize()
    tol = 1e-4 * max(1.0, float(ref.abs().max()))
    assert float((out - ref).abs().max()) <= tol
    with pytest.raises(ValueError, match="CUDA tensor"):
        opt(x.cpu())


@needs_gpu
def test_kernels_run_on_the_current_stream() -> None:
    text, inputs, ref = STACKS["add_relu"]("NCHW", 3)
    module = lower(text)
    kernels = cuda_rt.compile_cuda_kernels(module)
    (name,) = kernels.kernels
    a, b = (torch.from_numpy(x).cuda() for x in inputs)
    out = torch.empty_like(a)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        kernels[name]([a, b, out])
        copy = out.clone()  # ordered after the kernel on the same stream
    torch.cuda.synchronize()
    np.testing.assert_allclose(copy.cpu().numpy(), ref(*inputs), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is present: the bench would run")
def test_cuda_bench_says_why_it_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from brainslug.bench.cuda import run

    args = argparse.Namespace(models=["resnet18"], batch=[1], contenders=None, repeats=3,
                              warmup=1, stacks=False, json=None, hw=None)
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda:")
    assert "no CUDA device" in err or "pip install 'brainslug[cuda]'" in err


def test_cuda_bench_rows_format() -> None:
    import argparse

    from brainslug.bench.cuda import format_rows

    rows = [
        {"contender": "eager", "median_ms": 2.5, "ratio_vs_brainslug_median": 1.25,
         "ratio_vs_brainslug_min": 1.1, "ratio_vs_brainslug_max": 1.4, "max_abs_diff": 0.0,
         "note": "cuDNN, NCHW"},
        {"contender": "torch_compile", "median_ms": None, "ratio_vs_brainslug_median": None,
         "ratio_vs_brainslug_min": None, "ratio_vs_brainslug_max": None, "max_abs_diff": None,
         "note": "error: boom"},
    ]
    text = format_rows("densenet121", 224, 64, rows, argparse.Namespace(repeats=5, warmup=2))
    assert "1.25 [1.10, 1.40]" in text and "error: boom" in text and "batch 64" in text


def test_cuda_bench_says_when_the_plan_was_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that measured slower at optimize() leaves the model as it is: the
    bench row says so instead of timing the model under BrainSlug's name."""
    import brainslug.pytorch as brainslug
    from brainslug.bench.cuda import build
    from brainslug.frontend_torch.module import BrainSlugModule
    from brainslug.plan.report import PlanInfo

    info = PlanInfo(capture="none", target="nvptx")
    info.fallbacks.append(("<model>", "the CUDA plan measured slower than the model: it runs "
                           "as it is"))
    monkeypatch.setattr(brainslug, "optimize",
                        lambda m, spec: BrainSlugModule(m, None, spec, info))
    _, note = build("brainslug", Net().eval(), [0, 3, 15, 15])
    assert note.startswith("the CUDA plan measured slower") and "SPEED_CHECK=0" in note


def test_ptx_is_cached_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from brainslug.lowering.backends.nvptx import NVPTXBackend

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("BRAINSLUG_CACHE", "1")
    text, _, _ = STACKS["add_relu"]("NCHW", 1)
    module = lower(text)
    backend = NVPTXBackend("sm_90")
    ptx = cuda_rt.ptx_for(module, backend)
    assert ".entry" in ptx and any(tmp_path.rglob("*.o"))

    def no_codegen(*a: object) -> str:
        raise AssertionError("compiled again")

    monkeypatch.setattr(backend, "emit_ptx", no_codegen)
    assert cuda_rt.ptx_for(module, backend) == ptx


@pytest.mark.parametrize(
    "name,hw",
    [
        ("resnet18", 32),
        pytest.param("densenet121", 32, marks=pytest.mark.slow),
        pytest.param("mobilenet_v3_small", 64, marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", 64, marks=pytest.mark.slow),
        pytest.param("googlenet", 64, marks=pytest.mark.slow),
        pytest.param("inception_v3", 80, marks=pytest.mark.slow),
    ],
)
def test_network_cuda_plan_on_the_emulator(
    monkeypatch: pytest.MonkeyPatch, name: str, hw: int
) -> None:
    """Whole torchvision networks through the CUDA plan, kernels emulated."""
    import torchvision

    from brainslug.frontend_torch.tracing import trace

    _emulated_plan(monkeypatch)
    torch.manual_seed(0)
    kw = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kw).eval()
    for m in model.modules():
        if isinstance(m, tnn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    gm, info, _ = cuda_kernel.compile_cuda_plan(
        trace(model), [0, 3, hw, hw], torch.device("cpu"), "sm_80"
    )
    assert sum(s.compiled for s in info.stacks) > 5
    x = torch.randn(2, 3, hw, hw)
    with torch.no_grad():
        out, ref = gm(x), model(x)
    assert float((out - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))

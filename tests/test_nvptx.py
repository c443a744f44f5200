"""The CUDA backend without a GPU: PTX for representative stacks, checked by
ptxas for sm_80 and sm_90, and the GPU lowering run numerically on the CPU
(`brainslug.testing.cuda_emulator`: every thread of the grid in turn, or the
threads of a block as coroutines that meet at its barriers) against PyTorch's
eager results on odd sizes."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from halo_cases import HALO_POOLS

from brainslug.dialects import loop
from brainslug.ir.context import make_context, parse_module
from brainslug.lowering.backends.nvptx import (
    NVPTXBackend,
    emit_ptx,
    entry_names,
)
from brainslug.lowering.gpu import analysis
from brainslug.lowering.gpu.emitter import GPUPhaseEmitter
from brainslug.passes.tile_depth_first import TileDepthFirstPass
from brainslug.pipeline.default import default_passes
from brainslug.pipeline.target import GPU_TILE_BUDGET
from brainslug.testing.cuda_emulator import EmulatedCudaKernels
from brainslug.testing.executor import CompiledGraph, graph_function

C, H, W = 37, 13, 13
RNG = np.random.default_rng(77)
PTXAS = shutil.which("ptxas")


def tensor(shape: list[int]) -> str:
    return "tensor<" + "x".join("?" if d < 0 else str(d) for d in shape) + "xf32>"


def phys(shape: list[int], layout: str) -> list[int]:
    n, c, h, w = shape
    return [n, h, w, c] if layout == "NHWC" else [n, c, h, w]


def to_torch(x: np.ndarray, layout: str) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, 3, 1, 2) if layout == "NHWC" else t


def from_torch(t: torch.Tensor, layout: str) -> np.ndarray:
    return (t.permute(0, 2, 3, 1) if layout == "NHWC" else t).contiguous().numpy()


def rand(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 2).astype(np.float32)


def bn_params() -> list[np.ndarray]:
    return [rand(C), rand(C), rand(C), np.abs(rand(C)) + 0.1]


def torch_bn(x: torch.Tensor, w, b, m, v) -> torch.Tensor:
    return F.batch_norm(x, *map(torch.from_numpy, (m, v, w, b)), False, 0.0, 1e-5)


def lower(text: str, tile: TileDepthFirstPass | None = None):
    """The default nvptx pipeline (with `tile` for bs-tile-depth-first)."""
    module = parse_module(text)
    ctx = make_context()
    for p in default_passes("nvptx", "sm_90"):
        if tile is not None and isinstance(p, TileDepthFirstPass):
            p = tile
        p.apply(ctx, module)
    module.verify()
    return module


def check_ptx(module) -> str:
    """The module's PTX, with kernels as `.entry`s that read the thread and block
    indices, accepted by ptxas for sm_80 and sm_90 (when ptxas is on PATH)."""
    ptx = emit_ptx(module, "sm_90")
    entries = set(re.findall(r"\.visible \.entry (\S+)\(", ptx))
    assert entries and entries == entry_names(module)
    assert "%ctaid.x" in ptx and "%tid" in ptx
    if PTXAS is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "k.ptx"
            path.write_text(ptx)
            for arch in ("sm_80", "sm_90"):
                r = subprocess.run(
                    [PTXAS, f"-arch={arch}", str(path), "-o", str(Path(d) / f"{arch}.cubin")],
                    capture_output=True,
                    text=True,
                )
                assert r.returncode == 0, f"ptxas -arch={arch}: {r.stderr}"
    return ptx


@pytest.mark.skipif(PTXAS is None, reason="ptxas is not on PATH: the PTX of these tests is not assembled")
def test_ptxas_checks_the_ptx() -> None:
    """With ptxas on PATH every `check_ptx` assembles for sm_80 and sm_90; a
    broken PTX must fail it."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "bad.ptx"
        bad.write_text(".version 7.0\n.target sm_80\n.address_size 64\n.visible .entry k() { bogus; }\n")
        r = subprocess.run([PTXAS, "-arch=sm_80", str(bad), "-o", str(Path(d) / "x")], capture_output=True)
        assert r.returncode != 0


def run(module, *inputs: np.ndarray, grid: int | None = None, block=None) -> list[np.ndarray]:
    kernels = EmulatedCudaKernels(module)
    for k in kernels.kernels.values():
        k.grid, k.block = grid, block
    graph = CompiledGraph(module, graph_function(module), kernels)
    return [np.asarray(o) for o in graph(*inputs)]


def close(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    assert np.array_equal(np.isnan(out), np.isnan(ref)), "NaNs differ"
    tol = 1e-5 * max(1.0, float(np.nanmax(np.abs(ref))))
    err = float(np.nanmax(np.abs(out - ref)))
    assert err <= tol, f"max|d| = {err:.3e} > {tol:.1e}"


# ---------------------------------------------------------------------- stacks

Case = tuple[str, list[np.ndarray], Callable[..., np.ndarray]]


def bn_relu(layout: str, batch: int) -> Case:
    xt, p = tensor(phys([-1, C, H, W], layout)), tensor([C])
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {xt} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.relu %bn : {xt} -> {xt}
      func.return %r : {xt}
    }}"""
    x = rand(*phys([batch, C, H, W], layout))
    x.flat[::101] = np.nan  # ReLU propagates NaN like PyTorch

    def ref(x, *bn):
        return from_torch(F.relu(torch_bn(to_torch(x, layout), *bn)), layout)

    return text, [x, *bn_params()], ref


def bn_relu_maxpool(layout: str, batch: int) -> Case:
    xt, yt, p = tensor(phys([-1, C, H, W], layout)), tensor(phys([-1, C, 7, 7], layout)), tensor([C])
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {yt} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.relu %bn : {xt} -> {xt}
      %y = nn.max_pool2d %r {{kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""

    def ref(x, *bn):
        t = F.max_pool2d(F.relu(torch_bn(to_torch(x, layout), *bn)), 3, 2, 1)
        return from_torch(t, layout)

    return text, [rand(*phys([batch, C, H, W], layout)), *bn_params()], ref


def avgpool(layout: str, batch: int) -> Case:
    xt, yt = tensor(phys([-1, C, H, W], layout)), tensor(phys([-1, C, 7, 7], layout))
    text = f"""func.func @f(%x: {xt}) -> {yt} {{
      %y = nn.avg_pool2d %x {{kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, ceil_mode = false, count_include_pad = false, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""

    def ref(x):
        t = F.avg_pool2d(to_torch(x, layout), 3, 2, 1, count_include_pad=False)
        return from_torch(t, layout)

    return text, [rand(*phys([batch, C, H, W], layout))], ref


def add_relu(layout: str, batch: int) -> Case:
    t = tensor(phys([-1, C, H, W], layout))
    text = f"""func.func @f(%a: {t}, %b: {t}) -> {t} {{
      %s = nn.add %a, %b : ({t}, {t}) -> {t}
      %r = nn.relu %s : {t} -> {t}
      func.return %r : {t}
    }}"""
    shape = phys([batch, C, H, W], layout)
    return text, [rand(*shape), rand(*shape)], lambda a, b: np.maximum(a + b, 0)


def cat_bn_relu(layout: str, batch: int) -> Case:
    parts = [5, 11, 21]
    axis = 1 if layout == "NCHW" else 3
    ts = [tensor(phys([-1, c, H, W], layout)) for c in parts]
    xt, p = tensor(phys([-1, C, H, W], layout)), tensor([C])
    text = f"""func.func @f(%a: {ts[0]}, %b: {ts[1]}, %c: {ts[2]}, %w: {p}, %bb: {p}, %m: {p}, %v: {p}) -> {xt} {{
      %x = nn.cat %a, %b, %c {{axis = {axis} : i64}} : ({", ".join(ts)}) -> {xt}
      %bn = nn.batch_norm %x weight %w bias %bb mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.relu %bn : {xt} -> {xt}
      func.return %r : {xt}
    }}"""

    def ref(a, b, c, *bn):
        cat = torch.cat([to_torch(x, layout) for x in (a, b, c)], 1)
        return from_torch(F.relu(torch_bn(cat, *bn)), layout)

    xs = [rand(*phys([batch, c, H, W], layout)) for c in parts]
    return text, [*xs, *bn_params()], ref


def sigmoid_mul(layout: str, batch: int) -> Case:
    """SiLU-like: a libdevice function (__nv_expf) in the kernel."""
    t = tensor(phys([-1, C, H, W], layout))
    text = f"""func.func @f(%x: {t}) -> {t} {{
      %s = nn.sigmoid %x : {t} -> {t}
      %y = nn.mul %x, %s : ({t}, {t}) -> {t}
      func.return %y : {t}
    }}"""
    return text, [rand(*phys([batch, C, H, W], layout))], lambda x: (
        torch.from_numpy(x) * torch.sigmoid(torch.from_numpy(x))
    ).numpy()


def maxpool_avgpool(layout: str, batch: int) -> Case:
    """A depth-first tile with a scratch buffer (block mode)."""
    xt, pt, yt = tensor([-1, C, H, W]), tensor([-1, C, 7, 7]), tensor([-1, C, 3, 3])
    text = f"""func.func @f(%x: {xt}) -> {yt} {{
      %p = nn.max_pool2d %x {{kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"}} : {xt} -> {pt}
      %y = nn.avg_pool2d %p {{kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, ceil_mode = false, count_include_pad = true, layout = "NCHW"}} : {pt} -> {yt}
      func.return %y : {yt}
    }}"""

    def ref(x):
        return F.avg_pool2d(F.max_pool2d(torch.from_numpy(x), 3, 2, 1), 2, 2).numpy()

    return text, [rand(batch, C, H, W)], ref


STACKS = {
    "bn_relu": bn_relu,
    "bn_relu_maxpool": bn_relu_maxpool,
    "avgpool": avgpool,
    "add_relu": add_relu,
    "cat_bn_relu": cat_bn_relu,
    "sigmoid_mul": sigmoid_mul,
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", sorted(STACKS))
def test_stack_ptx_and_numerics(name: str, layout: str) -> None:
    text, inputs, ref = STACKS[name](layout, 3)
    module = lower(text)
    check_ptx(module)
    (out,) = run(module, *inputs)
    close(out, ref(*inputs))


@pytest.mark.parametrize("name", ["bn_relu", "bn_relu_maxpool", "cat_bn_relu"])
def test_batch_one(name: str) -> None:
    text, inputs, ref = STACKS[name]("NCHW", 1)
    (out,) = run(lower(text), *inputs)
    close(out, ref(*inputs))


@pytest.mark.parametrize("grid,block", [(1, (1, 1)), (3, (5, 2)), (2, (64, 1))])
def test_any_launch_shape_is_correct(grid: int, block: tuple[int, int]) -> None:
    """Kernels are grid- and block-strided: a launch of any shape computes everything."""
    text, inputs, ref = bn_relu_maxpool("NHWC", 3)
    (out,) = run(lower(text), *inputs, grid=grid, block=block)
    close(out, ref(*inputs))


def test_depth_first_tile_runs_as_a_block() -> None:
    """max-pool -> avg-pool: bs-tile-depth-first tiles it (with a halo: the
    2x2/2 avg-pool reads 6 of the 7 rows); on the GPU a tile is a block, its
    scratch a shared array, and its nests run on all threads between barriers
    (until shared memory, each thread ran a one-point tile out of local memory)."""
    text, inputs, ref = maxpool_avgpool("NCHW", 3)
    module = lower(text)
    info = next(op for op in module.ops if isinstance(op, loop.KernelInfoOp))
    assert list(info.gpu_launch.tiles.get_values()) == [37]  # a tile per (n, c) plane
    assert list(info.gpu_launch.lanes.get_values()) == [64]  # 36 points, two warps
    ir = NVPTXBackend().emit_llvm_ir(module, opt=0)
    assert "alloca" not in ir and "addrspace(3) global [144 x i8]" in ir  # 6x6 floats
    ptx = check_ptx(module)
    assert ".shared .align 16 .b8 bs_shared_144[144]" in ptx and "bar.sync" in ptx
    for grid, block in [(None, None), (2, (4, 3)), (1, (1, 1))]:
        (out,) = run(module, *inputs, grid=grid, block=block)
        close(out, ref(*inputs))


@pytest.mark.parametrize(
    "halo,shared,scratch",
    [
        (True, 1024, "alloca float, i64 1332,"),  # whole (n) tiles: 37x6x6 floats
        (False, 1024, "addrspace(3) global [208 x i8]"),  # one-point tiles: 7x7 floats
        (False, 128, "alloca float, i64 49,"),
    ],
)
def test_tile_too_large_for_shared_memory(
    monkeypatch: pytest.MonkeyPatch, halo: bool, shared: int, scratch: str
) -> None:
    """A tile whose scratch does not fit in a block's shared memory is cut to
    one point of its tiled dims where its scratch is sized by its steps (no
    halo); if it fits then, it is a block, else it runs in serial mode: each
    thread runs whole tiles out of its local memory."""
    monkeypatch.setattr(analysis, "SHARED_BYTES", shared)
    text, inputs, ref = maxpool_avgpool("NCHW", 3)
    module = lower(text, tile=TileDepthFirstPass(cache=GPU_TILE_BUDGET, halo=halo))
    info = next(op for op in module.ops if isinstance(op, loop.KernelInfoOp))
    block = "global" in scratch
    assert list(info.gpu_launch.tiles.get_values()) == [C if block else 0]
    assert (list(info.gpu_launch.lanes.get_values()) == [1]) != block  # 1: serial
    assert scratch in NVPTXBackend().emit_llvm_ir(module, opt=0)
    ptx = check_ptx(module)
    assert (".shared" in ptx and "bar.sync" in ptx) == block
    (out,) = run(module, *inputs, grid=2, block=(4, 3))
    close(out, ref(*inputs))


# ---------------------------------------------------------------------- halo tiles

HALO_H, HALO_W = 29, 23
HALO_BUDGET = 7 * 4 * (HALO_W + 2)
"""A tile budget of 7 padded input rows of one channel: H splits into tiles."""
def bn_relu_pool(pool: str, batch: int) -> Case:
    """BN -> ReLU -> an overlapping pool, NCHW 29x23, NaNs in the input."""
    op, (oh, ow), ref_pool = HALO_POOLS[pool]
    xt, yt, p = tensor([-1, C, HALO_H, HALO_W]), tensor([-1, C, oh, ow]), tensor([C])
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {yt} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "NCHW"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.relu %bn : {xt} -> {xt}
      %y = {op}, layout = "NCHW"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    x = rand(batch, C, HALO_H, HALO_W)
    x.flat[::1009] = np.nan  # propagates through every window that sees it

    def ref(x, *bn):
        return ref_pool(F.relu(torch_bn(torch.from_numpy(x), *bn))).numpy()

    return text, [x, *bn_params()], ref


@pytest.mark.parametrize("pool", sorted(HALO_POOLS))
def test_halo_tiles_run_as_blocks(pool: str) -> None:
    """BN -> ReLU -> pool with a budget of 7 input rows: H splits into several
    tiles with halos, each a block with its scratch in shared memory. The PTX
    passes ptxas; the emulator (threads of a block as coroutines that meet at
    the barriers) matches PyTorch, NaNs included, on the runtime's launch
    shape and on odd ones (fewer blocks than tiles, threads that are not a
    multiple of anything)."""
    text, inputs, ref = bn_relu_pool(pool, 3)
    module = lower(text, tile=TileDepthFirstPass(cache=HALO_BUDGET))
    info = next(op for op in module.ops if isinstance(op, loop.KernelInfoOp))
    *_, tiles = info.gpu_launch.tiles.get_values()
    oh = HALO_POOLS[pool][1][0]
    assert tiles % C == 0 and 3 <= tiles // C < oh  # several row tiles per channel
    ptx = check_ptx(module)
    (size,) = {int(n) for n in re.findall(r"\.shared \.align 16 \.b8 bs_shared_(\d+)\[", ptx)}
    assert size < HALO_BUDGET + 16  # (16-byte aligned)
    assert len(re.findall(r"bar\.sync\s+0;", ptx)) == 2 and "ld.shared" in ptx and "st.shared" in ptx
    for batch in (1, 3):
        text, inputs, ref = bn_relu_pool(pool, batch)
        expected = ref(*inputs)
        assert np.isnan(expected).any()
        for grid, block in [(None, None), (5, (7, 3)), (1, (32, 1))]:
            (out,) = run(module, *inputs, grid=grid, block=block)
            close(out, expected)


def test_emulator_finds_missing_barriers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator runs each thread of a block until its next barrier, so a
    tile lowered without barriers reads scratch points that other threads have
    not written yet (or already overwrote): its results are wrong."""
    monkeypatch.setattr(GPUPhaseEmitter, "barrier", lambda self: None)
    text, inputs, ref = bn_relu_pool("max3s2p1", 1)
    module = lower(text, tile=TileDepthFirstPass(cache=HALO_BUDGET))
    (out,) = run(module, *inputs, grid=3, block=(8, 2))
    with pytest.raises(AssertionError):
        close(out, ref(*inputs))


def test_emulator_rejects_divergent_barriers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A barrier that some threads of a block pass more often than others
    (here one per point, and the threads have different numbers of points)
    is undefined on a GPU; the emulator raises."""
    lane_point = GPUPhaseEmitter.lane_point

    def divergent(self: GPUPhaseEmitter, op, w) -> None:
        lane_point(self, op, w)
        self.barrier()

    monkeypatch.setattr(GPUPhaseEmitter, "lane_point", divergent)
    text, inputs, _ = bn_relu_pool("max3s2p1", 1)
    module = lower(text, tile=TileDepthFirstPass(cache=HALO_BUDGET))
    with pytest.raises(RuntimeError, match="different numbers of barriers"):
        run(module, *inputs, grid=3, block=(8, 2))


def test_lane_hints_and_kernel_marking() -> None:
    text, _, _ = bn_relu("NCHW", 1)
    module = lower(text)
    info = next(op for op in module.ops if isinstance(op, loop.KernelInfoOp))
    # phase 0 computes BN's per-channel factors (37 lanes), phase 1 runs rows of W lanes
    assert list(info.gpu_launch.lanes.get_values()) == [C, W]
    # phase 1 reads the factors phase 0 writes: two launches
    assert list(info.gpu_launch.groups.get_values()) == [1, 1]
    ir = NVPTXBackend().emit_llvm_ir(module, opt=0)
    assert ir.count("define ptx_kernel void") == 2
    assert "llvm.nvvm.read.ptx.sreg.tid.x" in ir and "llvm.nvvm.read.ptx.sreg.ctaid.x" in ir
    # no vectors on the GPU: a lane is a thread
    assert "<32 x float>" not in ir and "x float>" not in ir


def test_ptx_target_is_forward_compatible() -> None:
    assert NVPTXBackend("sm_90").ptx_target == "sm_80"
    assert NVPTXBackend("sm_75").ptx_target == "sm_75"
    # a module lowered for an older GPU keeps its target when emitted for sm_90
    text, _, _ = add_relu("NCHW", 1)
    module = parse_module(text)
    ctx = make_context()
    for p in default_passes("nvptx", "sm_75"):
        p.apply(ctx, module)
    assert ".target sm_75" in emit_ptx(module, "sm_90")
    with pytest.raises(ValueError, match="SM architecture"):
        NVPTXBackend("znver3")


def test_bs_opt_ptx_example() -> None:
    from brainslug.tools.bs_opt import main

    example = Path(__file__).parent.parent / "examples" / "ir" / "bn_relu_maxpool.mlir"
    out = Path(__file__).parent / "__ptx_out.ptx"
    try:
        assert main([str(example), "-p", "default", "--target", "ptx", "-o", str(out)]) == 0
        ptx = out.read_text()
    finally:
        out.unlink(missing_ok=True)
    assert ptx.count(".entry") == 2 and ".target sm_80" in ptx


def test_independent_phases_share_a_launch() -> None:
    """The parts of an NCHW cat write disjoint channels of one buffer: after the
    BN factors (which they read) they are one launch, `ctaid.y` picking the part."""
    text, inputs, ref = cat_bn_relu("NCHW", 3)
    module = lower(text)
    info = next(op for op in module.ops if isinstance(op, loop.KernelInfoOp))
    assert list(info.gpu_launch.groups.get_values()) == [1, 3]
    ptx = check_ptx(module)
    assert ptx.count(".entry") == 2 and "%ctaid.y" in ptx
    (out,) = run(module, *inputs, grid=2, block=(8, 2))
    close(out, ref(*inputs))


def test_overlapping_writes_are_not_merged() -> None:
    """Phases that write disjoint boxes of one buffer share a launch; phases
    whose boxes overlap stay in order."""
    from brainslug.lowering.gpu.launches import launch_groups

    t = "memref<4x8xf32>"

    def nest(lo: tuple[int, int], hi: tuple[int, int]) -> str:
        return f"""loop.nest parallel 1 (%i, %j) = {lo} to {hi} {{
        %v = loop.load %x[%i, %j] : {t}
        loop.store %v, %y[%i, %j] : f32, {t}
      }}"""

    text = f"""func.func @k(%x: {t}, %y: {t}) attributes {{bs.kernel}} {{
      {nest((0, 0), (4, 4))}
      {nest((0, 4), (4, 8))}
      {nest((0, 0), (2, 8))}
      func.return
    }}"""
    fn = next(iter(parse_module(text).ops))
    a, b, c = [op for op in fn.body.block.ops if isinstance(op, loop.NestOp)]
    assert launch_groups([a, b]) == [2]
    assert launch_groups([a, b, c]) == [2, 1]
    assert launch_groups([b, c]) == [1, 1]


def test_every_simd_op_has_a_gpu_lowering() -> None:
    """No simd op falls back to the CPU's vector lowering on the GPU."""
    from brainslug.lowering.gpu.lowerings import GPU_LOWERINGS
    from brainslug.lowering.simd_to_llvm import SIMD_LOWERINGS

    assert set(SIMD_LOWERINGS) <= set(GPU_LOWERINGS)

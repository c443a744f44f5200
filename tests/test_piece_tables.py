"""`loop.pieces`: a `cat` reads a run of like stack inputs as one buffer, found
through the kernel's slot array, so that its code (and the passes' work) does
not grow with the run's length. Checked against PyTorch and numpy, with NaN
and Inf, at batch 1 and 3, on chunks inside one piece, chunks straddling two,
scalar (padded) reads and strided lanes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects import llvm

from brainslug.dialects import loop
from brainslug.ir.context import make_context, parse_module
from brainslug.pipeline.default import default_passes
from brainslug.testing.executor import compile_graph

RNG = np.random.default_rng(11)


def tensor(shape: list[int]) -> str:
    return "tensor<" + "x".join("?" if d < 0 else str(d) for d in shape) + "xf32>"


def cat_bn_relu(c0: int, width: int, count: int, hw: int = 5) -> str:
    """cat(x, p0..p{count-1}) -> BN -> ReLU, channels-last."""
    c = c0 + width * count
    pieces = [tensor([-1, hw, hw, width])] * count
    args = [f"%x: {tensor([-1, hw, hw, c0])}", *(f"%p{k}: {t}" for k, t in enumerate(pieces)),
            *(f"%{n}: {tensor([c])}" for n in "wbmv")]
    t, p = tensor([-1, hw, hw, c]), tensor([c])
    body = [
        f"%cat = nn.cat %x, {', '.join(f'%p{k}' for k in range(count))} {{axis = 3 : i64}} "
        f": ({', '.join([tensor([-1, hw, hw, c0]), *pieces])}) -> {t}",
        f"%bn = nn.batch_norm %cat weight %w bias %b mean %m var %v "
        f'{{eps = 1.0e-5 : f64, layout = "NHWC"}} : ({t}, {p}, {p}, {p}, {p}) -> {t}',
        f"%r = nn.relu %bn : {t} -> {t}",
    ]
    return (f"func.func @f({', '.join(args)}) -> {t} {{\n  " + "\n  ".join(body)
            + f"\n  func.return %r : {t}\n}}")


def rand(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 2).astype(np.float32)


def lowered(text: str):
    module = parse_module(text)
    ctx = make_context()
    for p in default_passes(lower=False):
        p.apply(ctx, module)
    return module


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("c0", "width", "count"), [(37, 16, 2), (24, 32, 3), (13, 16, 6)])
def test_cat_reads_like_inputs_through_pieces(batch: int, c0: int, width: int, count: int) -> None:
    text = cat_bn_relu(c0, width, count)
    module = lowered(text)
    (pieces,) = [op for op in module.walk() if isinstance(op, loop.PiecesOp)]
    assert len(pieces.pieces) == count
    graph = compile_graph(parse_module(text))
    x = rand(batch, 5, 5, c0)
    ps = [rand(batch, 5, 5, width) for _ in range(count)]
    x[0, 1, 2, 3] = np.nan
    ps[-1][0, 0, 0, width - 1] = np.inf
    ps[0][-1, 4, 4, 0] = -np.inf
    c = c0 + width * count
    w, b, m = rand(c), rand(c), rand(c)
    v = np.abs(rand(c)) + 0.1
    (out,) = graph(x, *ps, w, b, m, v)
    cat = torch.from_numpy(np.concatenate([x, *ps], 3)).permute(0, 3, 1, 2)
    ref = F.relu(F.batch_norm(cat, *map(torch.from_numpy, (m, v, w, b)), False, 0.0, 1e-5))
    ref = ref.permute(0, 2, 3, 1).numpy()
    out = np.asarray(out)
    finite = np.isfinite(ref)
    assert (~finite).any() and np.isnan(ref).any()
    np.testing.assert_array_equal(out[~finite], ref[~finite])  # NaN and Inf where PyTorch has them
    scale = max(1.0, float(np.abs(ref[finite]).max()))
    assert np.abs(out[finite] - ref[finite]).max() <= 1e-5 * scale


def test_pieces_of_any_count_share_phase_functions() -> None:
    """Stacks that differ only in how many like pieces their cat has compile
    to the same phase functions."""
    texts = "\n".join(cat_bn_relu(24, 32, n).replace("@f(", f"@f{n}(") for n in (3, 5, 8))
    module = parse_module(texts)
    ctx = make_context()
    for p in default_passes():
        p.apply(ctx, module)
    funcs = [op for op in module.ops if isinstance(op, llvm.FuncOp) and op.body.blocks]
    infos = [op for op in module.ops if isinstance(op, loop.KernelInfoOp)]
    assert len(infos) == 3
    assert len(funcs) == len(infos[0].phases)  # one stack's functions serve all three


def kernel(body: str, out: int, width: int = 16, count: int = 3) -> str:
    pieces = ", ".join(f"%p{k}: memref<?x3x{width}xf32>" for k in range(count))
    names = ", ".join(f"%p{k}" for k in range(count))
    types = ", ".join([f"memref<?x3x{width}xf32>"] * count)
    return f"""func.func @k({pieces}, %y: memref<?x3x{out}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %p0, %c0 : memref<?x3x{width}xf32>
  %t = loop.pieces {names} : {types} -> memref<?x3x{width * count}xf32>
{body}
  func.return
}}"""


def run(text: str, batch: int, out: int, count: int = 3, generic: bool = True
        ) -> tuple[np.ndarray, np.ndarray]:
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    module = parse_module(text)
    LowerToLLVMPass(generic=generic).apply(make_context(), module)
    ps = [rand(batch, 3, 16) for _ in range(count)]
    ps[1][0, 2, 15] = np.nan
    y = np.full((batch, 3, out), -1.0, np.float32)
    compile_kernels(module, X86Backend())["k"]([*ps, y])
    return y, np.concatenate(ps, 2)


@pytest.mark.parametrize("generic", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_chunks_that_straddle_two_pieces(batch: int, generic: bool) -> None:
    """Lane chunks at 5, 21 and 37 (a masked tail) cross the pieces' edges at
    16 and 32 (in phases generic over extents, and with extents built in)."""
    body = """  loop.nest parallel 2 (%i, %j) = (0, 0) to (%n, 3) {
    simd.loop (%w) = (0) to (40) {
      %v = simd.load %t[%i, %j, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 + 5)> : memref<?x3x48xf32>
      simd.store %v, %y[%i, %j, %w] : memref<?x3x40xf32>
    }
  }"""
    y, cat = run(kernel(body, 40), batch, 40, generic=generic)
    np.testing.assert_array_equal(y, cat[:, :, 5:45])


@pytest.mark.parametrize("batch", [1, 3])
def test_strided_lanes_and_padded_scalar_reads(batch: int) -> None:
    """Lanes two channels apart (a gather across pieces), and scalar loads one
    row up with a pad value where that row is outside."""
    body = """  loop.nest parallel 2 (%i, %j) = (0, 0) to (%n, 3) {
    simd.loop (%w) = (0) to (24) {
      %v = simd.load %t[%i, %j, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 * 2)> : memref<?x3x48xf32>
      simd.store %v, %y[%i, %j, %w] : memref<?x3x72xf32>
    }
  }
  loop.nest parallel 2 (%i, %j, %c) = (0, 0, 0) to (%n, 3, 48) {
    %v = loop.load %t[%i, %j, %c] map affine_map<(d0, d1, d2) -> (d0, d1 - 1, d2)> pad 7.000000e+00 : f32 : memref<?x3x48xf32>
    loop.store %v, %y[%i, %j, %c] map affine_map<(d0, d1, d2) -> (d0, d1, d2 + 24)> : f32, memref<?x3x72xf32>
  }"""
    y, cat = run(kernel(body, 72), batch, 72)
    np.testing.assert_array_equal(y[:, :, :24], cat[:, :, ::2])
    up = np.concatenate([np.full_like(cat[:, :1], 7.0), cat[:, :-1]], 1)
    np.testing.assert_array_equal(y[:, :, 24:], up)

"""bs-lane-blocks: reductions across rows read V adjacent vectors per step.
Each lane sums the same points in the same order, so the compiled stacks give
bit-identical results with and without the pass (NaN included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainslug.dialects import simd
from brainslug.ir.context import make_context, parse_module
from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
from brainslug.passes.lane_blocks import LaneBlocksPass
from brainslug.pipeline.default import default_passes
from brainslug.testing.executor import compile_graph

H, W = 13, 11
RNG = np.random.default_rng(7)


def t(*shape: int) -> str:
    return "tensor<" + "x".join("?" if d < 0 else str(d) for d in shape) + "xf32>"


def se_squeeze(c: int) -> str:
    """BN, SiLU and the global mean of an SE block, channels-last: two outputs."""
    x, p, g = t(-1, H, W, c), t(c), t(-1, 1, 1, c)
    return f"""func.func @f(%x: {x}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> ({x}, {g}) {{
      %y = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "NHWC"}} : ({x}, {p}, {p}, {p}, {p}) -> {x}
      %s = nn.silu %y : {x} -> {x}
      %q = nn.adaptive_avg_pool2d %s {{output_size = array<i64: 1, 1>, layout = "NHWC"}} : {x} -> {g}
      func.return %s, %q : {x}, {g}
    }}"""


def max_pool(c: int) -> str:
    x, y = t(-1, H, W, c), t(-1, 6, 5, c)
    return f"""func.func @f(%x: {x}) -> {y} {{
      %y = nn.max_pool2d %x {{kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"}} : {x} -> {y}
      func.return %y : {y}
    }}"""


def compiled(text: str, lane_blocks: bool):
    """The compiled graph of `text`, and the vectors of its lane loops."""
    module, ctx = parse_module(text), make_context()
    for p in default_passes(lower=False):
        if lane_blocks or not isinstance(p, LaneBlocksPass):
            p.apply(ctx, module)
    vectors = [op.num_vectors for op in module.walk() if isinstance(op, simd.LoopOp)]
    return compile_graph(module, passes=[LowerToLLVMPass()]), vectors


def nhwc(a: torch.Tensor) -> np.ndarray:
    return a.permute(0, 2, 3, 1).contiguous().numpy()


@pytest.mark.parametrize("c", [83, 150])
@pytest.mark.parametrize("batch", [1, 3])
def test_se_squeeze_is_unchanged(c: int, batch: int) -> None:
    x = (RNG.standard_normal((batch, H, W, c)) * 3).astype(np.float32)
    x.flat[::2111] = np.nan
    x.flat[5::3889] = np.inf
    w, b, m = (RNG.standard_normal(c).astype(np.float32) for _ in range(3))
    v = RNG.uniform(0.5, 2, c).astype(np.float32)
    outs = {}
    for on in (True, False):
        graph, vectors = compiled(se_squeeze(c), on)
        assert (max(vectors) > 1) == on, vectors
        outs[on] = [np.asarray(o) for o in graph(x, w, b, m, v)]
    for blocked, plain in zip(outs[True], outs[False], strict=True):
        np.testing.assert_array_equal(blocked, plain)  # bit for bit, NaN where NaN
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)
    s = F.silu(F.batch_norm(tx, *map(torch.from_numpy, (m, v, w, b)), eps=1e-5))
    ref = nhwc(F.adaptive_avg_pool2d(s, 1))
    got = outs[True][1]
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    fin = np.isfinite(ref)
    assert np.abs(got[fin] - ref[fin]).max() <= 1e-5 * max(1.0, np.abs(ref[fin]).max())


@pytest.mark.parametrize("batch", [1, 2])
def test_max_pool_is_unchanged(batch: int) -> None:
    c = 83
    x = RNG.standard_normal((batch, H, W, c)).astype(np.float32)
    x.flat[::97] = np.nan
    outs = {}
    for on in (True, False):
        graph, vectors = compiled(max_pool(c), on)
        assert (max(vectors) > 1) == on, vectors
        (outs[on],) = [np.asarray(o) for o in graph(x)]
    np.testing.assert_array_equal(outs[True], outs[False])
    ref = nhwc(F.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 3, 2))
    np.testing.assert_array_equal(outs[True], ref)

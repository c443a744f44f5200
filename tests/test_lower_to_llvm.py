"""bs-lower-to-llvm + JIT: hand-written loop/simd kernels against numpy/torch."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects import llvm
from xdsl.dialects.builtin import ModuleOp

from brainslug.dialects import loop
from brainslug.dialects.loop import Loop
from brainslug.dialects.simd import SIMD
from brainslug.ir.context import parse_module, upstream_dialects
from brainslug.lowering.backends.x86 import X86Backend, lanes_for
from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
from brainslug.runtime.jit import PhaseFn, compile_kernels
from brainslug.runtime.threads import NativePool, ThreadPool, native_pool_supported

torch = pytest.importorskip("torch")

NEG_INF = "0xFF800000 : f32"


def make_ctx() -> Context:
    ctx = Context()
    for d in (*upstream_dialects(), Loop, SIMD):
        ctx.load_dialect(d)
    return ctx


def lower(src: str, cpu: str = "host") -> ModuleOp:
    ctx = make_ctx()
    module = parse_module(src, ctx=ctx)
    LowerToLLVMPass(cpu=cpu).apply(ctx, module)
    module.verify()
    return module


def jit(src: str, threads: int = 1):
    return compile_kernels(lower(src), pool=ThreadPool(threads))


@pytest.fixture(scope="module", params=["python", "native"])
def pool2(request):
    """A two-thread pool of each kind."""
    if request.param == "native" and not native_pool_supported():
        pytest.skip("native pool needs Linux x86-64")
    pool = ThreadPool(2) if request.param == "python" else NativePool(2)
    yield pool
    pool.shutdown()


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------- elementwise

SCALAR_AXPB = """
func.func @axpb(%x: memref<?x5x7xf32>, %y: memref<?x5x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x5x7xf32>
  %a = arith.constant 1.5 : f32
  %b = arith.constant -0.25 : f32
  loop.nest parallel 1 (%i, %c, %w) = (0, 0, 0) to (%n, 5, 7) {
    %v = loop.load %x[%i, %c, %w] : memref<?x5x7xf32>
    %m = arith.mulf %v, %a : f32
    %s = arith.addf %m, %b : f32
    %d = arith.divf %s, %v : f32
    %r = arith.subf %d, %v : f32
    loop.store %r, %y[%i, %c, %w] : f32, memref<?x5x7xf32>
  }
  func.return
}
"""


@pytest.mark.parametrize("batch", [1, 3])
def test_scalar_elementwise_dynamic_batch(batch: int):
    k = jit(SCALAR_AXPB)["axpb"]
    x = rand(batch, 5, 7)
    y = np.full_like(x, np.nan)
    k([x, y])
    ref = ((x * np.float32(1.5) + np.float32(-0.25)) / x) - x
    np.testing.assert_array_equal(y, ref)  # bit-exact: no fma, no fast-math


VEC_AFFINE = """
func.func @vaxpb(%x: memref<?x37x{W}xf32>, %y: memref<?x37x{W}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x37x{W}xf32>
  %a = arith.constant 1.5 : f32
  %b = arith.constant -0.25 : f32
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, 37) {{
    %av = simd.splat %a : f32
    %bv = simd.splat %b : f32
    simd.loop (%w) = (0) to ({W}) {{
      %v = simd.load %x[%i, %c, %w] : memref<?x37x{W}xf32>
      %m = simd.mulf %v, %av : !simd.vec<f32>
      %s = simd.addf %m, %bv : !simd.vec<f32>
      %z = simd.negf %s : !simd.vec<f32>
      simd.store %z, %y[%i, %c, %w] : memref<?x37x{W}xf32>
    }}
  }}
  func.return
}}
"""


@pytest.mark.parametrize("width", [13, 16, 50])
@pytest.mark.parametrize("batch", [1, 3])
def test_vector_elementwise_tails(width: int, batch: int):
    k = jit(VEC_AFFINE.format(W=width))["vaxpb"]
    x = rand(batch, 37, width)
    y = np.full_like(x, np.nan)
    k([x, y])
    np.testing.assert_array_equal(y, -(x * np.float32(1.5) + np.float32(-0.25)))


def test_tail_does_not_touch_memory_past_the_end():
    """Writes only inside the buffer: a view on a larger array keeps its guard zone."""
    k = jit(VEC_AFFINE.format(W=13))["vaxpb"]
    x = rand(1, 37, 13)
    big = np.full(37 * 13 + 64, 7.0, np.float32)
    y = big[: 37 * 13].reshape(1, 37, 13)
    k([x, y])
    assert np.all(big[37 * 13 :] == 7.0)


# ---------------------------------------------------------------------------- windows

POOL = """
func.func @pool(%x: memref<?x3x{H}x{W}xf32>, %y: memref<?x3x{HO}x{WO}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x3x{H}x{W}xf32>
  loop.nest parallel 1 (%i, %c, %h) = (0, 0, 0) to (%n, 3, {HO}) {{
    simd.loop (%w) = (0) to ({WO}) {{
      %r = loop.reduce {KIND} (%kh, %kw) = (0, 0) to ({K}, {K}) init {INIT} -> !simd.vec<f32> {{
        %v = simd.load %x[%i, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * {S} + d4 - {P}, d3 * {S} + d5 - {P})> pad {PAD} : memref<?x3x{H}x{W}xf32>
        loop.yield %v : !simd.vec<f32>
      }}
      {POST}
      simd.store %o, %y[%i, %c, %h, %w] : memref<?x3x{HO}x{WO}xf32>
    }}
  }}
  func.return
}}
"""


def pool_kernel(kind: str, h: int, w: int, k: int, s: int, p: int) -> tuple[str, int, int]:
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if kind == "max":
        init, pad, post = NEG_INF, NEG_INF, "%o = simd.addf %r, %r : !simd.vec<f32>"
        post = "%z = arith.constant 1.0 : f32\n      %zv = simd.splat %z : f32\n      %o = simd.mulf %r, %zv : !simd.vec<f32>"
    else:
        init, pad = "0.0 : f32", "0.0 : f32"
        post = (
            f"%d = arith.constant {float(k * k)} : f32\n      %dv = simd.splat %d : f32\n"
            "      %o = simd.divf %r, %dv : !simd.vec<f32>"
        )
    src = POOL.format(
        H=h, W=w, HO=ho, WO=wo, K=k, S=s, P=p, KIND=kind, INIT=init, PAD=pad, POST=post
    )
    return src, ho, wo


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_padded_max_pool(stride: int, batch: int):
    src, ho, wo = pool_kernel("max", 11, 37, 3, stride, 1)
    k = jit(src)["pool"]
    x = rand(batch, 3, 11, 37)
    y = np.zeros((batch, 3, ho, wo), np.float32)
    k([x, y])
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, stride, 1).numpy()
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("stride", [1, 2])
def test_padded_avg_pool(stride: int):
    src, ho, wo = pool_kernel("add", 11, 37, 3, stride, 1)
    k = jit(src)["pool"]
    x = rand(2, 3, 11, 37)
    y = np.zeros((2, 3, ho, wo), np.float32)
    k([x, y])
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 3, stride, 1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-7)


def test_max_pool_propagates_nan():
    src, ho, wo = pool_kernel("max", 11, 37, 3, 2, 1)
    k = jit(src)["pool"]
    x = rand(1, 3, 11, 37)
    x[0, 0, 4, 5] = np.nan
    x[0, 2, 0, 0] = np.nan
    x[0, 1, 10, 36] = np.nan
    y = np.zeros((1, 3, ho, wo), np.float32)
    k([x, y])
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    assert np.isnan(ref).sum() > 3
    np.testing.assert_array_equal(y, ref)


SCALAR_MAXPOOL = """
func.func @smax(%x: memref<?x2x9x10xf32>, %y: memref<?x2x5x5xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x2x9x10xf32>
  loop.nest parallel 2 (%i, %c, %h, %w) = (0, 0, 0, 0) to (%n, 2, 5, 5) {
    %r = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %v = loop.load %x[%i, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x2x9x10xf32>
      loop.yield %v : f32
    }
    loop.store %r, %y[%i, %c, %h, %w] : f32, memref<?x2x5x5xf32>
  }
  func.return
}
"""


def test_scalar_padded_max_pool_with_nan():
    k = jit(SCALAR_MAXPOOL)["smax"]
    x = rand(3, 2, 9, 10)
    x[1, 1, 3, 3] = np.nan
    y = np.zeros((3, 2, 5, 5), np.float32)
    k([x, y])
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    np.testing.assert_array_equal(y, ref)


STRIDED = """
func.func @pair_max(%x: memref<?x5x27xf32>, %y: memref<?x5x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x5x27xf32>
  loop.nest parallel 1 (%i, %c) = (0, 0) to (%n, 5) {
    simd.loop (%w) = (0) to (13) {
      %a = simd.load %x[%i, %c, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 * 2)> : memref<?x5x27xf32>
      %b = simd.load %x[%i, %c, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 * 2 + 1)> : memref<?x5x27xf32>
      %gt = simd.cmpf "ogt" %b, %a : !simd.vec<f32>
      %m = simd.select %gt, %b, %a : !simd.vec<f32>
      simd.store %m, %y[%i, %c, %w] : memref<?x5x13xf32>
    }
  }
  func.return
}
"""


def test_strided_load_gathers():
    module = lower(STRIDED)
    assert any(
        isinstance(op, llvm.CallOp) and op.callee.string_value().startswith("bs.gather")
        for op in module.walk()
    )
    k = compile_kernels(module, pool=ThreadPool(1))["pair_max"]
    x = rand(2, 5, 27)
    y = np.zeros((2, 5, 13), np.float32)
    k([x, y])
    np.testing.assert_array_equal(y, np.maximum(x[:, :, 0:26:2], x[:, :, 1:27:2]))


TRANSPOSE = """
func.func @transpose(%x: memref<19x21xf32>, %y: memref<21x19xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%i) = (0) to (21) {
    simd.loop (%j) = (0) to (19) {
      %v = simd.load %x[%i, %j] map affine_map<(d0, d1) -> (d1, d0)> : memref<19x21xf32>
      simd.store %v, %y[%j, %i] map affine_map<(d0, d1) -> (d1, d0)> : memref<21x19xf32>
    }
  }
  func.return
}
"""


def test_gather_scatter_transposed():
    """The lane iv in a non-last result: gather; a store through the same map: scatter."""
    k = jit(TRANSPOSE)["transpose"]
    x = rand(19, 21)
    y = np.zeros((21, 19), np.float32)
    k([x, y])
    np.testing.assert_array_equal(y, x.T)


# ---------------------------------------------------------------------------- bounds, index maps

IN_BOUNDS = """
func.func @shift(%x: memref<?x13xf32>, %y: memref<?x13xf32>, %z: memref<?x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x13xf32>
  %m1 = arith.constant -1.0 : f32
  loop.nest parallel 1 (%i) = (0) to (%n) {
    %mv = simd.splat %m1 : f32
    simd.loop (%w) = (0) to (13) {
      %ok = simd.in_bounds [%i, %w] map affine_map<(d0, d1) -> (d0, d1 - 3)> within (%n, 13)
      %v = simd.load %x[%i, %w] map affine_map<(d0, d1) -> (d0, d1 - 3)> pad 5.0 : f32 : memref<?x13xf32>
      %r = simd.select %ok, %v, %mv : !simd.vec<f32>
      simd.store %r, %y[%i, %w] : memref<?x13xf32>
    }
  }
  loop.nest (%i, %w) = (0, 0) to (%n, 13) {
    %ok = loop.in_bounds [%i, %w] map affine_map<(d0, d1) -> (d0, d1 + 4)> within (%n, 13)
    %v = loop.load %x[%i, %w] map affine_map<(d0, d1) -> (d0, d1 + 4)> pad 5.0 : f32 : memref<?x13xf32>
    %r = arith.select %ok, %v, %m1 : f32
    loop.store %r, %z[%i, %w] : f32, memref<?x13xf32>
  }
  func.return
}
"""


def test_in_bounds_and_padded_shift():
    k = jit(IN_BOUNDS)["shift"]
    assert k.phase_names == ["shift_p0", "shift_p1"]
    x = rand(3, 13)
    y, z = np.zeros_like(x), np.zeros_like(x)
    k([x, y, z])
    ry = np.full_like(x, -1.0)
    ry[:, 3:] = x[:, :10]
    rz = np.full_like(x, -1.0)
    rz[:, :9] = x[:, 4:]
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(z, rz)


FLOOR_MOD = """
func.func @floormod(%x: memref<4xf32>, %y: memref<2x14xf32>, %z: memref<2x14xf32>) attributes {bs.kernel} {
  loop.nest (%w) = (0) to (14) {
    %a = loop.load %x[%w] map affine_map<(d0) -> ((d0 - 6) mod 4)> : memref<4xf32>
    %b = loop.load %x[%w] map affine_map<(d0) -> ((d0 - 6) floordiv 4 + 2)> : memref<4xf32>
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    loop.store %a, %y[%c0, %w] : f32, memref<2x14xf32>
    loop.store %b, %y[%c1, %w] : f32, memref<2x14xf32>
  }
  loop.nest (%r) = (0) to (1) {
    simd.loop (%w) = (0) to (14) {
      %a = simd.load %x[%w] map affine_map<(d0) -> ((d0 - 6) mod 4)> : memref<4xf32>
      %b = simd.load %x[%w] map affine_map<(d0) -> ((d0 - 6) floordiv 4 + 2)> : memref<4xf32>
      simd.store %a, %z[%r, %w] : memref<2x14xf32>
      simd.store %b, %z[%r, %w] map affine_map<(d0, d1) -> (d0 + 1, d1)> : memref<2x14xf32>
    }
  }
  func.return
}
"""


def test_floordiv_mod_negative():
    k = jit(FLOOR_MOD)["floormod"]
    x = np.array([10, 11, 12, 13], np.float32)
    y, z = np.zeros((2, 14), np.float32), np.zeros((2, 14), np.float32)
    k([x, y, z])
    w = np.arange(14)
    ref = np.stack([x[(w - 6) % 4], x[(w - 6) // 4 + 2]])
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(z, ref)


IOTA_REDUCE = """
func.func @lanes(%x: memref<?x13xf32>, %s: memref<?x3xf32>, %io: memref<?x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %n = memref.dim %x, %c0 : memref<?x13xf32>
  loop.nest parallel 1 (%i) = (0) to (%n) {
    simd.loop (%w) = (0) to (13) {
      %v = simd.load %x[%i, %w] : memref<?x13xf32>
      %sum = simd.reduce "add" %v : !simd.vec<f32>
      %max = simd.reduce "max" %v : !simd.vec<f32>
      loop.store %sum, %s[%i, %c0] : f32, memref<?x3xf32>
      loop.store %max, %s[%i, %c1] : f32, memref<?x3xf32>
      %ix = simd.iota %w : !simd.vec<index>
      %three = arith.constant 3 : index
      %tv = simd.splat %three : index
      %q = simd.floordivsi %ix, %tv : !simd.vec<index>
      %mn = simd.minsi %q, %tv : !simd.vec<index>
      %f = simd.sitofp %mn : !simd.vec<index> -> !simd.vec<f32>
      simd.store %f, %io[%i, %w] : memref<?x13xf32>
      %cnt = arith.index_cast %w : index to i32
      %cf = arith.sitofp %cnt : i32 to f32
      loop.store %cf, %s[%i, %c2] : f32, memref<?x3xf32>
    }
  }
  func.return
}
"""


def test_lane_reduce_iota_sitofp():
    k = jit(IOTA_REDUCE)["lanes"]
    x = rand(2, 13)
    s, io = np.zeros((2, 3), np.float32), np.zeros((2, 13), np.float32)
    k([x, s, io])
    seq = np.zeros(2, np.float32)
    for j in range(13):
        seq += x[:, j]
    np.testing.assert_array_equal(s[:, 0], seq)
    np.testing.assert_array_equal(s[:, 1], x.max(axis=1))
    np.testing.assert_array_equal(s[:, 2], 0.0)
    np.testing.assert_array_equal(io, np.minimum(np.arange(13) // 3, 3)[None].repeat(2, 0))


# ---------------------------------------------------------------------------- math

MATH = """
func.func @math(%x: memref<?x29xf32>, %y: memref<4x?x29xf32>, %z: memref<4x?x29xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x29xf32>
  loop.nest parallel 1 (%i) = (0) to (%n) {
    simd.loop (%w) = (0) to (29) {
      %v = simd.load %x[%i, %w] : memref<?x29xf32>
      %e = simd.math "exp" %v : !simd.vec<f32>
      %t = simd.math "tanh" %v : !simd.vec<f32>
      %r = simd.math "erf" %v : !simd.vec<f32>
      %a = simd.mulf %v, %v : !simd.vec<f32>
      %s = simd.math "sqrt" %a : !simd.vec<f32>
      %c0v = arith.constant 0 : index
      %c1v = arith.constant 1 : index
      %c2v = arith.constant 2 : index
      %c3v = arith.constant 3 : index
      simd.store %e, %y[%c0v, %i, %w] : memref<4x?x29xf32>
      simd.store %t, %y[%c1v, %i, %w] : memref<4x?x29xf32>
      simd.store %r, %y[%c2v, %i, %w] : memref<4x?x29xf32>
      simd.store %s, %y[%c3v, %i, %w] : memref<4x?x29xf32>
    }
  }
  loop.nest parallel 1 (%i, %w) = (0, 0) to (%n, 29) {
    %v = loop.load %x[%i, %w] : memref<?x29xf32>
    %e = math.exp %v : f32
    %t = math.tanh %v : f32
    %r = math.erf %v : f32
    %a = arith.mulf %v, %v : f32
    %s = math.sqrt %a : f32
    %c0v = arith.constant 0 : index
    %c1v = arith.constant 1 : index
    %c2v = arith.constant 2 : index
    %c3v = arith.constant 3 : index
    loop.store %e, %z[%c0v, %i, %w] : f32, memref<4x?x29xf32>
    loop.store %t, %z[%c1v, %i, %w] : f32, memref<4x?x29xf32>
    loop.store %r, %z[%c2v, %i, %w] : f32, memref<4x?x29xf32>
    loop.store %s, %z[%c3v, %i, %w] : f32, memref<4x?x29xf32>
  }
  func.return
}
"""


def test_math_functions():
    k = jit(MATH)["math"]
    x = rand(3, 29) * 3
    y, z = np.zeros((4, 3, 29), np.float32), np.zeros((4, 3, 29), np.float32)
    k([x, y, z])
    t = torch.from_numpy(x)
    refs = [torch.exp(t), torch.tanh(t), torch.erf(t), torch.sqrt(t * t)]
    for got in (y, z):
        for j, ref in enumerate(refs):
            np.testing.assert_allclose(got[j], ref.numpy(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- phases, threads

PARALLEL = """
func.func @scale(%x: memref<?x64x40x40xf32>, %y: memref<?x64x40x40xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x64x40x40xf32>
  %two = arith.constant 2.0 : f32
  loop.nest parallel 3 (%i, %c, %h) = (0, 0, 0) to (%n, 64, 40) {
    %tv = simd.splat %two : f32
    simd.loop (%w) = (0) to (40) {
      %v = simd.load %x[%i, %c, %h, %w] : memref<?x64x40x40xf32>
      %r = simd.mulf %v, %tv : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %h, %w] : memref<?x64x40x40xf32>
    }
  }
  func.return
}
"""


def test_parallel_nest_two_threads(pool2):
    ck = compile_kernels(lower(PARALLEL), pool=pool2)
    k = ck["scale"]
    assert k.work == [64 * 40 * 40]
    x = rand(2, 64, 40, 40)
    y = np.zeros_like(x)
    k([x, y])
    np.testing.assert_array_equal(y, x * 2)
    # the static partition: thread 0 of 2 does the first half of the (n, c, h) rows
    y[:] = 0
    # the buffer slots, then the phase's constant parameter block
    slots = k.slots.copy()
    slots[:4] = [x.ctypes.data, 2, y.ctypes.data, 2]
    args = slots.ctypes.data + 8 * k.phase_offsets[0]
    k.phases[0](0, 2, args)
    rows = y.reshape(2 * 64 * 40, 40)
    half = 2 * 64 * 40 // 2
    np.testing.assert_array_equal(rows[:half], x.reshape(-1, 40)[:half] * 2)
    assert not rows[half:].any()
    k.phases[0](1, 2, args)
    np.testing.assert_array_equal(y, x * 2)


def test_torch_tensors_and_validation():
    k = compile_kernels(lower(PARALLEL), pool=ThreadPool(1))["scale"]
    x = torch.randn(1, 64, 40, 40)
    y = torch.empty_like(x)
    k([x, y])
    assert torch.equal(y, x * 2)
    with pytest.raises(ValueError, match="buffer 1"):
        k([x, torch.empty(1, 64, 40, 41)])
    with pytest.raises(ValueError, match="buffer 0"):
        k([x.double(), y])
    with pytest.raises(ValueError, match="buffer 0"):
        k([x.transpose(2, 3), y])


TWO_PHASE = """
func.func @twophase(%x: memref<?x3x11xf32>, %y: memref<?x3x11xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x3x11xf32>
  %t = memref.alloc(%n) : memref<?x3x11xf32>
  %two = arith.constant 2.0 : f32
  loop.nest parallel 1 (%i, %c, %w) = (0, 0, 0) to (%n, 3, 11) {
    %v = loop.load %x[%i, %c, %w] : memref<?x3x11xf32>
    %d = arith.mulf %v, %two : f32
    loop.store %d, %t[%i, %c, %w] : f32, memref<?x3x11xf32>
  }
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, 3) {
    simd.loop (%w) = (0) to (11) {
      %a = simd.load %t[%i, %c, %w] : memref<?x3x11xf32>
      %b = simd.load %t[%i, %c, %w] map affine_map<(d0, d1, d2) -> (d0, d1, 10 - d2)> : memref<?x3x11xf32>
      %s = simd.addf %a, %b : !simd.vec<f32>
      simd.store %s, %y[%i, %c, %w] : memref<?x3x11xf32>
    }
  }
  func.return
}
"""


@pytest.mark.parametrize("batch", [1, 3])
def test_two_phases_with_scratch(batch: int):
    module = lower(TWO_PHASE)
    (info,) = [op for op in module.ops if isinstance(op, loop.KernelInfoOp)]
    assert [p.data for p in info.phases] == ["twophase_p0", "twophase_p1"]
    assert len(info.buffers) == 3
    k = compile_kernels(module, pool=ThreadPool(2))["twophase"]
    assert k.scratch_shapes(None, batch) == [(batch, 3, 11)]
    x = rand(batch, 3, 11)
    y = np.zeros_like(x)
    k([x, y])  # the runner allocates the scratch buffer
    np.testing.assert_array_equal(y, 2 * x + 2 * x[:, :, ::-1])
    t = np.zeros_like(x)
    k([x, y, t])  # or the caller passes it
    np.testing.assert_array_equal(t, 2 * x)


TILED = """
func.func @tiled(%x: memref<?x3x11x13xf32>, %y: memref<?x3x11x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x3x11x13xf32>
  %one = arith.constant 1.0 : f32
  loop.tile parallel 2 (%i, %c, %h0) = (0, 0, 0) to (%n, 3, 11) step (1, 1, 4) {
    %t = memref.alloca() : memref<4x13xf32>
    %c4 = arith.constant 4 : index
    %c11 = arith.constant 11 : index
    %hx = arith.addi %h0, %c4 : index
    %h1 = arith.minsi %hx, %c11 : index
    loop.nest (%h, %w) = (%h0, 0) to (%h1, 13) {
      %v = loop.load %x[%i, %c, %h, %w] : memref<?x3x11x13xf32>
      %e = math.exp %v : f32
      %r = arith.subi %h, %h0 : index
      loop.store %e, %t[%r, %w] : f32, memref<4x13xf32>
    }
    loop.nest (%h) = (%h0) to (%h1) {
      %r = arith.subi %h, %h0 : index
      simd.loop (%w) = (0) to (13) {
        %e = simd.load %t[%r, %w] : memref<4x13xf32>
        %ov = simd.splat %one : f32
        %s = simd.addf %e, %ov : !simd.vec<f32>
        simd.store %s, %y[%i, %c, %h, %w] : memref<?x3x11x13xf32>
      }
    }
  }
  func.return
}
"""


def test_tile_with_alloca(pool2):
    k = compile_kernels(lower(TILED), pool=pool2)["tiled"]
    for batch_hint in (1, 1 << 20):  # serial, then forced onto both threads
        x = rand(3, 3, 11, 13, seed=batch_hint)
        y = np.zeros_like(x)
        k([x, y], batch_hint=batch_hint)
        np.testing.assert_allclose(y, np.exp(x) + 1, rtol=1e-6)


def test_pools_run_every_tid(pool2):
    lowered = lower(PARALLEL)
    k = compile_kernels(lowered, pool=pool2)["scale"]
    x = rand(4, 64, 40, 40)
    for _ in range(50):  # back-to-back runs: the workers must not miss one
        y = np.zeros_like(x)
        k([x, y])
        np.testing.assert_array_equal(y, x * 2)


def test_python_pool_reports_errors():
    pool = ThreadPool(2)
    seen: list[tuple[int, int]] = []

    def fn(tid: int, n: int) -> None:
        seen.append((tid, n))
        if tid == 1:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pool.run(fn, 2)
    assert sorted(seen) == [(0, 2), (1, 2)]
    pool.shutdown()


def test_printed_llvm_dialect_reparses_and_runs():
    text = str(lower(SCALAR_AXPB))
    module = parse_module(text, ctx=make_ctx())
    k = compile_kernels(module, pool=ThreadPool(1))["axpb"]
    x = rand(2, 5, 7)
    y = np.zeros_like(x)
    k([x, y])
    np.testing.assert_array_equal(y, ((x * np.float32(1.5) + np.float32(-0.25)) / x) - x)


# ---------------------------------------------------------------------------- targets


def test_lane_width_table():
    assert lanes_for("skylake-avx512") == 16
    assert lanes_for("znver3") == 8
    assert lanes_for("haswell") == 8
    assert lanes_for("x86-64") == 4
    assert lanes_for("whatever", "+sse2,+avx2") == 8


def test_avx512_ir_and_asm():
    module = lower(VEC_AFFINE.format(W=50), cpu="skylake-avx512")
    text = str(module)
    assert "vector<16xf32>" in text and 'target_cpu = "skylake-avx512"' in text
    backend = X86Backend("skylake-avx512")
    ir = backend.emit_llvm_ir(module)
    assert "<16 x float>" in ir
    assert '"min-legal-vector-width"="512"' in ir
    asm = backend.emit_asm(module)
    assert "zmm" in asm
    assert "vfmadd" not in asm  # no contraction of mul+add


def test_avx2_lanes():
    module = lower(VEC_AFFINE.format(W=50), cpu="haswell")
    asm = X86Backend("haswell").emit_asm(module)
    assert "ymm" in asm and "zmm" not in asm


def test_graph_functions_untouched():
    src = (
        """
func.func @graph(%a: tensor<2x5x7xf32>) -> tensor<2x5x7xf32> {
  %r = loop.launch @axpb(%a) : (tensor<2x5x7xf32>) -> tensor<2x5x7xf32>
  func.return %r : tensor<2x5x7xf32>
}
"""
        + SCALAR_AXPB
    )
    module = lower(src)
    names = [getattr(op, "sym_name", None) for op in module.ops]
    assert names[0] is not None and names[0].data == "graph"
    assert any(isinstance(op, loop.LaunchOp) for op in module.walk())
    assert not any(op.name == "func.func" and "bs.kernel" in op.attributes for op in module.ops)
    assert isinstance(PhaseFn, type)


GENERIC = """
func.func @generic(%x: memref<?x?x?xf32>, %y: memref<?x?x?xf32>, %s: memref<?x?xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %n = memref.dim %x, %c0 : memref<?x?x?xf32>
  %ch = memref.dim %x, %c1 : memref<?x?x?xf32>
  %w = memref.dim %x, %c2 : memref<?x?x?xf32>
  %half = arith.constant 0.5 : f32
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, %ch) {
    %hv = simd.splat %half : f32
    simd.loop (%j) = (0) to (%w) {
      %v = simd.load %x[%i, %c, %j] : memref<?x?x?xf32>
      %r = simd.mulf %v, %hv : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %j] : memref<?x?x?xf32>
    }
  }
  loop.tile parallel 2 (%i, %c0t) = (0, 0) to (%n, %ch) step (1, 4) {
    %c4 = arith.constant 4 : index
    %e = arith.addi %c0t, %c4 : index
    %c1t = arith.minsi %e, %ch : index
    loop.nest (%c) = (%c0t) to (%c1t) {
      %sum = loop.reduce add (%j) = (0) to (%w) init 0.0 : f32 -> f32 {
        %v = loop.load %x[%i, %c, %j] : memref<?x?x?xf32>
        loop.yield %v : f32
      }
      loop.store %sum, %s[%i, %c] : f32, memref<?x?xf32>
    }
  }
  func.return
}
"""


@pytest.mark.parametrize("shape", [(2, 5, 37), (1, 3, 16), (3, 9, 5), (1, 1, 1)])
def test_generic_extents(shape: tuple[int, int, int], pool2):
    """One kernel for every shape: dynamic extents in all dims, partial tiles."""
    k = compile_kernels(lower(GENERIC), pool=pool2)["generic"]
    for hint in (None, 1 << 20):
        x = rand(*shape)
        y, s = np.zeros_like(x), np.zeros(shape[:2], np.float32)
        k([x, y, s], batch_hint=hint)
        np.testing.assert_array_equal(y, x * np.float32(0.5))
        seq = np.zeros(shape[:2], np.float32)
        for j in range(shape[2]):
            seq += x[:, :, j]
        np.testing.assert_array_equal(s, seq)

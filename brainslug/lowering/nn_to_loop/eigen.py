"""TensorFlow's numerics where they differ from the plain formula (`impl = "eigen"`).

TensorFlow's CPU kernels are Eigen expressions, evaluated 8 floats (one AVX
packet) at a time with a scalar tail. `nn.sigmoid`/`nn.silu {impl = "eigen"}` use
Eigen's logistic (`eigen_logistic`, `eigen_logistic_scalar` in the tail) and
`nn.mean {impl = "eigen"}` sums in Eigen's order (`eigen_mean_sum`), so the
kernels match TensorFlow bit for bit.
"""

from __future__ import annotations

import math as pymath
import struct
from collections.abc import Sequence

from xdsl.dialects import arith, math
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineExpr, AffineMap

from brainslug.dialects import nn
from brainslug.lowering.nn_to_loop.builder import Emitter, Formula, cst, d


def _f32(v: float) -> float:
    """`v` rounded to float32 (the constants below are float32 literals in Eigen)."""
    return struct.unpack("f", struct.pack("f", v))[0]


EIGEN_LOGISTIC = {
    "exp_hi": _f32(16.6355324),
    "exp_lo": _f32(-104.0),
    "log2e": _f32(1.44269504088896341),
    "c1": _f32(-0.693359375),
    "c2": _f32(2.12194440e-4),
    "p2": _f32(0.49999141693115234375),
    "p3": _f32(0.16666877269744873046875),
    "p4": _f32(4.1898667812347412109375e-2),
    "p5": _f32(8.33471305668354034423828125e-3),
}
"""The float32 constants of Eigen's `scalar_logistic_op<float>::packetOp`."""

FLT_MIN = 2.0**-126
"""The smallest normal float32."""

_ROUND_MAGIC = 1.5 * 2.0**23
"""`(t + M) - M` is t rounded to the nearest integer (ties to even) for |t| < 2**22."""


def _floor_small(e: Emitter, t: SSAValue) -> SSAValue:
    """floor(t), exact for |t| < 2**22 (and NaN for NaN), in float ops only."""
    rn = e.sub(e.add(t, e.f(_ROUND_MAGIC)), e.f(_ROUND_MAGIC))
    return e.sub(rn, e.select(e.cmp("ogt", rn, t), e.f(1.0), e.f(0.0)))


def _exp2_small(e: Emitter, m: SSAValue) -> SSAValue:
    """2**m for an integer-valued m in [-75, 52], exactly, in float ops only: the
    bits of m + 75 pick factors 2**64, 2**32, ..., 2**1 of 2**-75."""
    k = e.add(m, e.f(75.0))
    v = e.f(2.0**-75)
    for bit in (64, 32, 16, 8, 4, 2, 1):
        c = e.cmp("oge", k, e.f(float(bit)))
        k = e.select(c, e.sub(k, e.f(float(bit))), k)
        v = e.select(c, e.mul(v, e.f(2.0**bit)), v)
    return v


def eigen_logistic(e: Emitter, x: SSAValue) -> SSAValue:
    """TensorFlow's CPU sigmoid for float32, bit for bit.

    TensorFlow's Sigmoid kernel is Eigen's `scalar_logistic_op<float>`
    (Eigen/src/Core/functors/UnaryFunctors.h); its `packetOp` computes, for x
    clamped to at most 16.6355324 and halved, exp(x/2) = 2**m * p(r) with
    m = floor(x/2 * log2(e) + 1/2), r = x/2 - m*ln 2 (Cephes' two-part ln 2) and a
    degree-5 polynomial p, then e = exp(x/2)**2 and e / (1 + e); x < -104 gives 0.
    The x86-64 wheel is built for AVX without FMA, so every `pmadd` is a multiply
    then an add, each rounded. TensorFlow runs kernels with denormals flushed to
    zero; here that is observable only at e*e (x below about -87.3), flushed the
    same way. 2**m (Eigen shifts m + 127 into the exponent bits) and floor use
    float ops only; both are exact over the range that reaches the result
    (m in [-75, 12]).

    Eigen evaluates the last `numel % 8` elements of a tensor with its scalar
    `operator()` instead (`eigen_logistic_scalar`; `lower_unary` selects it there).
    """
    c = EIGEN_LOGISTIC

    def madd(a: SSAValue, b: SSAValue, acc: SSAValue) -> SSAValue:
        return e.add(e.mul(a, b), acc)

    zero = e.cmp("olt", x, e.f(c["exp_lo"]))
    h = e.mul(e.min0(x, c["exp_hi"]), e.f(0.5))
    m = _floor_small(e, madd(h, e.f(c["log2e"]), e.f(0.5)))
    r = madd(m, e.f(c["c1"]), h)
    r = madd(m, e.f(c["c2"]), r)
    r2 = e.mul(r, r)
    p_even = madd(r2, e.f(c["p4"]), e.f(c["p2"]))
    p_odd = madd(r2, e.f(c["p5"]), e.f(c["p3"]))
    p_low = e.add(r, e.f(1.0))
    p = madd(r, p_odd, p_even)
    p = madd(r2, p, p_low)
    ex = e.mul(p, _exp2_small(e, m))
    ex = e.mul(ex, ex)
    ex = e.select(e.cmp("olt", ex, e.f(FLT_MIN)), e.f(0.0), ex)
    return e.select(zero, e.f(0.0), e.div(ex, e.add(e.f(1.0), ex)))


def eigen_logistic_scalar(e: Emitter, x: SSAValue) -> SSAValue:
    """Eigen's scalar `scalar_logistic_op<float>::operator()`, which TensorFlow
    runs on the last `numel % EIGEN_PACKET` elements of a tensor:
    `e = exp(min(x, 16.6355324))` (libm's expf, as LLVM's exp), `e / (1 + e)`,
    with a denormal e flushed to zero like TensorFlow's kernels do."""
    ex = e.emit(math.ExpOp(e.min0(x, EIGEN_LOGISTIC["exp_hi"])))
    ex = e.select(e.cmp("olt", ex, e.f(FLT_MIN)), e.f(0.0), ex)
    return e.div(ex, e.add(e.f(1.0), ex))


EIGEN_PACKET = 8
"""Floats per Eigen packet in TensorFlow's x86-64 build (AVX: `Packet8f`)."""

EIGEN_MEAN_MIN_POINTS = 16
"""TensorFlow's mean sums fewer points than this in order, whatever the output."""


def eigen_tail_formula(op: Operation) -> Formula | None:
    """The formula of a layer's elements in Eigen's scalar tail, where it differs."""
    if isinstance(op, nn.SigmoidOp) and op.impl_value == "eigen":
        return eigen_logistic_scalar
    if isinstance(op, nn.SiluOp) and op.impl_value == "eigen":
        return lambda e, x: e.mul(x, eigen_logistic_scalar(e, x))
    return None


def in_eigen_tail(e: Emitter, shape: Sequence[int], ivs: Sequence[SSAValue]) -> SSAValue | None:
    """i1: the point lies in the last `numel % EIGEN_PACKET` elements (row-major);
    None when numel is a multiple of EIGEN_PACKET whatever the batch."""
    inner = pymath.prod(shape[1:]) if shape else 1
    if shape and shape[0] < 0:
        if inner % EIGEN_PACKET == 0:
            return None
        numel = e.index(arith.MuliOp, e.kernel.extent(shape[0]), e.i(inner))
        start = e.index(arith.SubiOp, numel,
                        e.index(arith.RemSIOp, numel, e.i(EIGEN_PACKET)))
    else:
        numel = pymath.prod(shape)
        if numel % EIGEN_PACKET == 0:
            return None
        start = e.i(numel - numel % EIGEN_PACKET)
    flat = ivs[0] if ivs else e.i(0)
    for extent, iv in zip(shape[1:], ivs[1:], strict=True):
        flat = e.index(arith.AddiOp, e.index(arith.MuliOp, flat, e.i(extent)), iv)
    return e.emit(arith.CmpiOp(flat, start, "sge"))


def eigen_mean_sum(e: Emitter, op: nn.MeanOp | nn.SumOp, x: SSAValue, ivs: list[SSAValue],
                   in_order: SSAValue | None, kept: list[int], dims: list[int],
                   count: int) -> SSAValue:
    """The sum of TensorFlow's mean (`nn.mean {impl = "eigen"}`) at an output
    point: in a whole packet of 8 outputs (the flat output index o; the packet
    starts at b = o - o % 8, ends inside the output and inside one row of the
    innermost kept dim C), four partial sums over points j = 4q + r, added as
    ((s0 + s1) + s2) + s3, then the last count % 4 points in order (Eigen's
    InnerMostDimPreserver); elsewhere `in_order`, the sum in order."""
    in_shape = x.type.get_shape()
    rank = len(in_shape)
    keep = op.keepdim_value
    extents = [in_shape[k] for k in dims]
    n_out = len(ivs)

    def point(j: AffineExpr, num_dims: int) -> AffineMap:
        """x's index map over (ivs, q) for the reduced point j, row-major."""
        results, stride = {}, count
        for k, ext in zip(dims, extents, strict=True):
            stride //= ext
            results[k] = (j // stride) % ext if stride > 1 else j % ext
        out = [results[k] if k in dims else d(k if keep else kept.index(k)) for k in range(rank)]
        return AffineMap(num_dims, 0, tuple(out))

    def partial(k: int) -> SSAValue:
        m = point(d(n_out) * 4 + k, n_out + 1)
        return e.reduce("add", 0.0, [count // 4], lambda r, w: r.load(x, [*ivs, *w], m))

    parts = [partial(k) for k in range(4)]
    s = e.add(e.add(e.add(parts[0], parts[1]), parts[2]), parts[3])
    for j in range(4 * (count // 4), count):
        s = e.add(s, e.load(x, ivs, point(cst(j), n_out)))
    # o, the flat index of the output point over the kept dims, and the packet test
    kept_ivs = [ivs[k] for k in range(n_out) if not keep or k not in dims]
    kept_ext = [in_shape[k] for k in kept]
    inner = kept_ext[-1]
    if in_order is None:  # every packet is whole and inside one row (inner % 8 == 0)
        return s
    flat = kept_ivs[0]
    for ext, iv in zip(kept_ext[1:], kept_ivs[1:], strict=True):
        flat = e.index(arith.AddiOp, e.index(arith.MuliOp, flat, e.i(ext)), iv)
    start = e.index(arith.SubiOp, flat, e.index(arith.RemSIOp, flat, e.i(EIGEN_PACKET)))
    numel: SSAValue = e.i(pymath.prod(kept_ext[1:]))
    numel = e.index(arith.MuliOp, numel, e.i(kept_ext[0]) if kept_ext[0] >= 0
                    else e.kernel.extent(kept_ext[0]))
    whole = e.emit(arith.CmpiOp(e.index(arith.AddiOp, start, e.i(EIGEN_PACKET)), numel, "sle"))
    in_row = e.emit(arith.CmpiOp(e.index(arith.AddiOp, e.index(arith.RemSIOp, start, e.i(inner)),
                                         e.i(EIGEN_PACKET - 1)), e.i(inner), "slt"))
    return e.select(e.emit(arith.AndIOp(whole, in_row)), s, in_order)

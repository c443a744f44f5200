"""Lowering of the layers of one `nn.stack` into a kernel of `loop` nests.

Each layer becomes one or more `loop.nest`s writing a buffer: a kernel output
argument when the layer's result leaves the stack, else a `memref.alloc`.
4-D layers with a layout iterate in logical (N, C, H, W) order and reach memory
through the layout's affine map, so NHWC needs no transposes (bs-reorder then
moves C innermost). Every elementwise formula repeats the framework's own
operations in the framework's order (see DESIGN.md, "Exactness").
"""

from __future__ import annotations

import math as pymath
import struct
from collections.abc import Callable, Sequence

from xdsl.dialects import arith, func, math, memref
from xdsl.dialects.builtin import (
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    TensorType,
    UnitAttr,
    f32,
    i64,
)
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineConstantExpr, AffineDimExpr, AffineExpr, AffineMap

from brainslug.dialects import loop, nn

NEG_INF = float("-inf")


class UnsupportedLayer(Exception):
    """The layer has no loop lowering; the stack runs in the framework."""


def memref_of(t: TensorType) -> MemRefType:
    return MemRefType(t.element_type, t.get_shape())


def layout_map(layout: str | None, rank: int) -> AffineMap:
    """Logical (N, C, H, W) ivs to physical indices."""
    if layout == "NHWC" and rank == 4:
        return AffineMap(4, 0, (AffineDimExpr(0), AffineDimExpr(2), AffineDimExpr(3), AffineDimExpr(1)))
    return AffineMap.identity(rank)


def logical_shape(shape: Sequence[int], layout: str | None) -> list[int]:
    if layout == "NHWC" and len(shape) == 4:
        n, h, w, c = shape
        return [n, c, h, w]
    return list(shape)


def d(i: int) -> AffineExpr:
    return AffineDimExpr(i)


def cst(v: int) -> AffineExpr:
    return AffineConstantExpr(v)


class KernelBuilder:
    """Builds the kernel function of one stack."""

    def __init__(self, name: str, inputs: Sequence[TensorType], outputs: Sequence[TensorType]):
        arg_types = [memref_of(t) for t in (*inputs, *outputs)]
        self.block = Block(arg_types=arg_types)
        self.func = func.FuncOp(name, (arg_types, []), Region(self.block))
        self.func.attributes["bs.kernel"] = UnitAttr()
        self.inputs = list(self.block.args[: len(inputs)])
        self.outputs = list(self.block.args[len(inputs) :])
        for k, o in enumerate(self.outputs):
            o.name_hint = "out" if len(self.outputs) == 1 else f"out{k}"
        self.batch: SSAValue | None = None
        for a in self.block.args:
            if a.type.get_shape() and a.type.get_shape()[0] < 0:
                zero = self.top(arith.ConstantOp(IntegerAttr(0, IndexType())))
                self.batch = self.top(memref.DimOp(a, zero))
                self.batch.name_hint = "batch"
                break

    # ------------------------------------------------------------------ building

    def top(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # type: ignore[return-value]

    def extent(self, e: int) -> loop.Bound:
        if e >= 0:
            return e
        if self.batch is None:
            raise UnsupportedLayer("a dynamic extent other than the batch")
        return self.batch

    def alloc(self, t: TensorType | MemRefType, name: str | None = None) -> SSAValue:
        shape = t.get_shape()
        dyn = [self.extent(e) for e in shape if e < 0]
        mt = MemRefType(f32, shape)
        v = self.top(memref.AllocOp(dyn, [], mt))
        if name:
            v.name_hint = name
        return v

    def nest(self, extents: Sequence[int], body: Callable[[Emitter, list[SSAValue]], None]) -> None:
        upper = [self.extent(e) for e in extents]
        n = loop.NestOp([0] * len(upper), upper)
        names = "nchw" if len(upper) == 4 else "ijklmopq"
        for a, name in zip(n.body.block.args, names, strict=False):
            a.name_hint = name
        em = Emitter(n.body.block, self)
        body(em, list(n.body.block.args))
        em.emit(loop.YieldOp())
        self.block.add_op(n)

    def finish(self) -> func.FuncOp:
        self.block.add_op(func.ReturnOp())
        return self.func


class Emitter:
    """Appends scalar ops to a nest or reduce body."""

    def __init__(self, block: Block, kernel: KernelBuilder):
        self.block = block
        self.kernel = kernel

    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # type: ignore[return-value]

    def f(self, v: float) -> SSAValue:
        return self.emit(arith.ConstantOp(FloatAttr(v, f32)))

    def i(self, v: int) -> SSAValue:
        return self.emit(arith.ConstantOp(IntegerAttr(v, IndexType())))

    def load(self, buf: SSAValue, idx: Sequence[SSAValue], amap: AffineMap | None = None,
             pad: float | None = None) -> SSAValue:
        return self.emit(loop.LoadOp(buf, idx, amap, pad))

    def store(self, v: SSAValue, buf: SSAValue, idx: Sequence[SSAValue],
              amap: AffineMap | None = None) -> None:
        self.emit(loop.StoreOp(v, buf, idx, amap))

    def add(self, a, b):
        return self.emit(arith.AddfOp(a, b))

    def sub(self, a, b):
        return self.emit(arith.SubfOp(a, b))

    def mul(self, a, b):
        return self.emit(arith.MulfOp(a, b))

    def div(self, a, b):
        return self.emit(arith.DivfOp(a, b))

    def cmp(self, pred: str, a, b):
        return self.emit(arith.CmpfOp(a, b, pred))

    def select(self, c, a, b):
        return self.emit(arith.SelectOp(c, a, b))

    def max0(self, x, lo: float):
        """x < lo ? lo : x (NaN stays NaN, like the frameworks' clamp)."""
        c = self.f(lo)
        return self.select(self.cmp("olt", x, c), c, x)

    def min0(self, x, hi: float):
        c = self.f(hi)
        return self.select(self.cmp("ogt", x, c), c, x)

    def reduce(self, kind: str, init: float, extents: Sequence[loop.Bound],
               body: Callable[[Emitter, list[SSAValue]], SSAValue],
               lower: Sequence[loop.Bound] | None = None) -> SSAValue:
        r = loop.ReduceOp(kind, init, list(lower or [0] * len(extents)), list(extents))
        for a, name in zip(r.body.block.args, ("kh", "kw", "k2", "k3"), strict=False):
            a.name_hint = name
        em = Emitter(r.body.block, self.kernel)
        v = body(em, list(r.body.block.args))
        em.emit(loop.YieldOp(v))
        return self.emit(r)

    def index(self, op_cls, a, b):
        return self.emit(op_cls(a, b))

    def to_f32(self, v: SSAValue) -> SSAValue:
        i = self.emit(arith.IndexCastOp(v, i64))
        return self.emit(arith.SIToFPOp(i, f32))


# ---------------------------------------------------------------------- elementwise


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


def eigen_tail_formula(op: Operation) -> Callable[[Emitter, SSAValue], SSAValue] | None:
    """The formula of a layer's elements in Eigen's scalar tail, where it differs."""
    if isinstance(op, nn.SigmoidOp) and op.impl_value == "eigen":
        return eigen_logistic_scalar
    if isinstance(op, nn.SiluOp) and op.impl_value == "eigen":
        return lambda e, x: e.mul(x, eigen_logistic_scalar(e, x))
    return None


def _in_eigen_tail(e: Emitter, shape: Sequence[int], ivs: Sequence[SSAValue]) -> SSAValue | None:
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


def unary_formula(op: Operation) -> Callable[[Emitter, SSAValue], SSAValue]:
    """The framework's formula for an elementwise unary layer."""
    if isinstance(op, nn.ReluOp):
        return lambda e, x: e.max0(x, 0.0)
    if isinstance(op, nn.ClampOp):
        lo, hi = op.min_value, op.max_value

        def clamp(e: Emitter, x: SSAValue) -> SSAValue:
            if lo is not None:
                x = e.max0(x, lo)
            if hi is not None:
                x = e.min0(x, hi)
            return x

        return clamp
    if isinstance(op, nn.LeakyReluOp):
        slope = op.negative_slope_value
        return lambda e, x: e.select(e.cmp("ogt", x, e.f(0.0)), x, e.mul(x, e.f(slope)))
    if isinstance(op, nn.SigmoidOp):
        if op.impl_value == "eigen":
            return eigen_logistic
        return lambda e, x: e.div(
            e.f(1.0), e.add(e.f(1.0), e.emit(math.ExpOp(e.emit(arith.NegfOp(x)))))
        )
    if isinstance(op, nn.TanhOp):
        return lambda e, x: e.emit(math.TanhOp(x))
    if isinstance(op, nn.SiluOp):
        if op.impl_value == "eigen":
            return lambda e, x: e.mul(x, eigen_logistic(e, x))
        return lambda e, x: e.div(x, e.add(e.f(1.0), e.emit(math.ExpOp(e.emit(arith.NegfOp(x))))))
    if isinstance(op, nn.HardswishOp):
        return lambda e, x: e.div(e.mul(x, e.min0(e.max0(e.add(x, e.f(3.0)), 0.0), 6.0)), e.f(6.0))
    if isinstance(op, nn.HardsigmoidOp):
        return lambda e, x: e.div(e.min0(e.max0(e.add(x, e.f(3.0)), 0.0), 6.0), e.f(6.0))
    if isinstance(op, nn.GeluOp):
        if op.approximate_value == "tanh":
            beta = pymath.sqrt(2.0) * (2.0 / pymath.sqrt(pymath.pi)) * 0.5
            kappa = 0.044715

            def gelu_tanh(e: Emitter, x: SSAValue) -> SSAValue:
                cube = e.mul(e.mul(x, x), x)
                inner = e.mul(e.f(beta), e.add(x, e.mul(e.f(kappa), cube)))
                t = e.emit(math.TanhOp(inner))
                return e.mul(e.mul(e.f(0.5), x), e.add(e.f(1.0), t))

            return gelu_tanh

        def gelu(e: Emitter, x: SSAValue) -> SSAValue:
            half = e.mul(x, e.f(0.5))
            erf = e.emit(math.ErfOp(e.mul(x, e.f(pymath.sqrt(0.5)))))
            return e.mul(half, e.add(e.f(1.0), erf))

        return gelu
    if isinstance(op, nn.DropoutOp | nn.IdentityOp):
        return lambda e, x: x
    raise UnsupportedLayer(f"{op.name} has no elementwise formula")


def broadcast_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> AffineMap:
    """Output ivs to the indices of a (numpy-)broadcast operand."""
    offset = len(out_shape) - len(in_shape)
    results = []
    for k, e in enumerate(in_shape):
        o = out_shape[k + offset]
        results.append(cst(0) if e == 1 and o != 1 else d(k + offset))
    return AffineMap(len(out_shape), 0, tuple(results))


def lower_unary(kb: KernelBuilder, op: Operation, x: SSAValue, out: SSAValue) -> None:
    formula = unary_formula(op)
    tail_formula = eigen_tail_formula(op)
    shape = out.type.get_shape()

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        v = e.load(x, ivs)
        y = formula(e, v)
        tail = None if tail_formula is None else _in_eigen_tail(e, shape, ivs)
        if tail is not None:
            y = e.select(tail, tail_formula(e, v), y)
        e.store(y, out, ivs)

    kb.nest(out.type.get_shape(), body)


def lower_binary(kb: KernelBuilder, op: nn.AddOp | nn.MulOp, a, b, out) -> None:
    shape = out.type.get_shape()
    ma = broadcast_map(a.type.get_shape(), shape)
    mb = broadcast_map(b.type.get_shape(), shape)

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        x, y = e.load(a, ivs, ma), e.load(b, ivs, mb)
        e.store(e.add(x, y) if isinstance(op, nn.AddOp) else e.mul(x, y), out, ivs)

    kb.nest(shape, body)


# ---------------------------------------------------------------------- batch norm


def lower_batch_norm(kb: KernelBuilder, op: nn.BatchNormOp, operands, out) -> None:
    """alpha = weight / sqrt(var + eps) and beta = bias - mean * alpha per channel
    (PyTorch's inference formula), then y = x * alpha + beta."""
    x = operands["input"]
    shape = x.type.get_shape()
    rank = len(shape)
    layout = op.layout_value if rank == 4 else None
    channels = logical_shape(shape, layout)[1]
    alpha = kb.alloc(MemRefType(f32, [channels]), "alpha")
    beta = kb.alloc(MemRefType(f32, [channels]), "beta")
    eps = op.eps_value

    def params(e: Emitter, ivs: list[SSAValue]) -> None:
        (c,) = ivs
        invstd = e.div(e.f(1.0), e.emit(math.SqrtOp(e.add(e.load(operands["running_var"], [c]),
                                                           e.f(eps)))))
        w = operands.get("weight")
        a = e.mul(invstd, e.load(w, [c]) if w is not None else e.f(1.0))
        bias = operands.get("bias")
        bv = e.load(bias, [c]) if bias is not None else e.f(0.0)
        e.store(a, alpha, [c])
        e.store(e.sub(bv, e.mul(e.load(operands["running_mean"], [c]), a)), beta, [c])

    kb.nest([channels], params)
    pmap = layout_map(layout, rank)
    cmap = AffineMap(rank, 0, (d(1),))

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        v = e.load(x, ivs, pmap)
        y = e.add(e.mul(v, e.load(alpha, ivs, cmap)), e.load(beta, ivs, cmap))
        e.store(y, out, ivs, pmap)

    kb.nest(logical_shape(shape, layout), body)


# ---------------------------------------------------------------------- pooling


def window_map(layout: str, strides, padding, dilation) -> AffineMap:
    """(n, c, oh, ow, kh, kw) -> physical input index of a window element."""
    sh, sw = strides
    dh, dw = dilation
    h = d(2) * sh + d(4) * dh - padding[0]
    w = d(3) * sw + d(5) * dw - padding[1]
    if layout == "NHWC":
        return AffineMap(6, 0, (d(0), h, w, d(1)))
    return AffineMap(6, 0, (d(0), d(1), h, w))


def windows_leave_input(in_shape, out_shape, kernel, strides, padding, dilation) -> bool:
    """Whether some window element lies outside the input (then loads need a pad)."""
    if any(padding):
        return True
    for k in (0, 1):
        last = (out_shape[2 + k] - 1) * strides[k] + (kernel[k] - 1) * dilation[k]
        if last >= in_shape[2 + k]:
            return True
    return False


def lower_max_pool(kb: KernelBuilder, op: nn.MaxPool2dOp, x, out) -> None:
    layout = op.layout_value
    wmap = window_map(layout, op.strides_values, op.padding_values, op.dilation_values)
    kh, kw = op.kernel_values
    omap = layout_map(layout, 4)
    pad = NEG_INF if windows_leave_input(
        logical_shape(x.type.get_shape(), layout), logical_shape(out.type.get_shape(), layout),
        (kh, kw), op.strides_values, op.padding_values, op.dilation_values) else None

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        m = e.reduce("max", NEG_INF, [kh, kw],
                     lambda r, w: r.load(x, [*ivs, *w], wmap, pad=pad))
        e.store(m, out, ivs, omap)

    kb.nest(logical_shape(out.type.get_shape(), layout), body)


def lower_avg_pool(kb: KernelBuilder, op: nn.AvgPool2dOp, x, out) -> None:
    """PyTorch's avg_pool2d: window sum, then division by the window size
    (clipped to the padded input, or to the input without count_include_pad)."""
    layout = op.layout_value
    pt, pl, pb, pr = op.padding_values
    sh, sw = op.strides_values
    kh, kw = op.kernel_values
    wmap = window_map(layout, (sh, sw), (pt, pl), (1, 1))
    in_shape = logical_shape(x.type.get_shape(), layout)
    out_shape = logical_shape(out.type.get_shape(), layout)
    H, W = in_shape[2], in_shape[3]
    omap = layout_map(layout, 4)
    override = op.divisor_override_value
    # windows that never leave the padded input all have kh*kw elements
    fits = (out_shape[2] - 1) * sh + kh <= H + pt + pb and (out_shape[3] - 1) * sw + kw <= W + pl + pr
    constant = override if override else (kh * kw if fits and (
        op.count_include_pad_value or pt == pl == pb == pr == 0) else None)
    pad = 0.0 if windows_leave_input(in_shape, out_shape, (kh, kw), (sh, sw),
                                     (pt, pl, pb, pr), (1, 1)) else None

    def extent(e: Emitter, o: SSAValue, s: int, k: int, p_lo: int, p_hi: int, size: int):
        start = e.index(arith.SubiOp, e.index(arith.MuliOp, o, e.i(s)), e.i(p_lo))
        end = e.index(arith.MinSIOp, e.index(arith.AddiOp, start, e.i(k)), e.i(size + p_hi))
        if not op.count_include_pad_value:
            start = e.index(arith.MaxSIOp, start, e.i(0))
            end = e.index(arith.MinSIOp, end, e.i(size))
        return e.index(arith.SubiOp, end, start)

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        s = e.reduce("add", 0.0, [kh, kw], lambda r, w: r.load(x, [*ivs, *w], wmap, pad=pad))
        if constant is not None:
            div = e.f(float(constant))
        else:
            hh = extent(e, ivs[2], sh, kh, pt, pb, H)
            ww = extent(e, ivs[3], sw, kw, pl, pr, W)
            div = e.to_f32(e.index(arith.MuliOp, hh, ww))
        e.store(e.div(s, div), out, ivs, omap)

    kb.nest(out_shape, body)


def lower_adaptive_avg_pool(kb: KernelBuilder, op: nn.AdaptiveAvgPool2dOp, x, out) -> None:
    """PyTorch's adaptive_avg_pool2d; a 1x1 output is the mean over H and W."""
    layout = op.layout_value
    in_shape = logical_shape(x.type.get_shape(), layout)
    out_shape = logical_shape(out.type.get_shape(), layout)
    H, W = in_shape[2], in_shape[3]
    OH, OW = out_shape[2], out_shape[3]
    omap = layout_map(layout, 4)
    if H % OH == 0 and W % OW == 0:
        kh, kw = H // OH, W // OW
        wmap = window_map(layout, (kh, kw), (0, 0), (1, 1))

        def body(e: Emitter, ivs: list[SSAValue]) -> None:
            s = e.reduce("add", 0.0, [kh, kw], lambda r, w: r.load(x, [*ivs, *w], wmap))
            if OH == OW == 1:
                y = e.div(s, e.f(float(kh * kw)))
            else:
                y = e.div(e.div(s, e.f(float(kh))), e.f(float(kw)))
            e.store(y, out, ivs, omap)

        kb.nest(out_shape, body)
        return
    imap = layout_map(layout, 4)
    imap = AffineMap(6, 0, tuple(r.replace_dims_and_symbols([d(0), d(1), d(4), d(5)], [])
                                 for r in imap.results))

    def bounds(e: Emitter, o: SSAValue, size: int, osize: int):
        lo = e.index(arith.FloorDivSIOp, e.index(arith.MuliOp, o, e.i(size)), e.i(osize))
        o1 = e.index(arith.AddiOp, o, e.i(1))
        hi = e.index(arith.FloorDivSIOp,
                     e.index(arith.AddiOp, e.index(arith.MuliOp, o1, e.i(size)), e.i(osize - 1)),
                     e.i(osize))
        return lo, hi

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        h0, h1 = bounds(e, ivs[2], H, OH)
        w0, w1 = bounds(e, ivs[3], W, OW)
        s = e.reduce("add", 0.0, [h1, w1], lambda r, w: r.load(x, [*ivs, *w], imap),
                     lower=[h0, w0])
        kh = e.to_f32(e.index(arith.SubiOp, h1, h0))
        kw = e.to_f32(e.index(arith.SubiOp, w1, w0))
        e.store(e.div(e.div(s, kh), kw), out, ivs, omap)

    kb.nest(out_shape, body)


# ---------------------------------------------------------------------- reductions


def lower_mean(kb: KernelBuilder, op: nn.MeanOp, x, out) -> None:
    in_shape = x.type.get_shape()
    rank = len(in_shape)
    dims = sorted(k % rank for k in op.dims_values)
    keep = op.keepdim_value
    out_shape = out.type.get_shape()
    kept = [k for k in range(rank) if k not in dims]
    # input index k is: an output iv (kept dims) or a reduce iv (reduced dims)
    n_out = len(out_shape)
    results = []
    for k in range(rank):
        if k in dims:
            results.append(d(n_out + dims.index(k)))
        else:
            results.append(d(k if keep else kept.index(k)))
    imap = AffineMap(n_out + len(dims), 0, tuple(results))
    count = 1
    for k in dims:
        if in_shape[k] < 0:
            raise UnsupportedLayer("mean over the dynamic batch dimension")
        count *= in_shape[k]

    eigen = op.impl_value == "eigen" and count >= 16
    # with the innermost kept extent a multiple of 8, every output is in a whole
    # packet and TensorFlow never sums in order
    in_order = not eigen or in_shape[kept[-1]] % 8 != 0

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        s = e.reduce("add", 0.0, [in_shape[k] for k in dims],
                     lambda r, w: r.load(x, [*ivs, *w], imap)) if in_order else None
        if eigen:
            s = _eigen_mean_sum(e, op, x, ivs, s, kept, dims, count)
        assert s is not None
        e.store(e.div(s, e.f(float(count))), out, ivs)

    kb.nest(out_shape, body)


def _eigen_mean_sum(e: Emitter, op: nn.MeanOp, x: SSAValue, ivs: list[SSAValue],
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
    start = e.index(arith.SubiOp, flat, e.index(arith.RemSIOp, flat, e.i(8)))
    numel: SSAValue = e.i(pymath.prod(kept_ext[1:]))
    numel = e.index(arith.MuliOp, numel, e.i(kept_ext[0]) if kept_ext[0] >= 0
                    else e.kernel.extent(kept_ext[0]))
    whole = e.emit(arith.CmpiOp(e.index(arith.AddiOp, start, e.i(8)), numel, "sle"))
    in_row = e.emit(arith.CmpiOp(e.index(arith.AddiOp, e.index(arith.RemSIOp, start, e.i(inner)),
                                         e.i(7)), e.i(inner), "slt"))
    return e.select(e.emit(arith.AndIOp(whole, in_row)), s, in_order)


def lower_softmax(kb: KernelBuilder, op: nn.SoftmaxOp, x, out) -> None:
    """max, then sum of exp(x - max), then exp(x - max) * (1 / sum)."""
    shape = x.type.get_shape()
    rank = len(shape)
    axis = op.axis_value % rank
    if shape[axis] < 0:
        raise UnsupportedLayer("softmax over the dynamic batch dimension")
    red_shape = [1 if k == axis else e for k, e in enumerate(shape)]
    mx = kb.alloc(MemRefType(f32, red_shape), "max")
    sm = kb.alloc(MemRefType(f32, red_shape), "sum")
    # (ivs of red_shape, r) -> x index
    xmap = AffineMap(rank + 1, 0, tuple(d(rank) if k == axis else d(k) for k in range(rank)))
    rmap = AffineMap(rank, 0, tuple(cst(0) if k == axis else d(k) for k in range(rank)))

    def max_body(e: Emitter, ivs):
        e.store(e.reduce("max", NEG_INF, [shape[axis]], lambda r, w: r.load(x, [*ivs, *w], xmap)),
                mx, ivs)

    def sum_body(e: Emitter, ivs):
        m = e.load(mx, ivs)

        def term(r: Emitter, w):
            return r.emit(math.ExpOp(r.sub(r.load(x, [*ivs, *w], xmap), m)))

        e.store(e.reduce("add", 0.0, [shape[axis]], term), sm, ivs)

    def out_body(e: Emitter, ivs):
        ex = e.emit(math.ExpOp(e.sub(e.load(x, ivs), e.load(mx, ivs, rmap))))
        e.store(e.mul(ex, e.div(e.f(1.0), e.load(sm, ivs, rmap))), out, ivs)

    kb.nest(red_shape, max_body)
    kb.nest(red_shape, sum_body)
    kb.nest(shape, out_body)


# ---------------------------------------------------------------------- data movement


def lower_cat(kb: KernelBuilder, op: nn.CatOp, inputs: Sequence[SSAValue], out) -> None:
    """One copy nest per operand into its slab of the output (bs-fuse reads the
    operands in place instead, where it can)."""
    rank = len(out.type.get_shape())
    axis = op.axis_value
    offset = 0
    for x in inputs:
        shape = x.type.get_shape()
        omap = AffineMap(rank, 0, tuple(d(k) + offset if k == axis else d(k) for k in range(rank)))

        def body(e: Emitter, ivs, x=x, omap=omap) -> None:
            e.store(e.load(x, ivs), out, ivs, omap)

        kb.nest(shape, body)
        offset += shape[axis]


def reshape_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> AffineMap:
    """Output ivs to input indices of a row-major reshape that keeps dim 0."""
    if in_shape[0] != out_shape[0] or any(e < 0 for e in (*in_shape[1:], *out_shape[1:])):
        raise UnsupportedLayer("reshape must keep the batch dimension")
    flat: AffineExpr = cst(0)
    stride = 1
    for k in range(len(out_shape) - 1, 0, -1):
        flat = flat + d(k) * stride
        stride *= out_shape[k]
    results: list[AffineExpr] = [d(0)]
    strides = []
    s = 1
    for k in range(len(in_shape) - 1, 0, -1):
        strides.append(s)
        s *= in_shape[k]
    strides.reverse()
    for k in range(1, len(in_shape)):
        results.append((flat // strides[k - 1]) % in_shape[k])
    return AffineMap(len(out_shape), 0, tuple(results))


def lower_reshape(kb: KernelBuilder, x, out) -> None:
    m = reshape_map(x.type.get_shape(), out.type.get_shape())

    def body(e: Emitter, ivs) -> None:
        e.store(e.load(x, ivs, m), out, ivs)

    kb.nest(out.type.get_shape(), body)


def lower_copy(kb: KernelBuilder, x, out) -> None:
    def body(e: Emitter, ivs) -> None:
        e.store(e.load(x, ivs), out, ivs)

    kb.nest(out.type.get_shape(), body)


# ---------------------------------------------------------------------- compute layers


def lower_conv2d(kb: KernelBuilder, op: nn.Conv2dOp, x, w, bias, out) -> None:
    """Direct convolution as a reduction (correct, not fast: by default convolutions
    are library calls)."""
    layout = op.layout_value
    wshape = w.type.get_shape()
    if layout == "NHWC":
        kh, kw, cin_g, cout = wshape
    else:
        cout, cin_g, kh, kw = wshape
    groups = op.groups_value
    cout_g = cout // groups
    sh, sw = op.strides_values
    dh, dw = op.dilation_values
    pt, pl = op.padding_values[0], op.padding_values[1]
    # (n, o, oh, ow, i, kh, kw) -> input / weight indices
    ch = d(4)
    if groups > 1:
        ch = (d(1) // cout_g) * cin_g + d(4)
    hh = d(2) * sh + d(5) * dh - pt
    ww = d(3) * sw + d(6) * dw - pl
    if layout == "NHWC":
        xmap = AffineMap(7, 0, (d(0), hh, ww, ch))
        wmap = AffineMap(7, 0, (d(5), d(6), d(4), d(1)))
    else:
        xmap = AffineMap(7, 0, (d(0), ch, hh, ww))
        wmap = AffineMap(7, 0, (d(1), d(4), d(5), d(6)))
    omap = layout_map(layout, 4)
    in_shape = logical_shape(x.type.get_shape(), layout)
    out_shape = logical_shape(out.type.get_shape(), layout)
    pad = 0.0 if windows_leave_input(in_shape, out_shape, (kh, kw), (sh, sw),
                                     op.padding_values, (dh, dw)) else None

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        def term(r: Emitter, red: list[SSAValue]) -> SSAValue:
            idx = [*ivs, *red]
            return r.mul(r.load(x, idx, xmap, pad=pad), r.load(w, idx, wmap))

        s = e.reduce("add", 0.0, [cin_g, kh, kw], term)
        if bias is not None:
            s = e.add(s, e.load(bias, [ivs[1]]))
        e.store(s, out, ivs, omap)

    kb.nest(out_shape, body)


def lower_linear(kb: KernelBuilder, x, w, bias, out) -> None:
    shape = out.type.get_shape()
    r = len(shape)
    k = w.type.get_shape()[1]
    xmap = AffineMap(r + 1, 0, (*[d(i) for i in range(r - 1)], d(r)))
    wmap = AffineMap(r + 1, 0, (d(r - 1), d(r)))

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        s = e.reduce("add", 0.0, [k], lambda q, red: q.mul(q.load(x, [*ivs, *red], xmap),
                                                            q.load(w, [*ivs, *red], wmap)))
        if bias is not None:
            s = e.add(s, e.load(bias, [ivs[-1]]))
        e.store(s, out, ivs)

    kb.nest(shape, body)


# ---------------------------------------------------------------------- stacks


def lower_layer(kb: KernelBuilder, op: Operation, buf: dict[SSAValue, SSAValue], out: SSAValue):
    ins = [buf[v] for v in op.operands]
    if isinstance(op, nn.Conv2dOp):
        lower_conv2d(kb, op, buf[op.input], buf[op.weight],
                     buf[op.bias] if op.bias is not None else None, out)
    elif isinstance(op, nn.LinearOp):
        lower_linear(kb, buf[op.input], buf[op.weight],
                     buf[op.bias] if op.bias is not None else None, out)
    elif isinstance(op, nn.BatchNormOp):
        names = {"input": op.input, "running_mean": op.running_mean, "running_var": op.running_var}
        if op.weight is not None:
            names["weight"] = op.weight
        if op.bias is not None:
            names["bias"] = op.bias
        lower_batch_norm(kb, op, {k: buf[v] for k, v in names.items()}, out)
    elif isinstance(op, nn.AddOp | nn.MulOp):
        lower_binary(kb, op, ins[0], ins[1], out)
    elif isinstance(op, nn.MaxPool2dOp):
        lower_max_pool(kb, op, ins[0], out)
    elif isinstance(op, nn.AvgPool2dOp):
        lower_avg_pool(kb, op, ins[0], out)
    elif isinstance(op, nn.AdaptiveAvgPool2dOp):
        lower_adaptive_avg_pool(kb, op, ins[0], out)
    elif isinstance(op, nn.MeanOp):
        lower_mean(kb, op, ins[0], out)
    elif isinstance(op, nn.SoftmaxOp):
        lower_softmax(kb, op, ins[0], out)
    elif isinstance(op, nn.CatOp):
        lower_cat(kb, op, ins, out)
    elif isinstance(op, nn.FlattenOp | nn.ReshapeOp):
        lower_reshape(kb, ins[0], out)
    elif nn.is_elementwise(op) or nn.is_removable(op):
        lower_unary(kb, op, ins[0], out)
    else:
        raise UnsupportedLayer(f"{op.name} has no loop lowering")


def lower_stack(stack: nn.StackOp, name: str) -> func.FuncOp:
    """The kernel of `stack`: memref arguments for its inputs, then its outputs."""
    yielded = list(stack.yield_op.values)
    for v in (*stack.inputs, *yielded):
        if any(e < 0 for e in v.type.get_shape()[1:]):
            raise UnsupportedLayer("only the batch (dim 0) may be dynamic")
    kb = KernelBuilder(name, [v.type for v in stack.inputs], [v.type for v in yielded])
    buf: dict[SSAValue, SSAValue] = dict(zip(stack.body.block.args, kb.inputs, strict=True))
    for outer, a, arg in zip(stack.inputs, stack.body.block.args, kb.inputs, strict=True):
        arg.name_hint = outer.name_hint or a.name_hint
    # each value's first yield writes straight into that output
    dest: dict[SSAValue, SSAValue] = {}
    copies: list[tuple[SSAValue, SSAValue]] = []
    for v, o in zip(yielded, kb.outputs, strict=True):
        if v in dest or v in buf:
            copies.append((v, o))
        else:
            dest[v] = o
    for op in stack.body.block.ops:
        if isinstance(op, nn.YieldOp):
            continue
        r = op.results[0]
        out = dest.get(r) or kb.alloc(r.type, r.name_hint)
        lower_layer(kb, op, buf, out)
        buf[r] = out
    for v, o in copies:
        lower_copy(kb, buf[v], o)
    return kb.finish()

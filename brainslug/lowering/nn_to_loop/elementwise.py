"""Elementwise layers: activations, dropout/identity, and broadcasting add and mul.

Each formula repeats the framework's own operations in the framework's order
(see DESIGN.md, "Exactness"); `impl = "eigen"` selects TensorFlow's (`eigen`),
absent it PyTorch's (`aten_vec`: its vector exp, and its scalar lambda in the tail).
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence

from xdsl.dialects import math
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap

from brainslug.dialects import nn
from brainslug.lowering.nn_to_loop.aten_vec import (
    ATEN_ERF,
    GELU_ERF_SCALE,
    MATH_IMPL,
    aten_exp_addend,
    aten_tail_formula,
    aten_tanh,
    gelu_tanh,
    in_aten_tail,
    logistic,
    onednn_gelu,
    silu,
)
from brainslug.lowering.nn_to_loop.builder import (
    Buffers,
    Emitter,
    Formula,
    KernelBuilder,
    LayerLowering,
    cst,
    d,
)
from brainslug.lowering.nn_to_loop.eigen import (
    eigen_logistic,
    eigen_tail_formula,
    in_eigen_tail,
)


def _max_eigen(e: Emitter, x: SSAValue, lo: float) -> SSAValue:
    """TensorFlow's `max(x, lo)` (Eigen's `cwiseMax`): `lo` where `x <= lo`
    (+0 for -0 at lo 0), NaN kept."""
    return e.select(e.cmp("ole", x, e.f(lo)), e.f(lo), x)


def _relu(op: nn.ReluOp) -> Formula:
    if op.impl_value == "eigen":
        return lambda e, x: _max_eigen(e, x, 0.0)
    return lambda e, x: e.max0(x, 0.0)


def _clamp(op: nn.ClampOp) -> Formula:
    lo, hi = op.min_value, op.max_value
    eigen = op.impl_value == "eigen"

    def clamp(e: Emitter, x: SSAValue) -> SSAValue:
        if lo is not None:
            x = _max_eigen(e, x, lo) if eigen else e.max0(x, lo)
        if hi is not None:
            x = e.min0(x, hi)
        return x

    return clamp


def _leaky_relu(op: nn.LeakyReluOp) -> Formula:
    slope = op.negative_slope_value
    return lambda e, x: e.select(e.cmp("ogt", x, e.f(0.0)), x, e.mul(x, e.f(slope)))


def _sigmoid(op: nn.SigmoidOp) -> Formula:
    if op.impl_value == "eigen":
        return eigen_logistic
    return logistic(aten_exp_addend)


def _tanh(op: nn.TanhOp) -> Formula:
    return aten_tanh


def _silu(op: nn.SiluOp) -> Formula:
    if op.impl_value == "eigen":
        return lambda e, x: e.mul(x, eigen_logistic(e, x))
    return silu(aten_exp_addend)


def _hardswish(op: nn.HardswishOp) -> Formula:
    return lambda e, x: e.div(e.mul(x, e.min0(e.max0(e.add(x, e.f(3.0)), 0.0), 6.0)), e.f(6.0))


def _hardsigmoid(op: nn.HardsigmoidOp) -> Formula:
    return lambda e, x: e.div(e.min0(e.max0(e.add(x, e.f(3.0)), 0.0), 6.0), e.f(6.0))


def _gelu(op: nn.GeluOp) -> Formula:
    if op.approximate_value == "tanh":
        if op.impl_value is None:
            return gelu_tanh(aten_tanh)
        beta = pymath.sqrt(2.0) * (2.0 / pymath.sqrt(pymath.pi)) * 0.5
        kappa = 0.044715

        def tf_gelu_tanh(e: Emitter, x: SSAValue) -> SSAValue:
            # 0.5 * x * (1 + tanh(u)) is x / (1 + exp(-2u)): the vector exp
            # (1 ULP), and none of the cancellation of 1 + tanh(u) at u < 0
            cube = e.mul(e.mul(x, x), x)
            inner = e.mul(e.f(beta), e.add(x, e.mul(e.f(kappa), cube)))
            return e.div(x, e.add(e.f(1.0), aten_exp_addend(e, e.mul(e.f(-2.0), inner))))

        return tf_gelu_tanh

    if op.impl_value == "eigen":
        return _tf_gelu
    return onednn_gelu


def _tf_gelu(e: Emitter, x: SSAValue) -> SSAValue:
    """TensorFlow's exact GELU, `0.5 * x * erfc(-x / sqrt 2)`, with erfc(-z) as
    `1 + erf(z)` (PyTorch's vector erf): half of x first, so it stays finite
    at 3.4e38 and is +inf at +inf (1 + erf loses the tiny tail below x = -5.5,
    where TensorFlow's is below 2e-8·|x|)."""
    erf = math.ErfOp(e.mul(x, e.f(GELU_ERF_SCALE)))
    erf.attributes[MATH_IMPL] = StringAttr(ATEN_ERF)
    return e.mul(e.mul(e.f(0.5), x), e.add(e.f(1.0), e.emit(erf)))


def _pow(op: nn.PowOp) -> Formula:
    """PyTorch's special cases of `pow(x, c)`, each operation rounded as it does."""
    c = op.exponent_value

    def sqrt(e: Emitter, x: SSAValue) -> SSAValue:
        return e.emit(math.SqrtOp(x))

    forms: dict[float, Formula] = {
        2.0: lambda e, x: e.mul(x, x),
        3.0: lambda e, x: e.mul(e.mul(x, x), x),
        0.5: sqrt,
        -0.5: lambda e, x: e.div(e.f(1.0), sqrt(e, x)),
        -1.0: lambda e, x: e.div(e.f(1.0), x),
        -2.0: lambda e, x: e.div(e.f(1.0), e.mul(x, x)),
    }
    return forms[c]


def _identity(op: nn.DropoutOp | nn.IdentityOp) -> Formula:
    return lambda e, x: x


UNARY_FORMULAS: dict[type[Operation], Callable[[Operation], Formula]] = {
    nn.ReluOp: _relu,
    nn.ClampOp: _clamp,
    nn.LeakyReluOp: _leaky_relu,
    nn.SigmoidOp: _sigmoid,
    nn.TanhOp: _tanh,
    nn.SiluOp: _silu,
    nn.HardswishOp: _hardswish,
    nn.HardsigmoidOp: _hardsigmoid,
    nn.GeluOp: _gelu,
    nn.PowOp: _pow,
    nn.DropoutOp: _identity,
    nn.IdentityOp: _identity,
}
"""The framework's formula of each elementwise unary layer, from the layer."""


def broadcast_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> AffineMap:
    """Output ivs to the indices of a (numpy-)broadcast operand."""
    offset = len(out_shape) - len(in_shape)
    results = []
    for k, e in enumerate(in_shape):
        o = out_shape[k + offset]
        results.append(cst(0) if e == 1 and o != 1 else d(k + offset))
    return AffineMap(len(out_shape), 0, tuple(results))


def lower_unary(kb: KernelBuilder, op: Operation, buf: Buffers, out: SSAValue) -> None:
    """One nest; where the framework computes the last elements of a tensor with
    another formula (its scalar tail), a flat-index compare selects it. PyTorch's
    tail formula sees NaN outside its tail, so that its libm calls (`bs.exp` skips
    all-NaN vectors) run only in vectors that reach the tail."""
    x = buf[op.operands[0]]
    formula = UNARY_FORMULAS[type(op)](op)
    shape = out.type.get_shape()
    in_tail: Callable[[Emitter, Sequence[int], Sequence[SSAValue]], SSAValue | None]
    if (tail_formula := eigen_tail_formula(op)) is not None:
        in_tail, masked = in_eigen_tail, False
    else:
        tail_formula, in_tail, masked = aten_tail_formula(op), in_aten_tail, True

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        v = e.load(x, ivs)
        y = formula(e, v)
        tail = None if tail_formula is None else in_tail(e, shape, ivs)
        if tail is not None:
            vt = e.select(tail, v, e.f(float("nan"))) if masked else v
            y = e.select(tail, tail_formula(e, vt), y)
        e.store(y, out, ivs)

    kb.nest(out.type.get_shape(), body)


_BINARY: dict[type[Operation], str] = {nn.AddOp: "add", nn.SubOp: "sub", nn.MulOp: "mul",
                                       nn.DivOp: "div"}


def lower_binary(kb: KernelBuilder, op: Operation, buf: Buffers, out: SSAValue) -> None:
    a, b = buf[op.operands[0]], buf[op.operands[1]]
    shape = out.type.get_shape()
    ma = broadcast_map(a.type.get_shape(), shape)
    mb = broadcast_map(b.type.get_shape(), shape)

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        x, y = e.load(a, ivs, ma), e.load(b, ivs, mb)
        e.store(getattr(e, _BINARY[type(op)])(x, y), out, ivs)

    kb.nest(shape, body)


def lower_addcmul(kb: KernelBuilder, op: nn.AddcmulOp, buf: Buffers, out: SSAValue) -> None:
    """`input + tensor1 * tensor2` as one `math.fma` per point, each operand
    read through its broadcast map."""
    shape = out.type.get_shape()
    operands = [buf[v] for v in op.operands]
    maps = [broadcast_map(v.type.get_shape(), shape) for v in operands]

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        x, t1, t2 = (e.load(v, ivs, m) for v, m in zip(operands, maps, strict=True))
        e.store(e.fma(t1, t2, x), out, ivs)

    kb.nest(shape, body)


LOWERINGS: dict[type[Operation], LayerLowering] = {
    **dict.fromkeys(UNARY_FORMULAS, lower_unary),
    **dict.fromkeys(_BINARY, lower_binary),
    nn.AddcmulOp: lower_addcmul,  # type: ignore[dict-item]
}

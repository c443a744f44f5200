"""PyTorch's CPU numerics where they differ from the plain formula (the default `impl`).

PyTorch's float32 CPU kernels (`cpu_kernel_vec`, aten/src/ATen/native/cpu/Loops.h)
run a vector lambda on `Vectorized<float>` and a scalar lambda elsewhere:
`vectorized_loop` takes two vectors per step (32 floats with AVX-512) and hands
the last `numel % 32` elements of a contiguous tensor to the scalar lambda. The
two differ in their exp: the vector one is Sleef's `expf_u10`
(`Vectorized<float>::exp`, vec512_float.h), the scalar one libm's `expf`
(`std::exp`). For sigmoid (UnaryOpsKernel.cpp) and SiLU (Activation.cpp):

- sigmoid: vector `((0 - x).exp() + 1).reciprocal()`, scalar `1 / (1 + std::exp(-x))`;
- SiLU: vector `x / (1 + x.neg().exp())`, scalar `x / (1 + std::exp(-x))`;
- GELU's tanh form (`GeluKernelImpl`, for every layout): `(0.5 * x) * (1 + tanh(inner))`
  with `inner = beta * fma(kappa, x**3, x)` (GCC contracts `x + kappa * x_cube`),
  its vector tanh Sleef's `tanhf_u10` (`Vectorized<float>::tanh`), its scalar one
  libm's `tanhf`.

`torch.tanh` itself is MKL's `vsTanh` (VML_HA, `at::vml`), which is closed;
`nn.tanh` takes Sleef's tanh, 1 ULP as MKL's, in vector code.

Here `aten_exp` is the vector exp (a `math.exp` marked `MATH_IMPL = SLEEF_U10`,
which the x86 vector lowering computes as Sleef does; scalar nests and the GPU
call libm/libdevice as for any exp) and `aten_tail_formula` the scalar lambda
(its exp marked `LIBM`: expf per lane, no call for a vector that is all NaN),
which `lower_unary` selects on the flattened tensor's last `numel % 32` elements
and feeds NaN elsewhere.
This models one chunk, as PyTorch computes on one thread: with T threads it
splits a tensor into up to T chunks (sigmoid and SiLU from 32768 elements, GELU above
16384), each with a scalar tail of its own, so its own result depends on T.

GELU (approximate="none") on a contiguous float tensor of two or more elements
does not reach `GeluKernelImpl`: PyTorch's `gelu_out_cpu` (native/Activation.cpp)
hands it to oneDNN (`eltwise_gelu_erf`), which on AVX-512 cores computes
`(s * (1 + erf)) * 0.5` with erf(s/sqrt 2) a piecewise minimax polynomial in |s|,
the same for every element (no scalar tail). `onednn_gelu` is that formula; its
erf is a `math.erf` of `s * GELU_ERF_SCALE` marked `ONEDNN`, which the x86 vector
lowering computes from s as oneDNN does (elsewhere: libm/libdevice erf).
Non-contiguous (channels-last) tensors take `GeluKernelImpl`, whose vector erf
is PyTorch's own (`bs.erf_aten`); that path is not selected here.
"""

from __future__ import annotations

import math as pymath
import struct
from collections.abc import Callable, Sequence

from xdsl.dialects import arith, math
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import nn
from brainslug.lowering.nn_to_loop.builder import Emitter, Formula

MATH_IMPL = "bs.impl"
"""Attribute of a `math.exp` (kept on its `simd.math`) naming the vector function
whose rounding it must reproduce."""

SLEEF_U10 = "sleef_u10"
"""`MATH_IMPL` value: Sleef's 1-ULP function (`Sleef_expf16_u10`), PyTorch's vector exp."""

SLEEF_U10_NORMAL = "sleef_u10_normal"
"""`MATH_IMPL` value: Sleef's `expf_u10` on arguments of at least `EXP_ADDEND_FLOOR`,
so every result is a normal float and the lowering needs no subnormal path."""

EXP_ADDEND_FLOOR = -87.0
"""exp(-87) is about 1.65e-38: a normal float (above 2**-126), and below 2**-24,
so 1 + exp(x) is 1 for every x below it, as for -87 itself."""

LIBM = "libm"
"""`MATH_IMPL` value: libm's function per lane (`expf`), as plain `math.exp`, but
with no calls for a vector whose lanes are all NaN."""

ONEDNN = "onednn"
"""`MATH_IMPL` value of GELU's erf: oneDNN's `gelu_erf` polynomial, from GELU's input."""
ATEN_ERF = "aten"
"""`MATH_IMPL` value: PyTorch's vector erf (`Vectorized<float>::erf`, `bs.erf_aten`)."""

SUBNORMAL_GRID = "bs.subnormal_grid"
"""Attribute of an `arith.mulf` (kept on its `simd.mulf`): the x86 vector lowering
computes the product with no subnormal value in the FPU (`bs.mul_subnormal`),
the same IEEE product, where a plain multiply would take the slow microcode
path (softmax's quotients in rows that a -100 mask makes subnormal)."""

GELU_ERF_SCALE = struct.unpack("f", struct.pack("f", pymath.sqrt(0.5)))[0]
"""float32(M_SQRT1_2), GELU's erf argument scale."""

ATEN_VEC_STEP = 32
"""Floats per step of PyTorch's `vectorized_loop` in its AVX-512 build (two
`Vectorized<float>` of 16); the remainder of a contiguous tensor runs scalar."""

Exp = Callable[[Emitter, SSAValue], SSAValue]


def _marked(e: Emitter, op: Operation, impl: str) -> SSAValue:
    """`op` (a `math` function) emitted with the function it reproduces (`MATH_IMPL`)."""
    op.attributes[MATH_IMPL] = StringAttr(impl)
    return e.emit(op)


def _exp(e: Emitter, x: SSAValue, impl: str) -> SSAValue:
    return _marked(e, math.ExpOp(x), impl)


def aten_exp(e: Emitter, x: SSAValue) -> SSAValue:
    """PyTorch's vector exp, `Vectorized<float>::exp` (Sleef's `expf_u10`)."""
    return _exp(e, x, SLEEF_U10)


def aten_exp_addend(e: Emitter, x: SSAValue) -> SSAValue:
    """PyTorch's vector exp where the result is only added to 1 (sigmoid, SiLU):
    x below `EXP_ADDEND_FLOOR` is raised to it (NaN stays), which changes no sum,
    and spares the exp the subnormal results that the FPU computes slowly."""
    floor = e.f(EXP_ADDEND_FLOOR)
    return _exp(e, e.select(e.cmp("olt", x, floor), floor, x), SLEEF_U10_NORMAL)


def libm_exp(e: Emitter, x: SSAValue) -> SSAValue:
    """`std::exp` on a float: libm's `expf`."""
    return _exp(e, x, LIBM)


def aten_tanh(e: Emitter, x: SSAValue) -> SSAValue:
    """PyTorch's vector tanh, `Vectorized<float>::tanh` (Sleef's `tanhf_u10`)."""
    return _marked(e, math.TanhOp(x), SLEEF_U10)


def libm_tanh(e: Emitter, x: SSAValue) -> SSAValue:
    """`std::tanh` on a float: libm's `tanhf` (none for an all-NaN vector)."""
    return _marked(e, math.TanhOp(x), LIBM)


GELU_TANH_BETA = struct.unpack(
    "f", struct.pack("f", pymath.sqrt(2.0) * (2.0 / pymath.sqrt(pymath.pi)) * 0.5))[0]
"""float32(M_SQRT2 * M_2_SQRTPI * 0.5), the scale of GELU's tanh form."""
GELU_TANH_KAPPA = struct.unpack("f", struct.pack("f", 0.044715))[0]
"""float32(0.044715), the cube's coefficient of GELU's tanh form."""


def gelu_tanh(tanh: Exp) -> Formula:
    """PyTorch's GELU, tanh form: `(0.5 * x) * (1 + tanh(beta * fma(kappa, x * x * x, x)))`."""

    def formula(e: Emitter, x: SSAValue) -> SSAValue:
        cube = e.mul(e.mul(x, x), x)
        inner = e.mul(e.f(GELU_TANH_BETA), e.fma(e.f(GELU_TANH_KAPPA), cube, x))
        return e.mul(e.mul(e.f(0.5), x), e.add(e.f(1.0), tanh(e, inner)))

    return formula


def logistic(exp: Exp) -> Formula:
    """PyTorch's sigmoid `1 / (1 + exp(-x))` with the given exp."""
    return lambda e, x: e.div(e.f(1.0), e.add(e.f(1.0), exp(e, e.emit(arith.NegfOp(x)))))


def silu(exp: Exp) -> Formula:
    """PyTorch's SiLU `x / (1 + exp(-x))` with the given exp."""
    return lambda e, x: e.div(x, e.add(e.f(1.0), exp(e, e.emit(arith.NegfOp(x)))))


def onednn_gelu(e: Emitter, x: SSAValue) -> SSAValue:
    """oneDNN's GELU `(x * (1 + erf(x / sqrt 2))) * 0.5` (PyTorch's exact GELU on
    contiguous tensors)."""
    s = e.mul(x, e.f(GELU_ERF_SCALE))
    return e.mul(e.mul(x, e.add(e.f(1.0), _marked(e, math.ErfOp(s), ONEDNN))), e.f(0.5))


def aten_tail_formula(op: Operation) -> Formula | None:
    """The scalar lambda of a layer's PyTorch kernel, where it differs from the
    vector one."""
    if isinstance(op, nn.SigmoidOp) and op.impl_value is None:
        return logistic(libm_exp)
    if isinstance(op, nn.SiluOp) and op.impl_value is None:
        return silu(libm_exp)
    if isinstance(op, nn.GeluOp) and op.impl_value is None and op.approximate_value == "tanh":
        return gelu_tanh(libm_tanh)
    return None


def in_flat_tail(e: Emitter, shape: Sequence[int], ivs: Sequence[SSAValue],
                 step: int) -> SSAValue | None:
    """i1: the point lies in the last `numel % step` elements (row-major); None when
    numel is a multiple of `step` whatever the batch."""
    inner = pymath.prod(shape[1:]) if shape else 1
    if shape and shape[0] < 0:
        if inner % step == 0:
            return None
        numel = e.index(arith.MuliOp, e.kernel.extent(shape[0]), e.i(inner))
        start = e.index(arith.SubiOp, numel, e.index(arith.RemSIOp, numel, e.i(step)))
    else:
        numel = pymath.prod(shape)
        if numel % step == 0:
            return None
        start = e.i(numel - numel % step)
    flat = ivs[0] if ivs else e.i(0)
    for extent, iv in zip(shape[1:], ivs[1:], strict=True):
        flat = e.index(arith.AddiOp, e.index(arith.MuliOp, flat, e.i(extent)), iv)
    return e.emit(arith.CmpiOp(flat, start, "sge"))


def in_aten_tail(e: Emitter, shape: Sequence[int], ivs: Sequence[SSAValue]) -> SSAValue | None:
    """i1: PyTorch's scalar lambda computes this point (see the module docstring)."""
    return in_flat_tail(e, shape, ivs, ATEN_VEC_STEP)

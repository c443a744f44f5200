"""Inference batch norm: per-channel factors, then one multiply-add per element."""

from __future__ import annotations

from xdsl.dialects import arith, math
from xdsl.dialects.builtin import MemRefType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap

from brainslug.dialects import nn
from brainslug.lowering.nn_to_loop.builder import (
    Buffers,
    Emitter,
    KernelBuilder,
    LayerLowering,
    d,
    layout_map,
    logical_shape,
)


def lower_batch_norm(kb: KernelBuilder, op: nn.BatchNormOp, buf: Buffers, out: SSAValue) -> None:
    """alpha = (1 / sqrt(var + eps)) * weight and beta = bias - mean * alpha per
    channel (PyTorch's inference formula), then y = x * alpha + beta. Absent
    `impl`, beta and y are fused multiply-adds: PyTorch's kernel
    (batch_norm_kernel.cpp) writes them as `a - b * c` and `x * a + b`, which its
    compiler contracts."""
    x = buf[op.input]
    weight = buf[op.weight] if op.weight is not None else None
    bias = buf[op.bias] if op.bias is not None else None
    mean, var = buf[op.running_mean], buf[op.running_var]
    shape = x.type.get_shape()
    rank = len(shape)
    layout = op.layout_value if rank == 4 else None
    channels = logical_shape(shape, layout)[1]
    alpha = kb.alloc(MemRefType(f32, [channels]), "alpha")
    beta = kb.alloc(MemRefType(f32, [channels]), "beta")
    eps = op.eps_value
    fused = op.impl_value is None

    def params(e: Emitter, ivs: list[SSAValue]) -> None:
        (c,) = ivs
        invstd = e.div(e.f(1.0), e.emit(math.SqrtOp(e.add(e.load(var, [c]), e.f(eps)))))
        a = e.mul(invstd, e.load(weight, [c]) if weight is not None else e.f(1.0))
        bv = e.load(bias, [c]) if bias is not None else e.f(0.0)
        e.store(a, alpha, [c])
        m = e.load(mean, [c])
        e.store(e.fma(e.emit(arith.NegfOp(m)), a, bv) if fused else e.sub(bv, e.mul(m, a)),
                beta, [c])

    kb.nest([channels], params)
    pmap = layout_map(layout, rank)
    cmap = AffineMap(rank, 0, (d(1),))

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        v = e.load(x, ivs, pmap)
        a, bv = e.load(alpha, ivs, cmap), e.load(beta, ivs, cmap)
        y = e.fma(v, a, bv) if fused else e.add(e.mul(v, a), bv)
        e.store(y, out, ivs, pmap)

    kb.nest(logical_shape(shape, layout), body)


LOWERINGS: dict[type[Operation], LayerLowering] = {nn.BatchNormOp: lower_batch_norm}

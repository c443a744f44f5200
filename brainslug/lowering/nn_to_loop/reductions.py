"""Reductions over tensor dims: mean (in Eigen's order for `impl = "eigen"`),
softmax, layer and group norm, and L2 normalisation."""

from __future__ import annotations

import math as pymath
from collections.abc import Callable

from xdsl.dialects import arith, math
from xdsl.dialects.builtin import MemRefType, StringAttr, UnitAttr, f32
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap

from brainslug.dialects import loop, nn
from brainslug.dialects.nn.properties import Impl
from brainslug.lowering.nn_to_loop.aten_vec import SUBNORMAL_GRID, aten_exp
from brainslug.lowering.nn_to_loop.builder import (
    NEG_INF,
    Buffers,
    Emitter,
    KernelBuilder,
    LayerLowering,
    UnsupportedLayer,
    cst,
    d,
)
from brainslug.lowering.nn_to_loop.eigen import (
    EIGEN_MEAN_MIN_POINTS,
    EIGEN_PACKET,
    eigen_mean_sum,
)


def lower_reduce_dims(kb: KernelBuilder, op: nn.MeanOp | nn.SumOp, buf: Buffers,
                      out: SSAValue) -> None:
    """The sum over `dims` in row-major order (or Eigen's), divided by its count
    for a mean."""
    x = buf[op.input]
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
            what = "mean" if isinstance(op, nn.MeanOp) else "sum"
            raise UnsupportedLayer(f"{what} over the dynamic batch dimension")
        count *= in_shape[k]

    eigen = op.impl_value == "eigen" and count >= EIGEN_MEAN_MIN_POINTS
    # with the innermost kept extent a multiple of the packet, every output is in a
    # whole packet and TensorFlow never sums in order
    in_order = not eigen or in_shape[kept[-1]] % EIGEN_PACKET != 0

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        s = e.reduce("add", 0.0, [in_shape[k] for k in dims],
                     lambda r, w: r.load(x, [*ivs, *w], imap)) if in_order else None
        if eigen:
            s = eigen_mean_sum(e, op, x, ivs, s, kept, dims, count)
        assert s is not None
        e.store(e.div(s, e.f(float(count))) if isinstance(op, nn.MeanOp) else s, out, ivs)

    kb.nest(out_shape, body)


def lower_softmax(kb: KernelBuilder, op: nn.SoftmaxOp, buf: Buffers, out: SSAValue) -> None:
    """max, then e = exp(x - max), its sum, and e * (1 / sum), as PyTorch's vector
    softmax, with its vector exp (`aten_exp`: vector code, 1 ULP) and its order
    of summing a row (`loop.HALVES`); e is computed once, into scratch (bs-fuse
    keeps it: see `RECOMPUTE_LIMIT`)."""
    x = buf[op.input]
    shape = x.type.get_shape()
    rank = len(shape)
    axis = op.axis_value % rank
    if shape[axis] < 0:
        raise UnsupportedLayer("softmax over the dynamic batch dimension")
    red_shape = [1 if k == axis else e for k, e in enumerate(shape)]
    mx = kb.alloc(MemRefType(f32, red_shape), "max")
    sm = kb.alloc(MemRefType(f32, red_shape), "sum")
    ex = kb.alloc(MemRefType(f32, shape), "exp")  # one exp per element, kept in cache
    # (ivs of red_shape, r) -> x index
    xmap = AffineMap(rank + 1, 0, tuple(d(rank) if k == axis else d(k) for k in range(rank)))
    rmap = AffineMap(rank, 0, tuple(cst(0) if k == axis else d(k) for k in range(rank)))

    tf = op.impl_value == "eigen"

    def unless_nan(r: Emitter, v: SSAValue, instead: float) -> SSAValue:
        """`v`, or `instead` for NaN (TensorFlow's rows, `impl = "eigen"`)."""
        return r.select(r.cmp("uno", v, v), r.f(instead), v) if tf else v

    def halves(v: SSAValue) -> SSAValue:
        """PyTorch's vector softmax combines a row's lanes by halves."""
        if not tf:
            v.owner.attributes[loop.LANE_ORDER] = StringAttr(loop.HALVES)
        return v

    def max_body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(halves(e.reduce("max", NEG_INF, [shape[axis]], lambda r, w: unless_nan(
            r, r.load(x, [*ivs, *w], xmap), float("-inf")))), mx, ivs)

    def exp_body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(aten_exp(e, e.sub(e.load(x, ivs), e.load(mx, ivs, rmap))), ex, ivs)

    def sum_body(e: Emitter, ivs: list[SSAValue]) -> None:
        # (TensorFlow's: a NaN counts as +inf, so the row's other outputs are 0)
        e.store(halves(e.reduce("add", 0.0, [shape[axis]], lambda r, w: unless_nan(
            r, r.load(ex, [*ivs, *w], xmap), float("inf")))), sm, ivs)

    def out_body(e: Emitter, ivs: list[SSAValue]) -> None:
        q = e.mul(e.load(ex, ivs), e.div(e.f(1.0), e.load(sm, ivs, rmap)))
        q.owner.attributes[SUBNORMAL_GRID] = UnitAttr()  # exps below 2**-126: Swin's mask
        e.store(q, out, ivs)

    kb.nest(red_shape, max_body)
    kb.nest(shape, exp_body)
    kb.nest(red_shape, sum_body)
    kb.nest(shape, out_body)


def lower_layer_norm(kb: KernelBuilder, op: nn.LayerNormOp, buf: Buffers,
                     out: SSAValue) -> None:
    """Per row: mean = sum(x) / n, then var = sum((x - mean)^2) / n (two passes
    over a row in cache, more accurate than one), rstd = 1 / sqrt(var + eps);
    then y = (x * rstd + (-mean * rstd)) * weight + bias, in PyTorch's order
    (`impl = "eigen"`: var = sum / n, and Keras's order, see `nn.layer_norm`)."""
    x = buf[op.input]
    weight = buf[op.weight] if op.weight is not None else None
    bias = buf[op.bias] if op.bias is not None else None
    shape = x.type.get_shape()
    rank = len(shape)
    n = shape[-1]
    red_shape = [*shape[:-1], 1]
    mean = kb.alloc(MemRefType(f32, red_shape), "mean")
    rstd = kb.alloc(MemRefType(f32, red_shape), "rstd")
    xmap = AffineMap(rank + 1, 0, tuple(d(k) for k in range(rank - 1)) + (d(rank),))
    rmap = AffineMap(rank, 0, tuple(d(k) for k in range(rank - 1)) + (cst(0),))
    cmap = AffineMap(rank, 0, (d(rank - 1),))
    inv_n = 1.0 / n

    def mean_body(e: Emitter, ivs: list[SSAValue]) -> None:
        s = e.reduce("add", 0.0, [n], lambda r, w: r.load(x, [*ivs, *w], xmap))
        e.store(e.div(s, e.f(float(n))), mean, ivs)

    def rstd_body(e: Emitter, ivs: list[SSAValue]) -> None:
        m = e.load(mean, ivs)

        def term(r: Emitter, w: list[SSAValue]) -> SSAValue:
            c = r.sub(r.load(x, [*ivs, *w], xmap), m)
            return r.mul(c, c)

        total = e.reduce("add", 0.0, [n], term)
        # (TensorFlow's mean of the squares divides by n)
        var = e.div(total, e.f(float(n))) if op.impl_value == Impl.EIGEN \
            else e.mul(total, e.f(inv_n))
        e.store(e.div(e.f(1.0), e.emit(math.SqrtOp(e.add(var, e.f(op.eps_value))))), rstd, ivs)

    def keras_body(e: Emitter, ivs: list[SSAValue]) -> None:
        # inv = rstd * weight; y = x * inv + (-mean * inv + bias)
        inv = e.load(rstd, ivs, rmap)
        if weight is not None:
            inv = e.mul(inv, e.load(weight, ivs, cmap))
        res = e.mul(e.emit(arith.NegfOp(e.load(mean, ivs, rmap))), inv)
        if bias is not None:
            res = e.add(res, e.load(bias, ivs, cmap))
        e.store(e.add(e.mul(e.load(x, ivs), inv), res), out, ivs)

    def out_body(e: Emitter, ivs: list[SSAValue]) -> None:
        r = e.load(rstd, ivs, rmap)
        shift = e.mul(e.emit(arith.NegfOp(e.load(mean, ivs, rmap))), r)
        y = e.add(e.mul(e.load(x, ivs), r), shift)
        if weight is not None:
            y = e.mul(y, e.load(weight, ivs, cmap))
        if bias is not None:
            y = e.add(y, e.load(bias, ivs, cmap))
        e.store(y, out, ivs)

    kb.nest(red_shape, mean_body)
    kb.nest(red_shape, rstd_body)
    kb.nest(shape, keras_body if op.impl_value == Impl.EIGEN else out_body)


def lower_group_norm(kb: KernelBuilder, op: nn.GroupNormOp, buf: Buffers,
                     out: SSAValue) -> None:
    """Per batch item and group: mean, then the biased variance in a second
    pass (as `lower_layer_norm`), rstd = 1 / sqrt(var + eps); per channel
    scale = rstd * weight, shift = -scale * mean + bias; y = x * scale + shift."""
    x = buf[op.input]
    weight = buf[op.weight] if op.weight is not None else None
    bias = buf[op.bias] if op.bias is not None else None
    shape = x.type.get_shape()
    rank, a = len(shape), op.axis_value
    cg = shape[a] // op.groups_value
    box = [cg if k == a else shape[k] for k in range(1, rank)]
    count = float(pymath.prod(box))
    stat_shape = [shape[0], *[op.groups_value if k == a else 1 for k in range(1, rank)]]
    chan_shape = [shape[0], *[shape[a] if k == a else 1 for k in range(1, rank)]]
    mean = kb.alloc(MemRefType(f32, stat_shape), "mean")
    rstd = kb.alloc(MemRefType(f32, stat_shape), "rstd")
    scale = kb.alloc(MemRefType(f32, chan_shape), "scale")
    shift = kb.alloc(MemRefType(f32, chan_shape), "shift")
    # (stat ivs, box ivs) -> x: channel g * cg + c', other dims the box's
    xmap = AffineMap(2 * rank - 1, 0, (d(0), *[
        d(k) * cg + d(rank + k - 1) if k == a else d(rank + k - 1) for k in range(1, rank)]))
    group_of = AffineMap(rank, 0, tuple(d(k) // cg if k == a else d(k)
                                       for k in range(rank)))
    channel = AffineMap(rank, 0, (d(a),))
    per_channel = AffineMap(rank, 0, tuple(d(k) if k in (0, a) else cst(0) for k in range(rank)))

    def box_sum(e: Emitter, term: Callable[[Emitter, list[SSAValue]], SSAValue]) -> SSAValue:
        """The sum over the box, one dim at a time (a sum of sums of rows): a
        group holds up to C·H·W points (GroupNorm(1, C) is PoolFormer's norm),
        and one running sum over all of them loses digits to every add."""

        def level(r: Emitter, k: int, w: list[SSAValue]) -> SSAValue:
            name = (f"g{k}",)
            if k == len(box) - 1:
                return r.reduce("add", 0.0, [box[k]], lambda q, v: term(q, [*w, *v]), names=name)
            return r.reduce("add", 0.0, [box[k]], lambda q, v: level(q, k + 1, [*w, *v]),
                            names=name)

        return level(e, 0, [])

    def mean_body(e: Emitter, ivs: list[SSAValue]) -> None:
        s = box_sum(e, lambda r, w: r.load(x, [*ivs, *w], xmap))
        e.store(e.div(s, e.f(count)), mean, ivs)

    def rstd_body(e: Emitter, ivs: list[SSAValue]) -> None:
        m = e.load(mean, ivs)

        def term(r: Emitter, w: list[SSAValue]) -> SSAValue:
            c = r.sub(r.load(x, [*ivs, *w], xmap), m)
            return r.mul(c, c)

        var = e.div(box_sum(e, term), e.f(count))
        e.store(e.div(e.f(1.0), e.emit(math.SqrtOp(e.add(var, e.f(op.eps_value))))), rstd, ivs)

    def scale_body(e: Emitter, ivs: list[SSAValue]) -> None:
        sc = e.load(rstd, ivs, group_of)
        if weight is not None:
            sc = e.mul(sc, e.load(weight, ivs, channel))
        sh = e.mul(e.emit(arith.NegfOp(sc)), e.load(mean, ivs, group_of))
        if bias is not None:
            sh = e.add(sh, e.load(bias, ivs, channel))
        e.store(sc, scale, ivs)
        e.store(sh, shift, ivs)

    def out_body(e: Emitter, ivs: list[SSAValue]) -> None:
        y = e.mul(e.load(x, ivs), e.load(scale, ivs, per_channel))
        e.store(e.add(y, e.load(shift, ivs, per_channel)), out, ivs)

    kb.nest(stat_shape, mean_body)
    kb.nest(stat_shape, rstd_body)
    kb.nest(chan_shape, scale_body)
    kb.nest(shape, out_body)


def lower_l2_normalize(kb: KernelBuilder, op: nn.L2NormalizeOp, buf: Buffers,
                       out: SSAValue) -> None:
    """Per row along `axis`: norm = max(sqrt(sum of squares), eps) into scratch,
    then x / norm, as `F.normalize` (PyTorch's clamp_min keeps NaN)."""
    x = buf[op.input]
    shape = x.type.get_shape()
    rank, axis = len(shape), op.axis_value
    red_shape = [1 if k == axis else e for k, e in enumerate(shape)]
    norm = kb.alloc(MemRefType(f32, red_shape), "norm")
    xmap = AffineMap(rank + 1, 0, tuple(d(rank) if k == axis else d(k) for k in range(rank)))
    rmap = AffineMap(rank, 0, tuple(cst(0) if k == axis else d(k) for k in range(rank)))

    def norm_body(e: Emitter, ivs: list[SSAValue]) -> None:
        def square(r: Emitter, w: list[SSAValue]) -> SSAValue:
            v = r.load(x, [*ivs, *w], xmap)
            return r.mul(v, v)

        s = e.reduce("add", 0.0, [shape[axis]], square)
        e.store(e.max0(e.emit(math.SqrtOp(s)), op.eps_value), norm, ivs)

    def out_body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(e.div(e.load(x, ivs), e.load(norm, ivs, rmap)), out, ivs)

    kb.nest(red_shape, norm_body)
    kb.nest(shape, out_body)


LOWERINGS: dict[type[Operation], LayerLowering] = {
    nn.MeanOp: lower_reduce_dims,
    nn.SumOp: lower_reduce_dims,
    nn.SoftmaxOp: lower_softmax,
    nn.LayerNormOp: lower_layer_norm,
    nn.GroupNormOp: lower_group_norm,
    nn.L2NormalizeOp: lower_l2_normalize,
}

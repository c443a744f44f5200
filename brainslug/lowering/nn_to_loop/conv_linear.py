"""Convolution and linear layers as direct reductions.

A convolution sums its products in its own order with fused multiply-adds
(`contract`), as the libraries do; in NHWC the reduction runs over (kh, kw, i)
so that the innermost step walks along the channels of both the input and the
HWIO weight. bs-register-tile then blocks the vectorized nest in registers.
"""

from __future__ import annotations

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
from brainslug.lowering.nn_to_loop.pooling import windows_leave_input


def lower_conv2d(kb: KernelBuilder, op: nn.Conv2dOp, buf: Buffers, out: SSAValue) -> None:
    """Direct convolution: per output point, a sum over the input channels of its
    group and the window."""
    x, w = buf[op.input], buf[op.weight]
    bias = buf[op.bias] if op.bias is not None else None
    layout = op.layout_value
    wshape = w.type.get_shape()
    block = 0  # > 0: the weight is blocked by output channels
    if len(wshape) == 5:
        _, kh, kw, cin_g, block = wshape
        cout = logical_shape(out.type.get_shape(), layout)[1]
    elif layout == "NHWC":
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
        ch = (d(1) // cout_g if cout_g > 1 else d(1)) * cin_g + d(4)
    hh = d(2) * sh + d(5) * dh - pt
    ww = d(3) * sw + d(6) * dw - pl
    if block:
        xmap = AffineMap(7, 0, (d(0), hh, ww, ch))
        wmap = AffineMap(7, 0, (d(1) // block, d(5), d(6), d(4), d(1) % block))
    elif layout == "NHWC":
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

    nhwc = layout == "NHWC"

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        def term(r: Emitter, red: list[SSAValue]) -> SSAValue:
            # NHWC sums over (kh, kw, i): i innermost runs along both x and w
            idx = [*ivs, red[2], red[0], red[1]] if nhwc else [*ivs, *red]
            return r.mul(r.load(x, idx, xmap, pad=pad), r.load(w, idx, wmap))

        if nhwc:
            s = e.reduce("add", 0.0, [kh, kw, cin_g], term, contract=True,
                         names=("kh", "kw", "ci"))
        else:
            s = e.reduce("add", 0.0, [cin_g, kh, kw], term, contract=True,
                         names=("ci", "kh", "kw"))
        if bias is not None:
            s = e.add(s, e.load(bias, [ivs[1]]))
        e.store(s, out, ivs, omap)

    kb.nest(out_shape, body)


def lower_linear(kb: KernelBuilder, op: nn.LinearOp, buf: Buffers, out: SSAValue) -> None:
    x, w = buf[op.input], buf[op.weight]
    bias = buf[op.bias] if op.bias is not None else None
    if op.packed:
        _lower_packed_linear(kb, x, w, bias, out)
        return
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


def _lower_packed_linear(kb: KernelBuilder, x: SSAValue, w: SSAValue, bias: SSAValue | None,
                         out: SSAValue) -> None:
    """A linear layer whose weight is packed as a 1×1 convolution's: the nest
    and the sum over (kh, kw, i) = (1, 1, K) of a pointwise channels-last
    convolution, the points being the rows of `[..., K]`."""
    shape = out.type.get_shape()
    r = len(shape)
    wshape = w.type.get_shape()
    k = wshape[-2]
    # (rows..., o, i, kh, kw) -> input / weight indices
    xmap = AffineMap(r + 3, 0, (*[d(i) for i in range(r - 1)], d(r)))
    if len(wshape) == 5:
        block = wshape[-1]
        wmap = AffineMap(r + 3, 0, (d(r - 1) // block, d(r + 1), d(r + 2), d(r),
                                    d(r - 1) % block))
    else:
        wmap = AffineMap(r + 3, 0, (d(r + 1), d(r + 2), d(r), d(r - 1)))

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        def term(q: Emitter, red: list[SSAValue]) -> SSAValue:
            idx = [*ivs, red[2], red[0], red[1]]
            return q.mul(q.load(x, idx, xmap), q.load(w, idx, wmap))

        s = e.reduce("add", 0.0, [1, 1, k], term, contract=True, names=("kh", "kw", "ci"))
        if bias is not None:
            s = e.add(s, e.load(bias, [ivs[-1]]))
        e.store(s, out, ivs)

    kb.nest(shape, body)


LOWERINGS: dict[type[Operation], LayerLowering] = {
    nn.Conv2dOp: lower_conv2d,
    nn.LinearOp: lower_linear,
}

"""Pooling: max and average windows, and adaptive average pooling, as window reductions."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import arith
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap

from brainslug.dialects import nn
from brainslug.dialects.nn.pooling import MaxPoolNaN
from brainslug.lowering.nn_to_loop.builder import (
    NEG_INF,
    Buffers,
    Emitter,
    KernelBuilder,
    LayerLowering,
    d,
    layout_map,
    logical_shape,
)


def window_map(layout: str, strides: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int]) -> AffineMap:
    """(n, c, oh, ow, kh, kw) -> physical input index of a window element."""
    sh, sw = strides
    dh, dw = dilation
    h = d(2) * sh + d(4) * dh - padding[0]
    w = d(3) * sw + d(5) * dw - padding[1]
    if layout == "NHWC":
        return AffineMap(6, 0, (d(0), h, w, d(1)))
    return AffineMap(6, 0, (d(0), d(1), h, w))


def windows_leave_input(in_shape: Sequence[int], out_shape: Sequence[int], kernel: Sequence[int],
                        strides: Sequence[int], padding: Sequence[int],
                        dilation: Sequence[int]) -> bool:
    """Whether some window element lies outside the input (then loads need a pad)."""
    if any(padding):
        return True
    for k in (0, 1):
        last = (out_shape[2 + k] - 1) * strides[k] + (kernel[k] - 1) * dilation[k]
        if last >= in_shape[2 + k]:
            return True
    return False


FLT_LOWEST = -3.4028234663852886e38
"""The most negative finite float32, TensorFlow's initial max (`lowest()`)."""


def lower_max_pool(kb: KernelBuilder, op: nn.MaxPool2dOp, buf: Buffers, out: SSAValue) -> None:
    """A `loop.reduce max` over the window, whose step is `acc = (v > acc ||
    isnan(v)) ? v : acc`; padded elements load -inf (they never win).

    nan = "propagate": from -inf, the loaded value itself (PyTorch's rule).
    nan = "skip": from -FLT_MAX, of `isnan(v) ? -inf : v` (`cmpf uno` and a
    select), which is never NaN and never greater than the accumulator, so the
    step is the ordered-greater select `acc = v > acc ? v : acc` of TensorFlow's
    MaxPool: NaN never wins, a window without a number (or of -inf) gives -FLT_MAX.
    """
    x = buf[op.input]
    layout = op.layout_value
    wmap = window_map(layout, op.strides_values, op.padding_values, op.dilation_values)
    kh, kw = op.kernel_values
    omap = layout_map(layout, 4)
    pad = NEG_INF if windows_leave_input(
        logical_shape(x.type.get_shape(), layout), logical_shape(out.type.get_shape(), layout),
        (kh, kw), op.strides_values, op.padding_values, op.dilation_values) else None
    skip = op.nan_value == MaxPoolNaN.SKIP

    def element(r: Emitter, ivs: list[SSAValue], w: list[SSAValue]) -> SSAValue:
        v = r.load(x, [*ivs, *w], wmap, pad=pad)
        return r.select(r.cmp("uno", v, v), r.f(NEG_INF), v) if skip else v

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        m = e.reduce("max", FLT_LOWEST if skip else NEG_INF, [kh, kw],
                     lambda r, w: element(r, ivs, w))
        e.store(m, out, ivs, omap)

    kb.nest(logical_shape(out.type.get_shape(), layout), body)


def lower_avg_pool(kb: KernelBuilder, op: nn.AvgPool2dOp, buf: Buffers, out: SSAValue) -> None:
    """PyTorch's avg_pool2d: window sum, then division by the window size
    (clipped to the padded input, or to the input without count_include_pad)."""
    x = buf[op.input]
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


def lower_adaptive_avg_pool(kb: KernelBuilder, op: nn.AdaptiveAvgPool2dOp, buf: Buffers,
                            out: SSAValue) -> None:
    """PyTorch's adaptive_avg_pool2d; a 1x1 output is the mean over H and W."""
    x = buf[op.input]
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


LOWERINGS: dict[type[Operation], LayerLowering] = {
    nn.MaxPool2dOp: lower_max_pool,
    nn.AvgPool2dOp: lower_avg_pool,
    nn.AdaptiveAvgPool2dOp: lower_adaptive_avg_pool,
}

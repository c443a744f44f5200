"""Data movement: cat, flatten/reshape, permute, pad, roll, nearest and
bilinear resampling, and the copy of a value into a second output."""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr, AffineMap

from brainslug.dialects import loop, nn
from brainslug.lowering.nn_to_loop.builder import (
    Buffers,
    Emitter,
    KernelBuilder,
    LayerLowering,
    UnsupportedLayer,
    cst,
    d,
)

PIECE_ALIGN = 16
"""Pieces read through `loop.pieces` are a multiple of this wide (so that a
lane chunk of any width up to it stays in one piece)."""


def piece_runs(kb: KernelBuilder, xs: Sequence[SSAValue], axis: int) -> list[list[SSAValue]]:
    """`xs` (a cat's operand buffers) in runs: two or more like kernel inputs,
    consecutive arguments, cut along their last dim at a multiple of
    `PIECE_ALIGN` (what `loop.pieces` reads as one), or single operands."""
    runs: list[list[SSAValue]] = []
    for x in xs:
        last = runs[-1] if runs else None
        t = x.type
        if (kb.piece_tables and last is not None and x in kb.inputs and last[-1] in kb.inputs
                and kb.inputs.index(x) == kb.inputs.index(last[-1]) + 1
                and t == last[-1].type and axis == len(t.get_shape()) - 1
                and t.get_shape()[-1] % PIECE_ALIGN == 0):
            last.append(x)
        else:
            runs.append([x])
    return runs


def lower_cat(kb: KernelBuilder, op: nn.CatOp, buf: Buffers, out: SSAValue) -> None:
    """One copy nest per operand into its slab of the output (bs-fuse reads the
    operands in place instead, where it can). With `KernelBuilder.piece_tables`
    a run of like inputs is one operand (`loop.pieces`): its code does not grow
    with the run's length."""
    rank = len(out.type.get_shape())
    axis = op.axis_value
    offset = 0
    xs = []
    for run in piece_runs(kb, [buf[v] for v in op.inputs], axis):
        xs.append(run[0] if len(run) == 1 else kb.top(loop.PiecesOp(run)))
    for x in xs:
        shape = x.type.get_shape()
        omap = AffineMap(rank, 0, tuple(d(k) + offset if k == axis else d(k) for k in range(rank)))

        def body(e: Emitter, ivs: list[SSAValue], x: SSAValue = x, omap: AffineMap = omap) -> None:
            e.store(e.load(x, ivs), out, ivs, omap)

        kb.nest(shape, body)
        offset += shape[axis]


def reshape_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> AffineMap:
    """Output ivs to input indices of a row-major reshape that keeps dim 0.

    The dims split into groups whose extents multiply to the same count on both
    sides (as PyTorch's view does): a dim kept as it is reads its own iv, a
    merge reads `sum(iv * stride)`, and only a split needs a division, of one
    iv, so that the reads stay affine where the reshape is a relabelling."""
    if in_shape[0] != out_shape[0] or any(e < 0 for e in (*in_shape[1:], *out_shape[1:])):
        raise UnsupportedLayer("reshape must keep the batch dimension")
    if 0 in (*in_shape[1:], *out_shape[1:]):
        raise UnsupportedLayer("reshape of an empty tensor")
    if math.prod(in_shape[1:]) != math.prod(out_shape[1:]):
        # (LeViT's batch norm over B*N tokens, then reshaped to B x N)
        raise UnsupportedLayer("reshape moves elements between the batch dimension and "
                               "the others")
    results: list[AffineExpr] = [d(0)]
    i = o = 1
    while i < len(in_shape) or o < len(out_shape):
        gi, go = [i], [o]
        count_in = in_shape[i] if i < len(in_shape) else 1
        count_out = out_shape[o] if o < len(out_shape) else 1
        while count_in != count_out:
            if count_in < count_out:
                i += 1
                gi.append(i)
                count_in *= in_shape[i]
            else:
                o += 1
                go.append(o)
                count_out *= out_shape[o]
        i, o = i + 1, o + 1
        flat: AffineExpr = cst(0)
        stride = 1
        for k in reversed([k for k in go if k < len(out_shape)]):
            flat = flat + d(k) * stride
            stride *= out_shape[k]
        ins = [k for k in gi if k < len(in_shape)]
        stride = 1
        strides = []
        for k in reversed(ins):
            strides.append(stride)
            stride *= in_shape[k]
        strides.reverse()
        for n, (k, st) in enumerate(zip(ins, strides, strict=True)):
            e = flat if st == 1 else flat // st
            results.append(cst(0) if in_shape[k] == 1 else e if n == 0 else e % in_shape[k])
    return AffineMap(len(out_shape), 0, tuple(results))


def _divides(m: AffineMap) -> bool:
    """Whether a map divides (floordiv, mod): its lanes can't be read as one vector."""
    return any(isinstance(x, AffineBinaryOpExpr) and x.kind in (
        AffineBinaryOpKind.FloorDiv, AffineBinaryOpKind.Mod, AffineBinaryOpKind.CeilDiv)
        for r in m.results for x in r.dfs())


def lower_reshape(kb: KernelBuilder, op: nn.FlattenOp | nn.ReshapeOp, buf: Buffers,
                  out: SSAValue) -> None:
    """A copy nest over the output that reads the input through `reshape_map`;
    where that map divides and the reshape only merges dims, a nest over the
    input that stores through the merged (affine) indices instead."""
    x = buf[op.input]
    in_shape, out_shape = x.type.get_shape(), out.type.get_shape()
    m = reshape_map(in_shape, out_shape)
    if _divides(m):
        store_map = reshape_map(out_shape, in_shape)
        if not _divides(store_map):

            def scatter(e: Emitter, ivs: list[SSAValue]) -> None:
                e.store(e.load(x, ivs), out, ivs, store_map)

            kb.nest(in_shape, scatter)
            return

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(e.load(x, ivs, m), out, ivs)

    kb.nest(out_shape, body)


def lower_permute(kb: KernelBuilder, op: nn.PermuteOp, buf: Buffers, out: SSAValue) -> None:
    """out[i] = x[i permuted back]: input dim dims[k] is output iv k."""
    x = buf[op.input]
    dims = op.dims_values
    m = AffineMap(len(dims), 0, tuple(d(dims.index(a)) for a in range(len(dims))))

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(e.load(x, ivs, m), out, ivs)

    kb.nest(out.type.get_shape(), body)


def _read_through(kb: KernelBuilder, x: SSAValue, m: AffineMap, out: SSAValue,
                  pad: float | None = None) -> None:
    """out[i] = x[m(i)] (`pad` where that is out of bounds)."""

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(e.load(x, ivs, m, pad), out, ivs)

    kb.nest(out.type.get_shape(), body)


def lower_pad(kb: KernelBuilder, op: nn.PadOp, buf: Buffers, out: SSAValue) -> None:
    """out[i] = x[i - low], or `value` where that is out of bounds (a padded
    load; a crop alone never is)."""
    x = buf[op.input]
    low = op.low_values
    m = AffineMap(len(low), 0, tuple(d(k) - lo for k, lo in enumerate(low)))
    pads = any(v > 0 for v in (*low, *op.high_values))
    value = op.value_value if pads else None
    _read_through(kb, x, m, out, value)


def lower_roll(kb: KernelBuilder, op: nn.RollOp, buf: Buffers, out: SSAValue) -> None:
    """out[i] = x[(i - shift) mod extent] along each shifted dim."""
    x = buf[op.input]
    shape = out.type.get_shape()
    m = AffineMap(len(shape), 0, tuple(
        (d(k) + (e - sh)) % e if sh else d(k)
        for k, (sh, e) in enumerate(zip(op.shifts_values, shape, strict=True))))
    _read_through(kb, x, m, out)


def lower_resize_nearest(kb: KernelBuilder, op: nn.ResizeNearestOp, buf: Buffers,
                         out: SSAValue) -> None:
    """out[i] = x[(scale * i + offset) floordiv divisor] along each dim."""
    x = buf[op.input]
    shape = out.type.get_shape()
    m = AffineMap(len(shape), 0, tuple(
        (d(k) * s + o) // q if q != 1 else d(k) * s + o
        for k, (s, o, q) in enumerate(op.maps)))
    _read_through(kb, x, m, out)


def lower_resize_bilinear(kb: KernelBuilder, op: nn.ResizeBilinearOp, buf: Buffers,
                           out: SSAValue) -> None:
    """One nest per pair of row and column runs (`nn.linear_pieces`), in which
    the four input points are affine reads:
    `(x[r0, c0] * cw0 + x[r0, c1] * cw1) * rw0 + (x[r1, c0] * cw0 + x[r1, c1] * cw1) * rw1`."""
    x, rw, cw = buf[op.input], buf[op.row_weights], buf[op.col_weights]
    shape = out.type.get_shape()
    rank = len(shape)
    dh, dw = op.dims.get_values()
    n_in = x.type.get_shape()
    (r0, r1), (c0, c1) = op.tables
    row_runs = nn.linear_pieces(r0, r1, n_in[dh])
    col_runs = nn.linear_pieces(c0, c1, n_in[dw])

    def read(k: int, run: tuple[int, int, int]) -> AffineExpr:
        s, o, q = run
        if s == 0:
            return cst(o // q)
        e = d(k) * s + o if s != 1 else d(k) + o
        return e // q if q != 1 else e

    for rs, re_, rmap0, rmap1 in row_runs:
        for cs, ce, cmap0, cmap1 in col_runs:
            extents = list(shape)
            extents[dh], extents[dw] = re_ - rs, ce - cs

            def point(rm: tuple[int, int, int], cm: tuple[int, int, int]) -> AffineMap:
                return AffineMap(rank, 0, tuple(read(dh, rm) if k == dh else read(dw, cm)
                                               if k == dw else d(k) for k in range(rank)))

            store = AffineMap(rank, 0, tuple(d(k) + rs if k == dh else d(k) + cs if k == dw
                                             else d(k) for k in range(rank)))
            w_at = [AffineMap(rank, 0, (cst(j), d(k) + start))
                    for k, start in ((dh, rs), (dw, cs)) for j in (0, 1)]
            maps = (point(rmap0, cmap0), point(rmap0, cmap1), point(rmap1, cmap0),
                    point(rmap1, cmap1))

            def body(e: Emitter, ivs: list[SSAValue], maps: tuple[AffineMap, ...] = maps,
                     w_at: list[AffineMap] = w_at, store: AffineMap = store) -> None:
                rw0, rw1, cw0, cw1 = (e.load(t, ivs, m) for t, m in zip((rw, rw, cw, cw), w_at,
                                                                        strict=True))
                v00, v01, v10, v11 = (e.load(x, ivs, m) for m in maps)
                t0 = e.add(e.mul(v00, cw0), e.mul(v01, cw1))
                t1 = e.add(e.mul(v10, cw0), e.mul(v11, cw1))
                e.store(e.add(e.mul(t0, rw0), e.mul(t1, rw1)), out, ivs, store)

            kb.nest(extents, body)


def lower_copy(kb: KernelBuilder, x: SSAValue, out: SSAValue) -> None:
    """`out` = `x`, element by element."""

    def body(e: Emitter, ivs: list[SSAValue]) -> None:
        e.store(e.load(x, ivs), out, ivs)

    kb.nest(out.type.get_shape(), body)


LOWERINGS: dict[type[Operation], LayerLowering] = {
    nn.CatOp: lower_cat,
    nn.FlattenOp: lower_reshape,
    nn.ReshapeOp: lower_reshape,
    nn.PermuteOp: lower_permute,
    nn.PadOp: lower_pad,
    nn.RollOp: lower_roll,
    nn.ResizeNearestOp: lower_resize_nearest,
    nn.ResizeBilinearOp: lower_resize_bilinear,
}

"""Nest surgery for bs-register-tile's blocks of columns: a nest's body moved
into a new nest, the columns of a block (clamped to the last point, with the
guards of their stores), blocks of consecutive points across rows (also a
depth-first tile's), and a copy of a nest over the last columns of its rows."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import arith
from xdsl.dialects.builtin import AffineMapAttr, IndexType, IntegerAttr
from xdsl.ir import Block, Operation, SSAValue
from xdsl.ir.affine import AffineDimExpr, AffineExpr
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from brainslug.analysis.nests import substitute
from brainslug.dialects import loop, simd

_INDEXED_ACCESSES = (loop.LoadOp, loop.StoreOp, loop.InBoundsOp, simd.LoadOp,
                     simd.StoreOp, simd.InBoundsOp)


def index_constant(k: int, ops: list[Operation]) -> SSAValue:
    """An `index` constant `k`, appended to `ops`."""
    c = arith.ConstantOp(IntegerAttr(k, IndexType()))
    ops.append(c)
    return c.result


def take_body(nest: loop.NestOp, new: loop.NestOp, args: Sequence[SSAValue],
              first: list[Operation], rewriter: PatternRewriter) -> None:
    """Replaces `nest` by `new`, whose block gets `first` and then `nest`'s
    body, with `nest`'s ivs as `args` (of `new`'s block)."""
    new.attributes |= nest.attributes
    old_block, block = nest.body.block, new.body.block
    for old_arg, arg in zip(old_block.args, args, strict=True):
        arg.name_hint = old_arg.name_hint
        old_arg.replace_all_uses_with(arg)
    for op in first:
        block.add_op(op)
    for op in list(old_block.ops):
        op.detach()
        block.add_op(op)
    rewriter.replace(nest, new)


def in_tile(op: Operation) -> bool:
    """Whether `op` is inside a `loop.tile` (a depth-first tile's body)."""
    parent = op.parent_op()
    while parent is not None:
        if isinstance(parent, loop.TileOp):
            return True
        parent = parent.parent_op()
    return False


def set_extent(nest: loop.NestOp, pos: int, extent: int) -> int:
    """Sets the static upper bound of `nest`'s dim `pos` to `extent` (returned)."""
    upper = nest.upper_bounds()
    upper[pos] = extent
    nest.upper, _ = loop.split_bounds(upper)
    return extent


def tail_nest(nest: loop.NestOp, pos: int, offset: int, extent: int) -> loop.NestOp | None:
    """A copy of `nest` whose dim `pos` runs over `extent` columns from
    `offset` (each access reads and writes column `offset + iv`); None where
    some op other than an access (a load, store or bounds check) uses it."""
    if any(not isinstance(use.operation, _INDEXED_ACCESSES) for use in nest.ivs[pos].uses):
        return None
    tail = nest.clone()
    iv = tail.ivs[pos]
    for use in list(iv.uses):
        op = use.operation
        amap = op.map.data  # type: ignore[attr-defined]
        dims: list[AffineExpr] = [AffineDimExpr(k) for k in range(amap.num_dims)]
        for k, index in enumerate(op.indices):  # type: ignore[attr-defined]
            if index is iv:
                dims[k] = AffineDimExpr(k) + offset
        op.map = AffineMapAttr(substitute(amap, dims, amap.num_dims))  # type: ignore[attr-defined]
    set_extent(tail, pos, extent)
    return tail


def column_guard(k: int, point: SSAValue, last: SSAValue,
                 ops: list[Operation]) -> SSAValue | None:
    """Whether column `k` of a block, at `point` before clamping, is not past
    `last` (its stores are skipped where it is: the clamped column recomputes
    the last point, which its own column writes; column 0 never is)."""
    if k == 0:
        return None
    inside = arith.CmpiOp(point, last, "sle")
    ops.append(inside)
    inside.result.name_hint = f"inside{k}"
    return inside.result


def block_points(first: SSAValue, p: int, last: SSAValue, width: SSAValue,
                 ivs: tuple[SSAValue, SSAValue], ops: list[Operation], exact: bool = False
                 ) -> tuple[list[dict[SSAValue, SSAValue]], list[SSAValue | None]]:
    """Per column of a block of `p` consecutive points of a row-major (row,
    column) space of rows `width` wide, from point `first`: the point (past
    `last` clamped to it) as a row and a column, in place of the nest's row
    and column ivs `ivs`, and the column's guard (`guard`; none where the
    blocks cover the points `exact`ly). The ops go to the end of `ops`."""
    row_iv, column_iv = ivs
    out, guards = [], []
    for k in range(p):
        point = arith.AddiOp(first, index_constant(k, ops))
        clamped = arith.MinSIOp(point.result, last)
        r = arith.DivSIOp(clamped.result, width)  # points are >= 0
        r_start = arith.MuliOp(r.result, width)
        c = arith.SubiOp(clamped.result, r_start.result)
        ops += [point, clamped, r, r_start, c]
        r.result.name_hint, c.result.name_hint = f"row{k}", f"col{k}"
        out.append({row_iv: r.result, column_iv: c.result})
        guards.append(None if exact else column_guard(k, point.result, last, ops))
    return out, guards


def tile_step(lower: loop.Bound) -> int | None:
    """The step of a `loop.tile` dim whose iv is `lower` (a nest's lower
    bound inside the tile: its extent is at most that step), else None."""
    if isinstance(lower, int) or not isinstance(lower.owner, Block):
        return None
    tile = lower.owner.parent_op()
    if not isinstance(tile, loop.TileOp):
        return None
    return tile.steps[lower.index]


def across_tile_rows(nest: loop.NestOp, pos: int, p: int, columns: int,
                     rewriter: PatternRewriter
                     ) -> tuple[loop.NestOp, list[dict[SSAValue, SSAValue]], list[SSAValue | None]]:
    """`RegisterTile._across_rows` for rows of dynamic bounds `[lo, hi)` (a depth-first
    tile's): a new nest whose dim `pos - 1` has one point and whose dim `pos`
    runs over the blocks of `p` consecutive points of the rows' row-major
    (row, column) space, `ceil((hi - lo) * columns / p)` of them; per column of
    a block, its row and column, both past the last point clamped to it."""
    lows, ups = nest.lower_bounds(), nest.upper_bounds()
    lo, hi = lows[pos - 1], ups[pos - 1]
    before: list[Operation] = []
    width = index_constant(columns, before)
    start = arith.MuliOp(lo, width)  # type: ignore[arg-type]
    end = arith.MuliOp(hi, width)  # type: ignore[arg-type]
    span = arith.SubiOp(end.result, start.result)
    rounded = arith.AddiOp(span.result, index_constant(p - 1, before))
    blocks = arith.DivSIOp(rounded.result, index_constant(p, before))
    last = arith.SubiOp(end.result, index_constant(1, before))
    before += [start, end, span, rounded, blocks, last]
    rewriter.insert(before, InsertPoint.before(nest))
    lows[pos - 1], ups[pos - 1], lows[pos], ups[pos] = 0, 1, 0, blocks.result
    new = loop.NestOp(lows, ups, parallel=None)
    row_iv, block_iv = new.body.block.args[pos - 1], new.body.block.args[pos]
    ops: list[Operation] = []
    base = arith.MuliOp(block_iv, index_constant(p, ops))
    first = arith.AddiOp(start.result, base.result)
    ops += [base, first]
    out, guards = block_points(first.result, p, last.result, width, (row_iv, block_iv), ops)
    take_body(nest, new, new.body.block.args, ops, rewriter)
    return new, out, guards

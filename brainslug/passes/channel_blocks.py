"""bs-register-tile's blocks of output channels: a register block's V vectors
of channels as a nest dimension, and the loads that read the block as a whole.

- A weight packed by output channels (`[O/B, KH, KW, I, B]`) reads
  `o floordiv B` and `o mod B` of the lane iv `o`; in a block of B channels
  those are the block and the lane within it (`index_blocks`).
- A grouped convolution reads the input channel `(o floordiv K) * I + i` of
  the group of K output channels that `o` is in. Vectorized, that is a load
  whose lanes may lie in different groups: a gather. Where a block of V*W
  channels divides K, every lane of the block lies in one group, `o floordiv K`
  is `cb floordiv (K / (V*W))` for the block `cb`, and the load is one scalar
  broadcast to all lanes, as in a convolution without groups
  (`broadcast_group_loads`).
"""

from __future__ import annotations

from xdsl.dialects import arith
from xdsl.dialects.builtin import AffineMapAttr, IndexType, IntegerAttr
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
    AffineMap,
)
from xdsl.pattern_rewriter import PatternRewriter

from brainslug.dialects import loop, simd
from brainslug.passes.column_blocks import take_body


def channel_blocks(nest: loop.NestOp, lb: int, ub: int, block: int, outer: bool,
                   rewriter: PatternRewriter) -> tuple[loop.NestOp, tuple[SSAValue, SSAValue]]:
    """Moves the lane range's blocks of `block` channels to a new nest
    dimension, outermost or innermost; the bounds of the block's lane range
    (`lower + block` where the blocks divide the range: no masked tail)."""
    lowers, uppers = nest.lower_bounds(), nest.upper_bounds()
    count = -(-(ub - lb) // block)
    if outer:
        new = loop.NestOp([0, *lowers], [count, *uppers], parallel=None)
    else:
        new = loop.NestOp([*lowers, 0], [*uppers, count], parallel=None)
    new_block = new.body.block
    cb = new_block.args[0] if outer else new_block.args[-1]
    cb.name_hint = "cb"
    kept = new_block.args[1:] if outer else new_block.args[:-1]
    first = [
        k_block := arith.ConstantOp(IntegerAttr(block, IndexType())),
        k_lb := arith.ConstantOp(IntegerAttr(lb, IndexType())),
        k_ub := arith.ConstantOp(IntegerAttr(ub, IndexType())),
        scaled := arith.MuliOp(cb, k_block.result),
        lower := arith.AddiOp(scaled.result, k_lb.result),
        end := arith.AddiOp(lower.result, k_block.result),
    ]
    upper = end
    if (ub - lb) % block:  # the last block is partial
        first.append(upper := arith.MinSIOp(end.result, k_ub.result))
    take_body(nest, new, kept, first, rewriter)
    return new, (lower.result, upper.result)


def _lane_block(e: AffineExpr, lane: int) -> int | None:
    """B when `e` is `lane floordiv B` or `lane mod B`."""
    if (isinstance(e, AffineBinaryOpExpr) and isinstance(e.lhs, AffineDimExpr)
            and e.lhs.position == lane and isinstance(e.rhs, AffineConstantExpr)
            and e.kind in (AffineBinaryOpKind.FloorDiv, AffineBinaryOpKind.Mod)):
        return e.rhs.value
    return None


def _lane_positions(op: Operation, lane: SSAValue) -> list[int]:
    return [k for k, i in enumerate(op.indices) if i is lane]  # type: ignore[attr-defined]


def packed_block(red: loop.ReduceOp, lane: SSAValue) -> int:
    """The block B of a weight packed by output channels (its map reads
    `o floordiv B` and `o mod B` of the lane iv `o`), else 0."""
    for op in red.body.walk():
        if isinstance(op, simd.LoadOp):
            for k in _lane_positions(op, lane):
                blocks = {_lane_block(e, k) for e in op.map.data.results} - {None}
                if len(blocks) == 1:
                    return blocks.pop()  # type: ignore[return-value]
    return 0


def _in_block(e: AffineExpr, lane: int, cb: int, block: int) -> AffineExpr:
    """`e` with `lane floordiv B` as dim `cb` and `lane mod B` as `lane - cb*B`."""
    if _lane_block(e, lane) != block:
        return e
    assert isinstance(e, AffineBinaryOpExpr)
    if e.kind == AffineBinaryOpKind.FloorDiv:
        return AffineDimExpr(cb)
    return AffineDimExpr(lane) - AffineDimExpr(cb) * block


def index_blocks(lp: simd.LoopOp, block: int, cb: SSAValue) -> None:
    """Rewrites the packed-weight loads of `lp`, whose lanes all lie in the
    channel block `cb`: `o floordiv B` is `cb`, `o mod B` is `o - cb * B`."""
    for op in lp.body.walk():
        if not isinstance(op, simd.LoadOp):
            continue
        for k in _lane_positions(op, lp.iv):
            amap = op.map.data
            if not any(_lane_block(e, k) == block for e in amap.results):
                continue
            n = amap.num_dims
            results = tuple(_in_block(e, k, n, block) for e in amap.results)
            op.map = AffineMapAttr(AffineMap(n + 1, 0, results))
            op.operands = [*op.operands, cb]
            break


def _groups_of(e: AffineExpr, lane: int) -> set[int | None]:
    """The K of each `lane floordiv K` in `e`, and None for a use of the lane
    outside one."""
    if isinstance(e, AffineDimExpr):
        return {None} if e.position == lane else set()
    if not isinstance(e, AffineBinaryOpExpr):
        return set()
    if e.kind == AffineBinaryOpKind.FloorDiv and _lane_block(e, lane) is not None:
        return {e.rhs.value}  # type: ignore[attr-defined]
    return _groups_of(e.lhs, lane) | _groups_of(e.rhs, lane)


def _group_of_load(op: simd.LoadOp, lane: SSAValue) -> int | None:
    """K where `op` reads the lane iv only as `lane floordiv K`."""
    positions = _lane_positions(op, lane)
    if len(positions) != 1:
        return None
    found: set[int | None] = set()
    for e in op.map.data.results:
        found |= _groups_of(e, positions[0])
    return found.pop() if len(found) == 1 and None not in found else None  # type: ignore[return-value]


def group_width(red: loop.ReduceOp, lane: SSAValue) -> int:
    """K where some load of the reduction reads the lane iv `o` (the output
    channel) only as `o floordiv K`, as a grouped convolution reads its input
    channels (K output channels per group); else 0."""
    for op in red.body.walk():
        if isinstance(op, simd.LoadOp) and (k := _group_of_load(op, lane)) is not None:
            return k
    return 0


def _in_group(e: AffineExpr, lane: int, block_dim: int, per_group: int) -> AffineExpr:
    """`e` with each `lane floordiv K` as `block floordiv (K / block size)`."""
    if not isinstance(e, AffineBinaryOpExpr):
        return e
    if e.kind == AffineBinaryOpKind.FloorDiv and _lane_block(e, lane) is not None:
        block = AffineDimExpr(block_dim)
        return block if per_group == 1 else block // per_group
    return AffineBinaryOpExpr(e.kind, _in_group(e.lhs, lane, block_dim, per_group),
                              _in_group(e.rhs, lane, block_dim, per_group))


def broadcast_group_loads(lp: simd.LoopOp, group: int, block: int, cb: SSAValue) -> None:
    """Rewrites the loads of `lp` that read its lane iv only as `o floordiv
    group`, where `lp` runs over the channel block `cb` of `block` lanes (from
    `cb * block`, and `block` divides `group`): each becomes one scalar load,
    of `cb floordiv (group / block)` for `o floordiv group`, splat to all lanes."""
    assert group % block == 0
    for op in list(lp.body.walk()):
        if not isinstance(op, simd.LoadOp) or _group_of_load(op, lp.iv) != group:
            continue
        (k,) = _lane_positions(op, lp.iv)
        amap = op.map.data
        n = amap.num_dims
        results = tuple(_in_group(e, k, n, group // block) for e in amap.results)
        load = loop.LoadOp(op.buffer, [*op.indices, cb], AffineMap(n + 1, 0, results),
                           op.pad_value)
        splat = simd.SplatOp(load.result)
        parent = op.parent_block()
        assert parent is not None
        parent.insert_ops_before([load, splat], op)
        op.result.replace_all_uses_with(splat.result)
        op.detach()
        op.erase()

"""bs-prefetch-tiles: a depth-first tile's register-blocked sum prefetches the
next tile's prologue input.

A tile whose convolution reads a scratch that a prologue fills (efficientnet's
project stacks: the squeeze-excite `mul`, then a 1x1 convolution) runs in two
halves: the prologue streams the tile's input from memory, then the sum works
from the cache. Each thread alternates them, so memory and FMAs take turns.
Here each column block of the sum (`bs.columns`) prefetches into L2 the input
that the prologue of the next tile (the tile loop's last dim one step on) will
read for the same rows and columns, so the next prologue finds it there. The
prefetches are hints: results do not change.

Applies where the prologue is a `loop.nest` of one `simd.loop` whose stores
all go to scratch of the tile, the sum is a register-blocked nest of the same
tile dims after it, and the prologue's columns (its dim at the sum's column
position, static from 0) divide among the sum's column blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import memref
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineDimExpr, AffineExpr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.analysis import nests as nu
from brainslug.dialects import loop, simd
from brainslug.passes.register_tile import COLUMNS_ATTR

LOCALITY = 2
"""The prefetches fill L2 (`prefetcht1`): a tile's input is up to half of it."""

PREFETCHED = "bs.prefetch_next_tile"
"""On the prefetch loops this pass adds (so that it adds them once)."""


def _in_tile(v: SSAValue, tile: loop.TileOp) -> bool:
    """Whether `v` is defined inside `tile` (an op's result or a block argument)."""
    owner = v.owner if isinstance(v.owner, Operation) else v.owner.parent_op()
    return owner is not None and tile.is_ancestor(owner)


def _prologue(nest: loop.NestOp, tile: loop.TileOp) -> simd.LoopOp | None:
    """The one `simd.loop` of `nest` if `nest` is a prologue of `tile`: its
    stores all go to scratch allocated in the tile, and it has no other op."""
    ops = [o for o in nest.body.block.ops if not isinstance(o, loop.YieldOp)]
    if len(ops) != 1 or not isinstance(ops[0], simd.LoopOp):
        return None
    stores = [o for o in ops[0].body.walk() if isinstance(o, simd.StoreOp | loop.StoreOp)]
    if not stores or any(not isinstance(s.buffer.owner, memref.AllocaOp)
                         or s.buffer.owner.parent_op() is not tile for s in stores):
        return None
    return ops[0]


def _uses(load: simd.LoadOp, iv: SSAValue) -> bool:
    """Whether the point `load` reads depends on `iv`."""
    used = {e.position for r in load.map.data.results for e in r.dfs()
            if isinstance(e, AffineDimExpr)}
    return any(v is iv for k, v in enumerate(load.indices) if k in used)


def _columns(pro: loop.NestOp, total: loop.NestOp, pos: int) -> int | None:
    """The prologue's columns per column block of the sum, where both nests
    have the same bounds but at the column position `pos`, and there the
    prologue's extent divides among the sum's blocks; else None."""
    pl, pu, sl, su = (pro.lower_bounds(), pro.upper_bounds(), total.lower_bounds(),
                      total.upper_bounds())
    if len(pl) != len(sl) or pos >= len(pl):
        return None
    if not all(nu.same_bound(pl[k], sl[k]) and nu.same_bound(pu[k], su[k])
               for k in range(len(pl)) if k != pos):
        return None
    extent, blocks = pu[pos], su[pos]
    if pl[pos] != 0 or sl[pos] != 0 or not isinstance(extent, int) \
            or not isinstance(blocks, int) or blocks < 1:
        return None
    per = -(-extent // blocks)
    return per if per * (blocks - 1) < extent else None


def _prefetches(lanes: simd.LoopOp, pro: loop.NestOp, total: loop.NestOp, pos: int,
                per: int, shift: tuple[int, int], tile: loop.TileOp) -> list[Operation]:
    """For column `j` of the sum's block: a `simd.loop` over the prologue's
    lanes that prefetches what each of its loads from outside the tile reads
    at the sum's point with its column `block * per + j` and its dim
    `shift[0]` (the tile's last) `shift[1]` (the tile's step) on; none where
    the lanes' bounds are not static."""
    dim, step = shift
    lb, ub = lanes.lower_bounds()[0], lanes.upper_bounds()[0]
    if not isinstance(lb, int) or not isinstance(ub, int):
        return []
    loads = [o for o in lanes.body.walk() if isinstance(o, simd.LoadOp)
             and not _in_tile(o.buffer, tile) and _uses(o, pro.ivs[dim])]
    out: list[Operation] = []
    for j in range(per):
        body = Block(arg_types=[lanes.iv.type])
        lane = body.args[0]
        for load in loads:
            indices: list[SSAValue] = []
            subst: list[AffineExpr] = []
            for k, v in enumerate(load.indices):
                d: AffineExpr = AffineDimExpr(k)
                if v is lanes.iv:
                    indices.append(lane)
                elif v in pro.ivs:
                    i = pro.ivs.index(v)
                    indices.append(total.ivs[i])
                    if i == dim:
                        d = d + step
                    elif i == pos:
                        d = d * per + j
                elif not _in_tile(v, tile):
                    indices.append(v)
                else:
                    break  # an index computed in the tile: no prefetch
                subst.append(d)
            else:
                amap = load.map.data.replace_dims_and_symbols(subst, [], len(indices), 0)
                body.add_op(simd.PrefetchOp(load.buffer, indices, amap, LOCALITY))
        if not body.ops:
            return []
        body.add_op(loop.YieldOp())
        out.append(simd.LoopOp(lb, ub, Region(body)))
    return out


@dataclass
class PrefetchNextTile(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, tile: loop.TileOp, rewriter: PatternRewriter, /):
        ops = list(tile.body.block.ops)
        dim_of = {iv: k for k, iv in enumerate(tile.ivs)}
        for i, pro in enumerate(ops):
            if not isinstance(pro, loop.NestOp) or (lanes := _prologue(pro, tile)) is None:
                continue
            # the prologue's dim that the tile's last dim bounds, and its step
            shifted = [k for k, lb in enumerate(pro.lower_bounds())
                       if dim_of.get(lb) == len(tile.ivs) - 1]  # type: ignore[arg-type]
            if len(shifted) != 1:
                continue
            scratch = {s.buffer for s in lanes.body.walk() if isinstance(s, simd.StoreOp)}
            for total in ops[i + 1:]:
                if not isinstance(total, loop.NestOp) or COLUMNS_ATTR not in total.attributes \
                        or any(o.attributes.get(PREFETCHED) for o in total.body.block.ops):
                    continue
                reads = {o.buffer for o in total.body.walk()
                         if isinstance(o, loop.LoadOp | simd.LoadOp)}
                if not reads & scratch:
                    continue
                pos = total.attributes[COLUMNS_ATTR].value.data  # type: ignore[attr-defined]
                per = _columns(pro, total, pos)
                if per is None or shifted[0] == pos:
                    continue
                new = _prefetches(lanes, pro, total, pos, per,
                                  (shifted[0], tile.steps[-1]), tile)
                if not new:
                    continue
                first = total.body.block.first_op
                assert first is not None
                for op in new:
                    op.attributes[PREFETCHED] = UnitAttr()
                    rewriter.insert(op, InsertPoint.before(first))
                return


class PrefetchTilesPass(ModulePass):
    """Register-blocked sums of depth-first tiles prefetch the next tile's
    prologue input (see the module docstring)."""

    name = "bs-prefetch-tiles"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(PrefetchNextTile(), apply_recursively=False).rewrite_module(op)


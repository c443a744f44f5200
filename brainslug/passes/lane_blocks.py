"""bs-lane-blocks: reductions across rows, several vectors of lanes at a time.

A `simd.loop` over channels whose body reduces over other dims (a global or
windowed pool in channels-last, a mean over H and W) reads one W-lane vector
per reduction step, a row's stride after the last. One vector per step touches
one cache line per row, and the sweep of the next vector comes back for the
line beside it; one accumulator also makes each step wait for the last add.
This pass gives such a loop `vectors V`: each step reads V adjacent vectors of
one row (V lines, which the prefetcher streams) into V accumulators.

Every lane sums the same points in the same order, so results do not change.
Loops whose loads gather across lanes, contractions (bs-register-tile's) and
lane extents under 2·W are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineDimExpr, AffineExpr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from brainslug.dialects import loop, simd


def _contiguous_in_lane(load: simd.LoadOp, lane: SSAValue) -> bool:
    """Whether `load` reads consecutive elements across lanes (or the same one):
    the lane's index dim appears only as the last result of its map, alone."""
    dims = [k for k, v in enumerate(load.indices) if v is lane]
    if not dims:
        return True
    amap = load.map.data
    for k in dims:
        for pos, e in enumerate(amap.results):
            if k not in _dims_of(e):
                continue
            last = pos == len(amap.results) - 1
            if not (last and isinstance(e, AffineDimExpr) and e.position == k):
                return False
    return True


def _dims_of(e: AffineExpr) -> set[int]:
    if isinstance(e, AffineDimExpr):
        return {e.position}
    if isinstance(e, AffineBinaryOpExpr):
        return _dims_of(e.lhs) | _dims_of(e.rhs)
    return set()


@dataclass
class BlockLanesOfReductions(RewritePattern):
    lanes: int
    max_vectors: int

    def vectors(self, extent: int) -> int:
        """The largest power of two V <= `max_vectors` whose V·W lanes fit `extent`."""
        v = 1
        while v * 2 <= self.max_vectors and v * 2 * self.lanes <= extent:
            v *= 2
        return v

    @op_type_rewrite_pattern
    def match_and_rewrite(self, lp: simd.LoopOp, rewriter: PatternRewriter, /):
        if lp.vectors is not None:
            return
        (lb,), (ub,) = lp.lower_bounds(), lp.upper_bounds()
        if not isinstance(lb, int) or not isinstance(ub, int):
            return
        reductions = [o for o in lp.body.block.ops if isinstance(o, loop.ReduceOp)]
        if not reductions or any(r.contracts for r in reductions):
            return
        if any(isinstance(o, simd.LoopOp | simd.ReduceLoopOp) for o in lp.body.walk()
               if o is not lp):
            return
        loads = [o for o in lp.body.walk() if isinstance(o, simd.LoadOp)]
        if not all(_contiguous_in_lane(o, lp.iv) for o in loads):
            return
        v = self.vectors(ub - lb)
        if v == 1:
            return
        lp.vectors = IntegerAttr(v, i64)
        rewriter.handle_operation_modification(lp)


@dataclass(frozen=True)
class LaneBlocksPass(ModulePass):
    """Give lane loops that reduce across rows `vectors V` (at most
    `max-vectors`, of `lanes` lanes): V adjacent vectors per reduction step."""

    name = "bs-lane-blocks"
    lanes: int = 16
    max_vectors: int = 4

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            BlockLanesOfReductions(self.lanes, self.max_vectors), apply_recursively=False
        ).rewrite_module(op)

"""bs-merge-siblings: one nest for independent sibling nests over the same domain.

Concatenation lowers to one nest per input, each writing its own channel range
of the output. Channels-last, those nests share the domain (N, H, W) and differ
only in their simd range: merged, every point writes a whole output row in one
pass, and the kernel has one phase (one thread-pool dispatch) instead of one per
input. Two adjacent top-level nests merge when

* their domains are the same (bounds, and the same dynamic extents),
* neither reads a buffer the other writes, and
* where both write a buffer, each writes it only at the point itself
  (`buffer[ivs..., lane]`, identity map) with static, disjoint lane ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import MemRefType, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.dialects import loop, loop_kernels, simd
from brainslug.ir.compile_time import gc_paused


def _same_domain(a: loop.NestOp, b: loop.NestOp) -> bool:
    return (
        a.lower == b.lower
        and a.upper == b.upper
        and tuple(a.dyn_lower) == tuple(b.dyn_lower)
        and tuple(a.dyn_upper) == tuple(b.dyn_upper)
        and a.parallel == b.parallel
    )


def _effects(nest: loop.NestOp) -> tuple[set[SSAValue], set[SSAValue]]:
    """(buffers read, buffers written) anywhere in `nest`."""
    reads: set[SSAValue] = set()
    writes: set[SSAValue] = set()
    for op in nest.walk():
        if isinstance(op, simd.StoreOp | loop.StoreOp):
            writes.add(op.buffer)
            continue
        reads.update(x for x in op.operands if isinstance(x.type, MemRefType))
    return reads, writes


def _row_ranges(nest: loop.NestOp, buffer: SSAValue) -> list[tuple[int, int]] | None:
    """The static lane ranges of every store of `nest` to `buffer`, if each one
    stores at `buffer[ivs..., lane]`; else None."""
    out = []
    for op in nest.walk():
        if isinstance(op, loop.StoreOp) and op.buffer == buffer:
            return None
        if not isinstance(op, simd.StoreOp) or op.buffer != buffer:
            continue
        lane_loop = simd.enclosing_loop(op)
        if lane_loop is None or lane_loop.parent_op() is not nest:
            return None
        lo, hi = lane_loop.lower_bounds()[0], lane_loop.upper_bounds()[0]
        if not (isinstance(lo, int) and isinstance(hi, int)):
            return None
        if tuple(op.indices) != (*nest.ivs, lane_loop.iv) or op.map.data != AffineMap.identity(len(op.indices)):
            return None
        out.append((lo, hi))
    return out


def _disjoint(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    return all(ha <= lb or hb <= la for la, ha in a for lb, hb in b)


def can_merge(a: loop.NestOp, b: loop.NestOp) -> bool:
    """Whether `b` may run point by point together with `a`."""
    if not _same_domain(a, b):
        return False
    ra, wa = _effects(a)
    rb, wb = _effects(b)
    if ra & wb or rb & wa:
        return False
    for buf in wa & wb:
        xa, xb = _row_ranges(a, buf), _row_ranges(b, buf)
        if xa is None or xb is None or not _disjoint(xa, xb):
            return False
    return True


class MergeSiblingNests(RewritePattern):
    """Fold each top-level nest of a kernel into the preceding one when they commute."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: func.FuncOp, rewriter: PatternRewriter, /):
        if not loop_kernels.is_kernel(op):
            return
        prev: Operation | None = None
        for child in list(op.body.block.ops):
            if (
                isinstance(prev, loop.NestOp)
                and isinstance(child, loop.NestOp)
                and can_merge(prev, child)
            ):
                term = prev.body.block.last_op
                assert term is not None
                rewriter.inline_block(child.body.block, InsertPoint.before(term), prev.ivs)
                rewriter.erase(term)
                rewriter.erase(child)
                continue
            prev = child


@dataclass(frozen=True)
class MergeSiblingsPass(ModulePass):
    """Merge independent adjacent nests of each kernel that share a domain."""

    name = "bs-merge-siblings"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            PatternRewriteWalker(MergeSiblingNests(), apply_recursively=False).rewrite_module(op)

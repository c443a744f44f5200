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

from dataclasses import dataclass, field

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


@dataclass
class _Effects:
    """What a nest does to buffers: those it reads and writes, and for each
    buffer written the static lane ranges of its stores, or None where some
    store is not at `buffer[ivs..., lane]` over a static lane range."""

    reads: set[SSAValue] = field(default_factory=set)
    writes: dict[SSAValue, list[tuple[int, int]] | None] = field(default_factory=dict)

    @classmethod
    def of(cls, nest: loop.NestOp) -> _Effects:
        fx = cls()
        for op in nest.walk():
            if isinstance(op, simd.StoreOp | loop.StoreOp):
                rows = fx.writes.setdefault(op.buffer, [])
                row = _row(nest, op)
                if rows is None or row is None:
                    fx.writes[op.buffer] = None
                else:
                    rows.append(row)
                continue
            fx.reads.update(x for x in op.operands if isinstance(x.type, MemRefType))
        return fx

    def commutes_with(self, other: _Effects) -> bool:
        """Whether the two nests may run point by point together."""
        if not self.reads.isdisjoint(other.writes) or not other.reads.isdisjoint(self.writes):
            return False
        for buf, rows in self.writes.items():
            if buf not in other.writes:
                continue
            theirs = other.writes[buf]
            if rows is None or theirs is None or not _disjoint(rows, theirs):
                return False
        return True

    def absorb(self, other: _Effects) -> None:
        """The effects of the merged nest."""
        self.reads |= other.reads
        for buf, rows in other.writes.items():
            mine = self.writes.get(buf, [])
            self.writes[buf] = None if mine is None or rows is None else mine + rows


def _row(nest: loop.NestOp, op: simd.StoreOp | loop.StoreOp) -> tuple[int, int] | None:
    """The static lane range of a store at `buffer[ivs..., lane]`, else None."""
    if not isinstance(op, simd.StoreOp):
        return None
    lane_loop = simd.enclosing_loop(op)
    if lane_loop is None or lane_loop.parent_op() is not nest:
        return None
    lo, hi = lane_loop.lower_bounds()[0], lane_loop.upper_bounds()[0]
    if not (isinstance(lo, int) and isinstance(hi, int)):
        return None
    if tuple(op.indices) != (*nest.ivs, lane_loop.iv) or op.map.data != AffineMap.identity(len(op.indices)):
        return None
    return lo, hi


def _disjoint(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    return all(ha <= lb or hb <= la for la, ha in a for lb, hb in b)


class MergeSiblingNests(RewritePattern):
    """Fold each top-level nest of a kernel into the preceding one when they
    commute. The merged nest's effects are kept as it grows (a `cat` of N
    pieces merges N nests: walking the merged nest again each time was
    quadratic)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: func.FuncOp, rewriter: PatternRewriter, /):
        if not loop_kernels.is_kernel(op):
            return
        prev: Operation | None = None
        prev_fx: _Effects | None = None
        for child in list(op.body.block.ops):
            if isinstance(prev, loop.NestOp) and isinstance(child, loop.NestOp) and \
                    _same_domain(prev, child):
                prev_fx = prev_fx or _Effects.of(prev)
                child_fx = _Effects.of(child)
                if prev_fx.commutes_with(child_fx):
                    term = prev.body.block.last_op
                    assert term is not None
                    rewriter.inline_block(child.body.block, InsertPoint.before(term), prev.ivs)
                    rewriter.erase(term)
                    rewriter.erase(child)
                    prev_fx.absorb(child_fx)
                    continue
            prev, prev_fx = child, None


@dataclass(frozen=True)
class MergeSiblingsPass(ModulePass):
    """Merge independent adjacent nests of each kernel that share a domain."""

    name = "bs-merge-siblings"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            PatternRewriteWalker(MergeSiblingNests(), apply_recursively=False).rewrite_module(op)

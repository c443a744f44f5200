"""bs-fuse: loop merging and producer inlining inside kernels.

- Nests with the same iteration space merge into one; a buffer that only
  carried values between them becomes an SSA value (a register).
- An elementwise producer is inlined into its consumers' loads, windows
  included: BN→ReLU→MaxPool reads x and applies BN+ReLU inside the window. A
  padded (windowed) load keeps its padding through `loop.in_bounds`.
- A consumer of `cat` is split along the cat axis so each part reads its operand
  in place, and no concatenated copy is written.

Producers whose values are reused across a consumer dimension they don't
depend on (a per-channel parameter read at every pixel) stay materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import FloatAttr, ModuleOp, f32
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineDimExpr, AffineMap
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.dialects import loop
from brainslug.passes import nest_utils as nu


def _in_kernel_block(nest: loop.NestOp) -> bool:
    p = nest.parent_op()
    return isinstance(p, func.FuncOp) and "bs.kernel" in p.attributes


def _between(a: Operation, b: Operation) -> list[Operation]:
    """Top-level ops strictly between a and b in their block."""
    out, cur = [], a.next_op
    while cur is not None and cur is not b:
        out.append(cur)
        cur = cur.next_op
    return out


def _iv_map(idx, amap: AffineMap, ivs) -> AffineMap | None:
    """`amap` over `idx` rewritten over `ivs` positions (None if an index is not an iv)."""
    exprs = []
    for v in idx:
        if v not in ivs:
            return None
        exprs.append(AffineDimExpr(ivs.index(v)))
    return nu.substitute(amap, exprs, len(ivs))


class MergeSameDomain(RewritePattern):
    """Merge a producer nest into a consumer nest with the same domain that reads
    the produced values at the same points."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not _in_kernel_block(op):
            return
        for load in [o for o in op.body.block.ops if isinstance(o, loop.LoadOp)]:
            stores = nu.stores_to(load.buffer)
            if len(stores) != 1 or load.pad is not None:
                continue
            store = stores[0]
            prod = store.parent_op()
            if not isinstance(prod, loop.NestOp) or prod is op or not _in_kernel_block(prod):
                continue
            if prod.parent_block() is not op.parent_block() or not prod.is_before_in_block(op):
                continue
            lo_p, hi_p, lo_c, hi_c = (
                prod.lower_bounds(), prod.upper_bounds(), op.lower_bounds(), op.upper_bounds()
            )
            if len(lo_p) != len(lo_c) or not all(
                nu.same_bound(a, b) for a, b in zip(lo_p + hi_p, lo_c + hi_c, strict=True)
            ):
                continue
            smap = _iv_map(store.indices, store.map.data, prod.ivs)
            if smap is None or _iv_map(load.indices, load.map.data, op.ivs) != smap:
                continue
            if any(  # another read of the buffer at other points would see it unwritten
                isinstance(o, loop.LoadOp) and o.buffer is load.buffer and (
                    o.parent_op() is not op or o.pad is not None
                    or _iv_map(o.indices, o.map.data, op.ivs) != smap)
                for o in op.walk()
            ):
                continue
            written = {s.buffer for s in nu.nest_stores(prod)}
            if any(
                isinstance(ld, loop.LoadOp) and ld.buffer in written
                for mid in _between(prod, op)
                for ld in mid.walk()
            ):
                continue
            self._merge(prod, op, smap, rewriter)
            return

    def _merge(self, prod: loop.NestOp, cons: loop.NestOp, smap, rewriter: PatternRewriter):
        for a, b in zip(prod.ivs, cons.ivs, strict=True):
            a.replace_all_uses_with(b)
        first = cons.body.block.first_op
        stores = list(nu.nest_stores(prod))
        for o in list(prod.body.block.ops):
            if isinstance(o, loop.YieldOp):
                continue
            o.detach()
            rewriter.insert(o, InsertPoint.before(first))
        for s in stores:
            for ld in [o for o in cons.body.block.ops if isinstance(o, loop.LoadOp)]:
                if ld.buffer is s.buffer and ld.pad is None and (
                    _iv_map(ld.indices, ld.map.data, cons.ivs) == smap
                ):
                    rewriter.replace_all_uses_with(ld.result, s.value)
                    rewriter.erase(ld)
        rewriter.erase(prod)


class SplitCatConsumer(RewritePattern):
    """Split a nest along the axis of a buffer written in slabs by several nests
    (a lowered `cat`), so that each part reads from exactly one slab."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not _in_kernel_block(op):
            return
        for load in op.walk():
            if not isinstance(load, loop.LoadOp):
                continue
            stores = nu.stores_to(load.buffer)
            if len(stores) < 2:
                continue
            writers = [nu.simple_store(s) for s in stores]
            if any(w is None or w.nest is op for w in writers):
                continue
            cut = self._cut(op, load, writers)  # type: ignore[arg-type]
            if cut is None:
                continue
            pos, points = cut
            lo, hi = op.lower_bounds(), op.upper_bounds()
            edges = [lo[pos], *[p for p in points if lo[pos] < p < hi[pos]], hi[pos]]
            if len(edges) <= 2:
                continue
            parts = []
            for a, b in zip(edges, edges[1:], strict=False):
                l2, h2 = list(lo), list(hi)
                l2[pos], h2[pos] = a, b
                parts.append(nu.rebound(op, l2, h2))
            rewriter.replace(op, parts)
            return

    @staticmethod
    def _cut(nest: loop.NestOp, load: loop.LoadOp, writers: list[nu.SimpleStore]):
        """(nest iv position, slab boundaries) when the load indexes the slab axis
        with a plain nest iv of static bounds."""
        ndims = len(writers[0].dims)
        regions = [w.region() for w in writers]
        axes = [
            j for j in range(ndims)
            if len({(r[j][0], r[j][2]) for r in regions}) > 1
        ]
        if len(axes) != 1:
            return None
        (axis,) = axes
        r = load.map.data.results[axis]
        if not isinstance(r, AffineDimExpr):
            return None
        iv = load.indices[r.position]
        if iv not in nest.ivs:
            return None
        pos = nest.ivs.index(iv)
        if not isinstance(nest.lower_bounds()[pos], int) or not isinstance(
            nest.upper_bounds()[pos], int
        ):
            return None
        points = []
        for reg in regions:
            lo, _, c = reg[axis]
            if not isinstance(lo, int):
                return None
            points.append(lo + c)
        return pos, sorted(points)


def _covers(w: nu.SimpleStore, load: loop.LoadOp) -> bool:
    """Whether writer `w` wrote every point that `load` may read."""
    shape = load.buffer.type.get_shape()
    for j, (lo, hi, c) in enumerate(w.region()):
        full = (
            isinstance(lo, int) and lo + c == 0
            and ((isinstance(hi, int) and hi + c == shape[j]) or (not isinstance(hi, int)
                                                                   and shape[j] < 0 and c == 0))
        )
        if full:
            continue
        r = load.map.data.results[j]
        if not isinstance(r, AffineDimExpr):
            return False
        iv = load.indices[r.position]
        owner = iv.owner.parent_op() if hasattr(iv.owner, "parent_op") else None
        if not isinstance(owner, loop._DomainOp):
            return False
        k = owner.ivs.index(iv)
        a, b = owner.lower_bounds()[k], owner.upper_bounds()[k]
        if not (isinstance(a, int) and isinstance(b, int) and isinstance(lo, int)
                and isinstance(hi, int) and lo + c <= a and b <= hi + c):
            return False
    return True


def _inlinable(w: nu.SimpleStore) -> bool:
    body = w.nest.body.block
    if any(isinstance(o, loop.ReduceOp) for o in body.ops):
        return False
    for iv in w.nest.ivs:
        for u in iv.uses:
            if not isinstance(u.operation, loop.LoadOp | loop.InBoundsOp | loop.StoreOp):
                return False
    return True


def _reused(w: nu.SimpleStore, load: loop.LoadOp) -> bool:
    """Whether the consumer reads each produced value at many of its points."""
    cons = nu.top_nest(load)
    if cons is None:
        return False
    used = {load.indices[k] for k in load.map.data.used_dims()}
    for iv, lo, hi in zip(cons.ivs, cons.lower_bounds(), cons.upper_bounds(), strict=True):
        if iv not in used and not (isinstance(lo, int) and isinstance(hi, int) and hi - lo <= 1):
            return True
    return False


class InlineProducer(RewritePattern):
    """Replace a load by the producer's computation of the loaded value."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.LoadOp, rewriter: PatternRewriter, /):
        cons = nu.top_nest(op)
        if cons is None or not _in_kernel_block(cons):
            return
        writers = [nu.simple_store(s) for s in nu.stores_to(op.buffer)]
        if not writers or any(w is None for w in writers):
            return
        cover = [w for w in writers if w is not None and _covers(w, op)]
        if len(cover) != 1:
            return
        w = cover[0]
        if w.nest is cons or not w.nest.is_before_in_block(cons) or not _inlinable(w):
            return
        cheap = sum(1 for o in w.nest.body.block.ops if not isinstance(
            o, loop.LoadOp | loop.StoreOp | loop.YieldOp)) == 0
        if not cheap and _reused(w, op):
            return
        self._inline(op, w, rewriter)

    @staticmethod
    def _inline(load: loop.LoadOp, w: nu.SimpleStore, rewriter: PatternRewriter) -> None:
        n = len(load.indices)
        exprs = [None] * len(w.nest.ivs)
        for j, (k, c) in enumerate(w.dims):
            exprs[k] = load.map.data.results[j] - c
        pad = load.pad_value
        mapping: dict[SSAValue, SSAValue] = {}
        point = InsertPoint.before(load)
        for o in w.nest.body.block.ops:
            if isinstance(o, loop.StoreOp | loop.YieldOp):
                continue
            if isinstance(o, loop.LoadOp):
                new_map = nu.substitute(o.map.data, exprs, n)
                opad = o.pad_value
                if opad is None and pad is not None and not all(
                    isinstance(r, AffineDimExpr) for r in new_map.results
                ):
                    opad = 0.0  # may run out of bounds where the consumer reads padding
                new = loop.LoadOp(o.buffer, load.indices, new_map, opad)
            elif isinstance(o, loop.InBoundsOp):
                new = loop.InBoundsOp(
                    [mapping.get(e, e) if isinstance(e, SSAValue) else e for e in o.extent_bounds()],
                    load.indices,
                    nu.substitute(o.map.data, exprs, n),
                )
            else:
                new = o.clone(value_mapper=mapping)
            rewriter.insert(new, point)
            for a, b in zip(o.results, new.results, strict=True):
                mapping[a] = b
        value = mapping.get(w.store.value, w.store.value)
        if pad is not None:
            extents = [
                (hi + c) if isinstance(hi, int) else hi for (lo, hi, c) in w.region()
            ]
            shape = load.buffer.type.get_shape()
            extents = [s if s >= 0 else e for s, e in zip(shape, extents, strict=True)]
            inb = rewriter.insert(loop.InBoundsOp(extents, load.indices, load.map.data), point)
            padc = rewriter.insert(arith.ConstantOp(FloatAttr(pad, f32)), point)
            value = rewriter.insert(arith.SelectOp(inb.result, value, padc.result), point).result
        rewriter.replace_all_uses_with(load.result, value)
        rewriter.erase(load)


class DropDeadStore(RewritePattern):
    """A store into a scratch buffer that nobody reads is dead."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.StoreOp, rewriter: PatternRewriter, /):
        if nu.is_alloc(op.buffer) and not nu.loads_of(op.buffer):
            rewriter.erase(op)


class DropDeadNest(RewritePattern):
    """Remove dead scalar code, nests without stores and unused scratch buffers."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not any(isinstance(o, loop.StoreOp) for o in op.walk()):
            rewriter.erase(op)
            return
        nu.erase_dead(op, rewriter)


class DropUnusedAlloc(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: memref.AllocOp, rewriter: PatternRewriter, /):
        if not op.memref.uses:
            rewriter.erase(op)


@dataclass(frozen=True)
class FusePass(ModulePass):
    """Merge nests, inline elementwise producers and read cat operands in place."""

    name = "bs-fuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier(
                [
                    MergeSameDomain(),
                    SplitCatConsumer(),
                    InlineProducer(),
                    DropDeadStore(),
                    DropDeadNest(),
                    DropUnusedAlloc(),
                ]
            )
        ).rewrite_module(op)

"""bs-fuse: loop merging and producer inlining inside kernels.

- Nests with the same iteration space merge into one; a buffer that only
  carried values between them becomes an SSA value (a register).
- An elementwise producer is inlined into its consumers' loads, windows
  included: BN→ReLU→AvgPool 2x2/2 reads x and applies BN+ReLU inside the
  window. A padded (windowed) load keeps its padding through `loop.in_bounds`.
  Where windows overlap (BN→ReLU→MaxPool 3x3/2) and the producer computes
  something, it stays a nest: bs-tile-depth-first then runs it once per tile
  with a halo (option `overlap=inline` recomputes it in every window instead).
- A consumer of `cat` is split along the cat axis so each part reads its operand
  in place, and no concatenated copy is written.

Producers whose values are reused across a consumer dimension they don't
depend on (a per-channel parameter read at every pixel) stay materialised, and
so do producers whose computation costs more than a store and a reload in
cache (`RECOMPUTE_LIMIT`) when it would be repeated: read at several places
(a GELU feeding a layer norm's three passes) or also kept as an output.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, math, memref
from xdsl.dialects.builtin import DenseArrayBase, FloatAttr, ModuleOp, f32, i64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.ir.affine import AffineConstantExpr, AffineDimExpr, AffineExpr, AffineMap
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint
from xdsl.transforms.dead_code_elimination import is_trivially_dead

from brainslug.analysis import nests as nu
from brainslug.dialects import loop, loop_kernels
from brainslug.ir.compile_time import gc_paused


def _in_kernel_block(nest: loop.NestOp) -> bool:
    return loop_kernels.is_kernel(nest.parent_op())


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


class _Facts:
    """Analyses memoized for one run of the pass. The greedy walker visits every
    op several times and a `cat` of N operands has N writers per load, so
    recomputing them dominated the pass; each entry is checked against what it
    was computed from (the IR changes under it)."""

    def __init__(self) -> None:
        self._values: dict[int, tuple[Attribute, tuple[int, ...]]] = {}
        self._simple: dict[loop.StoreOp, tuple[Operation | None, nu.SimpleStore | None]] = {}
        self._slabs: dict[SSAValue, tuple[tuple, tuple[int, list[int]] | None]] = {}
        self._used: dict[AffineMap, set[int]] = {}
        self._index: dict[SSAValue, tuple[tuple, tuple | None]] = {}

    def values(self, attr: DenseArrayBase) -> tuple[int, ...]:
        hit = self._values.get(id(attr))
        if hit is None or hit[0] is not attr:
            hit = self._values[id(attr)] = (attr, tuple(attr.get_values()))
        return hit[1]

    def bounds(self, op: loop._DomainOp) -> tuple[list[loop.Bound], list[loop.Bound]]:
        """`(op.lower_bounds(), op.upper_bounds())`, faster."""
        props = op.properties
        lo = self.values(props["lower"])  # type: ignore[arg-type]
        hi = self.values(props["upper"])  # type: ignore[arg-type]
        dyn = iter(op.operands)  # dyn_lower, then dyn_upper
        return (
            [next(dyn) if v == loop.DYNAMIC else v for v in lo],
            [next(dyn) if v == loop.DYNAMIC else v for v in hi],
        )

    def simple(self, store: loop.StoreOp) -> nu.SimpleStore | None:
        """`nu.simple_store(store)`, valid while the store stays in its nest."""
        nest = store.parent_op()
        hit = self._simple.get(store)
        if hit is None or hit[0] is not nest:
            hit = self._simple[store] = (nest, nu.simple_store(store))
        return hit[1]

    def bounds_changed(self) -> None:
        """Called when a nest's bounds change in place (slabs depend on them)."""
        self._slabs.clear()
        self._index.clear()

    def used_dims(self, amap: AffineMap) -> set[int]:
        hit = self._used.get(amap)
        if hit is None:
            hit = self._used[amap] = amap.used_dims()
        return hit

    def region(self, w: nu.SimpleStore) -> list[tuple[loop.Bound, loop.Bound, int]]:
        """`w.region()`, faster."""
        lo, hi = self.bounds(w.nest)
        return [(lo[k], hi[k], c) for k, c in w.dims]

    def slabs(
        self, buffer: SSAValue, writers: list[nu.SimpleStore]
    ) -> tuple[int, list[int]] | None:
        """(axis, sorted slab starts) when the writers of `buffer` differ along
        exactly one axis, where they start at constants (a lowered `cat`)."""
        key = tuple((w.store, w.nest) for w in writers)  # see `bounds_changed`
        hit = self._slabs.get(buffer)
        if hit is not None and hit[0] == key:
            return hit[1]
        regions = [self.region(w) for w in writers]
        ndims = len(writers[0].dims)
        axes = [j for j in range(ndims) if len({(r[j][0], r[j][2]) for r in regions}) > 1]
        result = None
        if len(axes) == 1:
            (axis,) = axes
            points = []
            for reg in regions:
                lo, _, c = reg[axis]
                if not isinstance(lo, int):
                    break
                points.append(lo + c)
            else:
                result = (axis, sorted(points))
        self._slabs[buffer] = (key, result)
        return result

    def covering(
        self,
        buffer: SSAValue,
        writers: list[nu.SimpleStore],
        shape: tuple[int, ...],
        ranges: list[tuple[loop.Bound, loop.Bound] | None],
    ) -> list[nu.SimpleStore]:
        """The writers that `_covers` the load's `ranges`. Where the writers are
        disjoint slabs along one axis (a lowered `cat`) and the load's range
        along it is static and not empty, only the slab where it starts can:
        a `cat` of N pieces has N writers and N consumer parts, and trying every
        writer for every part was quadratic."""
        index = self._slab_index(buffer, writers) if len(writers) > 2 else None
        candidates = writers
        if index is not None:
            axis, starts, ordered = index
            rng = ranges[axis]
            if rng is not None and isinstance(rng[0], int) and isinstance(rng[1], int) \
                    and rng[0] < rng[1]:
                k = bisect.bisect_right(starts, rng[0]) - 1
                candidates = [ordered[k]] if k >= 0 else []
        return [w for w in candidates if _covers(self, w, shape, ranges)]

    def _slab_index(
        self, buffer: SSAValue, writers: list[nu.SimpleStore]
    ) -> tuple[int, list[int], list[nu.SimpleStore]] | None:
        """(axis, slab starts, writers in that order) when the writers' ranges
        along their one differing axis are static and disjoint."""
        key = tuple((w.store, w.nest) for w in writers)
        hit = self._index.get(buffer)
        if hit is not None and hit[0] == key:
            return hit[1]
        result = None
        slabs = self.slabs(buffer, writers)
        if slabs is not None:
            axis = slabs[0]
            spans = []
            for w in writers:
                lo, hi, c = self.region(w)[axis]
                if not (isinstance(lo, int) and isinstance(hi, int)):
                    break
                spans.append((lo + c, hi + c, w))
            else:
                spans.sort(key=lambda t: t[0])
                if all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)):
                    result = (axis, [t[0] for t in spans], [t[2] for t in spans])
        self._index[buffer] = (key, result)
        return result


def _set_bounds(nest: loop.NestOp, pos: int, lower: int, upper: int) -> None:
    """Sets the static bounds of dim `pos` in place."""
    for name, value in (("lower", lower), ("upper", upper)):
        values = list(nest.properties[name].get_values())  # type: ignore[attr-defined]
        values[pos] = value
        nest.properties[name] = DenseArrayBase.from_list(i64, values)


def _stores_to(buffer: SSAValue) -> list[loop.StoreOp]:
    """`nu.stores_to`, faster: the buffer is operand 1 of a loop.store."""
    return [u.operation for u in buffer.uses if u.index == 1 and type(u.operation) is loop.StoreOp]


class MergeSameDomain(RewritePattern):
    """Merge a producer nest into a consumer nest with the same domain that reads
    the produced values at the same points."""

    def __init__(self, facts: _Facts | None = None):
        self.facts = facts or _Facts()

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not _in_kernel_block(op):
            return
        for load in [o for o in op.body.block.ops if isinstance(o, loop.LoadOp)]:
            stores = _stores_to(load.buffer)
            if len(stores) != 1 or load.pad is not None:
                continue
            store = stores[0]
            prod = store.parent_op()
            if not isinstance(prod, loop.NestOp) or prod is op or not _in_kernel_block(prod):
                continue
            if prod.parent_block() is not op.parent_block() or not prod.is_before_in_block(op):
                continue
            (lo_p, hi_p), (lo_c, hi_c) = self.facts.bounds(prod), self.facts.bounds(op)
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

    def __init__(self, facts: _Facts | None = None):
        self.facts = facts or _Facts()

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not _in_kernel_block(op):
            return
        for load in op.walk():
            if not isinstance(load, loop.LoadOp):
                continue
            stores = _stores_to(load.buffer)
            if len(stores) < 2:
                continue
            writers = [self.facts.simple(s) for s in stores]
            if any(w is None or w.nest is op for w in writers):
                continue
            cut = self._cut(op, load, writers)  # type: ignore[arg-type]
            if cut is None:
                continue
            pos, points = cut
            lo, hi = self.facts.bounds(op)
            edges = [lo[pos], *[p for p in points if lo[pos] < p < hi[pos]], hi[pos]]
            if len(edges) <= 2:
                continue
            # copies of the nest for all parts but the last, which is the nest
            # itself with new bounds (the static bounds of the split dim change)
            parts = []
            for a, b in zip(edges[:-2], edges[1:-1], strict=True):
                part = op.clone()
                _set_bounds(part, pos, a, b)
                parts.append(part)
            rewriter.insert(parts, InsertPoint.before(op))
            _set_bounds(op, pos, edges[-2], edges[-1])
            self.facts.bounds_changed()
            rewriter.notify_op_modified(op)
            # the walker queues the new parts, not their loads: queue those
            # too, so that they are inlined in this sweep rather than the next
            for part in (*parts, op):
                for o in part.walk():
                    if isinstance(o, loop.LoadOp):
                        rewriter.notify_op_modified(o)
            return

    def _cut(self, nest: loop.NestOp, load: loop.LoadOp, writers: list[nu.SimpleStore]):
        """(nest iv position, slab boundaries) when the load indexes the slab axis
        with a plain nest iv of static bounds."""
        slabs = self.facts.slabs(load.buffer, writers)
        if slabs is None:
            return None
        axis, points = slabs
        r = load.map.data.results[axis]
        if not isinstance(r, AffineDimExpr):
            return None
        iv = load.indices[r.position]
        if iv not in nest.ivs:
            return None
        pos = nest.ivs.index(iv)
        lo, hi = self.facts.bounds(nest)
        if not isinstance(lo[pos], int) or not isinstance(hi[pos], int):
            return None
        return pos, points


def _load_ranges(facts: _Facts, load: loop.LoadOp) -> list[tuple[loop.Bound, loop.Bound] | None]:
    """Per buffer dim, the bounds of the loop iv that `load` indexes it with
    (None where the index is not a plain iv of a loop)."""
    out: list[tuple[loop.Bound, loop.Bound] | None] = []
    indices = load.indices
    for r in load.map.data.results:
        rng = None
        if isinstance(r, AffineDimExpr):
            iv = indices[r.position]
            owner = iv.owner.parent_op() if hasattr(iv.owner, "parent_op") else None
            if isinstance(owner, loop._DomainOp):
                k = owner.ivs.index(iv)
                lo, hi = facts.bounds(owner)
                rng = (lo[k], hi[k])
        out.append(rng)
    return out


def _covers(
    facts: _Facts,
    w: nu.SimpleStore,
    shape: tuple[int, ...],
    ranges: list[tuple[loop.Bound, loop.Bound] | None],
) -> bool:
    """Whether writer `w` wrote every point that a load may read (`shape` is
    the buffer's, `ranges` the load's `_load_ranges`)."""
    for j, (lo, hi, c) in enumerate(facts.region(w)):
        full = (
            isinstance(lo, int) and lo + c == 0
            and ((isinstance(hi, int) and hi + c == shape[j]) or (not isinstance(hi, int)
                                                                   and shape[j] < 0 and c == 0))
        )
        if full:
            continue
        rng = ranges[j]
        if rng is None:
            return False
        a, b = rng
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


RECOMPUTE_LIMIT = 8
"""Most arithmetic a producer may repeat per value rather than keep its result
in a scratch buffer (a store and a reload in cache cost about this much)."""

_TRANSCENDENTAL_COST = 20
_DIVIDE_COST = 4


def _costly(nest: loop.NestOp) -> bool:
    """Whether computing one value of `nest` costs more than `RECOMPUTE_LIMIT`."""
    cost = 0
    for o in nest.body.block.walk():
        if isinstance(o, loop.LoadOp | loop.StoreOp | loop.YieldOp | loop.InBoundsOp
                      | arith.ConstantOp):
            continue
        if o.dialect_name() == "math" and not isinstance(o, math.FmaOp):
            cost += _TRANSCENDENTAL_COST
        elif isinstance(o, arith.DivfOp):
            cost += _DIVIDE_COST
        else:
            cost += 1
        if cost > RECOMPUTE_LIMIT:
            return True
    return False


def _repeated(load: loop.LoadOp) -> bool:
    """Whether inlining the producer at `load` would compute its values again:
    the buffer is read elsewhere too, or is a kernel output that keeps its store."""
    if not nu.is_alloc(load.buffer):
        return True
    return any(u.index == 0 and type(u.operation) is loop.LoadOp and u.operation is not load
               for u in load.buffer.uses)


def _reused(facts: _Facts, load: loop.LoadOp, cons: loop.NestOp) -> bool:
    """Whether the consumer nest `cons` reads each value that `load` loads at many
    of its points."""
    indices = load.indices
    used = {indices[k] for k in facts.used_dims(load.map.data)}
    lower, upper = facts.bounds(cons)
    for iv, lo, hi in zip(cons.ivs, lower, upper, strict=True):
        if iv not in used and not (isinstance(lo, int) and isinstance(hi, int) and hi - lo <= 1):
            return True
    return False


class InlineProducer(RewritePattern):
    """Replace a load by the producer's computation of the loaded value."""

    def __init__(self, facts: _Facts | None = None, inline_overlap: bool = False):
        self.facts = facts or _Facts()
        self.inline_overlap = inline_overlap

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.LoadOp, rewriter: PatternRewriter, /):
        stores = _stores_to(op.buffer)
        if not stores:
            return
        cons = nu.top_nest(op)
        if cons is None or not _in_kernel_block(cons):
            return
        writers = [self.facts.simple(s) for s in stores]
        if any(w is None for w in writers):
            return
        shape = op.buffer.type.get_shape()
        ranges = _load_ranges(self.facts, op)
        cover = self.facts.covering(op.buffer, writers, shape, ranges)  # type: ignore[arg-type]
        if len(cover) != 1:
            return
        w = cover[0]
        if w.nest is cons:
            return
        cheap = all(isinstance(o, loop.LoadOp | loop.StoreOp | loop.YieldOp)
                    for o in w.nest.body.block.ops)
        if not cheap and _reused(self.facts, op, cons):
            return
        if not cheap and _repeated(op) and _costly(w.nest):
            return  # computed once into scratch: bs-tile-depth-first keeps it in cache
        if not cheap and not self.inline_overlap and nu.overlapping_window(op):
            return  # bs-tile-depth-first computes it once per tile, with a halo
        if not w.nest.is_before_in_block(cons) or not _inlinable(w):
            return
        self._inline(op, w, rewriter)

    def _inline(self, load: loop.LoadOp, w: nu.SimpleStore, rewriter: PatternRewriter) -> None:
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
                (hi + c) if isinstance(hi, int) else hi for (lo, hi, c) in self.facts.region(w)
            ]
            shape = load.buffer.type.get_shape()
            extents = [s if s >= 0 else e for s, e in zip(shape, extents, strict=True)]
            inb = rewriter.insert(loop.InBoundsOp(extents, load.indices, load.map.data), point)
            padc = rewriter.insert(arith.ConstantOp(FloatAttr(pad, f32)), point)
            value = rewriter.insert(arith.SelectOp(inb.result, value, padc.result), point).result
        buffer = load.buffer
        rewriter.replace_all_uses_with(load.result, value)
        rewriter.erase(load)
        if not nu.loads_of(buffer):  # the stores into it are dead now
            for st in _stores_to(buffer):
                rewriter.notify_op_modified(st)


class DropUnitDims(RewritePattern):
    """A nest dim of one point (bounds c, c + 1) that a store combines with
    another dim, as a rank-reducing reshape stores `d4 + d3 * 3` where d3 is
    that point: the dim goes, and its iv becomes c in every map. The store then
    names each iv once, so the nest inlines into its readers."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not _in_kernel_block(op):
            return
        lower, upper = op.lower_bounds(), op.upper_bounds()
        unit = {iv: lo for iv, lo, hi in zip(op.ivs, lower, upper, strict=True)
                if isinstance(lo, int) and isinstance(hi, int) and hi - lo == 1}
        if not unit or len(unit) == len(op.ivs) or not any(
                nu.dim_plus_const(r) is None and any(
                    s.indices[k] in unit for k in _dims_of(r))
                for s in op.body.block.ops if isinstance(s, loop.StoreOp)
                for r in s.map.data.results):
            return
        accesses: dict[Operation, None] = {}
        for iv in unit:
            for u in iv.uses:
                if not isinstance(u.operation, loop.LoadOp | loop.StoreOp | loop.InBoundsOp):
                    return
                accesses[u.operation] = None
        for acc in accesses:
            assert isinstance(acc, loop.LoadOp | loop.StoreOp | loop.InBoundsOp)
            kept = [v for v in acc.indices if v not in unit]
            exprs: list[AffineExpr] = []
            for v in acc.indices:
                exprs.append(AffineConstantExpr(unit[v]) if v in unit
                             else AffineDimExpr(kept.index(v)))
            amap = nu.substitute(acc.map.data, exprs, len(kept))
            if isinstance(acc, loop.LoadOp):
                new: Operation = loop.LoadOp(acc.buffer, kept, amap, acc.pad_value)
            elif isinstance(acc, loop.StoreOp):
                new = loop.StoreOp(acc.value, acc.buffer, kept, amap)
            else:
                new = loop.InBoundsOp(acc.extent_bounds(), kept, amap)
            new.attributes |= acc.attributes
            rewriter.replace(acc, new)
        keep = [k for k, iv in enumerate(op.ivs) if iv not in unit]
        body = op.detach_region(op.body)
        for iv in list(unit):
            body.block.erase_arg(iv)
        parallel = op.num_parallel - sum(1 for k in range(op.num_parallel) if op.ivs[k] in unit) \
            if op.num_parallel else None
        nest = loop.NestOp([lower[k] for k in keep], [upper[k] for k in keep], body,
                           parallel or None)
        nest.attributes |= op.attributes
        rewriter.replace(op, nest)


def _dims_of(e: AffineExpr) -> list[int]:
    """The positions of the dims that `e` uses."""
    return sorted({d.position for d in e.dfs() if isinstance(d, AffineDimExpr)})


class DropDeadStore(RewritePattern):
    """A store into a scratch buffer that nobody reads is dead."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.StoreOp, rewriter: PatternRewriter, /):
        buffer = op.buffer
        if nu.is_alloc(buffer) and not nu.loads_of(buffer):
            nest = op.parent_op()
            rewriter.erase(op)
            if nest is not None:
                rewriter.notify_op_modified(nest)  # it may be dead now
            if not buffer.uses and isinstance(buffer.owner, Operation):
                rewriter.notify_op_modified(buffer.owner)  # so may be the alloc


class DropDeadNest(RewritePattern):
    """Remove nests without effects (no stores) and the dead ops of a nest's body
    (a nest inside is its own match: its effects are not computed again on
    every visit of the nest around it)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if is_trivially_dead(op):
            rewriter.erase(op)
            return
        for o in reversed(list(op.body.block.ops)):
            if not isinstance(o, loop.NestOp) and is_trivially_dead(o):
                rewriter.erase(o)


class DropUnusedAlloc(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: memref.AllocOp, rewriter: PatternRewriter, /):
        if not op.memref.uses:
            rewriter.erase(op)


@dataclass(frozen=True)
class FusePass(ModulePass):
    """Merge nests, inline elementwise producers and read cat operands in place."""

    name = "bs-fuse"

    overlap: str = "tile"
    """Producers read through overlapping windows (a 3x3/2 max-pool after BN
    and ReLU): `tile` leaves them to bs-tile-depth-first, which computes each
    value once per tile with a halo; `inline` recomputes them in every window."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            self._apply(op)

    def _apply(self, op: ModuleOp) -> None:
        if self.overlap not in ("tile", "inline"):
            raise ValueError(f"bs-fuse: overlap must be 'tile' or 'inline', got {self.overlap!r}")
        facts = _Facts()
        unit_dims = PatternRewriteWalker(DropUnitDims(), apply_recursively=False)
        for fn in loop_kernels.kernel_functions(op):
            unit_dims.rewrite_region(fn.body)
        walker = PatternRewriteWalker(
            GreedyRewritePatternApplier(
                [
                    MergeSameDomain(facts),
                    SplitCatConsumer(facts),
                    InlineProducer(facts, inline_overlap=self.overlap == "inline"),
                    DropDeadStore(),
                    DropDeadNest(),
                    DropUnusedAlloc(),
                ]
            )
        )
        # Every pattern stays inside one kernel, so each kernel reaches its fixed
        # point on its own: the walker's repeated sweeps then cover only the
        # kernels that still change (and never the graph function).
        for fn in loop_kernels.kernel_functions(op):
            walker.rewrite_region(fn.body)

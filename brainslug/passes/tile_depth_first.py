"""bs-tile-depth-first: run chains of nests tile by tile, out of cache.

Adjacent top-level nests that pass a scratch buffer (a `memref.alloc`) from a
producer to its readers are wrapped in one `loop.tile` over their leading dims.
The producer may be a run of nests that write slabs of the buffer along a dim
that is not leading: the parts of a split `cat`'s consumer (DenseNet's BN-ReLU
of the pieces, each part its own channels, before the 1x1 convolution).
Each tile computes the producer's block into a tile-sized `memref.alloca` and
runs the readers on it while it is in cache; the full-size buffer disappears.

A leading dim is *direct* when every access indexes it with the nest's own iv,
and *windowed* when the readers index it as `stride * iv + window`, as pooling
does. A windowed dim gets a halo: for the tile `[t, t_end)` of reader points the
producer computes `[stride*t + lo, stride*(t_end - 1) + hi + 1)`, where `lo..hi`
is the window's offset range, so neighbouring tiles recompute the overlap
rather than every window recomputing its producer. Where a reader pads, the
producer writes the pad value at the points outside the buffer, so the readers
find the halo filled and need no bounds check along that dim.

Tiles grow from the innermost leading dim outwards while a tile of the scratch
buffer fits in the `cache` budget (set by the driver: half of the L2 on a CPU,
a share of shared memory on a GPU), or along a windowed dim in `window-cache`
(the whole L2 on a CPU): there every tile recomputes its halo, and a 5×5
depthwise window over 7 rows tiled by 2 computes its producer's rows 2.6
times. Dims that a tile covers whole stay out of the tile loop and keep static
bounds. With `item-pairs`, a chain whose items would be cut in tiles that
recompute many halo rows is tiled twice, `items few` and `items many`
(`loop.tile`), and the project convolution after it joins both.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import FloatAttr, IndexType, IntegerAttr, ModuleOp, StringAttr, f32
from xdsl.ir import Block, Operation, Region, SSAValue
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

from brainslug.analysis import nests as nu
from brainslug.analysis.tile_plan import (
    DIRECT,
    ITEM_PAIR_RECOMPUTE,
    Access,
    LeadDim,
    lead_dim,
    lead_dims,
    plan_tiles,
    recomputed,
)
from brainslug.dialects import loop, loop_kernels


def _along(chain: list[loop.NestOp], buf: SSAValue, lead: list[int]) -> list[list[int]]:
    """The shapes of the other buffers that `chain` accesses whose leading dims
    are `lead` (a tile of those is in cache with the scratch tile)."""
    seen = {buf}
    out = []
    for nest in chain:
        for op in nest.walk():
            b = getattr(op, "buffer", None)
            if b is None or b in seen or not hasattr(b.type, "get_shape"):
                continue
            seen.add(b)
            s = list(b.type.get_shape())
            if len(s) > len(lead) and s[:len(lead)] == lead:
                out.append(s)
    return out


class _Body:
    """Builds index arithmetic at the end of a block."""

    def __init__(self, block: Block):
        self.block = block

    def const(self, v: int) -> SSAValue:
        op = arith.ConstantOp(IntegerAttr(v, IndexType()))
        self.block.add_op(op)
        return op.result

    def affine(self, x: loop.Bound, mul: int, add: int) -> loop.Bound:
        """`mul * x + add`."""
        if isinstance(x, int):
            return mul * x + add
        if mul != 1:
            op = arith.MuliOp(x, self.const(mul))
            self.block.add_op(op)
            x = op.result
        if add:
            op = arith.AddiOp(x, self.const(add))
            self.block.add_op(op)
            x = op.result
        return x

    def min(self, a: loop.Bound, b: loop.Bound) -> loop.Bound:
        if isinstance(a, int) and isinstance(b, int):
            return min(a, b)
        op = arith.MinSIOp(*(self.const(x) if isinstance(x, int) else x for x in (a, b)))
        self.block.add_op(op)
        return op.result

    def max(self, a: loop.Bound, b: loop.Bound) -> loop.Bound:
        if isinstance(a, int) and isinstance(b, int):
            return max(a, b)
        op = arith.MaxSIOp(*(self.const(x) if isinstance(x, int) else x for x in (a, b)))
        self.block.add_op(op)
        return op.result


def _shift(acc: Access, dims: list[LeadDim], origins: list[loop.Bound], new_buf: SSAValue,
           inside: bool):
    """`acc` on the scratch buffer: dim k moves by `stride*origin_k + lo_k`.
    `inside`: the access stays inside the scratch (its pad can go)."""
    n = len(acc.indices)
    extra = [o for o in origins if not isinstance(o, int)]
    results = list(acc.map.data.results)
    j = 0
    for k, (d, o) in enumerate(zip(dims, origins, strict=True)):
        if isinstance(o, int):
            if d.windowed:
                results[k] = results[k] - (d.stride * o + d.lo)
            elif o:
                results[k] = results[k] - o
        else:
            results[k] = results[k] - AffineDimExpr(n + j) * d.stride - d.lo
            j += 1
    new_map = AffineMap(n + len(extra), 0, tuple(r for r in results))
    idx = [*acc.indices, *extra]
    if isinstance(acc, loop.LoadOp):
        return loop.LoadOp(new_buf, idx, new_map, None if inside else acc.pad_value)
    return loop.StoreOp(acc.value, new_buf, idx, new_map)


def _pad_strip(store: loop.StoreOp, nest: loop.NestOp, lower: list[loop.Bound],
               upper: list[loop.Bound], pad: float) -> loop.NestOp:
    """A nest over [lower, upper) that stores `pad` where `store` (in `nest`) would."""
    strip = loop.NestOp(lower, upper, Region(Block(arg_types=[IndexType()] * len(lower))))
    padc = arith.ConstantOp(FloatAttr(pad, f32))
    ivs = dict(zip(nest.ivs, strip.body.block.args, strict=True))
    st = store.clone(value_mapper={**ivs, store.value: padc.result})
    strip.body.block.add_ops([padc, st, loop.YieldOp()])
    return strip


def _cross_reads_direct(chain: list[loop.NestOp], buf: SSAValue, tiled: int) -> bool:
    """Whether every read, between chain nests, of a buffer other than `buf`
    (or a tile's own scratch) indexes the tiled dims directly (a tile only
    sees its own block)."""
    written = {s.buffer for n in chain for s in nu.nest_stores(n)
               if not isinstance(s.buffer.owner, memref.AllocaOp)} - {buf}
    for n in chain:
        for ld in n.walk():
            if isinstance(ld, loop.LoadOp) and ld.buffer in written:
                if any(lead_dim(ld, k, n) != DIRECT for k in range(tiled)):
                    return False
    return True


def _independent(op: Operation, chain: list[loop.NestOp]) -> bool:
    """Whether `op`, after the nests of `chain`, can move above them: a scratch
    allocation, a constant, or a nest that shares no buffer it writes with
    them and reads none they write (BN factors of a later layer)."""
    if isinstance(op, memref.AllocOp | arith.ConstantOp):
        return True
    if not isinstance(op, loop.NestOp):
        return False
    def buffers(ops, kind):
        return {o.buffer for n in ops for o in n.walk() if isinstance(o, kind)}
    written, read = buffers([op], loop.StoreOp), buffers([op], loop.LoadOp)
    chain_written = buffers(chain, loop.StoreOp)
    return not (read & chain_written) and not (written & (chain_written | buffers(chain, loop.LoadOp)))


def _adjacent_readers(after: Operation, readers: set[loop.NestOp], before: list[loop.NestOp]
                      ) -> tuple[list[loop.NestOp], list[Operation]] | None:
    """The `readers` as the run of nests right after `after`, and the ops
    between them that can move above `after` (`_independent` of `before` and
    the readers found so far); None when something else is in between."""
    chain: list[loop.NestOp] = []
    hoist: list[Operation] = []
    cur = after.next_op
    while cur is not None and readers - set(chain):
        if isinstance(cur, loop.NestOp) and cur in readers:
            chain.append(cur)
        elif _independent(cur, [*before, *chain]):
            hoist.append(cur)
        else:
            return None
        cur = cur.next_op
    return None if readers - set(chain) else (chain, hoist)


def _producers(stores: list[loop.StoreOp]
               ) -> tuple[list[loop.NestOp], list[Operation]] | None:
    """The top nests of `stores` in block order, and the independent ops
    between them (to move above the first); None unless they are one run of
    nests apart from those (the parts of a split `cat`'s consumer, each
    writing its slab)."""
    nests = list(dict.fromkeys(nu.top_nest(s) for s in stores))
    if None in nests or len({n.parent_op() for n in nests}) != 1:  # type: ignore[union-attr]
        return None
    first = min(nests, key=lambda n: n.parent_block().get_operation_index(n))  # type: ignore[union-attr]
    if len(nests) == 1:
        return [first], []  # type: ignore[list-item]
    found = _adjacent_readers(first, set(nests) - {first}, [first])  # type: ignore[arg-type]
    return None if found is None else ([first, *found[0]], found[1])  # type: ignore[list-item]


def _hoist(ops: list[Operation], above: Operation, rewriter: PatternRewriter) -> None:
    for op in ops:
        op.detach()
        rewriter.insert(op, InsertPoint.before(above))


class TileChain(RewritePattern):
    """Tile a producer nest and its adjacent reader nests over leading dims."""

    def __init__(self, budget: int, halo: bool = True, split: bool = False,
                 window_budget: int | None = None, item_pairs: bool = False):
        self.budget = budget
        self.window_budget = window_budget
        self.item_pairs = item_pairs
        self.halo = halo
        self.split = split

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: memref.AllocOp, rewriter: PatternRewriter, /):
        fn = op.parent_op()
        if not loop_kernels.is_kernel(fn):
            return
        buf = op.memref
        stores = nu.stores_to(buf)
        if not stores or any(s.parent_op() is not nu.top_nest(s) for s in stores):
            return
        run = _producers(stores)
        readers = {nu.top_nest(ld) for ld in nu.loads_of(buf)}
        if run is None:
            return
        producers, between = run
        if len(producers) != len(stores) or not readers or None in readers or \
                readers & set(producers):
            return  # (each producer writes its part through one store)
        # the producers and the readers must be one run of adjacent nests, once
        # the independent ops between them move above the first producer
        found = _adjacent_readers(producers[-1], readers, producers)
        if found is None:
            return
        chain, hoist = [*producers, *found[0]], [*between, *found[1]]
        dims = lead_dims(buf, stores, chain, len(producers))
        if not self.halo or any(
            s.buffer is not buf for prod in producers for s in prod.walk()
            if isinstance(s, loop.StoreOp)
        ):
            # a halo would recompute (and write out of range) its other outputs
            dims = dims[: next((k for k, d in enumerate(dims) if d.windowed), len(dims))]
        pads = {ld.pad_value for ld in nu.loads_of(buf) if ld.pad is not None}
        if not dims or len(pads) > 1:
            return
        shape = list(buf.type.get_shape())
        others = _along(chain, buf, shape[:len(dims)])
        reader = chain[len(producers)]
        tiled, steps = plan_tiles(dims, reader, shape, self.budget, whole=self.halo,
                                  split=self.split, others=others,
                                  window_budget=self.window_budget)
        if not _cross_reads_direct(chain, buf, tiled):
            return
        tilings = [(tiled, steps, None)]
        if self.item_pairs and not self.split:
            whole_tiled, whole_steps = plan_tiles(
                dims, reader, shape, self.budget, whole=self.halo, others=others,
                window_budget=self.window_budget, item_tiles=1)
            extent = reader.upper_bounds()[1] if tiled > 1 else None
            if (whole_steps != steps and isinstance(extent, int)
                    and isinstance(start := reader.lower_bounds()[1], int)
                    and recomputed(dims[1], extent - start, steps[1], shape[1])
                    >= ITEM_PAIR_RECOMPUTE
                    and _cross_reads_direct(chain, buf, whole_tiled)):
                tilings = [(tiled, steps, loop.ItemCount.FEW),
                           (whole_tiled, whole_steps, loop.ItemCount.MANY)]
        _hoist(hoist, producers[0], rewriter)
        for t, st, items in tilings:
            tile = self._tile(buf, chain, len(producers), dims, t, st, shape, pads)
            if items is not None:
                tile.items = StringAttr(str(items))
            rewriter.insert(tile, InsertPoint.before(chain[0]))
        for nest in chain:
            rewriter.erase(nest)
        rewriter.erase(op)

    def _tile(self, buf, chain, producers, dims, tiled, steps, shape, pads) -> loop.TileOp:
        reader = chain[producers]
        rlo, rhi = reader.lower_bounds(), reader.upper_bounds()
        tile = loop.TileOp(rlo[:tiled], rhi[:tiled], steps)
        body = _Body(tile.body.block)
        # per leading dim: the block of reader points [start, end) of this tile
        start: list[loop.Bound] = [*tile.body.block.args, *rlo[tiled : len(dims)]]
        end: list[loop.Bound] = [
            body.min(body.affine(iv, 1, s), ub)
            for iv, s, ub in zip(tile.body.block.args, steps, rhi, strict=False)
        ] + list(rhi[tiled : len(dims)])
        extents = [steps[k] if k < tiled else int(rhi[k]) - int(rlo[k]) for k in range(len(dims))]
        scratch_shape = [d.span(e) if d.windowed else e if k < tiled else shape[k]
                         for k, (d, e) in enumerate(zip(dims, extents, strict=True))]
        scratch = memref.AllocaOp.get(buf.type.element_type, shape=scratch_shape + shape[len(dims):])
        tile.body.block.insert_op_before(scratch, tile.body.block.first_op)
        # where the scratch starts in buffer coordinates (0 for whole direct dims)
        origins = [start[k] if k < tiled or d.windowed else 0 for k, d in enumerate(dims)]
        for nest in chain:
            lo, hi = nest.lower_bounds(), nest.upper_bounds()
            padded: list[int] = []
            if nest in chain[:producers]:
                lo, hi = list(lo), list(hi)
                for k, d in enumerate(dims):
                    if d.windowed:
                        lo[k] = body.affine(start[k], d.stride, d.lo)
                        hi[k] = body.affine(end[k], d.stride, d.hi + 1 - d.stride)
                        whole = d.span(int(rhi[k]) - int(rlo[k])) + d.stride * int(rlo[k]) + d.lo
                        if pads and (d.lo < 0 or whole > shape[k]):
                            padded.append(k)
                    elif k < tiled:
                        lo[k], hi[k] = start[k], end[k]
                # the producer runs inside the buffer; strips of pad values fill the rest
                inner_lo = [body.max(b, 0) if k in padded else b for k, b in enumerate(lo)]
                inner_hi = [body.min(b, shape[k]) if k in padded else b for k, b in enumerate(hi)]
            else:
                lo = [*start[:tiled], *lo[tiled:]]
                hi = [*end[:tiled], *hi[tiled:]]
                inner_lo, inner_hi = lo, hi
            new = nu.rebound(nest, inner_lo, inner_hi)
            for acc in [o for o in new.walk() if isinstance(o, Access) and o.buffer is buf]:
                # every dim leading: the halo holds the pad values, reads stay inside
                repl = _shift(acc, dims, origins, scratch.memref, len(dims) == len(shape))
                acc.parent_block().insert_op_before(repl, acc)
                if isinstance(acc, loop.LoadOp):
                    acc.result.replace_all_uses_with(repl.result)
                acc.detach()
                acc.erase()
            tile.body.block.add_op(new)
            if padded:
                (store,) = (o for o in nu.nest_stores(new) if o.buffer is scratch.memref)
                for i, k in enumerate(padded):
                    # along k outside the buffer; inside it along the dims before
                    for a, b in ((lo[k], inner_lo[k]), (inner_hi[k], hi[k])):
                        if isinstance(a, int) and isinstance(b, int) and a >= b:
                            continue
                        s_lo = [inner_lo[j] if j in padded[:i] else x for j, x in enumerate(lo)]
                        s_hi = [inner_hi[j] if j in padded[:i] else x for j, x in enumerate(hi)]
                        s_lo[k], s_hi[k] = a, b
                        tile.body.block.add_op(_pad_strip(store, new, s_lo, s_hi, next(iter(pads))))
        tile.body.block.add_op(loop.YieldOp())
        return tile


class JoinTile(RewritePattern):
    """A full-size scratch buffer that the last nest of a `loop.tile` writes and
    the nests right after the tile read point by point along the tiled dims
    (MobileNet's project convolution after its depth-first expand and
    depthwise pair): the readers join the tile, each on the tile's block, and
    the buffer becomes a tile-sized scratch. A tile then runs a chain of three
    nests or more."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: memref.AllocOp, rewriter: PatternRewriter, /):
        fn = op.parent_op()
        if not loop_kernels.is_kernel(fn):
            return
        buf = op.memref
        stores = nu.stores_to(buf)
        if not 1 <= len(stores) <= 2:
            return
        # the tile that writes `buf`, or both tilings of a pair (`items`)
        tiles: list[tuple[loop.TileOp, loop.NestOp]] = []
        for store in stores:
            prod = nu.top_nest(store)
            tile = prod.parent_op() if prod is not None else None
            if (prod is None or store.parent_op() is not prod
                    or not isinstance(tile, loop.TileOp) or tile.parent_op() is not fn
                    or prod is not _last_nest(tile)):
                return
            tiles.append((tile, prod))
        if len(tiles) == 2:
            if tiles[1][0].next_op is tiles[0][0]:
                tiles.reverse()
            if not _pair(tiles[0][0], tiles[1][0]):
                return
        readers = {nu.top_nest(ld) for ld in nu.loads_of(buf)}
        if not readers or None in readers or any(r.parent_op() is not fn for r in readers):
            return
        last = tiles[-1][0]
        inside = [n for n in last.body.block.ops if isinstance(n, loop.NestOp)]
        found = _adjacent_readers(last, readers, inside)
        if found is None:
            return
        chain, hoist = found
        if not all(self._joins(tile, prod, chain, buf) for tile, prod in tiles):
            return
        _hoist(hoist, tiles[0][0], rewriter)
        for tile, prod in tiles:
            self._join(tile, prod, chain, buf, rewriter)
        for nest in chain:
            rewriter.erase(nest)
        rewriter.erase(op)

    @staticmethod
    def _joins(tile: loop.TileOp, prod: loop.NestOp, chain: list[loop.NestOp],
               buf: SSAValue) -> bool:
        """Whether `chain` can join `tile`, whose last nest `prod` writes `buf`."""
        (store,) = [s for s in nu.stores_to(buf) if nu.top_nest(s) is prod]
        tiled = len(tile.steps)
        tlo, thi = tile.lower_bounds(), tile.upper_bounds()
        if any(lead_dim(store, k, prod) != DIRECT for k in range(tiled)):
            return False
        for nest in chain:
            lo, hi = nest.lower_bounds(), nest.upper_bounds()
            if len(nest.ivs) < tiled or not all(
                    nu.same_bound(lo[k], tlo[k]) and nu.same_bound(hi[k], thi[k])
                    for k in range(tiled)):
                return False
            if any(lead_dim(ld, k, nest) != DIRECT for ld in nu.loads_of(buf)
                   if nu.top_nest(ld) is nest for k in range(tiled)):
                return False
        inside = [n for n in tile.body.block.ops if isinstance(n, loop.NestOp)]
        return _cross_reads_direct([*inside, *chain], buf, tiled)

    @staticmethod
    def _join(tile: loop.TileOp, prod: loop.NestOp, chain: list[loop.NestOp],
              buf: SSAValue, rewriter: PatternRewriter) -> None:
        """Copies of the `chain` nests at the end of `tile`, on its block, reading
        `buf` from a tile-sized scratch that `prod` writes."""
        tiled = len(tile.steps)
        shape = list(buf.type.get_shape())  # type: ignore[attr-defined]
        scratch = memref.AllocaOp.get(buf.type.element_type,  # type: ignore[attr-defined]
                                      shape=[*tile.steps, *shape[tiled:]])
        rewriter.insert(scratch, InsertPoint.at_start(tile.body.block))
        start = list(tile.body.block.args)
        block_lo, block_hi = prod.lower_bounds()[:tiled], prod.upper_bounds()[:tiled]
        terminator = tile.body.block.last_op
        assert terminator is not None
        moved = []
        for nest in chain:
            lo, hi = nest.lower_bounds(), nest.upper_bounds()
            new = nu.rebound(nest, [*block_lo, *lo[tiled:]], [*block_hi, *hi[tiled:]])
            rewriter.insert(new, InsertPoint.before(terminator))
            moved.append(new)
        for nest in [prod, *moved]:
            for acc in [o for o in nest.walk() if isinstance(o, Access) and o.buffer is buf]:
                rewriter.replace(acc, _shift(acc, [DIRECT] * tiled, start, scratch.memref, False))


def _pair(first: loop.TileOp, second: loop.TileOp) -> bool:
    """Whether two tiles are the `few` and `many` tilings of one chain, in order."""
    return (first.item_count == loop.ItemCount.FEW and second.item_count == loop.ItemCount.MANY
            and first.next_op is second)


def _last_nest(tile: loop.TileOp) -> loop.NestOp | None:
    nests = [n for n in tile.body.block.ops if isinstance(n, loop.NestOp)]
    return nests[-1] if nests else None


DEFAULT_TILE_BUDGET = 512 * 1024
"""Tile scratch budget without a `cache` option: half of a 1 MiB L2."""


@dataclass(frozen=True)
class TileDepthFirstPass(ModulePass):
    """Depth-first tiling, with halos, of nest chains that pass scratch buffers."""

    name = "bs-tile-depth-first"

    cache: int = DEFAULT_TILE_BUDGET
    """Bytes one tile's scratch may fill (the driver sets it for its target)."""

    halo: bool = True
    """Tile windowed dims with halos, and keep dims a tile covers whole out of
    the tile loop. Without: only direct dims, all in the loop."""

    split: bool = False
    """Direct dims (N, C in NCHW) one point per tile, windowed dims grown to the
    budget: more, smaller tiles (on the GPU a tile is a block)."""

    window_cache: int = 0
    """Bytes a tile may fill along a windowed dim, where each tile recomputes
    its halo (0: `cache`)."""

    item_pairs: bool = False
    """Where cutting a batch item into tiles (so that threads share it at
    batch 1) recomputes many halo rows, keep a second tiling with items whole
    (`loop.tile ... items few` / `items many`; not with `split`)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(TileChain(self.cache, self.halo, self.split,
                                       self.window_cache or None, self.item_pairs),
                             apply_recursively=False).rewrite_module(op)
        if self.halo:
            PatternRewriteWalker(JoinTile(), apply_recursively=False).rewrite_module(op)
        _inline_untiled_windows(op)


def _inline_untiled_windows(module: ModuleOp) -> None:
    """The fallback for what bs-fuse left to this pass and it could not tile: a
    full-size buffer read through overlapping windows. Its producer is inlined
    into the windows after all (bs-fuse's `overlap=inline`), which recomputes
    values but never streams the buffer through memory."""
    from brainslug.passes.fuse import DropDeadNest, DropDeadStore, DropUnusedAlloc, InlineProducer

    walker = PatternRewriteWalker(GreedyRewritePatternApplier([
        InlineProducer(inline_overlap=True), DropDeadStore(), DropDeadNest(), DropUnusedAlloc(),
    ]))
    for fn in loop_kernels.kernel_functions(module):
        if any(
            isinstance(a, memref.AllocOp) and any(
                nu.overlapping_window(ld) for ld in nu.loads_of(a.memref))
            for a in fn.body.block.ops
        ):
            walker.rewrite_region(fn.body)

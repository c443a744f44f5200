"""bs-tile-depth-first: run chains of nests tile by tile, out of cache.

Adjacent top-level nests that pass a scratch buffer (a `memref.alloc`) from one
to the next, and share leading dimensions that every access of that buffer
indexes directly, are wrapped in one `loop.tile` over those dimensions. Each
tile computes the producer's block into a tile-sized `memref.alloca` and runs
the consumers on it while it is in cache; the full-size buffer disappears.
The tile size is chosen so that a tile's scratch fits in half of the L2 cache,
read from the machine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import IndexType, IntegerAttr, ModuleOp
from xdsl.ir import SSAValue
from xdsl.ir.affine import AffineDimExpr, AffineMap
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.dialects import loop
from brainslug.passes import nest_utils as nu


@functools.cache
def l2_cache_bytes() -> int:
    """Per-core L2 size of this machine (sysfs), 1 MiB if it can't be read."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(base.glob("index*")):
            if (idx / "level").read_text().strip() == "2":
                text = (idx / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1], 1)
                return int(text.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return 1 << 20


def _prefix_dims(buf: SSAValue, nests: list[loop.NestOp]) -> int:
    """How many leading nest dims every access of `buf` indexes directly, in
    buffer dims 0..t-1, with the same bounds in all nests."""
    t = min(len(n.ivs) for n in nests)
    first = nests[0]
    for n in nests[1:]:
        k = 0
        while k < t and nu.same_bound(n.lower_bounds()[k], first.lower_bounds()[k]) and (
            nu.same_bound(n.upper_bounds()[k], first.upper_bounds()[k])
        ):
            k += 1
        t = k
    for use in buf.uses:
        acc = use.operation
        if not isinstance(acc, loop.LoadOp | loop.StoreOp):
            return 0
        nest = nu.top_nest(acc)
        k = 0
        while k < t:
            r = acc.map.data.results[k]
            if not (isinstance(r, AffineDimExpr) and acc.indices[r.position] is nest.ivs[k]):
                break
            k += 1
        t = k
    return t


def _tile_steps(buf: SSAValue, t: int, nest: loop.NestOp) -> list[int]:
    """Tile sizes for the t leading dims: grow from the innermost tiled dim out
    while a tile of the scratch buffer fits in half of L2."""
    shape = buf.type.get_shape()
    inner = 4
    for e in shape[t:]:
        inner *= max(e, 1)
    budget = max(l2_cache_bytes() // 2, inner)
    steps = [1] * t
    for k in range(t - 1, -1, -1):
        ub = nest.upper_bounds()[k]
        extent = ub if isinstance(ub, int) else 1
        steps[k] = max(1, min(extent, budget // inner))
        inner *= steps[k]
        if steps[k] < extent:
            break
    return steps


def _shift_access(acc: loop.LoadOp | loop.StoreOp, tiles: list[SSAValue], t: int, new_buf):
    """Index the tile-local buffer: buffer dim k < t is reduced by tile iv k."""
    amap = acc.map.data
    n = len(acc.indices)
    results = tuple(
        r - AffineDimExpr(n + k) if k < t else r for k, r in enumerate(amap.results)
    )
    new_map = AffineMap(n + t, 0, results)
    idx = [*acc.indices, *tiles]
    if isinstance(acc, loop.LoadOp):
        return loop.LoadOp(new_buf, idx, new_map, acc.pad_value)
    return loop.StoreOp(acc.value, new_buf, idx, new_map)


class TileChain(RewritePattern):
    """Tile a producer nest and its adjacent consumer nests over shared dims."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: memref.AllocOp, rewriter: PatternRewriter, /):
        fn = op.parent_op()
        if not isinstance(fn, func.FuncOp) or "bs.kernel" not in fn.attributes:
            return
        buf = op.memref
        stores = nu.stores_to(buf)
        if len(stores) != 1:
            return
        prod = nu.top_nest(stores[0])
        readers = {nu.top_nest(ld) for ld in nu.loads_of(buf)}
        if prod is None or not readers or None in readers or prod in readers:
            return
        # producer and readers must be one run of adjacent nests
        chain: list[loop.NestOp] = [prod]
        cur = prod.next_op
        while cur is not None and readers - set(chain):
            if not isinstance(cur, loop.NestOp):
                return
            chain.append(cur)
            cur = cur.next_op
        if readers - set(chain):
            return
        t = _prefix_dims(buf, chain)
        if t == 0:
            return
        steps = _tile_steps(buf, t, prod)
        lower, upper = prod.lower_bounds()[:t], prod.upper_bounds()[:t]
        tile = loop.TileOp(lower, upper, steps)
        tivs = list(tile.body.block.args)
        body = tile.body.block
        shape = list(buf.type.get_shape())
        tile_shape = [*steps, *shape[t:]]
        scratch = memref.AllocaOp.get(buf.type.element_type, shape=tile_shape)
        body.add_op(scratch)
        # bounds of each tiled dim inside the tile: [iv, min(iv + step, ub))
        inner_upper: list[loop.Bound] = []
        for k in range(t):
            step = arith.ConstantOp(IntegerAttr(steps[k], IndexType()))
            end = arith.AddiOp(tivs[k], step)
            ub = upper[k]
            if isinstance(ub, int):
                ubc = arith.ConstantOp(IntegerAttr(ub, IndexType()))
                body.add_ops([step, end, ubc])
                m = arith.MinSIOp(end.result, ubc.result)
            else:
                body.add_ops([step, end])
                m = arith.MinSIOp(end.result, ub)
            body.add_op(m)
            inner_upper.append(m.result)
        for nest in chain:
            lo, hi = nest.lower_bounds(), nest.upper_bounds()
            new = nu.rebound(nest, [*tivs, *lo[t:]], [*inner_upper, *hi[t:]])
            for acc in [o for o in new.walk() if isinstance(o, loop.LoadOp | loop.StoreOp)]:
                if acc.buffer is buf:
                    repl = _shift_access(acc, tivs, t, scratch.memref)
                    acc.parent_block().insert_op_before(repl, acc)
                    if isinstance(acc, loop.LoadOp):
                        acc.result.replace_all_uses_with(repl.result)
                    acc.detach()
                    acc.erase()
            body.add_op(new)
        body.add_op(loop.YieldOp())
        rewriter.insert(tile, InsertPoint.before(chain[0]))
        for nest in chain:
            rewriter.erase(nest)
        rewriter.erase(op)


@dataclass(frozen=True)
class TileDepthFirstPass(ModulePass):
    """Depth-first tiling of nest chains that communicate through scratch buffers."""

    name = "bs-tile-depth-first"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(TileChain(), apply_recursively=False).rewrite_module(op)



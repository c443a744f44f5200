"""What bs-tile-depth-first can tile, and with which steps.

A leading dim of a scratch buffer is *direct* when every access indexes it with
its nest's own iv, and *windowed* when the readers index it as
`stride * iv + window` (pooling). `lead_dims` finds the run of leading dims a
tile loop can run over; `plan_tiles` picks the steps that keep one tile's
scratch within a byte budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.ir import SSAValue

from brainslug.analysis import nests as nu
from brainslug.dialects import loop

Access = loop.LoadOp | loop.StoreOp


@dataclass(frozen=True)
class LeadDim:
    """How the readers index a leading dim: `stride * iv + [lo, hi]`."""

    stride: int = 1
    lo: int = 0
    hi: int = 0

    @property
    def windowed(self) -> bool:
        return (self.stride, self.lo, self.hi) != (1, 0, 0)

    def span(self, points: int) -> int:
        """Producer points that `points` consecutive reader points read."""
        return (points - 1) * self.stride + self.hi - self.lo + 1


DIRECT = LeadDim()


def lead_dim(acc: Access, k: int, nest: loop.NestOp) -> LeadDim | None:
    """How `acc` indexes buffer dim k: nest iv k times a stride plus window ivs."""
    form = nu.linear_form(acc.map.data.results[k])
    if form is None:
        return None
    coef: dict[SSAValue, int] = {}
    for pos, c in form[0].items():
        coef[acc.indices[pos]] = coef.get(acc.indices[pos], 0) + c
    stride = coef.pop(nest.ivs[k], 0)
    windows = nu.window_ranges(acc)
    lo = hi = form[1]
    for v, c in coef.items():
        if c == 0:
            continue
        if v not in windows:
            return None
        lb, ub = windows[v]
        lo, hi = lo + min(c * lb, c * (ub - 1)), hi + max(c * lb, c * (ub - 1))
    return LeadDim(stride, lo, hi) if stride >= 1 else None


def lead_dims(buf: SSAValue, stores: Sequence[loop.StoreOp], chain: list[loop.NestOp],
              producers: int = 1) -> list[LeadDim]:
    """The leading dims of `buf` that a tile loop can run over, in order: the
    first `producers` nests of `chain` write `buf` through `stores` (the parts
    of a split `cat`'s consumer write slabs of it), the rest read it."""
    readers = chain[producers:]
    loads = nu.loads_of(buf)
    shape = buf.type.get_shape()
    dims: list[LeadDim] = []
    for k in range(min(len(n.ivs) for n in chain)):
        if any(lead_dim(s, k, nu.top_nest(s)) != DIRECT for s in stores):
            break
        found = [lead_dim(ld, k, nu.top_nest(ld)) for ld in loads]
        if None in found or len({d.stride for d in found}) != 1:
            break
        dim = LeadDim(found[0].stride, min(d.lo for d in found), max(d.hi for d in found))
        lo, hi = readers[0].lower_bounds()[k], readers[0].upper_bounds()[k]
        if not all(nu.same_bound(n.lower_bounds()[k], lo) and nu.same_bound(n.upper_bounds()[k], hi)
                   for n in readers):
            break
        if not all(_covers(prod, k, dim, lo, hi, shape[k]) for prod in chain[:producers]):
            break
        dims.append(dim)
    return dims


def _covers(prod: loop.NestOp, k: int, dim: LeadDim, lo: loop.Bound, hi: loop.Bound,
            extent: int) -> bool:
    """Whether producer `prod` runs over what the readers' `[lo, hi)` along
    dim k read: the same bounds where they read directly, the whole `extent`
    where they read windows."""
    plo, phi = prod.lower_bounds()[k], prod.upper_bounds()[k]
    if dim.windowed:
        return isinstance(lo, int) and isinstance(hi, int) and plo == 0 and phi == extent
    return nu.same_bound(plo, lo) and nu.same_bound(phi, hi)


def plan_tiles(dims: list[LeadDim], nest: loop.NestOp, shape: Sequence[int],
               budget: int, whole: bool = True, split: bool = False,
               others: Sequence[Sequence[int]] = (),
               window_budget: int | None = None,
               item_tiles: int | None = None) -> tuple[int, list[int]]:
    """(tiled, steps): dims [0, tiled) run in the tile loop with these steps, the
    other leading dims whole (with `whole=False` every dim is in the loop).
    Grows from the innermost dim while a tile of the scratch buffer and of
    `others` (the shapes of the other buffers that the chain reads and writes
    along the same leading dims) fits in `budget` bytes, or `window_budget`
    (default `budget`) along a windowed dim, where each tile recomputes its
    halo; with `split`, direct dims stay one point per tile (more tiles: GPU
    blocks). A batch item that one tile would hold whole is cut in
    `item_tiles` tiles along its rows (default `ITEM_TILES`)."""
    item_tiles = ITEM_TILES if item_tiles is None else item_tiles
    t = len(dims)
    inner = 4 * sum(math.prod(max(e, 1) for e in s[t:]) for s in (shape, *others))
    budget = max(budget, inner)
    lower, upper = nest.lower_bounds(), nest.upper_bounds()
    steps = [1] * t
    tiled = 1
    for k in range(t - 1, -1, -1):
        d = dims[k]
        lb, ub = lower[k], upper[k]
        static = isinstance(lb, int) and isinstance(ub, int)
        if split and not d.windowed:
            tiled = max(tiled, k + 1)
            continue
        room = max(window_budget or budget, budget) if d.windowed else budget
        fit = max(1, (room // inner - (d.hi - d.lo + 1)) // d.stride + 1)
        if static and fit >= ub - lb and k > 0:
            outer = lower[k - 1], upper[k - 1]
            if (d.windowed and k == 1 and not all(isinstance(b, int) for b in outer)
                    and item_tiles > 1 and ub - lb >= 2 * item_tiles):
                steps[k] = -(-(ub - lb) // item_tiles)
                tiled = max(tiled, k + 1)
                break
            steps[k] = ub - lb
            inner *= d.span(steps[k])
            continue
        steps[k] = _balanced(min(fit, ub - lb), ub - lb) if static else 1
        tiled = max(tiled, k + 1)
        break
    if not whole:
        tiled = t
    return tiled, steps[:tiled]


def recomputed(d: LeadDim, extent: int, step: int, rows: int) -> float:
    """The producer rows that tiles of `step` reader points along `d` compute
    (halos and all, clipped to the producer's `rows`), over those of one tile
    of all `extent` points."""

    def computed(s: int) -> int:
        total = 0
        for t in range(0, extent, s):
            lo = max(0, t * d.stride + d.lo)
            hi = min(rows - 1, (min(t + s, extent) - 1) * d.stride + d.hi)
            total += max(0, hi - lo + 1)
        return total

    return computed(step) / max(1, computed(extent))


ITEM_TILES = 2
"""Tiles per batch item along a windowed dim 1 (NHWC rows) where one tile would
hold the item whole: at batch 1 the two threads then share the item, at the
cost of one more halo. mobilenet_v2 with its blocks at 28×28 and 14×14
chained, two tiles per item against one: 1.03× [0.77, 1.27] at batch 1,
0.99× at batch 8 (noisy; one thread per item is the worse case in principle)."""

ITEM_PAIR_RECOMPUTE = 1.2
"""Where the `ITEM_TILES` tiles of an item recompute at least this many times
the producer rows of one whole tile (`recomputed`), bs-tile-depth-first keeps
both tilings (`loop.tile ... items few` and `items many`) and each call runs
the one that fits its batch. efficientnet_b0's 5×5 depthwise chains at 7×7
(1.57) and 14×14 (1.29), and its 3×3 at 7×7 (1.29): batch 8 took 0.957 of
the time with those items whole (0.938 with every item whole, which at
batch 1 leaves a thread idle: 1.13 of the time)."""

BALANCE_QUANTUM = 4
"""Fewer than `BALANCE_BELOW` tiles along a dim are made a multiple of this
many, so that 2 or 4 threads get equal shares (3 tiles on 2 threads take as
long as 4)."""
BALANCE_BELOW = 16


def _balanced(step: int, extent: int) -> int:
    """`step`, or a smaller one that cuts `extent` into a multiple of
    `BALANCE_QUANTUM` tiles when there are few."""
    count = -(-extent // step)
    if count == 1 or count >= BALANCE_BELOW:
        return step
    want = min(extent, -(-count // BALANCE_QUANTUM) * BALANCE_QUANTUM)
    return -(-extent // want)

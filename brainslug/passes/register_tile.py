"""bs-register-tile: a contraction's accumulators blocked in registers.

A vectorized convolution (or any `loop.reduce add contract` in a `simd.loop`)
computes one W-lane vector of outputs per reduction, and every step loads an
input and a weight for one FMA. This pass makes each reduction step feed a
block of P rows × V vectors of accumulators, as MLAS and oneDNN do:

- the `simd.loop` gets `vectors V`: each lane value spans V machine vectors of
  output channels, so a weight row is loaded once for V vectors;
- the innermost nest dimension that some load of the reduction uses and
  another does not (the output column, whose input pixel is broadcast against
  a weight row shared by all columns) is strip-mined by P: the reduction gets
  P results, one per column, and the ops after it are cloned per column.

Where P does not divide the columns, those past the end are clamped to the
last one: the last block recomputes and rewrites it with the same value
instead of running a remainder loop. Where the widest block would spill (7
columns of 4 vectors with AVX-512), a row that blocks of 6 and of 5 columns
cover exactly runs as those instead, the narrower ones in a second nest over
the row's last columns (56 = 6 × 6 + 4 × 5), as MLAS ends its rows.

A 1x1 convolution's block may instead take P consecutive points of the
row-major (row, column) space, each column with its own row and column: 6
columns fit no row of 56, 28 or 14, but they fit those maps' points with
0.06%, 0.3% and 1% past the end. In a depth-first
tile (a DenseNet layer's 1x1 convolution after its BN-ReLU prologue) the rows
are the tile's, and so are the blocks of points.
When the weights are larger than the cache budget, the blocks of V*W channels
become the outermost nest dimension (each block's weights then stay in cache
while all pixels use them, as oneDNN blocks output channels outside pixels).

A depthwise window's row of taps (kw of a 3×3, 5×5 or 7×7) is unrolled
(`loop.reduce unroll`) in blocks of one vector and up to 8 columns, all of
them consecutive: column j's tap k then reads what column j+1's tap k-1 reads,
and LLVM loads each input vector once per row of taps (`row_taps`).

A grouped convolution whose groups hold whole vectors of output channels (16
or more with AVX-512) takes blocks of V vectors within a group (V*W divides
the group), each block a nest dimension whose input is one broadcast per step,
as without groups (`channel_blocks.broadcast_group_loads`); narrower groups
keep their gathers. With BN and ReLU, 3x3 convolutions of 16 and 32 channels
per group took 0.94-1.06 of the time of oneDNN's grouped convolution and the
BN-ReLU pass after it at batch 1 (1.22 for 256 channels at 28x28, but 0.73 at
batch 8), where the gathers had taken up to 5.6 times as long; whole
networks, both plans in one process: regnet_x_800mf 0.74 of the time at
batch 1 and 0.86 at batch 8, resnext50_32x4d 0.93 and 0.97.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith
from xdsl.dialects.builtin import IndexType, IntegerAttr, ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.analysis.nests import value_operands
from brainslug.dialects import loop, simd
from brainslug.passes.channel_blocks import (
    broadcast_group_loads,
    channel_blocks,
    group_width,
    index_blocks,
    packed_block,
)
from brainslug.passes.column_blocks import (
    across_tile_rows,
    block_points,
    column_guard,
    in_tile,
    index_constant,
    set_extent,
    tail_nest,
    tile_step,
)

_ACCESSES = (loop.LoadOp, simd.LoadOp)

COLUMNS_ATTR = "bs.columns"
"""On a register-blocked nest: the position of the dim of column blocks."""

REGISTER_BROADCAST_ACCUMULATORS = 20
"""At most this many accumulators in a block of one or two vectors whose
columns broadcast a scalar input. With V <= 2 an input feeds too few FMAs for
LLVM to fold it into them as a memory operand: each broadcast takes a register,
and the scheduler keeps several in flight. Measured with AVX-512, 144→24 1×1 at
56×56, batch 8: P = 8 2.47 ms, 12 2.77 ms, 14 2.99 ms (14 spilled 4
accumulators); 32→16 at 112×112: P = 16 1.26 ms, 28 1.54 ms."""


WINDOW_VECTORS = 2
"""At most this many vectors in a block whose columns read vectors, not a
broadcast scalar (a depthwise convolution: each tap loads every column's
input and one weight row) and whose row of taps stays a loop (more taps than
`UNROLLED_TAPS`), where the columns fill such a block (14 of them with 32
registers). With V = 4, LLVM hoists a window's loads of all taps
ahead of their FMAs and spills them; with V = 2 the loads fold into the
FMAs. Expand, BN, SiLU, depthwise, BN, SiLU at batch 8 (EfficientNet's
chains), V = 2 against V = 4, both compiled in one process and timed
interleaved, in both orders: 0.87 of the time for 24→144 3×3 at 56×56,
0.98 for 80→480 3×3 at 14×14; but 1.06 for 192→1152 5×5 at 7×7, whose 7
columns then hold 14 accumulators instead of 28 (so fewer columns keep
more vectors)."""


UNROLLED_TAPS = 7
"""Most steps of a window's row of taps (times the channels it sums per tap)
that a register block unrolls (`loop.reduce unroll`): the columns of a block
and the taps of a row then read the same input vectors (column j's tap k is
column j+1's tap k-1), and LLVM loads each once per row of taps instead of
once per tap, with one padding check instead of three."""

ROW_TAP_COLUMNS = 8
"""Most columns of a block of one vector whose window's row of taps is
unrolled (`UNROLLED_TAPS`). Depthwise convolutions at batch 8, 2 threads
(`bench.convs` timing, GFLOP/s): 192 channels 3×3 at 28×28 126 with 7
columns unrolled against 67-71 with 14 columns of 2 vectors as loops; 480
channels 5×5 at 14×14 178 against 104. Blocks of up to 16 columns (14 for
these rows) ran at 0.7-0.95 of 8's on 5×5 windows, stride 2 and 32 channels
at 112×112; up to 20 slower still. Whole networks, both plans in one process,
timed interleaved: efficientnet_b0 0.91 of the time at batch 8 and 0.95 at
batch 1, mobilenet_v2 0.96 and 0.94, convnext_tiny (7×7) 0.99."""


TAIL_ACCUMULATORS = 20
"""Fewest accumulators in a block of the narrower columns that end a split
row (`RegisterTile.split`): 6 + 4 + 4 blocks of 4 vectors for 14 columns
measured no faster than 7 + 7 (1.002), the 7×7/2 stem's 112 columns as 17 ×
6 + 2 × 5 0.87 of the time against 18 × 6 + 4 0.91."""


THREE_VECTORS = True
"""Blocks whose columns broadcast their input take 3 vectors where the channels
fill 3 (33-48 with 16 lanes), not 4: the lowering carries 3 parts, the last as
narrow as its active lanes (`loop_to_llvm._vector_parts`), where a fourth
vector would be all padding and cost as much as a full one. 1x1 144->40 and
240->40 at 28x28, batch 8, 2 threads: 127-131 GFLOP/s with 4 vectors, 194-199
with 3 (the library: 153-162)."""


MIN_USED = 0.97
"""Least fraction of the computed points that are real points (the rest are
past the end, clamped) for which a register block takes the most columns
that need no spill."""


def across_rows(points: int, columns: int, p: int) -> tuple[int, int]:
    """(blocks per row, rows) for blocks of `p` consecutive points of a
    row-major space of `points` whose rows have `columns`: the fewest blocks
    that hold the points, in rows of the divisor of that count nearest to a
    row's blocks (56x56 points in blocks of 6: 523 blocks, a prime, so rows
    of one block; 14x14: 33 blocks in 11 rows of 3). Rows of a row's blocks
    instead (53 rows of 10 blocks for 56x56, 1.4% past the end against 0.06%)
    were no faster: 0.79-0.94 of oneDNN against 0.84-0.95 on four of
    resnet50's shapes."""
    blocks = -(-points // p)
    per_row = -(-columns // p)
    best = min(range(1, 2 * per_row + 1),
               key=lambda b: (-(-blocks // b) * b, abs(b - per_row)))
    return best, -(-blocks // best)


def _contraction(lp: simd.LoopOp) -> loop.ReduceOp | None:
    """The one contracting add reduction directly in `lp`'s body, if that is all
    the body nests (other regions would have to be cloned per column)."""
    found = None
    for op in lp.body.block.ops:
        if isinstance(op, loop.ReduceOp) and op.contracts and len(op.accumulators) == 1:
            if found is not None:
                return None
            found = op
        elif op.regions:
            return None
    return found


def _taps(red: loop.ReduceOp) -> int:
    """The taps of a convolution's channel sum: the product of its static
    extents but the last (the input channels); 1 for a 1x1 convolution."""
    return math.prod(b for b in red.upper_bounds()[:-1] if isinstance(b, int))


def _used_ivs(op: Operation, ivs: tuple[SSAValue, ...]) -> set[SSAValue]:
    used = op.map.data.used_dims()  # type: ignore[attr-defined]
    return {i for k, i in enumerate(op.indices) if k in used and i in ivs}  # type: ignore[attr-defined]


def row_dim(nest: loop.NestOp, red: loop.ReduceOp) -> int | None:
    """Position of the nest iv to block by columns: the innermost one that
    some load of the reduction uses and another load does not (reuse)."""
    loads = [op for op in red.body.walk() if isinstance(op, _ACCESSES)]
    uses = [_used_ivs(op, nest.ivs) for op in loads]
    for pos in reversed(range(len(nest.ivs))):
        iv = nest.ivs[pos]
        if any(iv in u for u in uses) and any(iv not in u for u in uses):
            return pos
    return None


def row_taps(red: loop.ReduceOp, row: SSAValue) -> int | None:
    """The dim of `red` from which a register block unrolls it: the taps along
    the row of columns (a window's kw) where every vector load that reads the
    row reads it at the column plus that tap, and the tap's steps times those
    of the dims after it are static and at most `UNROLLED_TAPS`; else None."""
    loads = [op for op in red.body.walk() if isinstance(op, simd.LoadOp)
             and _reads(op, row)]
    if not loads:
        return None
    lbs, ubs = red.lower_bounds(), red.upper_bounds()
    for d in reversed(range(len(red.ivs))):
        steps = [ub - lb for lb, ub in zip(lbs[d:], ubs[d:], strict=True)
                 if isinstance(lb, int) and isinstance(ub, int)]
        if len(steps) != len(red.ivs) - d or math.prod(steps) > UNROLLED_TAPS:
            return None
        if steps[0] > 1 and all(_reads_at_tap(ld, row, red.ivs[d]) for ld in loads):
            return d
    return None


def _reads(load: simd.LoadOp, iv: SSAValue) -> bool:
    """Whether some index of `load` uses `iv`."""
    return bool(_positions(load, iv) & load.map.data.used_dims())


def _positions(load: simd.LoadOp, iv: SSAValue) -> set[int]:
    return {k for k, x in enumerate(load.indices) if x is iv}


def _reads_at_tap(load: simd.LoadOp, row: SSAValue, tap: SSAValue) -> bool:
    """Whether every index of `load` that uses the `row` also uses the `tap`."""
    at_row, at_tap = _positions(load, row), _positions(load, tap)
    uses = [e.used_dims() for e in load.map.data.results]
    return all(u & at_tap for u in uses if u & at_row)


def _varies(op: Operation, varying: set[SSAValue]) -> bool:
    return any(v in varying for v in value_operands(op)) or any(
        v in varying for r in op.regions for o in r.walk() for v in value_operands(o)
    )


def _shared_bytes(red: loop.ReduceOp, row: SSAValue) -> int:
    """Bytes of the buffers that the reduction reads the same for every column
    (the weights): what each column block streams through the cache."""
    total = 0
    seen: set[SSAValue] = set()
    for op in red.body.walk():
        if isinstance(op, _ACCESSES) and op.buffer not in seen and row not in value_operands(op):
            seen.add(op.buffer)
            shape = op.buffer.type.get_shape()
            if all(d > 0 for d in shape):
                total += 4 * math.prod(shape)
    return total


@dataclass
class RegisterTile(RewritePattern):
    lanes: int
    registers: int
    max_vectors: int
    cache: int
    broadcast_operands: bool = False

    def shape(self, lanes_extent: int, rows_extent: int,
              vectors: int | None = None, broadcast: bool = True,
              rows_above: int | None = None, unrolled: int = 0
              ) -> tuple[int, int, tuple[int, int] | None]:
        """(P columns, V vectors, and for blocks that run across rows their
        (blocks per row, rows), else None) for a lane extent and a column
        extent; `rows_above`: the extent of the dim of rows above the columns
        where a block may run across rows (a single tap's sum; in a depth-first
        tile, its step), else None; `unrolled`: the steps of a window's row of
        taps that the block unrolls (`row_tap_block`), else 0.

        V: as many vectors as the channels fill, a power of two (LLVM splits
        those cleanly) or 3 (`THREE_VECTORS`), at most `max-vectors`
        (`WINDOW_VECTORS` where the columns read vectors, not a `broadcast`).
        P: the accumulators, the V weight vectors and a broadcast fit the
        register file. The broadcast
        takes no register only where one FMA takes it as a memory operand (V
        = 1 with `broadcast-operands`): LLVM folds a load into one use only, so
        with V = 4, P = 7 spills one accumulator on every step. A 1x1
        convolution takes P = 6 where the columns, or the points of the rows
        taken row-major, fit blocks of 6 with at most `1 - MIN_USED` of them
        past the end (56, 28 and 14 columns: 0.06%, 0.3% and 1%).
        Otherwise P may take the broadcast's register too (with
        `broadcast-operands`: P = 7 for V = 4, also in channel sums that
        bs-block-reduction chunks: keeping a register spare there was 4-15%
        slower on 6 of 9 of resnet50's shapes at batch 8 on one thread and no
        faster on the others, e.g. 512->2048 1x1 at 7x7 5.7 ms with P = 7
        against 6.7 ms with P = 4), with at least 12 accumulators where the
        columns allow (two FMA pipes of 4 cycles' latency need 8 in flight,
        and the broadcasts need hiding), at most
        `REGISTER_BROADCAST_ACCUMULATORS` where V <= 2 columns `broadcast` a
        scalar input; among those, the P that wastes the fewest columns past
        the end (then the larger)."""
        if unrolled:
            return self.row_tap_block(rows_extent, unrolled), 1, None
        v = 1
        most = self.max_vectors
        if not broadcast and rows_extent >= self._columns(WINDOW_VECTORS, 1):
            most = min(most, WINDOW_VECTORS)  # (fewer columns keep more vectors)
        while v * 2 <= most and v * self.lanes < lanes_extent:
            v *= 2
        if THREE_VECTORS and broadcast and v == 4 and 3 <= most \
                and lanes_extent <= 3 * self.lanes:
            v = 3
        if vectors is not None:  # the weights are packed in blocks of V vectors
            v = vectors

        def fitting(spare: int) -> int:
            """The most columns whose accumulators fit with the V weight
            vectors and `spare` registers, within the broadcasts' own limit."""
            p = self._columns(v, spare)
            if broadcast and self.broadcast_operands and v <= 2:
                p = min(p, REGISTER_BROADCAST_ACCUMULATORS // v)
            return p

        folds = self.broadcast_operands and v == 1
        top = fitting(0 if folds else 1)
        if rows_extent <= top:
            return rows_extent, v, None

        def used(p: int) -> float:
            return rows_extent / (-(-rows_extent // p) * p)

        # where one more column would fit but for the broadcast's register
        # (which V = 1 does not need), the most columns without a spill, if
        # they fit the columns (or the points of the rows) with few past the end
        if rows_above is not None and self.broadcast_operands and top < fitting(0):
            if used(top) >= MIN_USED:
                return top, v, None
            flat = across_rows(rows_above * rows_extent, rows_extent, top)
            if rows_above * rows_extent / (flat[0] * flat[1] * top) >= MIN_USED:
                return top, v, flat
        # else one more column where it fits without the broadcast's register
        # (one accumulator spills), and the P that wastes the fewest columns
        # (then the larger)
        if self.broadcast_operands:
            top = fitting(0)
        low = min(top, max(1, -(-12 // v)))
        if rows_extent <= top:
            return rows_extent, v, None
        best = max(range(low, top + 1), key=lambda p: (used(p), p))
        return best, v, None

    def row_tap_block(self, extent: int, steps: int) -> int:
        """P for a block of one vector whose window's row of `steps` taps is
        unrolled: one accumulator per column beside the row's weights and two
        inputs in flight, at most `ROW_TAP_COLUMNS`; the largest such P that
        divides the columns, down to half of the most (a block's columns are
        then consecutive, which the shared loads need), else the most (the
        row's last columns then take a block of their own, `split`)."""
        most = max(1, min(ROW_TAP_COLUMNS, self.registers - steps - 2))
        if extent <= most:
            return extent
        return next((p for p in range(most, (most - 1) // 2, -1) if extent % p == 0), most)

    def _columns(self, vectors: int, spare: int) -> int:
        """The most columns whose accumulators fit the register file beside
        `vectors` weight vectors and `spare` other registers."""
        return max(1, (self.registers - vectors - spare) // vectors)

    @op_type_rewrite_pattern
    def match_and_rewrite(self, lp: simd.LoopOp, rewriter: PatternRewriter, /):
        nest = lp.parent_op()
        if lp.vectors is not None or not isinstance(nest, loop.NestOp):
            return
        red = _contraction(lp)
        if red is None:
            return
        body_ops = [o for o in nest.body.block.ops if not isinstance(o, loop.YieldOp)]
        if body_ops != [lp]:
            return
        (lane_lb,), (lane_ub,) = lp.lower_bounds(), lp.upper_bounds()
        pos = row_dim(nest, red)
        if pos is None or not isinstance(lane_ub, int) or not isinstance(lane_lb, int):
            return
        lb, ub = nest.lower_bounds()[pos], nest.upper_bounds()[pos]
        if lb != 0 or not isinstance(ub, int):
            return
        row = nest.ivs[pos]
        stores = [o for o in lp.body.walk() if isinstance(o, simd.StoreOp | loop.StoreOp)]
        if not stores or any(row not in _used_ivs(s, nest.ivs) for s in stores):
            return  # columns must write distinct points
        packed = packed_block(red, lp.iv)
        if packed and (lane_lb != 0 or packed % self.lanes
                       or packed // self.lanes > self.max_vectors):
            return  # blocks this target can't hold in registers: gathers stay
        # a grouped convolution whose groups hold whole vectors: blocks of V
        # vectors within a group broadcast its input (V * W divides the group)
        group = group_width(red, lp.iv)
        if group and (lane_lb != 0 or group % self.lanes or packed):
            group = 0  # the input stays a gather
        broadcast = bool(group) or any(
            isinstance(o, loop.LoadOp) and row in _used_ivs(o, nest.ivs) for o in red.body.walk())
        # a single tap's sum: the extent of the dim of rows above the columns,
        # static, or a depth-first tile's rows (their extent is the tile's step)
        above, tile_rows = None, False
        if pos > 0 and all(u == 1 for u in red.upper_bounds()[:-1]):
            h_lb, h_ub = nest.lower_bounds()[pos - 1], nest.upper_bounds()[pos - 1]
            if h_lb == 0 and isinstance(h_ub, int):
                above = h_ub
            elif (step := tile_step(h_lb)) is not None:
                above, tile_rows = step, True
        vectors = packed // self.lanes if packed else None
        if group:  # the most vectors (a power of two) that divide the group
            vectors = 1
            while vectors * 2 <= self.max_vectors and group % (vectors * 2 * self.lanes) == 0:
                vectors *= 2
        unroll = None if broadcast or packed else row_taps(red, row)
        unrolled = 0
        if unroll is not None:
            unrolled = math.prod(ub - lb for lb, ub in zip(  # type: ignore[operator]
                red.lower_bounds()[unroll:], red.upper_bounds()[unroll:], strict=True))
        p, v, flat = self.shape(lane_ub - lane_lb, ub,  # type: ignore[arg-type]
                                vectors, broadcast, above, unrolled)
        if p == 1 and v == 1 and not packed and not group:
            return
        if flat is None and (not in_tile(nest) or _taps(red) > 1):
            p, ub = self._split_row(nest, pos, p, v, ub, broadcast, packed,  # type: ignore[arg-type]
                                    rewriter, group, unroll)
        self._tile(lp, nest, red, pos, p, v, flat, tile_rows, ub, packed,  # type: ignore[arg-type]
                   rewriter, above, group, unroll)

    def _split_row(self, nest: loop.NestOp, pos: int, p: int, v: int, extent: int,
                   broadcast: bool, packed: int, rewriter: PatternRewriter,
                   group: int = 0, unroll: int | None = None) -> tuple[int, int]:
        """(P, columns) of `nest`'s own blocks. Where `split` takes blocks of
        P and of P', those of P' are tiled here, in a copy of `nest` after it
        that runs over the row's last columns, and `nest` keeps the others.
        In a depth-first tile (`in_tile`, checked by the caller) only a sum
        over several taps splits: MobileNet-V2's 28-column 1x1 convolutions in
        chains ran 1.1-1.3% slower split at batch 8, but ResNet's 7×7/2 stem,
        tiled with the max pool after it, ran its stack in 0.64 of the time
        at batch 1 and 8 split (resnet50: 0.986 and 0.978; vgg11, whose 3×3
        convolutions are tiled with their pools: 0.964 and 0.927)."""
        split = self.split(extent, p, v, broadcast, unroll is not None)
        if split is None:
            return p, extent
        (p_main, main), (p_tail, tail_blocks) = split
        if not tail_blocks:
            return p_main, extent
        tail = tail_nest(nest, pos, main * p_main, tail_blocks * p_tail)
        if tail is None:
            return p, extent
        rewriter.insert(tail, InsertPoint.after(nest))
        tail_lp = tail.body.block.first_op
        assert isinstance(tail_lp, simd.LoopOp)
        tail_red = _contraction(tail_lp)
        assert tail_red is not None
        self._tile(tail_lp, tail, tail_red, pos, p_tail, v, None, False, tail_blocks * p_tail,
                   packed, rewriter, group=group, unroll=unroll)
        return p_main, set_extent(nest, pos, main * p_main)

    def split(self, extent: int, p: int, v: int, broadcast: bool, row_taps: bool = False
              ) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """For a block of `p` columns that spills (its accumulators, the V
        weight vectors and the broadcast overfill the register file: P = 7
        for V = 4), ((P, blocks), (P', blocks)) of columns that need no spill
        and cover the `extent` columns exactly, P' < P, each block with at
        least `TAIL_ACCUMULATORS`: the fewest blocks, then the larger P' (56 =
        6 × 6 + 4 × 5, 28 = 3 × 6 + 2 × 5, 112 = 17 × 6 + 2 × 5; 42 = 7 × 6);
        None where none fit (14, 13). As in MLAS's kernels, whose blocks of 6
        × 4 vectors end a row with narrower ones. The spill of P = 7 costs
        its inner loop 13% (llvm-mca), and measured (batch 8, 2 threads, both
        compiled in one process, timed interleaved): 64→64 3×3 at 42×42
        (where 6 and 7 both divide the columns) 0.955-0.961 of the time with
        P = 6; 56×56 split 0.96-0.97; ResNet's 7×7/2 stem (112 columns)
        0.87-0.91; resnet50 0.979-0.998 (four runs; their noise is ±2%).
        With `row_taps` (an unrolled window, `row_tap_block`), where P does
        not divide the columns: the blocks of P and one of the rest."""
        if row_taps:
            rest = extent % p
            return ((p, extent // p), (rest, 1)) if rest and extent > p else None
        if not (broadcast and self.broadcast_operands) or extent <= p:
            return None
        free = self._columns(v, 1)
        if p <= free:
            return None
        low = -(-TAIL_ACCUMULATORS // v)
        best = None
        for p_tail in range(free - 1, low - 1, -1):
            for main in range(extent // free, 0, -1):
                rest = extent - main * free
                if rest % p_tail == 0:
                    key = (main + rest // p_tail, -p_tail)
                    if best is None or key < best[0]:
                        best = (key, ((free, main), (p_tail, rest // p_tail)))
                    break
        return None if best is None else best[1]

    def _tile(self, lp: simd.LoopOp, nest: loop.NestOp, red: loop.ReduceOp, pos: int,
              p: int, v: int, flat: tuple[int, int] | None, tile_rows: bool, ub: int,
              packed: int, rewriter: PatternRewriter, above: int | None = None,
              group: int = 0, unroll: int | None = None) -> None:
        """Blocks `lp` (the body of `nest`, whose dim `pos` has `ub` columns)
        by `p` columns × `v` vectors; see `match_and_rewrite`. With `group`
        (output channels per group, a multiple of `v` vectors) every block of
        channels lies in one group. `unroll`: the reduction's dims from this
        one on unroll (`row_taps`)."""
        (lane_lb,), (lane_ub,) = lp.lower_bounds(), lp.upper_bounds()
        assert isinstance(lane_lb, int) and isinstance(lane_ub, int)
        row = nest.ivs[pos]
        weights = _shared_bytes(red, row)
        if flat is None:
            rows, guards = self._rows(nest, pos, p, ub, rewriter)
            columns = [{row: r} for r in rows]
        elif tile_rows:
            nest, columns, guards = across_tile_rows(nest, pos, p, ub,  # type: ignore[arg-type]
                                                     rewriter)
            row = nest.ivs[pos]
        else:
            columns, guards = self._across_rows(nest, pos, p, ub, above,  # type: ignore[arg-type]
                                                flat, rewriter)
        column_ivs = list(columns[0])
        block = v * self.lanes
        blocks = -(-(lane_ub - lane_lb) // block)
        lower, upper = lane_lb, lane_ub
        cb = None
        if packed or group or (blocks > 1 and weights > self.cache):
            # large weights: a block's weights stay in cache while all pixels
            # use them (outermost); small ones: every pixel block runs all
            outer = weights > self.cache
            nest, (lower, upper) = channel_blocks(nest, lane_lb, lane_ub, block, outer,
                                                  rewriter)
            cb = nest.ivs[0] if outer else nest.ivs[-1]
            row = nest.ivs[pos + 1] if outer else nest.ivs[pos]
            # the column ivs are the new nest's (the old block args are gone)
            shift = 1 if outer else 0
            renamed = {iv: nest.ivs[k + shift] for iv, k in zip(
                column_ivs, [pos - 1, pos] if flat is not None else [pos], strict=True)}
            columns = [{renamed[iv]: val for iv, val in col.items()} for col in columns]
        # which dim holds the blocks of columns (bs-block-reduction reads it)
        nest.attributes[COLUMNS_ATTR] = IntegerAttr(nest.ivs.index(row), IndexType())
        new_lp = simd.LoopOp(lower, upper, vectors=v)
        self._clone_body(lp, red, columns, guards, new_lp, unroll)
        if packed:
            assert cb is not None
            index_blocks(new_lp, packed, cb)
        if group:
            assert cb is not None
            broadcast_group_loads(new_lp, group, block, cb)
        rewriter.replace(lp, new_lp.with_attributes(dict(lp.attributes)))

    def _rows(self, nest: loop.NestOp, pos: int, p: int, extent: int,
              rewriter: PatternRewriter) -> tuple[list[SSAValue], list[SSAValue | None]]:
        """Blocks the nest dim `pos` by `p`; the column ivs of a block, clamped
        to the last column unless `p` divides the extent (then they are plainly
        consecutive, and LLVM can share loads between columns and taps), and
        each column's guard (`column_blocks.column_guard`)."""
        set_extent(nest, pos, -(-extent // p))
        block_iv = nest.ivs[pos]
        ops: list[Operation] = []

        base = arith.MuliOp(block_iv, index_constant(p, ops))
        last = index_constant(extent - 1, ops)
        ops.append(base)
        rows: list[SSAValue] = []
        guards: list[SSAValue | None] = []
        for k in range(p):
            add = arith.AddiOp(base.result, index_constant(k, ops))
            ops.append(add)
            col = add
            guards.append(None)
            if extent % p:
                col = arith.MinSIOp(add.result, last)
                ops.append(col)
                guards[-1] = column_guard(k, add.result, last, ops)
            col.result.name_hint = f"col{k}"
            rows.append(col.result)
        first = nest.body.block.first_op
        assert first is not None
        rewriter.insert(ops, InsertPoint.before(first))
        return rows, guards

    def _across_rows(self, nest: loop.NestOp, pos: int, p: int, columns: int, rows: int,
                     shape: tuple[int, int], rewriter: PatternRewriter
                     ) -> tuple[list[dict[SSAValue, SSAValue]], list[SSAValue | None]]:
        """Blocks the nest dims `pos - 1` (rows) and `pos` (columns) into rows
        of `shape[0]` blocks of `p` consecutive points of the row-major (row,
        column) space, `shape[1]` such rows; per column of a block, its row
        and column, both past the last point clamped to it."""
        per_row, new_rows = shape
        set_extent(nest, pos - 1, new_rows)
        set_extent(nest, pos, per_row)
        row_iv, block_iv = nest.ivs[pos - 1], nest.ivs[pos]
        ops: list[Operation] = []

        first = arith.MuliOp(row_iv, index_constant(per_row, ops))
        block = arith.AddiOp(first.result, block_iv)
        base = arith.MuliOp(block.result, index_constant(p, ops))
        ops += [first, block, base]
        last, width = index_constant(rows * columns - 1, ops), index_constant(columns, ops)
        points, guards = block_points(base.result, p, last, width, (row_iv, block_iv), ops,
                                       exact=per_row * new_rows * p == rows * columns)
        first_op = nest.body.block.first_op
        assert first_op is not None
        rewriter.insert(ops, InsertPoint.before(first_op))
        return points, guards

    def _clone_body(self, lp: simd.LoopOp, red: loop.ReduceOp,
                    columns: list[dict[SSAValue, SSAValue]], guards: list[SSAValue | None],
                    new_lp: simd.LoopOp, unroll: int | None = None) -> None:
        """Clones `lp`'s body into `new_lp` once per column, each substituting
        its own ivs (`columns`) where the body depends on them; a column's
        stores take its guard."""
        maps: list[dict[SSAValue, SSAValue]] = [{**col, lp.iv: new_lp.iv} for col in columns]
        new_lp.iv.name_hint = lp.iv.name_hint
        varying: set[SSAValue] = set(columns[0])
        epilogue: list[Operation] = []
        for op in lp.body.block.ops:
            if op is red:
                new = self._tiled_reduce(red, maps, varying, unroll)
                new_lp.body.block.add_op(new)
                for m, acc in zip(maps, new.accumulators, strict=True):
                    m[red.result] = acc
                varying.add(red.result)
            elif isinstance(op, loop.YieldOp):
                continue
            elif red.result in varying:
                epilogue.append(op)
            else:
                _clone_per_column(op, maps, varying, new_lp.body.block)
        _clone_columns_in_turn(epilogue, maps, guards, varying, new_lp.body.block)

    def _tiled_reduce(self, red: loop.ReduceOp, maps: list[dict[SSAValue, SSAValue]],
                      varying: set[SSAValue], unroll: int | None = None) -> loop.ReduceOp:
        new = loop.ReduceOp(red.kind_name, red.init_value, red.lower_bounds(),
                            red.upper_bounds(), result_type=[red.result.type] * len(maps),
                            contract=True, unroll=unroll)
        body = new.body.block
        for old_arg, arg in zip(red.body.block.args, body.args, strict=True):
            arg.name_hint = old_arg.name_hint
            for m in maps:
                m[old_arg] = arg
        term = red.body.block.last_op
        assert isinstance(term, loop.YieldOp)
        for op in red.body.block.ops:
            if op is not term:
                _clone_per_column(op, maps, varying, body)
        body.add_op(loop.YieldOp(*[m[term.values[0]] for m in maps]))
        return new


def _clone_per_column(op: Operation, maps: list[dict[SSAValue, SSAValue]],
                      varying: set[SSAValue], dst: Block) -> None:
    """Appends `op` to `dst` once per column if it depends on the column, else
    once for all of them."""
    if _varies(op, varying):
        for m in maps:
            new = op.clone(value_mapper=m)
            dst.add_op(new)
            m.update(zip(op.results, new.results, strict=True))
        varying.update(op.results)
        return
    new = op.clone(value_mapper=maps[0])
    dst.add_op(new)
    for m in maps:
        m.update(zip(op.results, new.results, strict=True))


def _clone_columns_in_turn(ops: list[Operation], maps: list[dict[SSAValue, SSAValue]],
                           guards: list[SSAValue | None], varying: set[SSAValue],
                           dst: Block) -> None:
    """Appends `ops` (those after the reduction) column by column: first the
    ones that don't depend on the column, once, then each column's whole chain.
    Cloned op by op across columns instead, every column's intermediates of a
    long epilogue (SiLU's exp: some 40 vector ops) are live at once, and LLVM
    spills them: 1x1 16->96 + BN + SiLU at 112x112, batch 8 (8 columns of 2
    vectors) took 3.9-6.8 ms that way and 3.4-4.1 ms in turn (three runs of
    7 interleaved rounds; the convolution alone takes 1.2-1.6 ms)."""
    per_column = []
    for op in ops:
        if _varies(op, varying):
            per_column.append(op)
            varying.update(op.results)
        else:
            _clone_per_column(op, maps, varying, dst)
    for m, guard in zip(maps, guards, strict=True):
        for op in per_column:
            new = op.clone(value_mapper=m)
            if guard is not None and isinstance(new, simd.StoreOp):
                ops_before, guarded = new.guarded_by(guard)
                dst.add_ops(ops_before)
                new.erase(safe_erase=False)
                new = guarded
            dst.add_op(new)
            m.update(zip(op.results, new.results, strict=True))


@dataclass(frozen=True)
class RegisterTilePass(ModulePass):
    """Block contractions in registers: a tile of columns × `vectors` (at
    most `max-vectors`) of `lanes` lanes, within `registers` vector registers
    (with `broadcast-operands`, the FMA reads the broadcast input from memory, as
    AVX-512's `{1toN}` operand does, and it takes no register). When the weights
    exceed `cache` bytes, the channel blocks become the outermost loop, so each
    block's weights stay in cache across all pixels."""

    name = "bs-register-tile"
    lanes: int = 16
    registers: int = 32
    max_vectors: int = 4
    cache: int = 512 * 1024
    broadcast_operands: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            RegisterTile(self.lanes, self.registers, self.max_vectors, self.cache,
                         self.broadcast_operands),
            apply_recursively=False,
        ).rewrite_module(op)


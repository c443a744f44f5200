"""bs-block-reduction: a register-blocked convolution's channel sum in chunks
whose weights stay in L1.

After bs-register-tile, each block of P columns × V vectors of output channels
sums over every tap and input channel, reading the whole weight block of its
output channels. With many input channels (a 1×1 over 1024 channels: 256 KiB
per block of 64 outputs) that block streams from L2 once per column block; on
a 2-core Xeon such a convolution ran no faster on two threads than on one.
Like oneDNN and MLAS, this pass splits the input channels into chunks of Kc
whose weights fit `cache` bytes, and runs every column block of a band of rows
through one chunk before the next: the chunk is read from L2 once per band.

The nest over (..., rows, column blocks, ...) becomes a nest over the other
dims and bands of R rows, with a buffer of partial sums for the band (a
`memref.alloca`) and sequential nests over the band's column blocks:

- zeros in the buffer;
- each chunk but the last adds its sums to the buffer;
- the last chunk, of the channels left (Kc or fewer), adds its sums to the
  buffer's and runs the epilogue (bias, batch norm, activations, residual)
  and the stores, as before.

A sum over several rows of taps (a 3×3 convolution's) is chunked by rows of
taps instead, each chunk one row and Kc channels (`tap_row_chunk`: a 3×3 sum
over 256 channels in six chunks of 3 × 128 products), so that each tap's
steps run over many channels.

Kc depends on the taps and the register block, not on the channel count, so
a network's convolutions that differ only in their input channels (DenseNet's
1×1 ones: 160 to 992 channels, in chunks of 128 and a last of 32 to 128) have
one form, whose counts bs-lower-to-llvm's generic phases pass as parameters.

In a 1×1 sum, each step of a chunk but the last prefetches into L2 the
weights of the same step of the next chunk (`_prefetch_next_chunk`).

Every chunk sums from zero, and the chunk sums are added in order: a sum of
many products is rounded like the libraries' blocked sums (`channel_chunk`
keeps a chunk to at most 256 products), more accurately than one long sum.
So a long sum is chunked even where no chunk's weights fit the cache (a 3×3
convolution's row of taps and 128 channels, 96 KiB for a block of 64 outputs).
A band's rows past the last one clamp to it and recompute it, as register
blocks do with columns.

Where each block's weights fit but all blocks' do not (a 1×1 from 128 to 512
channels: 32 KiB per block, 256 KiB in all), the sum stays whole and only the
order changes: the blocks of output channels go outside the band's column
blocks, so each block's weights stay in L1 for the band.

Where all of a convolution's weights fit `l2` bytes (the core's L2), a 1×1
convolution's sum, or one of at most `MAX_CHUNK_TERMS` products, stays as it
is: the whole sum reads the weights from L2 faster than the partial sums cost.
On a Zen 5 core (1 MiB of L2), at batch 8, densenet121's 1×1 convolutions
(at most 496 KiB of weights) ran at 0.75-0.85 of oneDNN's speed chunked and
0.85-0.99 whole, its 7×7 stem 0.92 against 1.32; resnet50's late ones (2-8
MiB) ran faster chunked (1024→2048/2 at batch 1: 1.70 against 1.24). A 1×1
convolution's whole sum is as accurate as oneDNN's (which sums the channels
in order too: 0.99-1.06 of its error against float64, 13 to 999 channels);
a 3×3 one over 96 channels was up to 3.4 times less accurate whole, and 0.7
times chunked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import (
    AffineMapAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    f32,
)
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
    AffineMap,
)
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import Rewriter

from brainslug.analysis.nests import (
    MAX_CHUNK_TERMS,
    MIN_CHUNK,
    channel_chunk,
    value_operands,
)
from brainslug.dialects import loop, simd
from brainslug.passes.column_blocks import index_constant
from brainslug.passes.register_tile import COLUMNS_ATTR

MIN_REUSE = 4
"""Fewest column blocks that run through one chunk of weights."""

MAX_ROW_TERMS = 384
"""Most products in one chunk of a row of taps (`tap_row_chunk`): 3 × 128
channels. Each chunk sums from zero; against float64, 3×3 convolutions over
96 to 512 channels in such chunks were 2.8-5.6 times as accurate as oneDNN's
(max error; at 64 channels, whole rows of 192 products: 1.8 times). Rows of 128
channels ran 1.5-3% faster than of 64 (densenet121's and resnet50's 3×3
convolutions, batch 8, one thread)."""

MIN_UNITS = 8
"""Parallel units the nest over bands keeps where the rows allow (the batch,
dynamic, counts as one)."""


@dataclass(frozen=True)
class _Shape:
    """What the rewrite needs to know about one register-blocked nest."""

    nest: loop.NestOp
    lp: simd.LoopOp
    red: loop.ReduceOp
    row: int  # nest dim of rows
    col: int  # nest dim of column blocks
    rows: int
    col_blocks: int
    chunk: int
    chunks: int
    last: int  # channels of the last chunk
    band: int  # rows per band
    width: int  # lanes of the register block
    tap_rows: int = 1  # chunks take one row of taps each (of this many); 1: all taps


def _channel_loads(red: loop.ReduceOp) -> list[Operation]:
    """The loads of the reduction that read its last iv (the input channel)."""
    ci = red.ivs[-1]
    return [op for op in red.body.walk()
            if isinstance(op, loop.LoadOp | simd.LoadOp) and ci in op.indices]


@dataclass
class BlockReduction(RewritePattern):
    lanes: int
    cache: int
    band_bytes: int
    l2: int = 0

    def shape(self, nest: loop.NestOp) -> _Shape | None:
        col_attr = nest.attributes.get(COLUMNS_ATTR)
        if not isinstance(col_attr, IntegerAttr):
            return None
        col = col_attr.value.data
        body = [o for o in nest.body.block.ops if not isinstance(o, loop.YieldOp)]
        lp = body[-1] if body else None
        if not isinstance(lp, simd.LoopOp) or any(o.regions for o in body[:-1]):
            return None
        reds = [o for o in lp.body.block.ops if isinstance(o, loop.ReduceOp)]
        if len(reds) != 1 or any(
                o.regions for o in lp.body.block.ops if o is not reds[0]):
            return None
        red = reds[0]
        lows, ups = red.lower_bounds(), red.upper_bounds()
        if not red.contracts or any(lb != 0 for lb in lows) or not all(
                isinstance(u, int) for u in ups):
            return None
        # a sum over input channels: the broadcast input reads the last iv as
        # its innermost index (a depthwise window sums taps only)
        ci = red.ivs[-1]
        if not any(isinstance(op, loop.LoadOp) and op.indices[_last_dim(op)] is ci
                   for op in _channel_loads(red)):
            return None
        channels, taps = ups[-1], math.prod(ups[:-1])  # type: ignore[arg-type]
        if self.l2 and (taps == 1 or taps * channels <= MAX_CHUNK_TERMS) and \
                _weight_bytes(red) <= self.l2:  # type: ignore[operator]
            return None  # the whole sum reads them from L2
        lane_bytes = 4 * self.lanes * lp.num_vectors
        chunk = channel_chunk(channels, taps, lane_bytes, self.cache)  # type: ignore[arg-type]
        tap_rows = 1
        if chunk and taps > 1 and len(ups) > 2:
            # a sum over taps: chunks of one row of taps, whose steps each run
            # over many channels
            if row_chunk := tap_row_chunk(channels, math.prod(ups[1:-1])):  # type: ignore[arg-type]
                chunk, tap_rows = row_chunk, ups[0]  # type: ignore[assignment]
        row = col - 1
        n_up = nest.upper_bounds()
        if not chunk and taps * channels * lane_bytes <= self.cache and _blocks_exceed(  # type: ignore[operator]
                nest, red, (row, col), self.cache):
            chunk = channels  # one chunk: the blocks of channels go outside the band's pixels
        if not chunk or row < 0 or not isinstance(n_up[row], int) or not isinstance(
                n_up[col], int) or nest.lower_bounds()[row] != 0:
            return None
        rows, col_blocks = n_up[row], n_up[col]
        per_row = col_blocks * len(red.accumulators) * lane_bytes  # type: ignore[operator]
        band = max(1, min(rows, self.band_bytes // per_row))  # type: ignore[type-var]
        # enough bands for the threads, where the other dims are few (a
        # batch of one, one block of output channels)
        others = math.prod(u for k, u in enumerate(n_up)
                           if k not in (row, col) and isinstance(u, int))
        least = -(-MIN_REUSE // col_blocks)  # type: ignore[operator]
        band = min(band, max(least, -(-rows // -(-MIN_UNITS // others))))  # type: ignore[operator]
        band = -(-rows // -(-rows // band))  # as even as the bands can be
        if band * col_blocks < MIN_REUSE:  # type: ignore[operator]
            return None  # too few column blocks share a chunk
        per_row = -(-channels // chunk)  # type: ignore[operator]
        return _Shape(nest, lp, red, row, col, rows, col_blocks, chunk,  # type: ignore[arg-type]
                      tap_rows * per_row, channels - (per_row - 1) * chunk,  # type: ignore[operator]
                      band, self.lanes * lp.num_vectors, tap_rows)  # type: ignore[arg-type]

    @op_type_rewrite_pattern
    def match_and_rewrite(self, nest: loop.NestOp, rewriter: PatternRewriter, /):
        if not isinstance(nest.parent_op(), loop.NestOp | loop.TileOp) and (
                s := self.shape(nest)) is not None:
            rewriter.replace(nest, _rewrite(s))


def _weight_bytes(red: loop.ReduceOp) -> float:
    """Bytes of the weights a channel sum reads (the vector loads of its
    channels), all output channels' blocks; infinite where a shape is dynamic."""
    sizes = [op.buffer.type.get_shape() for op in _channel_loads(red)  # type: ignore[attr-defined]
             if isinstance(op, simd.LoadOp)]
    if not sizes or any(d < 0 for shape in sizes for d in shape):
        return math.inf
    return sum(4 * math.prod(shape) for shape in sizes)


def _blocks_exceed(nest: loop.NestOp, red: loop.ReduceOp, pixels: tuple[int, int],
                   cache: int) -> bool:
    """Whether the reduction's weights are blocked by a nest dim other than the
    rows and columns (blocks of output channels) and exceed `cache` bytes in
    all: each block fits, but a column block reads them all."""
    others = {nest.ivs[k] for k in range(len(nest.ivs)) if k not in pixels}
    for op in red.body.walk():
        if isinstance(op, simd.LoadOp) and others & set(value_operands(op)):
            shape = op.buffer.type.get_shape()  # type: ignore[attr-defined]
            if all(d > 0 for d in shape) and 4 * math.prod(shape) > cache:
                return True
    return False


def _last_dim(op: loop.LoadOp | simd.LoadOp) -> int:
    """Position of the operand that the map's last result is, or adds to an
    offset that does not read it (a grouped convolution's input channel:
    `group * I + i`); else -1."""
    e = op.map.data.results[-1]
    if isinstance(e, AffineDimExpr):
        return e.position
    if isinstance(e, AffineBinaryOpExpr) and e.kind == AffineBinaryOpKind.Add:
        for dim, rest in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
            if isinstance(dim, AffineDimExpr) and not any(
                    isinstance(x, AffineDimExpr) and x.position == dim.position
                    for x in rest.dfs()):
                return dim.position
    return -1


def _rewrite(s: _Shape) -> loop.NestOp:
    """The nest over bands: the partial-sum buffer and the chunk nests."""
    nest = s.nest
    lows, ups = nest.lower_bounds(), nest.upper_bounds()
    keep = [k for k in range(len(lows)) if k != s.col]
    bands = -(-s.rows // s.band)
    outer = loop.NestOp([lows[k] for k in keep],
                        [bands if k == s.row else ups[k] for k in keep])
    outer.attributes |= {k: v for k, v in nest.attributes.items() if k != COLUMNS_ATTR}
    for k, arg in zip(keep, outer.body.block.args, strict=True):
        arg.name_hint = nest.ivs[k].name_hint
    band_iv = outer.body.block.args[keep.index(s.row)]
    band_iv.name_hint = "band"
    body = outer.body.block
    part: SSAValue | None = None
    if s.chunks > 1:
        alloca = memref.AllocaOp.get(f32, 64, [s.band, s.col_blocks, len(s.red.accumulators),
                                               s.width])
        body.add_op(alloca)
        part = alloca.memref
        part.name_hint = "partial"
        body.add_op(_zero_nest(s, part))
    outer_of = {nest.ivs[k]: arg for k, arg in zip(keep, body.args, strict=True)}
    for which in ("whole",) if s.chunks == 1 else ("add", "last"):
        body.add_op(_chunk_nest(s, outer_of, band_iv, part, which))
    body.add_op(loop.YieldOp())
    return outer


def _zero_nest(s: _Shape, part: SSAValue) -> loop.NestOp:
    """Zeros in the band's buffer of partial sums."""
    p = len(s.red.accumulators)
    nest = loop.NestOp([0, 0, 0], [s.band, s.col_blocks, p])
    lp = simd.LoopOp(0, s.width, vectors=s.lp.num_vectors)
    for iv, name in zip((*nest.ivs, lp.iv), ("r", "cols", "col", "lane"), strict=True):
        iv.name_hint = name
    zero = arith.ConstantOp(FloatAttr(0.0, f32))
    splat = simd.SplatOp(zero.result)
    lp.body.block.add_ops([zero, splat, simd.StoreOp(splat.result, part,
                                                     [*nest.ivs, lp.iv]), loop.YieldOp()])
    nest.body.block.add_ops([lp, loop.YieldOp()])
    return nest


def _guard_stores(nest: loop.NestOp, inside: SSAValue, part: SSAValue | None) -> None:
    """Guards the stores of `nest` but those of the partial sums by `inside`:
    a row past the last recomputes the last, and only the last row's own
    iteration writes it (a later write would find an in-place input consumed)."""
    for st in [o for o in nest.walk() if isinstance(o, simd.StoreOp) and o.buffer is not part]:
        ops, new = st.guarded_by(inside)
        Rewriter.replace_op(st, [*ops, new], [])


def _chunk_nest(s: _Shape, outer_of: dict[SSAValue, SSAValue], band_iv: SSAValue,
                part: SSAValue | None, which: str) -> loop.NestOp:
    """One sequential nest over the band's column blocks (and, adding to the
    buffer, over the chunks but the last first) that sums one chunk per column
    block."""
    chunked = which == "add"
    lo = [0, 0, 0] if chunked else [0, 0]
    up = [s.chunks - 1, s.band, s.col_blocks] if chunked else [s.band, s.col_blocks]
    inner = loop.NestOp(lo, up)
    args = inner.body.block.args
    kc = args[0] if chunked else None
    hh, wb = args[-2], args[-1]
    if kc is not None:
        kc.name_hint = "chunk"
    hh.name_hint, wb.name_hint = "r", s.nest.ivs[s.col].name_hint
    ops: list[Operation] = []
    # the row: band * R + r, clamped to the last row where the bands overhang
    base = arith.MuliOp(band_iv, index_constant(s.band, ops))
    row = arith.AddiOp(base.result, hh)
    ops += [base, row]
    row_v: SSAValue = row.result
    inside: SSAValue | None = None
    if s.rows % s.band:
        last = index_constant(s.rows - 1, ops)
        clamp = arith.MinSIOp(row.result, last)
        below = arith.CmpiOp(row.result, last, "sle")
        ops += [clamp, below]
        row_v, inside = clamp.result, below.result
        inside.name_hint = "inside"
    row_v.name_hint = s.nest.ivs[s.row].name_hint
    vm: dict[SSAValue, SSAValue] = dict(outer_of)
    vm[s.nest.ivs[s.row]] = row_v
    vm[s.nest.ivs[s.col]] = wb
    for op in s.nest.body.block.ops:
        if op is s.lp or isinstance(op, loop.YieldOp):
            continue
        new = op.clone(value_mapper=vm)
        ops.append(new)
        vm.update(zip(op.results, new.results, strict=True))
    for op in ops:
        inner.body.block.add_op(op)
    inner.body.block.add_op(_chunk_loop(s, vm, part, hh, wb, kc, which))
    if inside is not None:
        _guard_stores(inner, inside, part)
    inner.body.block.add_op(loop.YieldOp())
    return inner


def _bound(b: loop.Bound, vm: dict[SSAValue, SSAValue]) -> loop.Bound:
    return b if isinstance(b, int) else vm.get(b, b)


def _chunk_loop(s: _Shape, vm: dict[SSAValue, SSAValue], part: SSAValue | None, hh: SSAValue,
                wb: SSAValue, kc: SSAValue | None, which: str) -> simd.LoopOp:
    (lower,), (upper,) = s.lp.lower_bounds(), s.lp.upper_bounds()
    lower, upper = _bound(lower, vm), _bound(upper, vm)
    lp = simd.LoopOp(lower, upper, vectors=s.lp.num_vectors)
    lp.attributes |= dict(s.lp.attributes)
    lp.iv.name_hint = s.lp.iv.name_hint
    vm[s.lp.iv] = lp.iv
    block = lp.body.block
    p = len(s.red.accumulators)

    def part_access(k: int) -> tuple[list[SSAValue], AffineMap]:
        """The buffer's [r, column block, column k, lane - lower]."""
        if isinstance(lower, int):
            return [hh, wb, lp.iv], AffineMap(3, 0, (
                AffineDimExpr(0), AffineDimExpr(1), AffineConstantExpr(k),
                AffineDimExpr(2) - lower))
        return [hh, wb, lp.iv, lower], AffineMap(4, 0, (
            AffineDimExpr(0), AffineDimExpr(1), AffineConstantExpr(k),
            AffineDimExpr(2) - AffineDimExpr(3)))

    red = s.red
    ups = red.upper_bounds()
    if s.tap_rows > 1:
        ups = [1, *ups[1:]]
    new = loop.ReduceOp(red.kind_name, red.init_value, red.lower_bounds(),
                        [*ups[:-1], s.last if which == "last" else s.chunk],
                        result_type=[r.type for r in red.accumulators], contract=True)
    for old_arg, arg in zip(red.body.block.args, new.body.block.args, strict=True):
        arg.name_hint = old_arg.name_hint
        vm[old_arg] = arg
    for op in red.body.block.ops:
        cloned = op.clone(value_mapper=vm)
        new.body.block.add_op(cloned)
        vm.update(zip(op.results, cloned.results, strict=True))
    if which != "whole":
        _offset_chunk(new, s, s.chunks - 1 if which == "last" else kc)  # type: ignore[arg-type]
    if which == "add" and math.prod(ups[:-1]) == 1:  # (a 1x1 convolution's sum)
        _prefetch_next_chunk(new, s.chunk)
    block.add_op(new)
    sums: list[SSAValue] = list(new.accumulators)
    if which in ("add", "last"):  # the chunk's own sum, added to the chunks' before
        assert part is not None
        for k in range(p):
            idx, amap = part_access(k)
            ld = simd.LoadOp(part, idx, amap)
            add = simd.AddfOp(ld.result, sums[k])
            block.add_ops([ld, add])
            sums[k] = add.result
    if which in ("last", "whole"):  # the epilogue and the stores, after the sum
        vm.update(zip(red.accumulators, sums, strict=True))
        ops = list(s.lp.body.block.ops)
        for op in ops[ops.index(red) + 1:]:
            cloned = op.clone(value_mapper=vm)
            block.add_op(cloned)
            vm.update(zip(op.results, cloned.results, strict=True))
    else:
        assert part is not None
        for k, acc in enumerate(sums):
            idx, amap = part_access(k)
            block.add_op(simd.StoreOp(acc, part, idx, amap))
        block.add_op(loop.YieldOp())
    return lp


def _prefetch_next_chunk(red: loop.ReduceOp, chunk: int) -> None:
    """Before each weight load of `red` (a chunk's sum), a prefetch into L2 of
    the same weights of the next chunk (`chunk` channels on).

    In a network, a convolution's weights come from L3 or memory: at batch 1,
    resnet50's kernels took 31.8 ms in all after a cache flush against 24.3
    ms called repeatedly, and the weight-heavy late layers most (1.3-1.5x).
    Prefetching the next chunk made resnet50 at batch 1 2.4% faster (densenet121
    1.7%), batch 8 unchanged. Only 1x1 sums get it: a 3x3 sum's step reads
    four lines of weights for 28 FMAs, and four prefetches more made its
    kernels 4-10% slower when their weights were already cached."""
    ci = red.ivs[-1]
    for op in list(red.body.walk()):
        if not isinstance(op, simd.LoadOp) or ci not in op.indices:
            continue
        ahead = _shifted(op, {ci: AffineConstantExpr(chunk)}, op.map.data.num_dims)
        op.parent_block().insert_op_before(simd.PrefetchOp(op.buffer, op.indices, ahead, 2), op)


def _offset_chunk(red: loop.ReduceOp, s: _Shape, k: int | SSAValue) -> None:
    """Every access of `red`'s body reads chunk `k` (a constant, or the chunk
    nest's iv): its channels `c + (k mod n) * Kc` of the `n` chunks of a row
    of taps, and with chunks of tap rows, its taps' row `kh + k floordiv n`."""
    per_row = s.chunks // s.tap_rows
    ci, kh = red.ivs[-1], red.ivs[0]
    for op in red.body.walk():
        if not isinstance(op, loop.LoadOp | simd.LoadOp):
            continue
        n = op.map.data.num_dims
        chunk: AffineExpr = AffineConstantExpr(k) if isinstance(k, int) else AffineDimExpr(n)
        shifts: dict[SSAValue, AffineExpr] = {}
        if ci in op.indices and per_row > 1:
            shifts[ci] = (chunk % per_row if s.tap_rows > 1 else chunk) * s.chunk
        if kh in op.indices and s.tap_rows > 1:
            shifts[kh] = chunk // per_row if per_row > 1 else chunk
        if not shifts:
            continue
        extra = not isinstance(k, int)
        op.map = AffineMapAttr(_shifted(op, shifts, n + extra))
        if extra:
            op.operands = [*op.operands, k]


def tap_row_chunk(channels: int, row_taps: int) -> int:
    """Input channels per chunk where each chunk takes one row of taps (a 3×3
    sum as three 3×Kc chunks): the largest divisor of `channels` whose chunk
    has at most `MAX_ROW_TERMS` products, if it has at least `MIN_CHUNK`
    channels (or all); else 0.

    Chunks of every tap and a few channels (16 of a 3×3 sum's) run each tap's
    steps over those few channels, and each tap costs its own set-up (its
    input rows and padding) and loop exit. On a Zen 4 core (one thread, batch
    8, against oneDNN): resnet50's 3×3 convolutions, whose 16-channel chunks
    (36 KiB of weights for 64 outputs) overfill its 32 KiB L1, ran at
    0.84-0.90 of oneDNN's speed, and at 0.92-0.96 in chunks of tap rows;
    densenet121's 128→32 ones, whose 16-channel chunks fit (18 KiB), at
    0.85-0.92, and at 0.94-0.97 in chunks of tap rows (24 KiB, which don't).
    Chunks of tap rows and 32 channels instead of 64 were slower again
    (0.84-0.89): the steps' count matters more than the weights' cache."""
    best = 0
    for d in range(1, channels + 1):
        if channels % d == 0 and row_taps * d <= MAX_ROW_TERMS:
            best = d
    return best if best >= min(MIN_CHUNK, channels) else 0


def _shifted(op: loop.LoadOp | simd.LoadOp, shifts: dict[SSAValue, AffineExpr],
             new_dims: int) -> AffineMap:
    """`op`'s map with `iv + shifts[iv]` wherever it reads an index in
    `shifts`, over `new_dims` dims (one more where a shift uses an added
    operand)."""
    amap = op.map.data
    dims: list[AffineExpr] = [AffineDimExpr(i) + shifts[x] if x in shifts else AffineDimExpr(i)
                              for i, x in enumerate(op.indices[:amap.num_dims])]
    return amap.replace_dims_and_symbols(dims, [], new_dims, 0)


@dataclass(frozen=True)
class BlockReductionPass(ModulePass):
    """Split register-blocked channel sums whose weights exceed `cache` bytes
    per block into chunks that fit, each run over a band of rows whose partial
    sums take at most `band-bytes`, for `lanes` lanes per vector; sums whose
    weights fit `l2` bytes in all stay as they are (0: none do)."""

    name = "bs-block-reduction"
    lanes: int = 16
    cache: int = 32 * 1024
    band_bytes: int = 64 * 1024
    l2: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            BlockReduction(self.lanes, self.cache, self.band_bytes, self.l2),
            apply_recursively=False,
        ).rewrite_module(op)



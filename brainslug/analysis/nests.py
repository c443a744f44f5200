"""Analyses shared by the loop-level passes: who writes and reads each buffer,
store maps that can be inverted, and affine map substitution."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xdsl.dialects import func, memref
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
    AffineMap,
)

from brainslug.dialects import loop, simd

_INDEXED = (loop.LoadOp, loop.InBoundsOp, simd.LoadOp, simd.InBoundsOp)

MIN_CHUNK = 16
"""Fewest input channels per chunk of a blocked channel sum: below it, storing
and reloading the partial sums costs more than the weights' trips to L2."""

MIN_CHUNK_TERMS = 64
"""Fewest products in one chunk's sum: adding each chunk's sum to the partial
sums costs a load, an add and a store per accumulator."""

MAX_CHUNK_TERMS = 256
"""Most products in one chunk's sum: each chunk sums from zero, and the chunk
sums are added, so a long sum's rounding error grows with the chunk and the
count of chunks, not with the whole sum (as in the libraries' blocked GEMMs)."""


def channel_chunk(channels: int, taps: int, lane_bytes: int, cache: int) -> int:
    """Input channels per chunk of a register block's channel sum whose
    weights (taps × channels × `lane_bytes`) exceed `cache` bytes: the largest
    power of two Kc whose weights fit, with `MIN_CHUNK_TERMS` to
    `MAX_CHUNK_TERMS` products and at least `MIN_CHUNK` channels; where none
    fits and the sum has more than `MAX_CHUNK_TERMS` products, the largest Kc
    of at most that many (for accuracy: a 3×3 convolution over 96 channels
    summed whole was up to 3 times less accurate than oneDNN against float64,
    in chunks of 16 channels 0.8 times); else 0 (bs-block-reduction splits
    the sums, bs-register-tile sizes their blocks). Kc need not divide
    `channels`: the last chunk takes the rest. It depends on the taps and the
    register block only, so the convolutions of a network that differ in their
    input channels alone (DenseNet's 1×1 ones, whose channels step by 32) share
    one chunked form and its compiled code, with the counts as parameters."""
    if taps * channels * lane_bytes <= cache:
        return 0
    best, kc = 0, MIN_CHUNK
    while kc < channels:
        if taps * kc * lane_bytes <= cache and MIN_CHUNK_TERMS <= taps * kc <= MAX_CHUNK_TERMS:
            best = kc
        kc *= 2
    if not best and taps * channels > MAX_CHUNK_TERMS:
        kc = MIN_CHUNK
        while kc < channels and taps * kc <= MAX_CHUNK_TERMS:
            best, kc = kc, kc * 2
    return best


def value_operands(op: Operation) -> list[SSAValue]:
    """What `op`'s value depends on: a load's or bounds check's indices only
    where its map uses them (a per-channel parameter ignores the pixel)."""
    if isinstance(op, _INDEXED):
        used = op.map.data.used_dims()
        return [i for k, i in enumerate(op.indices) if k in used] + [
            o for o in op.operands if o not in op.indices
        ]
    return list(op.operands)


def top_nest(op: Operation) -> loop.NestOp | None:
    """The outermost loop.nest containing `op` (a phase of its kernel)."""
    found = None
    p = op.parent_op()
    while p is not None and not isinstance(p, func.FuncOp):
        if isinstance(p, loop.NestOp):
            found = p
        p = p.parent_op()
    return found


def stores_to(buffer: SSAValue) -> list[loop.StoreOp]:
    return [u.operation for u in buffer.uses if isinstance(u.operation, loop.StoreOp)
            and u.operation.buffer is buffer]


def loads_of(buffer: SSAValue) -> list[loop.LoadOp]:
    return [u.operation for u in buffer.uses if isinstance(u.operation, loop.LoadOp)]


def is_alloc(buffer: SSAValue) -> bool:
    return isinstance(buffer.owner, memref.AllocOp | memref.AllocaOp)


def nest_stores(nest: loop.NestOp) -> Iterator[loop.StoreOp]:
    for op in nest.body.block.ops:
        if isinstance(op, loop.StoreOp):
            yield op


def dim_plus_const(e: AffineExpr) -> tuple[int, int] | None:
    """(k, c) when `e` is `d_k + c` (or `d_k`)."""
    if isinstance(e, AffineDimExpr):
        return e.position, 0
    if isinstance(e, AffineBinaryOpExpr) and e.kind == AffineBinaryOpKind.Add:
        lhs, rhs = e.lhs, e.rhs
        if isinstance(lhs, AffineDimExpr) and isinstance(rhs, AffineConstantExpr):
            return lhs.position, rhs.value
        if isinstance(rhs, AffineDimExpr) and isinstance(lhs, AffineConstantExpr):
            return rhs.position, lhs.value
    return None


def linear_form(e: AffineExpr) -> tuple[dict[int, int], int] | None:
    """`e` as (coefficient per dim position, constant), None when not linear."""
    if isinstance(e, AffineDimExpr):
        return {e.position: 1}, 0
    if isinstance(e, AffineConstantExpr):
        return {}, e.value
    if not isinstance(e, AffineBinaryOpExpr):
        return None
    if e.kind == AffineBinaryOpKind.Add:
        a, b = linear_form(e.lhs), linear_form(e.rhs)
        if a is None or b is None:
            return None
        coef = dict(a[0])
        for k, v in b[0].items():
            coef[k] = coef.get(k, 0) + v
        return coef, a[1] + b[1]
    if e.kind == AffineBinaryOpKind.Mul:
        for x, y in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
            if isinstance(y, AffineConstantExpr) and (f := linear_form(x)) is not None:
                return {k: v * y.value for k, v in f[0].items()}, f[1] * y.value
    return None


def window_ranges(acc: Operation) -> dict[SSAValue, tuple[int, int]]:
    """Static [lower, upper) of the `loop.reduce` ivs around `acc` in its nest."""
    out: dict[SSAValue, tuple[int, int]] = {}
    p = acc.parent_op()
    while isinstance(p, loop.ReduceOp):
        for iv, lb, ub in zip(p.ivs, p.lower_bounds(), p.upper_bounds(), strict=True):
            if isinstance(lb, int) and isinstance(ub, int) and ub > lb:
                out[iv] = (lb, ub)
        p = p.parent_op()
    return out


def overlapping_window(load: loop.LoadOp) -> bool:
    """Whether neighbouring points of the load's nest read overlapping windows
    along some buffer dim (`stride * iv + window` with a window wider than the
    stride): inlining a producer there recomputes each value several times."""
    windows = window_ranges(load)
    if not windows:
        return False
    for r in load.map.data.results:
        form = linear_form(r)
        if form is None:
            continue
        stride, span = 0, 1
        for pos, c in form[0].items():
            v = load.indices[pos]
            if v in windows:
                lb, ub = windows[v]
                span += abs(c) * (ub - lb - 1)
            else:
                stride = max(stride, abs(c))
        if stride and span > stride:
            return True
    return False


@dataclass
class SimpleStore:
    """A store `B[..., iv_k + c, ...]` that names every iv of its nest once."""

    store: loop.StoreOp
    nest: loop.NestOp
    # per buffer dim: (nest iv position, constant offset)
    dims: list[tuple[int, int]]

    def region(self) -> list[tuple[loop.Bound, loop.Bound, int]]:
        """Per buffer dim: the nest's (lower, upper) bounds and the offset."""
        lo, hi = self.nest.lower_bounds(), self.nest.upper_bounds()
        return [(lo[k], hi[k], c) for k, c in self.dims]


def simple_store(store: loop.StoreOp) -> SimpleStore | None:
    nest = store.parent_op()
    if not isinstance(nest, loop.NestOp) or nest.parent_op() is None:
        return None
    if not isinstance(nest.parent_op(), func.FuncOp):
        return None
    ivs = nest.ivs
    dims: list[tuple[int, int]] = []
    for r in store.map.data.results:
        kc = dim_plus_const(r)
        if kc is None:
            return None
        idx = store.indices[kc[0]]
        if idx not in ivs:
            return None
        dims.append((ivs.index(idx), kc[1]))
    if sorted(k for k, _ in dims) != list(range(len(ivs))):
        return None
    return SimpleStore(store, nest, dims)


def substitute(amap: AffineMap, exprs: Sequence[AffineExpr], num_dims: int) -> AffineMap:
    """`amap` with its dims replaced by `exprs` (over `num_dims` new dims)."""
    return AffineMap(
        num_dims, 0, tuple(r.replace_dims_and_symbols(list(exprs), []) for r in amap.results)
    )


def same_bound(a: loop.Bound, b: loop.Bound) -> bool:
    return a == b if isinstance(a, int) or isinstance(b, int) else a is b


def rebound(nest: loop.NestOp, lower: Sequence[loop.Bound], upper: Sequence[loop.Bound]):
    """A copy of `nest` (body cloned) with new bounds."""
    copy = nest.clone()
    region = copy.detach_region(copy.body)
    new = loop.NestOp(lower, upper, region, nest.num_parallel or None)
    new.attributes |= nest.attributes
    return new

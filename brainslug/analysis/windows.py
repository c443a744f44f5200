"""Padded windows of a `loop.reduce`: the facts bs-lower-to-llvm needs to run a
window's taps in two versions (unchecked where the whole window lies inside
its buffer, checked at the border) and to skip the second version where it
could never run.

A checked index that is linear in the reduction's ivs takes its least and
greatest values at the corners of the reduction's box, so the corners decide
whether a block's whole window is inside. Where the nest's ivs that an index
depends on take few values, trying them all shows whether any block's window
can be inside at all: a row of one or two register blocks has none (each block
meets the left or the right border), and its interior version would be dead
code that LLVM still compiles.
"""

from __future__ import annotations

import itertools
import math

from xdsl.dialects import arith
from xdsl.ir import Block, Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineDimExpr, AffineExpr

from brainslug.analysis.ranges import value_range
from brainslug.dialects import loop

MAX_TRIALS = 4096
"""Most assignments of a window index's nest ivs tried by `never_inside`."""

_INDEX_OPS = {
    arith.AddiOp: lambda a, b: a + b,
    arith.SubiOp: lambda a, b: a - b,
    arith.MuliOp: lambda a, b: a * b,
    arith.MinSIOp: min,
    arith.MaxSIOp: max,
}


def linear_in(e: AffineExpr, dims: set[int]) -> bool:
    """Whether `e` is linear in `dims`: they appear only in sums and in
    products with factors that use no dim (constants, symbols). Unlike
    `nests.linear_form`, the other dims may appear anyhow (a divided column)
    and a generic phase's offsets may be symbols."""
    used = {x.position for x in e.dfs() if isinstance(x, AffineDimExpr)}
    if not used & dims or isinstance(e, AffineDimExpr):
        return True
    if not isinstance(e, AffineBinaryOpExpr):
        return False
    if e.kind == AffineBinaryOpKind.Add:
        return linear_in(e.lhs, dims) and linear_in(e.rhs, dims)
    if e.kind == AffineBinaryOpKind.Mul:
        for f, g in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
            if not any(isinstance(x, AffineDimExpr) for x in f.dfs()):
                return linear_in(g, dims)
    return False


def defined_in(x: SSAValue, op: Operation) -> bool:
    """Whether `x` is defined inside `op`'s regions."""
    owner = x.owner
    parent = owner.parent_op() if isinstance(owner, Block) else owner.parent_op()
    while parent is not None:
        if parent is op:
            return True
        parent = parent.parent_op()
    return False


def _roots(x: SSAValue, found: set[SSAValue]) -> bool:
    """Adds the block arguments (loop ivs) that index `x` is computed from to
    `found`; False where some step is not an integer constant or `_INDEX_OPS`."""
    owner = x.owner
    if isinstance(owner, Block):
        found.add(x)
        return True
    if isinstance(owner, arith.ConstantOp):
        return True
    if type(owner) in _INDEX_OPS:
        return all(_roots(v, found) for v in owner.operands)
    return False


def _value(x: SSAValue, fixed: dict[SSAValue, int]) -> int:
    """Index `x` with the ivs in `fixed` at those values (see `_roots`)."""
    owner = x.owner
    if isinstance(owner, Block):
        return fixed[x]
    if isinstance(owner, arith.ConstantOp):
        return owner.value.value.data  # type: ignore[union-attr, return-value]
    a, b = (_value(v, fixed) for v in owner.operands)
    return _INDEX_OPS[type(owner)](a, b)  # type: ignore[index, return-value]


def never_inside(op: loop.ReduceOp, loads: list[tuple[Operation, list[int]]]) -> bool:
    """Whether, for some checked dim, no value of the nest ivs puts the
    corners of every load's window inside (`loads`: padded loads of `op`'s
    body, each with its checked dims). Only dims whose indices depend on ivs
    of static ranges with at most `MAX_TRIALS` assignments are tried; False
    where none is known to fail."""
    lows, highs = op.lower_bounds(), op.upper_bounds()
    if not all(isinstance(b, int) for b in (*lows, *highs)):
        return False
    box = {iv: (lo, hi - 1) for iv, lo, hi in zip(op.ivs, lows, highs, strict=True)}
    by_dim: dict[int, list[Operation]] = {}
    for ld, checked in loads:
        for k in checked:
            by_dim.setdefault(k, []).append(ld)
    for k, group in by_dim.items():
        windows = [_window(ld, k, box) for ld in group]
        roots: set[SSAValue] = set()
        if not all(extent > 0 and all(_roots(x, roots) for _, x in outer)
                   for _, extent, outer, _ in windows):
            continue
        ranges = {r: value_range(r) for r in roots}
        if any(v is None for v in ranges.values()):
            continue
        spans = [range(lo, hi + 1) for lo, hi in ranges.values()]  # type: ignore[misc]
        if math.prod(len(s) for s in spans) > MAX_TRIALS:
            continue
        if not any(all(_inside(w, dict(zip(ranges, values, strict=True))) for w in windows)
                   for values in itertools.product(*spans)):
            return True
    return False


_Window = tuple[AffineExpr, int, list[tuple[int, SSAValue]], list[tuple[int, int, int]]]
"""A load's checked index: (expression, extent, (position, outer index), and
(position, lower, upper) of each tap it uses)."""


def _window(ld: Operation, k: int, box: dict[SSAValue, tuple[int, int]]) -> _Window:
    e = ld.map.data.results[k]  # type: ignore[attr-defined]
    indices = ld.indices  # type: ignore[attr-defined]
    used = sorted(e.used_dims())
    return (e, ld.buffer.type.get_shape()[k],  # type: ignore[attr-defined]
            [(p, indices[p]) for p in used if indices[p] not in box],
            [(p, *box[indices[p]]) for p in used if indices[p] in box])


def _inside(w: _Window, fixed: dict[SSAValue, int]) -> bool:
    """Whether the checked index `w` is inside its extent at every corner of
    the taps' box, with the nest ivs at `fixed`."""
    e, extent, outer, taps = w
    dims = [0] * (max([p for p, _ in outer] + [p for p, _, _ in taps], default=-1) + 1)
    for p, x in outer:
        dims[p] = _value(x, fixed)
    for corner in itertools.product(*((lo, hi) for _, lo, hi in taps)):
        for (p, _, _), v in zip(taps, corner, strict=True):
            dims[p] = v
        if not 0 <= e.eval(dims, []) < extent:
            return False
    return True

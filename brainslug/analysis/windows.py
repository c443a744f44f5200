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
    products with factors that use no dim (constants, symbols)."""
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
        roots: set[SSAValue] = set()
        known = True
        for ld in group:
            extent = ld.buffer.type.get_shape()[k]  # type: ignore[attr-defined]
            e = ld.map.data.results[k]  # type: ignore[attr-defined]
            outer = [ld.indices[p] for p in e.used_dims()  # type: ignore[attr-defined]
                     if ld.indices[p] not in box]  # type: ignore[attr-defined]
            known = known and extent > 0 and all(_roots(x, roots) for x in outer)
        ranges = {r: value_range(r) for r in roots}
        if not known or any(v is None for v in ranges.values()):
            continue
        spans = [range(lo, hi + 1) for lo, hi in ranges.values()]  # type: ignore[misc]
        if math.prod(len(s) for s in spans) > MAX_TRIALS:
            continue
        if not any(_corners_inside(group, k, box, dict(zip(ranges, values, strict=True)))
                   for values in itertools.product(*spans)):
            return True
    return False


def _corners_inside(group: list[Operation], k: int, box: dict[SSAValue, tuple[int, int]],
                    fixed: dict[SSAValue, int]) -> bool:
    """Whether dim `k` of every load in `group` is inside its buffer at every
    corner of the reduction's `box`, with the nest ivs at `fixed`."""
    for ld in group:
        extent = ld.buffer.type.get_shape()[k]  # type: ignore[attr-defined]
        e = ld.map.data.results[k]  # type: ignore[attr-defined]
        indices = ld.indices  # type: ignore[attr-defined]
        used = sorted(e.used_dims())
        in_box = [p for p in used if indices[p] in box]
        dims = [0] * len(indices)
        for p in used:
            if indices[p] not in box:
                dims[p] = _value(indices[p], fixed)
        for corner in itertools.product(*((box[indices[p]][0], box[indices[p]][1])
                                          for p in in_box)):
            for p, v in zip(in_box, corner, strict=True):
                dims[p] = v
            if not 0 <= e.eval(dims, []) < extent:
                return False
    return True

"""Static ranges of index values and which dims of a padded access can never
leave the buffer.

A padded load (`pad`) yields the pad value wherever its point lies outside the
buffer, so the lowering checks every index against its extent. Most of those
checks are known to pass: a convolution's input channel index runs over a
reduction of exactly the buffer's channel count. `inside_dims` finds them from
the static bounds of the loops whose induction variables the map uses and the
buffer's static shape; the lowering skips them, and the generic phase key
records them, so code is only shared between phases with the same facts.
"""

from __future__ import annotations

from xdsl.dialects.builtin import MemRefType
from xdsl.ir import Block, Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
)

from brainslug.dialects import loop, simd

Range = tuple[int, int]
"""Inclusive [low, high]."""

_DOMAINS = (loop.NestOp, loop.TileOp, loop.ReduceOp, *simd.LANE_LOOPS)


def value_range(v: SSAValue) -> Range | None:
    """The static range of an index value: the iv of a loop with static bounds."""
    owner = v.owner
    if not isinstance(owner, Block):
        return None
    op = owner.parent_op()
    if not isinstance(op, _DOMAINS):
        return None
    k = owner.args.index(v)  # type: ignore[arg-type]
    lo, hi = op.lower_bounds()[k], op.upper_bounds()[k]
    if not isinstance(lo, int) or not isinstance(hi, int) or hi <= lo:
        return None
    if isinstance(op, simd.LANE_LOOPS):
        return lo, hi - 1  # lanes run iv .. iv + W - 1, masked to the bound
    return lo, hi - 1


def expr_range(e: AffineExpr, dims: list[Range | None]) -> Range | None:
    """Interval of an affine expression over dims with these ranges."""
    if isinstance(e, AffineConstantExpr):
        return e.value, e.value
    if isinstance(e, AffineDimExpr):
        return dims[e.position]
    if not isinstance(e, AffineBinaryOpExpr):
        return None
    a, b = expr_range(e.lhs, dims), expr_range(e.rhs, dims)
    if a is None or b is None:
        return None
    if e.kind == AffineBinaryOpKind.Add:
        return a[0] + b[0], a[1] + b[1]
    if e.kind == AffineBinaryOpKind.Mul:
        c = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
        return min(c), max(c)
    return None


def inside_dims(op: Operation) -> tuple[bool, ...]:
    """Per buffer dim of an access (`loop`/`simd` load or store, in-bounds op
    with a buffer): True where the index provably stays in [0, extent)."""
    buf_type = op.buffer.type  # type: ignore[attr-defined]
    assert isinstance(buf_type, MemRefType)
    shape = buf_type.get_shape()
    ranges = [value_range(i) for i in op.indices]  # type: ignore[attr-defined]
    out = []
    for e, extent in zip(op.map.data.results, shape, strict=True):  # type: ignore[attr-defined]
        r = expr_range(e, ranges)
        out.append(r is not None and extent >= 0 and 0 <= r[0] and r[1] < extent)
    return tuple(out)

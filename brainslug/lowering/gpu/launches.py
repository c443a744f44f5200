"""Launch grouping: which consecutive phases of a kernel share one launch, and
the launch shape (`#loop.gpu_launch`) the runtime sizes its grid and blocks by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.ir import SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr
from xdsl.ir.affine.affine_expr import AffineConstantExpr, AffineDimExpr

from brainslug.dialects import loop, simd
from brainslug.lowering.gpu.analysis import block_phase, lane_extent, tiles_per_item

Interval = tuple[int, int] | None
"""Inclusive range of an index, None when unknown."""


def _range(e: AffineExpr, idx: Sequence[Interval]) -> Interval:
    if isinstance(e, AffineDimExpr):
        return idx[e.position]
    if isinstance(e, AffineConstantExpr):
        return (e.value, e.value)
    if isinstance(e, AffineBinaryOpExpr):
        lhs, rhs = _range(e.lhs, idx), _range(e.rhs, idx)
        if lhs is None or rhs is None:
            return None
        if e.kind == AffineBinaryOpKind.Add:
            return (lhs[0] + rhs[0], lhs[1] + rhs[1])
        if e.kind == AffineBinaryOpKind.Mul and rhs[0] == rhs[1]:
            a, b = lhs[0] * rhs[0], lhs[1] * rhs[0]
            return (min(a, b), max(a, b))
    return None


@dataclass
class PhaseAccess:
    """The ABI buffers a phase reads and writes, and the index box of each store."""

    reads: set[SSAValue]
    writes: set[SSAValue]
    boxes: dict[SSAValue, list[list[Interval]]]


def phase_access(phase: loop.NestOp | loop.TileOp) -> PhaseAccess:
    """What `phase` reads and writes (its own allocas left out)."""
    bounds: dict[SSAValue, Interval] = {}
    acc = PhaseAccess(set(), set(), {})
    for op in phase.walk():
        if isinstance(op, loop.NestOp | loop.TileOp | simd.LoopOp):
            for iv, lb, ub in zip(op.ivs, op.lower_bounds(), op.upper_bounds(), strict=True):
                known = isinstance(lb, int) and isinstance(ub, int)
                bounds[iv] = (lb, ub - 1) if known else None  # type: ignore[operator]
        elif isinstance(op, loop.LoadOp | simd.LoadOp):
            acc.reads.add(op.buffer)
        elif isinstance(op, loop.StoreOp | simd.StoreOp):
            acc.writes.add(op.buffer)
            idx = [bounds.get(i) for i in op.indices]
            box = [_range(e, idx) for e in op.map.data.results]
            acc.boxes.setdefault(op.buffer, []).append(box)
    inner = {r for op in phase.walk() for r in op.results}  # allocas: private to the phase
    acc.reads -= inner
    acc.writes -= inner
    return acc


def _disjoint(a: list[Interval], b: list[Interval]) -> bool:
    return any(
        x is not None and y is not None and (x[1] < y[0] or y[1] < x[0])
        for x, y in zip(a, b, strict=True)
    )


def independent(a: PhaseAccess, b: PhaseAccess) -> bool:
    """Whether two phases can run at the same time: neither reads what the other
    writes, and where both write one buffer their stores' boxes are disjoint."""
    if a.writes & b.reads or b.writes & a.reads:
        return False
    return all(
        _disjoint(x, y)
        for buf in a.writes & b.writes
        for x in a.boxes[buf]
        for y in b.boxes[buf]
    )


def launch_groups(phases: Sequence[loop.NestOp | loop.TileOp]) -> list[int]:
    """Sizes of the runs of consecutive, pairwise independent phases: each run
    is one launch (`ctaid.y` picks the phase), e.g. the parts of a `cat`. A
    block-mode phase is a launch of its own (its shared array and block size)."""
    sizes: list[int] = []
    group: list[PhaseAccess] = []
    alone = False
    for p in phases:
        access = phase_access(p)
        was_alone, alone = alone, block_phase(p)
        if group and not (alone or was_alone) and all(independent(g, access) for g in group):
            group.append(access)
            sizes[-1] += 1
        else:
            group = [access]
            sizes.append(1)
    return sizes


def launch_shape(phases: Sequence[loop.NestOp | loop.TileOp], arch: str) -> loop.GpuLaunchAttr:
    """The launch shape of a kernel's phases for `arch`: the lane extent of
    each phase (the hint for `ntid.x`), its tiles per batch item (the grid
    hint of a block-mode phase, 0 for the others) and the launch groups."""
    return loop.GpuLaunchAttr(
        [lane_extent(p) for p in phases],
        [tiles_per_item(p) for p in phases],
        launch_groups(phases),
        arch,
    )

"""Which mode a GPU phase runs in (lane, block or serial, see `brainslug.lowering.gpu`),
and the shared memory of a block-mode tile."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import IntegerAttr
from xdsl.ir import SSAValue

from brainslug.dialects import loop, simd

SHARED_BYTES = 48 * 1024
"""Static shared memory of a block (the most a `.shared` array may take without
opting in to more per kernel): a tile whose scratch is larger runs serially."""
TILE_THREADS = 256
"""The most threads of a block-mode launch (fewer for small scratch buffers)."""


def shared_scratch(phase: loop.NestOp | loop.TileOp) -> list[memref.AllocaOp] | None:
    """The scratch buffers of a tile that runs in block mode, None for any
    other phase: its body holds static `memref.alloca`s that fit in
    `SHARED_BYTES` together, index arithmetic and nests (without allocas)."""
    if not isinstance(phase, loop.TileOp):
        return None
    allocas: list[memref.AllocaOp] = []
    for op in phase.body.block.ops:
        if isinstance(op, memref.AllocaOp):
            if op.dynamic_sizes:
                return None
            allocas.append(op)
        elif isinstance(op, loop.NestOp):
            if any(isinstance(o, memref.AllocaOp | loop.TileOp) for o in op.walk()):
                return None
        elif not isinstance(op, loop.YieldOp) and op.dialect_name() != "arith":
            return None
    if not allocas or shared_layout(allocas)[1] > SHARED_BYTES:
        return None
    return allocas


def shared_layout(allocas: Sequence[memref.AllocaOp]) -> tuple[list[int], int]:
    """Byte offset of each scratch buffer in the block's shared array (16-byte
    aligned), and the array's size."""
    offsets, size = [], 0
    for op in allocas:
        t = op.memref.type
        offsets.append(size)
        n = 1
        for d in t.get_shape():  # type: ignore[attr-defined]
            n *= d
        size += -(-n * t.element_type.bitwidth // 8 // 16) * 16  # type: ignore[attr-defined]
    return offsets, size


def _bound(v: SSAValue) -> loop.Bound:
    """`v`, or its value where it is an index constant."""
    op = v.owner
    if isinstance(op, arith.ConstantOp) and isinstance(op.value, IntegerAttr):
        return op.value.value.data
    return v


def one_point(tile: loop.TileOp, lb: loop.Bound, ub: loop.Bound) -> bool:
    """Whether `[lb, ub)` is one point: `lb` is an iv of `tile` of step 1 and
    `ub` is `min(lb + 1, the tile's bound)`, as bs-tile-depth-first bounds the
    block of a tile."""
    ivs = list(tile.ivs)
    if not isinstance(lb, SSAValue) or lb not in ivs or not isinstance(ub, SSAValue):
        return False
    j = ivs.index(lb)
    m = ub.owner
    if tile.steps[j] != 1 or not isinstance(m, arith.MinSIOp):
        return False
    a, bound, tile_ub = m.lhs.owner, _bound(m.rhs), tile.upper_bounds()[j]
    return (
        isinstance(a, arith.AddiOp)
        and a.lhs is lb
        and _bound(a.rhs) == 1
        and (bound == tile_ub if isinstance(bound, int) else bound is tile_ub)
    )


def block_phase(phase: loop.NestOp | loop.TileOp) -> bool:
    """Whether `phase` runs in block mode (one tile per block, shared scratch)."""
    return shared_scratch(phase) is not None


def tile_threads(phase: loop.NestOp | loop.TileOp) -> int:
    """Threads per block for a block-mode phase: one per scratch element, a
    multiple of a warp, at most `TILE_THREADS`."""
    allocas = shared_scratch(phase) or []
    elems = sum(shared_layout([a])[1] // 4 for a in allocas)
    return min(TILE_THREADS, max(32, -(-elems // 32) * 32))


def tiles_per_item(phase: loop.NestOp | loop.TileOp) -> int:
    """Tiles of a block-mode phase per batch item (its parallel dims; a dynamic
    extent counts as 1), 0 for any other phase: the runtime's grid hint."""
    if not block_phase(phase):
        return 0
    assert isinstance(phase, loop.TileOp)
    k, n = phase.num_parallel, 1
    for lb, ub, s in zip(phase.lower_bounds()[:k], phase.upper_bounds()[:k], phase.steps[:k],
                         strict=True):
        if isinstance(lb, int) and isinstance(ub, int):
            n *= max(-(-(ub - lb) // s), 1)
    return n


def serial_phase(phase: loop.NestOp | loop.TileOp) -> bool:
    """Whether the lanes of `phase` must run in one thread (serial mode)."""
    if isinstance(phase, loop.TileOp):
        return not block_phase(phase)
    stored: set[SSAValue] = set()
    loaded: set[SSAValue] = set()
    lanes = False
    for op in phase.walk():
        if isinstance(op, memref.AllocaOp | simd.ReduceOp):
            return True
        if isinstance(op, loop.StoreOp | simd.StoreOp):
            stored.add(op.buffer)
        elif isinstance(op, loop.LoadOp | simd.LoadOp):
            loaded.add(op.buffer)
        lanes = lanes or isinstance(op, simd.LoopOp)
    return not lanes or bool(stored & loaded)


def lane_extent(phase: loop.NestOp | loop.TileOp) -> int:
    """The largest static extent of the phase's `simd.loop`s (1 in serial mode,
    0 when unknown; `tile_threads` in block mode): the runtime's hint for `ntid.x`."""
    if block_phase(phase):
        return tile_threads(phase)
    if serial_phase(phase):
        return 1
    extents = []
    for op in phase.walk():
        if isinstance(op, simd.LoopOp):
            (lb,), (ub,) = op.lower_bounds(), op.upper_bounds()
            if isinstance(lb, int) and isinstance(ub, int):
                extents.append(max(ub - lb, 2))  # (1 means serial)
    return max(extents, default=0)


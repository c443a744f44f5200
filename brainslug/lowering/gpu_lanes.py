"""The GPU mapping of phases: SIMD lanes are the threads of a block, parallel
loops are the grid, and a depth-first tile is a block (used by the nvptx
backend through `TargetParams.emitter`).

A phase is a device function `void (i64, i64, ptr args)` with the same
parameter blocks as on the CPU (the two i64 parameters are unused), called by
the `.entry` of its launch (see `backends.nvptx`). A launch is a grid of blocks
of `(ntid.x, ntid.y)` threads, and any grid and block shape is correct:

- *lane mode*: a `simd.loop` runs its points block-strided over `tid.x`
  (`w = lb + tid.x; w < ub; w += ntid.x`), so the masked tail of the CPU
  becomes a per-thread predicate. The flat range of the phase's parallel dims
  (its *rows*) is split into one contiguous chunk per block (`ctaid.x` of
  `nctaid.x`), whose rows the block's row threads (`tid.y`) take in turn:
  rows y, y + ntid.y, ... of the chunk. A thread finds the parallel ivs of its
  first row by division and then steps them like an odometer, adding the
  digits of ntid.y with one carry per dim, so no row costs a division.
- *block mode*, for a `loop.tile` (bs-tile-depth-first) whose scratch buffers
  are `memref.alloca`s of its body and fit in `SHARED_BYTES`: one block runs
  one tile at a time (tiles grid-strided over the blocks). The scratch is a
  static shared-memory array (`addrspace(3)`, one per block), and each nest of
  the tile body runs cooperatively: its points, times the lanes of its
  `simd.loop`, are flattened and strided over all threads of the block
  (odometer stepping, as in lane mode). A barrier (`bar.sync 0`) separates a
  nest from an earlier one of the same tile iteration whose writes it reads or
  whose reads it overwrites (so the producer and the pad strips, which write
  disjoint points of the scratch, share one barrier before the reader), and
  ends every tile iteration (the next tile overwrites the scratch).
- *serial mode*, for the other phases whose lanes exchange data through memory
  (a `loop.tile` that does not fit block mode, a phase with a
  `memref.alloca`, which is private to a thread, or one that reads a buffer it
  writes) and for scalar phases (no `simd.loop`): every thread of a block is a
  row thread and runs the lanes of its `simd.loop`s one after the other. (A
  tile too large for shared memory is first cut to one point of its tiled dims
  where its scratch is sized by its steps, `unit_tiles`; it is then a block if
  it fits.)

A phase without parallel dims runs on row thread 0 of block 0 (block 0 in
block mode). Consecutive phases that are independent (`launch_groups`) share
one launch, in which `ctaid.y` picks the phase; a block-mode phase has a launch
of its own. Every SIMD value is a scalar of its lane: a contiguous, strided or
gathered `simd.load` is one scalar load at the thread's point, a padded one
clamps its address and selects the pad value, and `simd.splat` is the value
itself. Phases never synchronize with each other: the runtime runs them as
separate launches on one stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, llvm, memref
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IndexType,
    IntAttr,
    IntegerAttr,
    IntegerType,
    f32,
    i32,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr
from xdsl.ir.affine.affine_expr import AffineConstantExpr, AffineDimExpr

from brainslug.analysis.generic_phases import PhaseSignature
from brainslug.dialects import loop, simd
from brainslug.lowering import loop_to_llvm as scalar
from brainslug.lowering.llvm_builder import PTR, IVal
from brainslug.lowering.phase_emitter import KernelScope, LaneState, OpLowering, PhaseEmitter
from brainslug.lowering.simd_to_llvm import _binary as lane_binary

SREG = "llvm.nvvm.read.ptx.sreg."
"""Prefix of the NVVM intrinsics that read the thread and block indices."""

MATH_FUNCTIONS = {"exp": "__nv_expf", "log": "__nv_logf", "tanh": "__nv_tanhf", "erf": "__nv_erff"}
"""libdevice functions for `simd.math`/`math.*` (the CUDA math library's own,
so results match PyTorch's CUDA kernels); sqrt is `sqrt.rn.f32`."""


SHARED_BYTES = 48 * 1024
"""Static shared memory of a block (the most a `.shared` array may take without
opting in to more per kernel): a tile whose scratch is larger runs serially."""
TILE_THREADS = 256
"""The most threads of a block-mode launch (fewer for small scratch buffers)."""
SHARED_PREFIX = "bs_shared_"
"""Name of the shared array of `n` bytes: `bs_shared_<n>` (one per size)."""
BARRIER = "llvm.nvvm.barrier0"
"""`bar.sync 0`: every thread of the block waits for all others."""
SHARED_PTR = llvm.LLVMPointerType(IntAttr(3))
"""A pointer to shared memory (NVPTX address space 3)."""
TO_GENERIC = "bs.gpu.generic"
"""`ptr (ptr addrspace(3))`: the generic address of a shared one (defined by
the backend as an `addrspacecast`; LLVM infers the address space of the
accesses back, so they are `ld.shared`/`st.shared`)."""

_STORES = (loop.StoreOp, simd.StoreOp)
_LOADS = (loop.LoadOp, simd.LoadOp)


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
    """Whether the lanes of `phase` must run in one thread (see the module doc)."""
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


class GPUPhaseEmitter(PhaseEmitter):
    """Emits one phase as an NVPTX kernel body (lanes on threads, rows on the
    grid, or a tile per block)."""

    def __init__(
        self,
        scope: KernelScope,
        name: str,
        phase: loop.NestOp | loop.TileOp,
        sig: PhaseSignature | None = None,
    ):
        super().__init__(scope, name, phase, sig)
        self.scratch = shared_scratch(phase)
        """The tile's scratch buffers in block mode, else None."""
        # (in block mode, the lanes of a nest that is not flattened run in turn)
        self.serial = serial_phase(phase) or self.scratch is not None
        self.lane_offset: IVal = 0
        """`l` of the current lane: its point minus that of lane 0 of its chunk."""
        self._sregs: dict[str, SSAValue] = {}

    # ------------------------------------------------------------------ thread indices

    def sreg(self, name: str) -> SSAValue:
        """A special register (`tid.x`, `ctaid.x`, ...) as i64, read in the entry block."""
        if (v := self._sregs.get(name)) is None:
            b = self.b
            r = b.add_entry(llvm.CallIntrinsicOp(SREG + name, [], [i32]))
            v = self._sregs[name] = b.add_entry(llvm.ZExtOp(r, i64))
        return v

    def row_threads(self) -> tuple[IVal, IVal]:
        """This thread's index among the row threads of its block, and their number."""
        b = self.b
        if self.serial:
            y = b.iadd(b.imul(self.sreg("tid.y"), self.sreg("ntid.x")), self.sreg("tid.x"))
            return y, b.imul(self.sreg("ntid.y"), self.sreg("ntid.x"))
        return self.sreg("tid.y"), self.sreg("ntid.y")

    def block_threads(self) -> tuple[IVal, IVal]:
        """This thread's index in its block, and the block's thread count."""
        b = self.b
        t = b.iadd(b.imul(self.sreg("tid.y"), self.sreg("ntid.x")), self.sreg("tid.x"))
        return t, b.imul(self.sreg("ntid.y"), self.sreg("ntid.x"))

    def digits(self, v: IVal, exts: Sequence[IVal]) -> list[IVal]:
        """`v` in the mixed radix of `exts` (innermost digit last; the first is
        not reduced). The extents after the first must be > 0."""
        out: list[IVal] = [0] * len(exts)
        for d in reversed(range(len(exts))):
            out[d] = self._urem(v, exts[d]) if d > 0 else v
            v = self._udiv(v, exts[d]) if d > 0 else v
        return out

    def step_digits(self, c: Sequence[SSAValue], step: Sequence[IVal],
                    exts: Sequence[IVal]) -> list[SSAValue]:
        """The digits `c` plus the digits `step` (each below its extent), one
        carry per digit: an odometer step without division."""
        b, k = self.b, len(exts)
        new: list[SSAValue] = [c[0]] * k
        carry: IVal = 0
        for d in reversed(range(k)):
            v = b.iadd(b.iadd(c[d], step[d]), carry)
            if d == 0:
                new[0] = b.ssa(v)
                break
            wrap = b.icmp("uge", v, exts[d])
            new[d] = b.add(llvm.SelectOp(wrap, b.ssa(b.isub(v, exts[d])), b.ssa(v)))
            carry = b.add(llvm.ZExtOp(wrap, i64))
        return new

    def box_extents(self, lbs: Sequence[IVal], ubs: Sequence[IVal],
                    steps: Sequence[int] | None = None) -> list[IVal]:
        """Iterations of each dim of a box (0 when empty)."""
        b, out = self.b, []
        for d, (lb, ub) in enumerate(zip(lbs, ubs, strict=True)):
            n = b.isub(ub, lb)
            n = max(n, 0) if isinstance(n, int) else b.imax(n, 0)
            s = steps[d] if steps is not None else 1
            out.append(n if s == 1 else b.idiv_floor(b.iadd(n, s - 1), s))
        return out

    # ------------------------------------------------------------------ phase

    def run(self) -> llvm.FuncOp:
        if self.scratch is not None:
            return self.run_tiles()
        op, b = self.phase, self.b
        lbs, ubs = self.domain(op)
        steps = list(op.steps) if isinstance(op, loop.TileOp) else [1] * len(lbs)
        k = op.num_parallel
        y, ny = self.row_threads()
        block, blocks = self.sreg("ctaid.x"), self.sreg("nctaid.x")
        if k == 0:  # row thread 0 of block 0
            first = b.icmp("eq", b.iadd(b.imul(block, ny), y), 0)
            b.if_then(first, lambda: self.loops(lbs, ubs, steps, self._body))
            return b.finish()
        exts = self.box_extents(lbs[:k], ubs[:k], steps[:k])
        total: IVal = 1
        for e in exts:
            total = b.imul(total, e)
        # this block's contiguous chunk of the flat rows; its row threads take
        # rows y, y + ny, ... of it (neighbouring threads, neighbouring rows)
        start = self._udiv(b.imul(total, block), blocks)
        end = self._udiv(b.imul(total, b.iadd(block, 1)), blocks)
        f0 = b.iadd(start, y)

        def rows() -> None:
            # all extents are > 0 here: the divisions are safe
            step = self.digits(ny, exts)

            def row(f: SSAValue, c: list[SSAValue]) -> list[SSAValue]:
                ivs = [b.iadd(lbs[d], b.imul(c[d], steps[d])) for d in range(k)]
                self.loops(lbs[k:], ubs[k:], steps[k:], lambda i, cc: self._body([*ivs, *i], cc))
                return self.step_digits(c, step, exts)  # the next row

            b.loop(f0, end, ny, row, [b.ssa(x) for x in self.digits(f0, exts)], pred="ult")

        b.if_then(b.icmp("ult", f0, end), rows)
        return b.finish()

    # ------------------------------------------------------------------ block mode

    def run_tiles(self) -> llvm.FuncOp:
        """Block mode: the tiles of the parallel dims grid-strided over the
        blocks, the other tile dims in turn, each tile by all threads of a block."""
        op, b = self.phase, self.b
        assert isinstance(op, loop.TileOp) and self.scratch is not None
        self.shared_buffers(self.scratch)
        lbs, ubs = self.domain(op)
        steps, k = list(op.steps), op.num_parallel

        def tile(par: Sequence[IVal]) -> None:
            self.loops(lbs[k:], ubs[k:], steps[k:], lambda i, c: self.tile_body([*par, *i], c))

        block, blocks = self.sreg("ctaid.x"), self.sreg("nctaid.x")
        if k == 0:
            b.if_then(b.icmp("eq", block, 0), lambda: tile([]))
            return b.finish()
        exts = self.box_extents(lbs[:k], ubs[:k], steps[:k])
        total: IVal = 1
        for e in exts:
            total = b.imul(total, e)

        def one(f: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
            # f < total: every extent is > 0
            c = self.digits(f, exts)
            tile([b.iadd(lbs[d], b.imul(c[d], steps[d])) for d in range(k)])
            return []

        b.loop(block, total, blocks, one, pred="ult")
        return b.finish()

    def shared_buffers(self, allocas: Sequence[memref.AllocaOp]) -> None:
        """The scratch buffers as parts of the block's shared array."""
        b = self.b
        offsets, size = shared_layout(allocas)
        saved, b.block = b.block, b.entry
        shared = b.add(llvm.AddressOfOp(f"{SHARED_PREFIX}{size}", SHARED_PTR))
        base = b.call(TO_GENERIC, [shared], PTR)
        for op, off in zip(allocas, offsets, strict=True):
            t = op.memref.type
            ptr = b.gep(base, off, IntegerType(8))
            self.bufs[op.memref] = self._describe(ptr, list(t.get_shape()), t.element_type)  # type: ignore[attr-defined]
        b.block = saved

    def barrier(self) -> None:
        self.b.add(llvm.CallIntrinsicOp(BARRIER, [], []))

    def tile_body(self, ivs: Sequence[IVal], carried: list[SSAValue]) -> list[SSAValue]:
        """One tile: its nests cooperatively, with a barrier where a nest reads
        what an earlier one wrote or writes what an earlier one read since the
        last barrier, and one at the end. Writers of one buffer between two
        barriers must write disjoint points (bs-tile-depth-first's producer
        and pad strips do), as their order is not kept."""
        for x, v in zip(self.phase.ivs, ivs, strict=True):
            self.values[x] = v
        written: set[SSAValue] = set()
        read: set[SSAValue] = set()
        for op in self.phase.body.block.ops:
            if isinstance(op, loop.YieldOp):
                break
            if isinstance(op, memref.AllocaOp):
                continue
            if not isinstance(op, loop.NestOp):
                self.emit(op)  # uniform index arithmetic
                continue
            r = {o.buffer for o in op.walk() if isinstance(o, _LOADS)}
            w = {o.buffer for o in op.walk() if isinstance(o, _STORES)}
            if r & written or w & read:
                self.barrier()
                written, read = set(), set()
            self.block_nest(op)
            written |= w
            read |= r
        self.barrier()  # the next tile of this block overwrites the scratch
        return carried

    def block_nest(self, nest: loop.NestOp) -> None:
        """A nest run by all threads of the block: its points (times the lanes
        of its `simd.loop`, when that is the only op of its body that stores)
        flattened and strided by the block's thread count. Dims of one point
        (`one_point`) stay out of the flat index, so it costs fewer divisions."""
        b = self.b
        lbs, ubs = self.domain(nest)
        assert isinstance(self.phase, loop.TileOp)
        free = [
            d
            for d, (lo, hi) in enumerate(zip(nest.lower_bounds(), nest.upper_bounds(), strict=True))
            if not one_point(self.phase, lo, hi)
        ]
        body = [o for o in nest.body.block.ops if not isinstance(o, loop.YieldOp)]
        lanes = [o for o in body if isinstance(o, simd.LoopOp)]
        flat = len(lanes) == 1 and not any(
            isinstance(x, (*_STORES, simd.LoopOp))
            for o in body
            if o is not lanes[0]
            for x in o.walk()
        )
        exts = self.box_extents([lbs[d] for d in free], [ubs[d] for d in free])
        lane_lb: IVal = 0
        if flat:
            (lane_lb,), (lane_ub,) = self.domain(lanes[0])
            exts += self.box_extents([lane_lb], [lane_ub])
        t, nt = self.block_threads()
        total: IVal = 1
        for e in exts:
            total = b.imul(total, e)

        def points() -> None:
            # total > 0: every extent is > 0
            step = self.digits(nt, exts)

            def point(f: SSAValue, c: list[SSAValue]) -> list[SSAValue]:
                for d, (x, lb) in enumerate(zip(nest.ivs, lbs, strict=True)):
                    self.values[x] = b.iadd(lb, c[free.index(d)]) if d in free else lb
                for o in body:
                    if flat and o is lanes[0]:
                        self.lane_point(o, b.iadd(lane_lb, c[-1]))
                    else:
                        self.emit(o)
                return self.step_digits(c, step, exts) if c else []

            first = [b.ssa(x) for x in self.digits(t, exts)]
            b.loop(t, total, nt, point, first, pred="ult")

        if isinstance(total, int) and isinstance(t, int):
            if t < total:
                points()
        else:
            b.if_then(b.icmp("ult", t, total), points)

    def lane_point(self, op: simd.LoopOp, w: IVal) -> None:
        """One lane of a `simd.loop` at its point `w` (a chunk of one lane)."""
        saved, saved_offset = self.lane, self.lane_offset
        self.lane, self.lane_offset = LaneState(op.iv, w, None), 0
        self.values[op.iv] = w
        self.emit_block(op.body.block)
        self.lane, self.lane_offset = saved, saved_offset

    def _udiv(self, a: IVal, d: IVal) -> IVal:
        if isinstance(a, int) and isinstance(d, int):
            return a // d
        return a if d == 1 else self.b.add(llvm.UDivOp(self.b.ssa(a), self.b.ssa(d)))

    def _urem(self, a: IVal, d: IVal) -> IVal:
        if isinstance(a, int) and isinstance(d, int):
            return a % d
        return 0 if d == 1 else self.b.add(llvm.URemOp(self.b.ssa(a), self.b.ssa(d)))

    # ------------------------------------------------------------------ values

    def llvm_type(self, t: Attribute) -> Attribute:
        if isinstance(t, simd.VecType):
            return self.llvm_type(t.element_type)
        return super().llvm_type(t)


# ---------------------------------------------------------------------------- lowerings


def _loop(em: GPUPhaseEmitter, op: simd.LoopOp) -> None:
    b = em.b
    (lb,), (ub,) = em.domain(op)
    saved, saved_offset = em.lane, em.lane_offset
    if em.serial:
        start, step = lb, 1
        em.lane_offset = 0
    else:
        start, step = b.iadd(lb, em.sreg("tid.x")), em.sreg("ntid.x")
        em.lane_offset = em.sreg("tid.x")

    def body(w: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
        em.lane = LaneState(op.iv, w, None)
        em.values[op.iv] = w
        em.emit_block(op.body.block)
        return []

    b.loop(start, ub, step, body)
    em.lane, em.lane_offset = saved, saved_offset


def _same(em: GPUPhaseEmitter, op: Operation) -> None:
    em.values[op.results[0]] = em.ival(op.operands[0])


def _iota(em: GPUPhaseEmitter, op: simd.IotaOp) -> None:
    lane = em.lane
    if lane is not None and op.base is lane.iv:
        em.values[op.result] = em.ival(op.base)  # already this thread's point
    else:
        em.values[op.result] = em.b.iadd(em.ival(op.base), em.lane_offset)


def _negf(em: GPUPhaseEmitter, op: simd.NegfOp) -> None:
    em.values[op.result] = em.b.add(llvm.FNegOp(em.value(op.input)))


def math_call(em: PhaseEmitter, fn: str, x: SSAValue) -> SSAValue:
    if fn == "sqrt":
        return em.b.intrinsic("llvm.sqrt", [x])
    if fn == "abs":
        return em.b.intrinsic("llvm.fabs", [x])
    if (name := MATH_FUNCTIONS.get(fn)) is None:
        raise NotImplementedError(f"bs-lower-to-llvm{{target=nvptx}}: no GPU function for {fn}")
    return em.b.call(name, [x], f32)


def _simd_math(em: GPUPhaseEmitter, op: simd.MathOp) -> None:
    em.values[op.result] = math_call(em, op.fn.data, em.value(op.input))


_SCALAR_MATH = {
    scalar.xmath.ExpOp: "exp",
    scalar.xmath.LogOp: "log",
    scalar.xmath.SqrtOp: "sqrt",
    scalar.xmath.AbsFOp: "abs",
    scalar.xmath.TanhOp: "tanh",
    scalar.xmath.ErfOp: "erf",
}


def _scalar_math(em: GPUPhaseEmitter, op: Operation) -> None:
    em.values[op.results[0]] = math_call(em, _SCALAR_MATH[type(op)], em.value(op.operands[0]))


def _cmpf(em: GPUPhaseEmitter, op: simd.CmpfOp) -> None:
    em.values[op.result] = em.b.add(
        llvm.FCmpOp(em.value(op.lhs), em.value(op.rhs), op.predicate.data)
    )


def _cmpi(em: GPUPhaseEmitter, op: simd.CmpiOp) -> None:
    em.values[op.result] = em.b.icmp(op.predicate.data, em.ival(op.lhs), em.ival(op.rhs))


def _select(em: GPUPhaseEmitter, op: simd.SelectOp) -> None:
    em.values[op.result] = em.b.add(
        llvm.SelectOp(em.value(op.cond), em.value(op.lhs), em.value(op.rhs))
    )


def _sitofp(em: GPUPhaseEmitter, op: simd.SIToFPOp) -> None:
    em.values[op.result] = em.b.add(llvm.SIToFPOp(em.value(op.input), f32))


def _reduce(em: GPUPhaseEmitter, op: simd.ReduceOp) -> None:
    raise NotImplementedError("bs-lower-to-llvm{target=nvptx}: simd.reduce across threads")


GPU_LOWERINGS: dict[type[Operation], OpLowering] = {
    simd.LoopOp: _loop,
    # one scalar access at this thread's point (padded: clamped address + select)
    simd.LoadOp: scalar._load,
    simd.StoreOp: scalar._store,
    simd.InBoundsOp: scalar._in_bounds,
    simd.SplatOp: _same,
    simd.IotaOp: _iota,
    **{
        t: lane_binary  # the same llvm ops, on scalars
        for t in (
            simd.AddfOp,
            simd.SubfOp,
            simd.MulfOp,
            simd.DivfOp,
            simd.AddiOp,
            simd.SubiOp,
            simd.MuliOp,
            simd.DivsiOp,
            simd.RemsiOp,
            simd.AndiOp,
            simd.OriOp,
            simd.FloordivsiOp,
            simd.MinsiOp,
            simd.MaxsiOp,
        )
    },
    simd.NegfOp: _negf,
    simd.MathOp: _simd_math,
    **{t: _scalar_math for t in _SCALAR_MATH},
    simd.CmpfOp: _cmpf,
    simd.CmpiOp: _cmpi,
    simd.SelectOp: _select,
    simd.SIToFPOp: _sitofp,
    simd.ReduceOp: _reduce,
}  # type: ignore[dict-item]
"""What differs from the CPU lowering: simd ops on one lane, and math functions
(the nvptx backend lays this table over `LOOP_LOWERINGS` and `SIMD_LOWERINGS`)."""


def phase_hints(phases: Sequence[loop.NestOp | loop.TileOp]) -> list[int]:
    """`lane_extent` of each phase."""
    return [lane_extent(p) for p in phases]


# ---------------------------------------------------------------------------- tiles


def unit_tiles(tile: loop.TileOp) -> None:
    """Makes a depth-first tile one point of its tiled dims (in place), where
    its scratch is sized by its steps (no halo).

    For a tile too large for shared memory: one point may fit (block mode),
    and a thread that runs a tile on its own (serial mode) out of its local
    memory is best off with the smallest tile (the most parallelism). A tile
    of step s bounds its nests by `[iv, min(iv + s, ub))` and indexes its
    scratch with `index - iv`: with step 1 the same body covers every point
    once. (A tile with a halo keeps its steps: its producer's bounds are not
    of that form.)"""
    steps = tile.steps
    block = tile.body.block
    if all(s == 1 for s in steps) or any(
        isinstance(op, memref.AllocaOp)
        and list(op.memref.type.get_shape()[: len(steps)]) != list(steps)  # type: ignore[attr-defined]
        for op in block.ops
    ):
        return
    ivs = list(block.args)
    for op in list(block.ops):
        if (
            isinstance(op, arith.AddiOp)
            and op.lhs in ivs
            and isinstance(c := op.rhs.owner, arith.ConstantOp)
            and isinstance(c.value, IntegerAttr)
            and c.value.value.data == steps[ivs.index(op.lhs)]
        ):
            one = arith.ConstantOp(IntegerAttr(1, IndexType()))
            block.insert_op_before(one, op)
            op.operands[1] = one.result
        elif isinstance(op, memref.AllocaOp):
            t = op.memref.type
            shape = list(t.get_shape())
            new = memref.AllocaOp.get(t.element_type, shape=[1] * len(steps) + shape[len(steps) :])
            block.insert_op_before(new, op)
            op.memref.replace_all_uses_with(new.memref)
            op.detach()
            op.erase()
    tile.step = DenseArrayBase.from_list(i64, [1] * len(steps))


# ---------------------------------------------------------------------------- launch groups

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

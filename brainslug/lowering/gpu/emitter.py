"""The GPU phase emitter: a phase's lanes on the threads of a block and its
rows on the grid, or one depth-first tile per block (the modes of
`brainslug.lowering.gpu`)."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import llvm, memref
from xdsl.dialects.builtin import IntegerType, i32, i64
from xdsl.ir import Attribute, SSAValue

from brainslug.analysis.generic_phases import PhaseSignature
from brainslug.dialects import loop, simd
from brainslug.lowering.gpu.analysis import one_point, serial_phase, shared_layout, shared_scratch
from brainslug.lowering.gpu.nvvm import BARRIER, SHARED_PREFIX, SHARED_PTR, SREG, TO_GENERIC
from brainslug.lowering.llvm_builder import PTR, IVal
from brainslug.lowering.phase_emitter import KernelScope, LaneState, PhaseEmitter

_STORES = (loop.StoreOp, simd.StoreOp)
_LOADS = (loop.LoadOp, simd.LoadOp)


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

"""The GPU mapping of phases: SIMD lanes are the threads of a block, parallel
loops are the grid (used by the nvptx backend through `TargetParams.emitter`).

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
- *serial mode*, for phases whose lanes exchange data through memory (a
  `loop.tile` or a phase with a `memref.alloca`, which is private to a thread,
  or one that reads a buffer it writes) and for scalar phases (no `simd.loop`):
  every thread of a block is a row thread and runs the lanes of its
  `simd.loop`s one after the other.

A phase without parallel dims runs on row thread 0 of block 0. Consecutive
phases that are independent (`launch_groups`) share one launch, in which
`ctaid.y` picks the phase. Every SIMD value is a scalar of its lane: a contiguous, strided or gathered `simd.load` is one scalar load at
the thread's point, a padded one clamps its address and selects the pad value,
and `simd.splat` is the value itself. Phases never synchronize: the runtime
runs them as separate launches on one stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, llvm, memref
from xdsl.dialects.builtin import DenseArrayBase, IndexType, IntegerAttr, f32, i32, i64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr
from xdsl.ir.affine.affine_expr import AffineConstantExpr, AffineDimExpr

from brainslug.dialects import loop, simd
from brainslug.lowering import loop_to_llvm as scalar
from brainslug.lowering.generic import PhaseSignature
from brainslug.lowering.llvm_builder import IVal
from brainslug.lowering.to_llvm import KernelLowering, LaneState, PhaseEmitter

SREG = "llvm.nvvm.read.ptx.sreg."
"""Prefix of the NVVM intrinsics that read the thread and block indices."""

MATH_FUNCTIONS = {"exp": "__nv_expf", "log": "__nv_logf", "tanh": "__nv_tanhf", "erf": "__nv_erff"}
"""libdevice functions for `simd.math`/`math.*` (the CUDA math library's own,
so results match PyTorch's CUDA kernels); sqrt is `sqrt.rn.f32`."""


def serial_phase(phase: loop.NestOp | loop.TileOp) -> bool:
    """Whether the lanes of `phase` must run in one thread (see the module doc)."""
    if isinstance(phase, loop.TileOp):
        return True
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
    0 when unknown): the runtime's hint for `ntid.x`."""
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
    """Emits one phase as an NVPTX kernel body (lanes on threads, rows on the grid)."""

    def __init__(
        self,
        kernel: KernelLowering,
        name: str,
        phase: loop.NestOp | loop.TileOp,
        sig: PhaseSignature | None = None,
    ):
        super().__init__(kernel, name, phase, sig)
        self.serial = serial_phase(phase)
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

    # ------------------------------------------------------------------ phase

    def run(self) -> llvm.FuncOp:
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
        exts: list[IVal] = []
        for lb, ub, s in zip(lbs[:k], ubs[:k], steps[:k], strict=True):
            n = b.isub(ub, lb)
            if not isinstance(n, int):
                n = b.imax(n, 0)
            exts.append(n if s == 1 else b.idiv_floor(b.iadd(n, s - 1), s))
        total: IVal = 1
        for e in exts:
            total = b.imul(total, e)
        # this block's contiguous chunk of the flat rows; its row threads take
        # rows y, y + ny, ... of it (neighbouring threads, neighbouring rows)
        start = self._udiv(b.imul(total, block), blocks)
        end = self._udiv(b.imul(total, b.iadd(block, 1)), blocks)
        f0 = b.iadd(start, y)

        def digits(v: IVal) -> list[IVal]:
            """`v` in the mixed radix of the extents (innermost digit last)."""
            out: list[IVal] = [0] * k
            for d in reversed(range(k)):
                out[d] = self._urem(v, exts[d]) if d > 0 else v
                v = self._udiv(v, exts[d]) if d > 0 else v
            return out

        def rows() -> None:
            # all extents are > 0 here: the divisions are safe
            step = digits(ny)

            def row(f: SSAValue, c: list[SSAValue]) -> list[SSAValue]:
                ivs = [b.iadd(lbs[d], b.imul(c[d], steps[d])) for d in range(k)]
                self.loops(lbs[k:], ubs[k:], steps[k:], lambda i, cc: self._body([*ivs, *i], cc))
                # next row: add the digits of ny, one carry per digit
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

            b.loop(f0, end, ny, row, [b.ssa(x) for x in digits(f0)], pred="ult")

        b.if_then(b.icmp("ult", f0, end), rows)
        return b.finish()

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

    def emit(self, op: Operation) -> None:
        if (lower := GPU_LOWERINGS.get(type(op))) is not None:
            lower(self, op)
        else:
            super().emit(op)


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


def _binary(em: GPUPhaseEmitter, op: Operation) -> None:
    from brainslug.lowering.simd_to_llvm import _binary as lane_binary

    lane_binary(em, op)  # the same llvm ops, on scalars


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


GPU_LOWERINGS: dict[type[Operation], Callable[[GPUPhaseEmitter, Operation], None]] = {
    simd.LoopOp: _loop,
    # one scalar access at this thread's point (padded: clamped address + select)
    simd.LoadOp: scalar._load,
    simd.StoreOp: scalar._store,
    simd.InBoundsOp: scalar._in_bounds,
    simd.SplatOp: _same,
    simd.IotaOp: _iota,
    **{
        t: _binary
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
"""What differs from the CPU lowering: simd ops on one lane, and math functions."""


def phase_hints(phases: Sequence[loop.NestOp | loop.TileOp]) -> list[int]:
    """`lane_extent` of each phase."""
    return [lane_extent(p) for p in phases]


# ---------------------------------------------------------------------------- tiles


def unit_tiles(tile: loop.TileOp) -> None:
    """Makes a depth-first tile one point of its tiled dims (in place).

    bs-tile-depth-first sizes tiles for a CPU core's L2; a GPU thread runs a
    tile on its own (serial mode) out of its local memory, so the smallest tile
    gives the most parallelism and the smallest scratch. A tile of step s
    bounds its nests by `[iv, min(iv + s, ub))` and indexes its scratch with
    `index - iv`: with step 1 the same body covers every point once."""
    steps = tile.steps
    if all(s == 1 for s in steps):
        return
    ivs = list(tile.body.block.args)
    block = tile.body.block
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
            if shape[: len(steps)] != list(steps):
                raise ValueError("unit_tiles: a tile's scratch is not sized by its steps")
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
    is one launch (`ctaid.y` picks the phase), e.g. the parts of a `cat`."""
    sizes: list[int] = []
    group: list[PhaseAccess] = []
    for p in phases:
        access = phase_access(p)
        if group and all(independent(g, access) for g in group):
            group.append(access)
            sizes[-1] += 1
        else:
            group = [access]
            sizes.append(1)
    return sizes

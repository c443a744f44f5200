"""The phase emitter: lowers one phase (a top-level `loop.nest`/`loop.tile`
of a kernel) to an `llvm.func` `void (i64 tid, i64 nthreads, ptr args)`.

The emitter walks the phase and hands each op to the lowering for its type in
`TargetParams.lowerings` (the tables of `loop_to_llvm`, `simd_to_llvm` and, on
the GPU, `lowering.gpu`, put together by the backend). It knows the kernel only
through its `KernelScope`: its body, where its ABI buffers live in the slot
array, the target and the shared declarations (see `to_llvm` for the ABI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from xdsl.dialects import llvm
from xdsl.dialects.builtin import IndexType, MemRefType, VectorType, i32, i64
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr
from xdsl.ir.affine.affine_expr import AffineConstantExpr, AffineDimExpr, AffineSymExpr

from brainslug.analysis.generic_phases import PhaseSignature, generalize_map, local_site
from brainslug.dialects import loop, simd
from brainslug.lowering.llvm_builder import PTR, Declarations, IVal, LLVMBuilder

OpLowering = Callable[["PhaseEmitter", Operation], None]
"""Lowers one op inside a phase (writes its results into `PhaseEmitter.values`)."""


@dataclass(frozen=True)
class TargetParams:
    """What the lowering needs to know about a target (supplied by a backend)."""

    name: str
    lanes: int
    lowerings: Mapping[type[Operation], OpLowering]
    """The lowering of each op type a phase may hold."""
    func_props: tuple[tuple[str, Attribute], ...] = ()
    """Properties set on every phase `llvm.func` (target_cpu, passthrough, ...)."""
    emitter: type[PhaseEmitter] | None = None
    """The phase emitter class (None: `PhaseEmitter`; the GPU maps lanes to threads)."""
    helper_variants: Mapping[str, str] = field(default_factory=dict)
    """Helper name -> the one this target computes it with (the same results;
    e.g. with AVX-512 `exp_sleef_u10_normal` -> `exp_sleef_u10_scalef`)."""
    rolled_runs: bool = False
    """Runs of like sibling ops are lowered once, as a loop over a table
    (`generic_phases.RunSignature`)."""
    generic_allocas: bool = False
    """A generic phase's `memref.alloca` sizes may be parameters (a CPU's stack
    takes a size known at run time; a GPU's shared memory does not)."""
    flush_denormals: bool = False
    """Phases run with denormals flushed, as TensorFlow's kernels do: each sets
    FTZ and DAZ (`bs.mxcsr_flush`) on entry and restores the caller's mode on
    exit (the thread pool's threads are the caller's too)."""


@dataclass
class AbiBuffer:
    """An ABI buffer: where its pointer and dynamic dims live in the slot array."""

    type: MemRefType
    ptr_slot: int
    dim_slots: dict[int, int]


@dataclass(frozen=True)
class Pieces:
    """Where the pieces of a `loop.pieces` buffer are: their data pointers sit
    in the slot array, `stride` slots apart from `slots` on."""

    slots: SSAValue
    stride: int
    width: int
    """Each piece's extent along the last dim (in the code, not a parameter)."""


@dataclass
class Buffer:
    """A buffer as seen by generated code. For `loop.pieces` (`pieces` set),
    `dims` are the whole buffer's and `strides` a piece's, and `ptr` is not
    a data pointer: accesses go through `lowering.pieces_to_llvm`."""

    ptr: SSAValue
    dims: list[IVal]
    strides: list[IVal]
    elem: Attribute
    pieces: Pieces | None = None



@dataclass(frozen=True)
class KernelScope:
    """What the phases of one kernel share."""

    block: Block
    """The kernel function's body (its arguments, allocs and top-level scalars)."""
    buffers: dict[SSAValue, AbiBuffer]
    target: TargetParams
    decls: Declarations


@dataclass
class LaneState:
    """The chunk of a `simd.loop` being emitted."""

    iv: SSAValue
    """The simd.loop's induction variable (xDSL)."""
    w: IVal
    """First lane's value of the iv."""
    mask: SSAValue | None
    """Active lanes (vector of i1), None when all W lanes are active."""


class PhaseEmitter:
    """Emits one phase function of a kernel."""

    def __init__(
        self,
        scope: KernelScope,
        name: str,
        phase: loop.NestOp | loop.TileOp,
        sig: PhaseSignature | None = None,
    ):
        self.scope = scope
        self.phase = phase
        self.lanes = scope.target.lanes
        self.lowerings = scope.target.lowerings
        self.b = LLVMBuilder(name, [i64, i64, PTR], scope.decls, dict(scope.target.func_props))
        self.values: dict[SSAValue, IVal] = {}
        self.bufs: dict[SSAValue, Buffer] = {}
        self.lane: LaneState | None = None
        self.inside: set[int] = set()
        """Padded loads (`id`) whose points all lie inside their buffers where
        they are emitted now (a window's interior version)."""
        self.sig = sig
        """The phase's generic signature: extents come from its parameter block."""
        if sig is not None:
            self.buf_index = sig.buffer_index()
            self.buf_offsets, self.first_param, _ = sig.layout()
        self.params: dict[int, SSAValue] = {}
        self.row_params: list[SSAValue] = []
        """The current row's own parameters, while a rolled run is emitted."""
        self.maps: dict[int, tuple[AffineExpr, ...]] = {}

    def run(self) -> llvm.FuncOp:
        op = self.phase
        b = self.b
        tid, nth, _ = b.args
        if self.scope.target.flush_denormals:
            saved = b.call("bs.mxcsr_flush", [], i32)
            b.before_return = lambda: b.call("bs.mxcsr_set", [saved], None)
        lbs, ubs = self.domain(op)
        steps = list(op.steps) if isinstance(op, loop.TileOp) else [1] * len(lbs)
        rule = op.item_count if isinstance(op, loop.TileOp) else None
        if rule is None:
            self._domain(lbs, ubs, steps)
        else:  # one of two tilings: this one where the batch is few (many) for the threads
            items = b.isub(ubs[0], lbs[0])
            b.if_then(b.icmp("slt" if rule == loop.ItemCount.FEW else "sge", items, nth),
                      lambda: self._domain(lbs, ubs, steps))
        return b.finish()

    def _domain(self, lbs: list[IVal], ubs: list[IVal], steps: list[int]) -> None:
        """The phase's loops over its domain, its first `parallel` dims shared
        among the threads."""
        op, b = self.phase, self.b
        tid, nth, _ = b.args
        k = op.num_parallel
        if k == 0:
            b.if_then(b.icmp("eq", tid, 0), lambda: self.loops(lbs, ubs, steps, self._body))
            return
        exts = []
        for lb, ub, s in zip(lbs[:k], ubs[:k], steps[:k], strict=True):
            n = b.isub(ub, lb)
            if not isinstance(n, int):
                n = b.imax(n, 0)
            exts.append(n if s == 1 else b.idiv_floor(b.iadd(n, s - 1), s))
        total = math.prod(e for e in exts if isinstance(e, int))
        for e in exts:
            if not isinstance(e, int):
                total = b.imul(total, e)
        start = b.add(llvm.UDivOp(b.ssa(b.imul(total, tid)), nth))
        end = b.add(llvm.UDivOp(b.ssa(b.imul(total, b.iadd(tid, 1))), nth))

        def inner(par_ivs: Sequence[IVal]) -> None:
            self.loops(lbs[k:], ubs[k:], steps[k:], lambda ivs, c: self._body([*par_ivs, *ivs], c))

        if k == 1:

            def flat1(f: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
                inner([b.iadd(lbs[0], b.imul(f, steps[0]))])
                return []

            b.loop(start, end, 1, flat1)
            return
        # The flat range in runs along the innermost parallel dim: delinearize the
        # first point once, run the innermost dim as a plain loop to the end of
        # its row (or of the range), then step an odometer over the outer dims.
        # (A plain loop lets LLVM strength-reduce the addresses.)
        kin = k - 1

        def runs() -> None:
            ein = exts[kin]
            q = b.add(llvm.UDivOp(b.ssa(start), b.ssa(ein)))
            r0 = b.add(llvm.URemOp(b.ssa(start), b.ssa(ein)))
            first: list[SSAValue] = []
            rem: IVal = q
            for d in reversed(range(kin)):
                t = rem
                if d > 0:
                    t = b.add(llvm.URemOp(b.ssa(rem), b.ssa(exts[d])))
                    rem = b.add(llvm.UDivOp(b.ssa(rem), b.ssa(exts[d])))
                first.insert(0, b.ssa(b.iadd(lbs[d], b.imul(t, steps[d]))))
            header = b.new_block([i64, i64, *[i64] * kin])
            body = b.new_block()
            done = b.new_block()
            b.add(llvm.BrOp(header, b.ssa(start), r0, *first))
            b.block = header
            f, r, *outer = header.args
            b.add(llvm.CondBrOp(b.icmp("slt", f, end), body, [], done, []))
            b.block = body
            seg = b.imin(b.isub(ein, r), b.isub(end, f))
            lo = b.iadd(lbs[kin], b.imul(r, steps[kin]))
            hi = b.iadd(lo, b.imul(seg, steps[kin]))

            def run(iv: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
                inner([*outer, iv])
                return []

            b.loop(lo, hi, steps[kin], run)
            new = list(outer)
            carry: SSAValue | None = None
            for d in reversed(range(kin)):
                nxt = b.ssa(b.iadd(outer[d], steps[d]))
                if carry is not None:
                    nxt = b.add(llvm.SelectOp(carry, nxt, outer[d]))
                if d == 0:
                    new[d] = nxt
                    break
                wrap = b.and_(carry, b.icmp("sge", nxt, ubs[d]))
                new[d] = b.add(llvm.SelectOp(wrap, b.ssa(lbs[d]), nxt))
                carry = wrap
            b.add(llvm.BrOp(header, b.ssa(b.iadd(f, seg)), b.const(0), *new))
            b.block = done

        # an empty range may have a zero extent: never divide by it
        b.if_then(b.icmp("ult", start, end), runs)

    def _body(self, ivs: Sequence[IVal], carried: list[SSAValue]) -> list[SSAValue]:
        for x, v in zip(self.phase.ivs, ivs, strict=True):
            self.values[x] = v
        self.emit_block(self.phase.body.block)
        return carried

    # ------------------------------------------------------------------ values

    def ival(self, x: IVal) -> IVal:
        """The lowered value of `x` (an int while it is a known index constant)."""
        if isinstance(x, int):
            return x
        if (v := self.values.get(x)) is not None:
            return v
        op = x.owner
        if isinstance(op, Operation) and op.parent_block() is self.scope.block:
            # a top-level scalar op: re-materialise it in the entry block
            saved, self.b.block = self.b.block, self.b.entry
            self.emit(op)
            self.b.block = saved
            return self.values[x]
        raise ValueError(f"value {x} is not available in {self.b.func.sym_name.data}")

    def value(self, x: SSAValue) -> SSAValue:
        return self.b.ssa(self.ival(x))

    def llvm_type(self, t: Attribute) -> Attribute:
        if isinstance(t, IndexType):
            return i64
        if isinstance(t, simd.VecType):
            return VectorType(self.llvm_type(t.element_type), [self.lanes])
        return t

    def buffer(self, x: SSAValue) -> Buffer:
        if (buf := self.bufs.get(x)) is not None:
            return buf
        abi = self.scope.buffers.get(x)
        if abi is None:
            raise ValueError(f"buffer {x} is not available in {self.b.func.sym_name.data}")
        b = self.b
        saved, b.block = b.block, b.entry
        args = b.args[2]
        shape = abi.type.get_shape()
        table = isinstance(x.owner, loop.PiecesOp)
        if self.sig is not None:
            j = self.buf_index[x]
            k = self.buf_offsets[j]
            if table:  # the address of the first piece's pointer slot
                rel = b.add_entry(llvm.LoadOp(b.gep_entry(args, k), i64, alignment=8))
                ptr = b.gep_entry(args, rel)
            else:
                ptr = self._indirect(k, PTR)
            dims = self._dims(shape, self.sig.dims[j], lambda n: self._indirect(k + n, i64))
        else:
            ptr = b.gep(args, abi.ptr_slot, i64) if table else \
                b.load(b.gep(args, abi.ptr_slot, i64), PTR, align=8)
            dims = [
                b.load(b.gep(args, abi.dim_slots[d], i64), i64, align=8) if s < 0 else s
                for d, s in enumerate(shape)
            ]
        if table:
            owner = x.owner
            assert isinstance(owner, loop.PiecesOp)
            piece = self._describe(ptr, [*dims[:-1], owner.width], abi.type.element_type)
            buf = Buffer(ptr, dims, piece.strides, piece.elem,
                         Pieces(ptr, 1 + len(abi.dim_slots), owner.width))
        else:
            buf = self._describe(ptr, dims, abi.type.element_type)
        self.bufs[x] = buf
        b.block = saved
        return buf

    def _dims(self, shape: Sequence[int], sites: Sequence[int | None],
              dynamic: Callable[[int], SSAValue]) -> list[IVal]:
        """A generic phase's buffer's dims: a static one from its site (or as
        it is), the n-th dynamic one (from 1) from `dynamic(n)`."""
        dims: list[IVal] = []
        dyn = 0
        for size, site in zip(shape, sites, strict=True):
            if size < 0:
                dyn += 1
                dims.append(dynamic(dyn))
            else:
                dims.append(size if site is None else self.param(site))
        return dims

    def _indirect(self, slot: int, typ: Attribute) -> SSAValue:
        """`args[args[slot]]` (in the entry block): a value of a generic phase's
        buffer, found through its parameter block."""
        b = self.b
        args = b.args[2]
        rel = b.add_entry(llvm.LoadOp(b.gep_entry(args, slot), i64, alignment=8))
        return b.add_entry(llvm.LoadOp(b.gep_entry(args, rel), typ, alignment=8))

    def param(self, p: int) -> SSAValue:
        """Parameter `p` of a generic phase (loaded once, in the entry block), or
        for a negative `p` the run row's own parameter (`emit_run`)."""
        if p < 0:
            return self.row_params[local_site(p)]
        if (v := self.params.get(p)) is None:
            b = self.b
            ptr = b.gep_entry(b.args[2], self.first_param + p)
            v = self.params[p] = b.add_entry(llvm.LoadOp(ptr, i64, alignment=8))
        return v

    def map_results(self, op: Operation) -> tuple[AffineExpr, ...]:
        """The results of an access op's map; in a generic phase its offsets are
        `AffineSymExpr(parameter)`."""
        if self.sig is not None and (site := self.sig.maps.get(id(op))) is not None:
            if (r := self.maps.get(id(op))) is None:
                r = self.maps[id(op)] = generalize_map(*site)
            return r
        return op.map.data.results  # type: ignore[attr-defined]

    def extents(self, op: loop.InBoundsOp | simd.InBoundsOp) -> list[IVal]:
        ext = [self.ival(x) for x in op.extent_bounds()]
        if self.sig is not None and (sites := self.sig.extents.get(id(op))) is not None:
            ext = [e if p is None else self.param(p) for e, p in zip(ext, sites, strict=True)]
        return ext

    def _describe(self, ptr: SSAValue, dims: list[IVal], elem: Attribute) -> Buffer:
        strides: list[IVal] = [1] * len(dims)
        for d in range(len(dims) - 2, -1, -1):
            strides[d] = self.b.imul(strides[d + 1], dims[d + 1])
        return Buffer(ptr, dims, strides, elem)

    # ------------------------------------------------------------------ structure

    def emit_block(self, block: Block) -> list[SSAValue]:
        """Emits the ops of a region body; returns the yielded values."""
        runs = self.sig.run_of if self.sig is not None else {}
        for op in block.ops:
            if isinstance(op, loop.YieldOp):
                return [self.value(v) for v in op.values]
            if (r := runs.get(id(op))) is None:
                self.emit(op)
            elif self.sig.runs[r].ops[0] is op:  # type: ignore[union-attr]
                self.emit_run(r)
        return []

    def emit_run(self, r: int) -> None:
        """A rolled run: its template, once per row of its table (each row
        binds the template's own buffers and parameters to a member's)."""
        assert self.sig is not None
        run = self.sig.runs[r]
        b = self.b
        args = b.args[2]
        head = self.sig.run_header(r)
        count = b.add_entry(llvm.LoadOp(b.gep_entry(args, head), i64, alignment=8))
        table = b.add_entry(llvm.LoadOp(b.gep_entry(args, head + 1), i64, alignment=8))
        own = run.buffers[0]
        size = run.row_size()

        def row(i: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
            at = b.gep(args, b.iadd(table, b.imul(i, size)), i64)
            k = 0

            def slot(j: int, typ: Attribute) -> SSAValue:
                return b.load(b.gep(at, j, i64) if j else at, typ, align=8)

            for v, sites in zip(own, run.dims, strict=True):
                t = v.type
                assert isinstance(t, MemRefType)
                ptr = b.load(b.gep(args, slot(k, i64), i64), PTR, align=8)
                dims = self._dims(t.get_shape(), sites, lambda n, k=k: b.load(
                    b.gep(args, slot(k + n, i64), i64), i64, align=8))
                self.bufs[v] = self._describe(ptr, dims, t.element_type)
                k += 1 + sum(1 for e in t.get_shape() if e < 0)
            self.row_params = [slot(k + q, i64) for q in range(len(run.params[0]))]
            self.emit(run.ops[0])
            for v in own:
                del self.bufs[v]
            self.row_params = []
            return carried

        b.loop(0, count, 1, row)

    def emit(self, op: Operation) -> None:
        if (lower := self.lowerings.get(type(op))) is None:
            raise NotImplementedError(f"bs-lower-to-llvm: cannot lower {op.name}")
        lower(self, op)

    def loops(
        self,
        lbs: Sequence[IVal],
        ubs: Sequence[IVal],
        steps: Sequence[int],
        body: Callable[[list[IVal], list[SSAValue]], list[SSAValue]],
        init: Sequence[SSAValue] = (),
        unrolled_from: int | None = None,
    ) -> list[SSAValue]:
        """Nested loops over a box, carrying `init` through all of them; the
        dims from `unrolled_from` on, where their bounds are static, as
        straight-line code (their ivs constants)."""

        def rec(d: int, ivs: list[IVal], carried: list[SSAValue]) -> list[SSAValue]:
            if d == len(lbs):
                return list(body(ivs, carried))
            lb, ub, s = lbs[d], ubs[d], steps[d]
            if isinstance(lb, int) and isinstance(ub, int):
                if ub <= lb:
                    return carried
                if ub - lb <= s:
                    return rec(d + 1, [*ivs, lb], carried)
                if unrolled_from is not None and d >= unrolled_from:
                    for iv in range(lb, ub, s):
                        carried = rec(d + 1, [*ivs, iv], carried)
                    return carried
            _, out = self.b.loop(lb, ub, s, lambda iv, c: rec(d + 1, [*ivs, iv], c), carried)
            return out

        return rec(0, [], list(init))

    def domain(self, op: loop._DomainOp) -> tuple[list[IVal], list[IVal]]:
        lbs = [self.ival(x) for x in op.lower_bounds()]
        ubs = [self.ival(x) for x in op.upper_bounds()]
        if self.sig is not None and (sites := self.sig.bounds.get(id(op))) is not None:
            lo, up = sites
            lbs = [v if p is None else self.param(p) for v, p in zip(lbs, lo, strict=True)]
            ubs = [v if p is None else self.param(p) for v, p in zip(ubs, up, strict=True)]
        return lbs, ubs

    # ------------------------------------------------------------------ access

    def affine(self, e: AffineExpr, dims: Sequence[IVal]) -> IVal:
        b = self.b
        if isinstance(e, AffineDimExpr):
            return dims[e.position]
        if isinstance(e, AffineConstantExpr):
            return e.value
        if isinstance(e, AffineSymExpr):
            return self.param(e.position)
        assert isinstance(e, AffineBinaryOpExpr), f"unsupported affine expression {e}"
        lhs, rhs = self.affine(e.lhs, dims), self.affine(e.rhs, dims)
        match e.kind:
            case AffineBinaryOpKind.Add:
                return b.iadd(lhs, rhs)
            case AffineBinaryOpKind.Mul:
                return b.imul(lhs, rhs)
            case AffineBinaryOpKind.FloorDiv:
                return b.idiv_floor(lhs, rhs)
            case AffineBinaryOpKind.CeilDiv:
                return b.isub(0, b.idiv_floor(b.isub(0, lhs), rhs))
            case AffineBinaryOpKind.Mod:
                return b.imod_floor(lhs, rhs)

    def offset(self, buf: Buffer, idx: Sequence[IVal]) -> IVal:
        off: IVal = 0
        for i, s in zip(idx, buf.strides, strict=True):
            off = self.b.iadd(off, self.b.imul(i, s))
        return off

    def in_bounds(self, idx: Sequence[IVal], extents: Sequence[IVal]) -> SSAValue | bool:
        """`0 <= idx < extent` for every index (one unsigned compare each)."""
        cond: SSAValue | None = None
        for i, e in zip(idx, extents, strict=True):
            if isinstance(i, int) and isinstance(e, int):
                if not 0 <= i < e:
                    return False
                continue
            cond = self.b.and_(cond, self.b.icmp("ult", i, e))
        return True if cond is None else cond

    def scalar_access(self, op: loop.LoadOp | loop.StoreOp) -> tuple[Buffer, list[IVal]]:
        buf = self.buffer(op.buffer)
        dims = [self.ival(x) for x in op.indices]
        return buf, [self.affine(e, dims) for e in self.map_results(op)]


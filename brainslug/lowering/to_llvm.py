"""Lowering of `loop`/`simd` kernels to `llvm` dialect phase functions.

Each kernel `func.func @K(...) attributes {bs.kernel}` becomes one `llvm.func`
per top-level `loop.nest`/`loop.tile` (a *phase*), named `K_p0`, `K_p1`, ...,
with the signature `void (i64 tid, i64 nthreads, ptr args)`, plus a
`loop.kernel_info` op for the runtime. Thread `tid` of `nthreads` runs the flat
range `[total*tid/nthreads, total*(tid+1)/nthreads)` of the phase's collapsed
parallel dims; a phase without parallel dims runs on thread 0.

Phases are generic over extents (see `generic`): structurally identical phases,
within a kernel or across kernels, are lowered once and share one function,
named after the first phase that needed it. The ABI, per kernel:

- The runner keeps one i64 slot array per kernel. Its first slots are the
  *buffer slots*: for each ABI buffer (the kernel's memref arguments, then its
  top-level `memref.alloc`s) the data pointer, then one slot per dynamic dim;
  the runner writes them on every call.
- Then comes one *parameter block* per phase (its content is constant, given by
  `loop.kernel_info`'s `slots`); phase i is called with `args` pointing at slot
  `phase_args[i]`, the start of its block.
- A block starts with, for each buffer the phase touches (in the order of
  `generic.PhaseSignature.buffers`), one slot for its pointer and one per
  dynamic dim, each holding the position, relative to `args`, of the kernel's
  buffer slot with the value (a negative number). Then come the phase's
  parameters (static dims, bounds, extents, offsets; one slot per distinct
  value), read directly.
- A phase that could not be made generic reads the buffer slots directly; its
  `phase_args` entry is 0.

The lane count W of `simd.loop` is a parameter (`TargetParams.lanes`); what
the `llvm` dialect cannot express is called as an LLVM intrinsic or as a
`bs.*` helper that the backend defines (see `llvm_helpers`). The op lowerings
live in `loop_to_llvm` (arith, math, memref, loop) and `simd_to_llvm`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, func, llvm, memref
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    VectorType,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr
from xdsl.ir.affine.affine_expr import AffineConstantExpr, AffineDimExpr, AffineSymExpr

from brainslug.analysis.generic_phases import (
    Canonicalizer,
    NotGeneric,
    PhaseSignature,
    generalize_map,
)
from brainslug.dialects import loop, simd
from brainslug.lowering.llvm_builder import PTR, Declarations, IVal, LLVMBuilder

KERNEL_ATTR = "bs.kernel"
NUM_ARGS_ATTR = "bs.num_args"
"""On `loop.kernel_info`: how many of the ABI buffers are kernel arguments."""
PARALLEL_ATTR = "bs.parallel"
"""On `loop.kernel_info`: the number of parallel (thread-split) dims of each phase."""
SCRATCH_DIMS_ATTR = "bs.scratch_dims"
"""On `loop.kernel_info`: for each dynamic dim of each scratch buffer, the
(argument, dim) it equals, or (-1, -1) when unknown (the runtime then uses the batch)."""


@dataclass(frozen=True)
class TargetParams:
    """What the lowering needs to know about a target (supplied by a backend)."""

    name: str
    lanes: int
    func_props: tuple[tuple[str, Attribute], ...] = ()
    """Properties set on every phase `llvm.func` (target_cpu, passthrough, ...)."""
    emitter: type[PhaseEmitter] | None = None
    """The phase emitter class (None: `PhaseEmitter`; the GPU maps lanes to threads)."""


def lower_kernels(module: ModuleOp, target: TargetParams, generic: bool = True) -> None:
    """Replaces every kernel function of `module` by its phases and kernel info.

    With `generic`, phases are generic over extents and shared between kernels;
    otherwise every phase gets its own function with its extents built in."""
    decls = Declarations()
    kernels = [
        op for op in module.ops if isinstance(op, func.FuncOp) and KERNEL_ATTR in op.attributes
    ]
    shared: dict[str, str] | None = {} if generic else None
    for kernel in kernels:
        new_ops = KernelLowering(kernel, target, decls).run(shared)
        kernel.parent_block().insert_ops_after(new_ops, kernel)  # type: ignore[union-attr]
        kernel.detach()
        kernel.erase()
    existing = {op.sym_name.data for op in module.ops if isinstance(op, llvm.FuncOp)}
    module.body.block.add_ops(op for op in decls.ops() if op.sym_name.data not in existing)


# ---------------------------------------------------------------------------- ABI


@dataclass
class AbiBuffer:
    """An ABI buffer: where its pointer and dynamic dims live in the slot array."""

    type: MemRefType
    ptr_slot: int
    dim_slots: dict[int, int]


@dataclass
class Buffer:
    """A buffer as seen by generated code."""

    ptr: SSAValue
    dims: list[IVal]
    strides: list[IVal]
    elem: Attribute


def _static_extent(lb: loop.Bound, ub: loop.Bound) -> int:
    return ub - lb if isinstance(lb, int) and isinstance(ub, int) else 1


def phase_work(op: Operation) -> int:
    """Points of a phase per batch item: the product of the static extents of its
    domain and, recursively, of the largest loop nested in it (dynamic extents count
    as 1). A threading hint for the runtime."""
    own = 1
    if isinstance(op, loop.NestOp | loop.TileOp | simd.LoopOp):
        for lb, ub in zip(op.lower_bounds(), op.upper_bounds(), strict=True):
            own *= max(_static_extent(lb, ub), 1)
    inner = (
        [
            phase_work(o)
            for o in op.regions[0].block.ops
            if isinstance(o, loop.NestOp | loop.TileOp | simd.LoopOp)
        ]
        if op.regions
        else []
    )
    return own * max(inner, default=1)


class KernelLowering:
    """Lowers one kernel function."""

    def __init__(self, kernel: func.FuncOp, target: TargetParams, decls: Declarations):
        self.kernel = kernel
        self.target = target
        self.decls = decls
        self.name = kernel.sym_name.data
        self.buffers: dict[SSAValue, AbiBuffer] = {}
        self.buffer_order: list[SSAValue] = []
        slot = 0
        top = kernel.body.block
        allocs = [op.memref for op in top.ops if isinstance(op, memref.AllocOp)]
        for v in [*top.args, *allocs]:
            t = v.type
            if not isinstance(t, MemRefType):
                raise ValueError(f"kernel {self.name}: argument of type {t} is not a memref")
            dyn = [d for d, s in enumerate(t.get_shape()) if s < 0]
            self.buffers[v] = AbiBuffer(t, slot, {d: slot + 1 + i for i, d in enumerate(dyn)})
            self.buffer_order.append(v)
            slot += 1 + len(dyn)
        self.num_slots = slot
        self.phases = [op for op in top.ops if isinstance(op, loop.NestOp | loop.TileOp)]
        self.emitter = target.emitter or PhaseEmitter

    def scratch_dims(self) -> list[int]:
        out: list[int] = []
        args = list(self.kernel.body.block.args)
        for op in self.kernel.body.block.ops:
            if not isinstance(op, memref.AllocOp):
                continue
            for size in op.dynamic_sizes:
                src = size.owner
                pair = (-1, -1)
                if (
                    isinstance(src, memref.DimOp)
                    and src.source in args
                    and isinstance(c := src.index.owner, arith.ConstantOp)
                    and isinstance(c.value, IntegerAttr)
                ):
                    pair = (args.index(src.source), c.value.value.data)
                out.extend(pair)
        return out

    def run(self, shared: dict[str, str] | None = None) -> list[Operation]:
        """The new phase functions and the kernel info. `shared` maps the key of
        every generic phase lowered so far to its function (updated here);
        None lowers every phase on its own, with its extents built in."""
        funcs: list[Operation] = []
        names: list[str] = []
        offsets: list[int] = []
        slots = [0] * self.num_slots
        canon = Canonicalizer(self.kernel.body.block, self.buffers) if shared is not None else None
        for i, phase in enumerate(self.phases):
            name = f"{self.name}_p{i}"
            sig = None
            if canon is not None:
                try:
                    sig = canon.phase(phase)
                except NotGeneric:
                    sig = None
            if sig is None or shared is None:
                names.append(name)
                offsets.append(0)
                funcs.append(self.emitter(self, name, phase).run())
                continue
            fname = shared.get(sig.key)
            if fname is None:
                fname = shared[sig.key] = name
                funcs.append(self.emitter(self, name, phase, sig).run())
            names.append(fname)
            offsets.append(len(slots))
            slots.extend(self.param_block(sig, len(slots)))
        info = loop.KernelInfoOp(
            self.name,
            names,
            [self.buffers[v].type for v in self.buffer_order],
            [phase_work(p) for p in self.phases],
            self.target.name,
            offsets if shared is not None else None,
            slots if shared is not None else None,
        )
        info.attributes[NUM_ARGS_ATTR] = IntegerAttr(len(self.kernel.body.block.args), i64)
        info.attributes[PARALLEL_ATTR] = DenseArrayBase.from_list(
            i64, [p.num_parallel for p in self.phases]
        )
        info.attributes[SCRATCH_DIMS_ATTR] = DenseArrayBase.from_list(i64, self.scratch_dims())
        return [*funcs, info]

    def param_block(self, sig: PhaseSignature, at: int) -> list[int]:
        """The constant slots of a generic phase whose block starts at slot `at`."""
        buf_offsets, first_param, end = sig.layout()
        block = [0] * end
        for j, v in enumerate(sig.buffers):
            abi = self.buffers[v]
            k = buf_offsets[j]
            block[k] = abi.ptr_slot - at
            for i, d in enumerate(sorted(abi.dim_slots)):
                block[k + 1 + i] = abi.dim_slots[d] - at
        block[first_param:end] = sig.params
        return block


# ---------------------------------------------------------------------------- phases


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
        kernel: KernelLowering,
        name: str,
        phase: loop.NestOp | loop.TileOp,
        sig: PhaseSignature | None = None,
    ):
        self.k = kernel
        self.phase = phase
        self.lanes = kernel.target.lanes
        self.b = LLVMBuilder(name, [i64, i64, PTR], kernel.decls, dict(kernel.target.func_props))
        self.values: dict[SSAValue, IVal] = {}
        self.bufs: dict[SSAValue, Buffer] = {}
        self.lane: LaneState | None = None
        self.sig = sig
        """The phase's generic signature: extents come from its parameter block."""
        if sig is not None:
            self.buf_index = sig.buffer_index()
            self.buf_offsets, self.first_param, _ = sig.layout()
        self.params: dict[int, SSAValue] = {}
        self.maps: dict[int, tuple[AffineExpr, ...]] = {}

    def run(self) -> llvm.FuncOp:
        op = self.phase
        b = self.b
        tid, nth, _ = b.args
        lbs, ubs = self.domain(op)
        steps = list(op.steps) if isinstance(op, loop.TileOp) else [1] * len(lbs)
        k = op.num_parallel
        if k == 0:
            b.if_then(b.icmp("eq", tid, 0), lambda: self.loops(lbs, ubs, steps, self._body))
            return b.finish()
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
            return b.finish()
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
        return b.finish()

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
        if isinstance(op, Operation) and op.parent_block() is self.k.kernel.body.block:
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
        abi = self.k.buffers.get(x)
        if abi is None:
            raise ValueError(f"buffer {x} is not available in {self.b.func.sym_name.data}")
        b = self.b
        saved, b.block = b.block, b.entry
        args = b.args[2]
        shape = abi.type.get_shape()
        if self.sig is not None:
            j = self.buf_index[x]
            k = self.buf_offsets[j]
            ptr = self._indirect(k, PTR)
            dims: list[IVal] = []
            dyn = 0
            for size, site in zip(shape, self.sig.dims[j], strict=True):
                if size < 0:
                    dyn += 1
                    dims.append(self._indirect(k + dyn, i64))
                else:
                    dims.append(size if site is None else self.param(site))
        else:
            ptr = b.load(b.gep(args, abi.ptr_slot, i64), PTR, align=8)
            dims = [
                b.load(b.gep(args, abi.dim_slots[d], i64), i64, align=8) if s < 0 else s
                for d, s in enumerate(shape)
            ]
        buf = self.bufs[x] = self._describe(ptr, dims, abi.type.element_type)
        b.block = saved
        return buf

    def _indirect(self, slot: int, typ: Attribute) -> SSAValue:
        """`args[args[slot]]` (in the entry block): a value of a generic phase's
        buffer, found through its parameter block."""
        b = self.b
        args = b.args[2]
        rel = b.add_entry(llvm.LoadOp(b.gep_entry(args, slot), i64, alignment=8))
        return b.add_entry(llvm.LoadOp(b.gep_entry(args, rel), typ, alignment=8))

    def param(self, p: int) -> SSAValue:
        """Parameter `p` of a generic phase (loaded once, in the entry block)."""
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
        for op in block.ops:
            if isinstance(op, loop.YieldOp):
                return [self.value(v) for v in op.values]
            self.emit(op)
        return []

    def emit(self, op: Operation) -> None:
        if (lower := _lowerings().get(type(op))) is None:
            raise NotImplementedError(f"bs-lower-to-llvm: cannot lower {op.name}")
        lower(self, op)

    def loops(
        self,
        lbs: Sequence[IVal],
        ubs: Sequence[IVal],
        steps: Sequence[int],
        body: Callable[[list[IVal], list[SSAValue]], list[SSAValue]],
        init: Sequence[SSAValue] = (),
    ) -> list[SSAValue]:
        """Nested loops over a box, carrying `init` through all of them."""

        def rec(d: int, ivs: list[IVal], carried: list[SSAValue]) -> list[SSAValue]:
            if d == len(lbs):
                return list(body(ivs, carried))
            lb, ub, s = lbs[d], ubs[d], steps[d]
            if isinstance(lb, int) and isinstance(ub, int):
                if ub <= lb:
                    return carried
                if ub - lb <= s:
                    return rec(d + 1, [*ivs, lb], carried)
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


@functools.cache
def _lowerings() -> dict[type[Operation], Callable[[PhaseEmitter, Operation], None]]:
    from brainslug.lowering.loop_to_llvm import LOOP_LOWERINGS
    from brainslug.lowering.simd_to_llvm import SIMD_LOWERINGS

    return {**LOOP_LOWERINGS, **SIMD_LOWERINGS}

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

`brainslug.runtime.abi` decodes the kernel info for the runners. Each phase is
emitted by `phase_emitter.PhaseEmitter` (or the target's emitter) with the op
lowerings that the backend hands over in `TargetParams.lowerings`:
`loop_to_llvm` (arith, math, memref, loop), `simd_to_llvm` and, on the GPU,
`lowering.gpu`. The lane count W of `simd.loop` is a parameter
(`TargetParams.lanes`); what the `llvm` dialect cannot express is called as an
LLVM intrinsic or as a `bs.*` helper that the backend defines (see `llvm_helpers`).
"""

from __future__ import annotations

from collections.abc import Mapping

from xdsl.dialects import arith, func, llvm, memref
from xdsl.dialects.builtin import IntegerAttr, MemRefType, ModuleOp
from xdsl.ir import Operation, SSAValue

from brainslug.analysis.generic_phases import Canonicalizer, NotGeneric, PhaseSignature
from brainslug.dialects import loop, loop_kernels, simd
from brainslug.lowering.llvm_builder import Declarations
from brainslug.lowering.phase_emitter import AbiBuffer, KernelScope, PhaseEmitter, TargetParams


def lower_kernels(
    module: ModuleOp,
    target: TargetParams,
    generic: bool = True,
    gpu_launches: Mapping[str, loop.GpuLaunchAttr] | None = None,
    shared: dict[str, str] | None = None,
) -> None:
    """Replaces every kernel function of `module` by its phases and kernel info.

    With `generic`, phases are generic over extents and shared between kernels;
    otherwise every phase gets its own function with its extents built in.
    `gpu_launches` gives the launch shape of each kernel, by name (nvptx).
    `shared` (generic key -> function name) carries the generic phases lowered
    before, in other modules: a phase found there is called, not emitted."""
    decls = Declarations()
    if not generic:
        shared = None
    elif shared is None:
        shared = {}
    for kernel in loop_kernels.kernel_functions(module):
        launch = gpu_launches[kernel.sym_name.data] if gpu_launches is not None else None
        new_ops = KernelLowering(kernel, target, decls).run(shared, launch)
        kernel.parent_block().insert_ops_after(new_ops, kernel)  # type: ignore[union-attr]
        kernel.detach()
        kernel.erase()
    existing = {op.sym_name.data for op in module.ops if isinstance(op, llvm.FuncOp)}
    module.body.block.add_ops(op for op in decls.ops() if op.sym_name.data not in existing)


def _static_extent(lb: loop.Bound, ub: loop.Bound) -> int:
    return ub - lb if isinstance(lb, int) and isinstance(ub, int) else 1


def phase_work(op: Operation, lanes: int = 1) -> int:
    """Points of a phase per batch item: the product of the static extents of its
    domain and, recursively, of the largest loop or reduction nested in it (a
    convolution's work is mostly its reduction; dynamic extents count as 1). A
    lane loop over a dynamic range (a register block's channel block) counts its
    vectors of `lanes`, and a reduction with several accumulators (a register
    block's columns) counts each. A threading hint for the runtime."""
    own = 1
    if isinstance(op, _WORK_DOMAINS):
        bounds = list(zip(op.lower_bounds(), op.upper_bounds(), strict=True))
        for lb, ub in bounds:
            own *= max(_static_extent(lb, ub), 1)
        if isinstance(op, simd.LoopOp) and not all(
                isinstance(b, int) for pair in bounds for b in pair):
            own = op.num_vectors * lanes
        if isinstance(op, loop.ReduceOp):
            own *= len(op.accumulators)
    inner = (
        [phase_work(o, lanes) for o in op.regions[0].block.ops if isinstance(o, _WORK_DOMAINS)]
        if op.regions
        else []
    )
    return own * max(inner, default=1)


_WORK_DOMAINS = (loop.NestOp, loop.TileOp, *simd.LANE_LOOPS, loop.ReduceOp)


class KernelLowering:
    """Lowers one kernel function: lays out its ABI buffers in the slot array,
    emits its phases and describes it in a `loop.kernel_info`."""

    def __init__(self, kernel: func.FuncOp, target: TargetParams, decls: Declarations):
        self.kernel = kernel
        self.target = target
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
        for op in top.ops:  # read through the slots of their pieces
            if isinstance(op, loop.PiecesOp):
                first = self.buffers[op.pieces[0]]
                self.buffers[op.result] = AbiBuffer(op.result.type, first.ptr_slot,  # type: ignore[arg-type]
                                                    dict(first.dim_slots))
        self.phases = [op for op in top.ops if isinstance(op, loop.NestOp | loop.TileOp)]
        self.emitter = target.emitter or PhaseEmitter
        self.scope = KernelScope(top, self.buffers, target, decls)

    def scratch_dims(self) -> list[tuple[int, int]]:
        """For each dynamic dim of each scratch buffer, the (argument, dim) it
        equals, or (-1, -1) when unknown (the runtime then uses the batch)."""
        out: list[tuple[int, int]] = []
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
                out.append(pair)
        return out

    def run(
        self, shared: dict[str, str] | None = None, gpu_launch: loop.GpuLaunchAttr | None = None
    ) -> list[Operation]:
        """The new phase functions and the kernel info. `shared` maps the key of
        every generic phase lowered so far to its function (updated here);
        None lowers every phase on its own, with its extents built in."""
        funcs: list[Operation] = []
        names: list[str] = []
        offsets: list[int] = []
        slots = [0] * self.num_slots
        canon = (Canonicalizer(self.kernel.body.block, self.buffers, roll=self.target.rolled_runs,
                               allocas=self.target.generic_allocas)
                 if shared is not None else None)
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
                funcs.append(self.emitter(self.scope, name, phase).run())
                continue
            fname = shared.get(sig.key)
            if fname is None:
                fname = shared[sig.key] = name
                funcs.append(self.emitter(self.scope, name, phase, sig).run())
            names.append(fname)
            offsets.append(len(slots))
            slots.extend(self.param_block(sig, len(slots)))
        info = loop.KernelInfoOp(
            self.name,
            names,
            [self.buffers[v].type for v in self.buffer_order],
            [phase_work(p, self.target.lanes) for p in self.phases],
            self.target.name,
            num_args=len(self.kernel.body.block.args),
            parallel=[p.num_parallel for p in self.phases],
            scratch_dims=self.scratch_dims(),
            phase_args=offsets if shared is not None else None,
            slots=slots if shared is not None else None,
            gpu_launch=gpu_launch,
        )
        return [*funcs, info]

    def param_block(self, sig: PhaseSignature, at: int) -> list[int]:
        """The constant slots of a generic phase whose block starts at slot `at`."""
        buf_offsets, first_param, end = sig.layout()
        block = [0] * end
        for j, v in enumerate(sig.buffers):
            block[buf_offsets[j]:buf_offsets[j] + 1 + len(self.buffers[v].dim_slots)] = \
                self.buffer_refs(v, at)
        block[first_param:first_param + len(sig.params)] = sig.params
        for r, run in enumerate(sig.runs):
            head = sig.run_header(r)
            block[head:head + 2] = [len(run.ops), len(block)]
            for own, params in zip(run.buffers, run.params, strict=True):
                for v in own:
                    block.extend(self.buffer_refs(v, at))
                block.extend(params)
        return block

    def buffer_refs(self, v: SSAValue, at: int) -> list[int]:
        """The slots of buffer `v` (its pointer, then each dynamic dim), relative
        to a parameter block at slot `at`."""
        abi = self.buffers[v]
        return [abi.ptr_slot - at, *(abi.dim_slots[d] - at for d in sorted(abi.dim_slots))]



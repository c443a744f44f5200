"""The NVPTX backend: PTX for NVIDIA GPUs through llvmlite's NVPTX target.

The generic lowering runs with `gpu.emitter.GPUPhaseEmitter`: the lanes of a
`simd.loop` are the threads of a block and the parallel loops are the grid; a
depth-first tile is a block, with its scratch in shared memory (one static
`.shared` array `bs_shared_<bytes>` per size, an `addrspace(3)` global).
Phases keep the CPU's phase ABI `void (i64, i64, ptr args)` as device
functions; each *launch* of a kernel is a `.entry` (`ptx_kernel` calling
convention) named `<kernel>_g<j>` with the same ABI, which runs a run of
consecutive independent phases, `ctaid.y` picking the phase (`launches`,
grouped by `gpu.launches`).
Each `loop.kernel_info` also gets a `#loop.gpu_launch`: the static lane extent
of each phase (for the block shape), the tiles per batch item of each
block-mode phase (0 for the others), the launch groups and the architecture.

`exp`, `log`, `tanh` and `erf` call libdevice (`__nv_expf`, ...), the CUDA math
library's own implementations, linked from `libdevice.10.bc` (found through
`BRAINSLUG_LIBDEVICE`, `CUDA_HOME`/`CUDA_PATH`, /usr/local/cuda*, or the pip
wheels of the CUDA compiler or of Triton).
No fast-math: `fdiv` is `div.rn.f32`, `llvm.sqrt` is `sqrt.rn.f32`, and LLVM
does not contract fmul+fadd into fma without `contract` flags.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm
from llvmlite import ir
from xdsl.backend.llvm.convert import convert_module
from xdsl.context import Context
from xdsl.dialects import llvm as xllvm
from xdsl.dialects.builtin import ModuleOp, i8

from brainslug.dialects import loop, loop_kernels
from brainslug.lowering.backends.x86 import _OpsView
from brainslug.lowering.gpu.emitter import GPUPhaseEmitter
from brainslug.lowering.gpu.launches import launch_shape
from brainslug.lowering.gpu.lowerings import GPU_LOWERINGS
from brainslug.lowering.gpu.nvvm import SHARED_PREFIX, TO_GENERIC
from brainslug.lowering.gpu.unit_tiles import GPUUnitTilesPass
from brainslug.lowering.loop_to_llvm import LOOP_LOWERINGS
from brainslug.lowering.phase_emitter import TargetParams
from brainslug.lowering.simd_to_llvm import SIMD_LOWERINGS
from brainslug.lowering.to_llvm import lower_kernels

TARGET = "nvptx"
TRIPLE = "nvptx64-nvidia-cuda"
LIBDEVICE_PREFIX = "__nv_"
PTX_BASELINE = "sm_80"
"""The newest `.target` the PTX asks for (see `NVPTXBackend.ptx_target`)."""


@functools.cache
def _init_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def find_libdevice() -> Path | None:
    """`libdevice.10.bc` of a CUDA installation, or None."""
    if env := os.environ.get("BRAINSLUG_LIBDEVICE"):
        return Path(env)
    roots = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH")]
    roots += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for root in filter(None, roots):
        p = Path(root) / "nvvm" / "libdevice" / "libdevice.10.bc"
        if p.is_file():
            return p
    # pip wheels: the CUDA compiler's, or the copy that Triton (a PyTorch
    # dependency on Linux) ships; located without importing them
    for package, sub in (
        ("nvidia.cuda_nvcc", "nvvm/libdevice"),
        ("nvidia.cu13", "nvvm/libdevice"),
        ("triton", "backends/nvidia/lib"),
    ):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for base in (spec.submodule_search_locations or []) if spec else []:
            p = Path(base) / sub / "libdevice.10.bc"
            if p.is_file():
                return p
    return None


@functools.cache
def _libdevice_bitcode() -> bytes:
    path = find_libdevice()
    if path is None:
        raise RuntimeError(
            "nvptx: exp/log/tanh/erf need libdevice.10.bc from a CUDA toolkit; set "
            "BRAINSLUG_LIBDEVICE or CUDA_HOME"
        )
    return path.read_bytes()


@dataclass(frozen=True)
class Launch:
    """One launch of a kernel: the `.entry` that runs phases `first` to
    `first + count - 1` (`ctaid.y` picks one), with `args` at the first one's block."""

    entry: str
    first: int
    count: int


def gpu_launch(info: loop.KernelInfoOp) -> loop.GpuLaunchAttr:
    """The launch shape of a kernel lowered for nvptx."""
    if info.gpu_launch is None:
        raise ValueError(f"kernel {info.kernel.data} was not lowered for nvptx (no gpu_launch)")
    return info.gpu_launch


def launches(info: loop.KernelInfoOp) -> list[Launch]:
    """The launches of a lowered kernel, in order (its launch groups)."""
    out, first = [], 0
    for j, n in enumerate(gpu_launch(info).groups.get_values()):
        out.append(Launch(f"{info.kernel.data}_g{j}", first, n))
        first += n
    return out


def _entry(ir_mod: ir.Module, info: loop.KernelInfoOp, launch: Launch) -> None:
    """The `.entry` of a launch: calls its phase (picked by `ctaid.y`) with the
    phase's parameter block."""
    i64t = ir.IntType(64)
    fnty = ir.FunctionType(ir.VoidType(), [i64t, i64t, ir.PointerType()])
    entry = ir.Function(ir_mod, fnty, launch.entry)
    entry.calling_convention = "ptx_kernel"
    entry.attributes.add("nounwind")
    a, b_, args = entry.args
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    offsets = (
        list(info.phase_args.get_values())
        if info.phase_args is not None
        else [0] * len(info.phases)
    )
    phases = range(launch.first, launch.first + launch.count)

    def call(k: int) -> None:
        rel = offsets[k] - offsets[launch.first]
        ptr = b.gep(args, [i64t(rel)], source_etype=i64t) if rel else args
        b.call(ir_mod.get_global(info.phases.data[k].data), [a, b_, ptr])

    if launch.count == 1:
        call(launch.first)
        b.ret_void()
        return
    i32t = ir.IntType(32)
    name = "llvm.nvvm.read.ptx.sreg.ctaid.y"
    sreg = ir_mod.globals.get(name) or ir.Function(ir_mod, ir.FunctionType(i32t, []), name)
    done = entry.append_basic_block("done")
    switch = b.switch(b.call(sreg, []), done)
    for y, k in enumerate(phases):
        case = entry.append_basic_block(f"phase{k}")
        switch.add_case(i32t(y), case)
        b.position_at_end(case)
        call(k)
        b.branch(done)
    b.position_at_end(done)
    b.ret_void()


def entry_names(module: ModuleOp) -> set[str]:
    """Names of the `.entry`s (kernels) of a lowered module."""
    return {
        launch.entry
        for op in module.ops
        if isinstance(op, loop.KernelInfoOp)
        for launch in launches(op)
    }


@dataclass
class NVPTXBackend:
    """Lowers kernels for NVIDIA GPUs and compiles them to PTX."""

    cpu: str = "sm_90"
    name = TARGET

    def __post_init__(self) -> None:
        _init_llvm()
        if self.cpu in ("host", ""):
            self.cpu = "sm_90"
        if not self.cpu.startswith("sm_"):
            raise ValueError(f"nvptx: cpu must be an SM architecture such as sm_90, got {self.cpu}")

    def params(self) -> TargetParams:
        # `lanes` is unused by the GPU emitter (a lane is a thread)
        lowerings = {**LOOP_LOWERINGS, **SIMD_LOWERINGS, **GPU_LOWERINGS}
        return TargetParams(TARGET, 32, lowerings, (), GPUPhaseEmitter)

    def lower(self, module: ModuleOp, generic: bool = True) -> None:
        """bs-lower-to-llvm for this target: depth-first tiles too large for
        shared memory cut to one point (bs-gpu-unit-tiles), the phases, the
        shared arrays of the block-mode tiles, and each kernel's launch shape."""
        GPUUnitTilesPass().apply(Context(), module)
        launch_shapes = {
            fn.sym_name.data: launch_shape(
                [p for p in fn.body.block.ops if isinstance(p, loop.NestOp | loop.TileOp)],
                self.cpu,
            )
            for fn in loop_kernels.kernel_functions(module)
        }
        lower_kernels(module, self.params(), generic, launch_shapes)
        _add_shared_arrays(module)

    @property
    def ptx_target(self) -> str:
        """The PTX `.target`: `cpu`, but at most `PTX_BASELINE` (PTX is forward
        compatible; the kernels use nothing newer, and ptxas can check one PTX
        for sm_80 and sm_90)."""
        return oldest(self.cpu, PTX_BASELINE)

    def target_machine(self) -> llvm.TargetMachine:
        return llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=self.ptx_target, opt=3)

    def fingerprint(self) -> str:
        """What, besides the IR, decides the PTX (part of cache keys)."""
        return f"{TRIPLE};{self.ptx_target}"

    # ------------------------------------------------------------------ IR

    def to_llvmlite(self, module: ModuleOp, data_layout: str = "") -> ir.Module:
        """The module's `llvm.func`s and shared arrays as llvmlite IR: the
        phases as internal device functions, plus one `.entry` per launch that
        calls them."""
        ops = [op for op in module.ops if isinstance(op, xllvm.FuncOp | xllvm.GlobalOp)]
        ir_mod = convert_module(
            _OpsView(module, ops),  # type: ignore[arg-type]
            fallback_target_triple=TRIPLE,
            data_layout=data_layout,
        )
        for g in ir_mod.global_values:
            if isinstance(g, ir.GlobalVariable) and g.name.startswith(SHARED_PREFIX):
                g.align = 16
            elif isinstance(g, ir.Function) and g.name == TO_GENERIC and not g.blocks:
                g.linkage = "internal"
                g.attributes.add("alwaysinline")
                b = ir.IRBuilder(g.append_basic_block("entry"))
                b.ret(b.addrspacecast(g.args[0], ir.PointerType()))
        infos = [op for op in module.ops if isinstance(op, loop.KernelInfoOp)]
        calls = Counter(p.data for info in infos for p in info.phases)
        blocks = {  # phases with barriers: their calls must stay uniform
            p.data
            for info in infos
            for p, t in zip(info.phases, gpu_launch(info).tiles.get_values(), strict=True)
            if t > 0
        }
        for fn in ir_mod.functions:
            if fn.blocks and fn.name in calls:  # device functions, called by the entries
                fn.linkage = "internal"
                fn.attributes.add("nounwind")
                if fn.name in blocks:
                    fn.attributes.add("convergent")
                if calls[fn.name] > 1:  # shared by several launches: one copy (a .func)
                    fn.attributes.add("noinline")
        for info in infos:
            for launch in launches(info):
                _entry(ir_mod, info, launch)
        # libdevice reads this flag through __nvvm_reflect: no flush-to-zero
        i32 = ir.IntType(32)
        ir_mod.add_named_metadata("llvm.module.flags", [i32(4), "nvvm-reflect-ftz", i32(0)])
        return ir_mod

    def build(self, module: ModuleOp, opt: int = 3, tm: llvm.TargetMachine | None = None):
        """Parsed, libdevice-linked, verified and optimized LLVM module."""
        tm = tm or self.target_machine()
        mod = llvm.parse_assembly(str(self.to_llvmlite(module, str(tm.target_data))))
        kernels = entry_names(module)
        if any(f.name.startswith(LIBDEVICE_PREFIX) for f in mod.functions):
            lib = llvm.parse_bitcode(_libdevice_bitcode())
            lib.triple, lib.data_layout = mod.triple, mod.data_layout
            mod.link_in(lib)
            for f in mod.functions:
                if not f.is_declaration and f.name not in kernels:
                    f.linkage = llvm.Linkage.internal
        mod.verify()
        if opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
        return mod

    def emit_llvm_ir(self, module: ModuleOp, opt: int = 3) -> str:
        return str(self.build(module, opt))

    def emit_ptx(self, module: ModuleOp, opt: int = 3) -> str:
        tm = self.target_machine()
        return tm.emit_assembly(self.build(module, opt, tm))


def _add_shared_arrays(module: ModuleOp) -> None:
    """The `addrspace(3)` array of each size that a block-mode phase addresses."""
    have = {op.sym_name.data for op in module.ops if isinstance(op, xllvm.GlobalOp)}
    sizes = sorted({
        int(name[len(SHARED_PREFIX):])
        for op in module.walk()
        if isinstance(op, xllvm.AddressOfOp)
        and (name := op.global_name.root_reference.data).startswith(SHARED_PREFIX)
        and name not in have
    })
    arrays = [
        xllvm.GlobalOp(xllvm.LLVMArrayType(n, i8), f"{SHARED_PREFIX}{n}", "internal",
                       addr_space=3, alignment=16)
        for n in sizes
    ]
    if arrays:
        module.body.block.insert_ops_before(arrays, module.body.block.first_op)  # type: ignore[arg-type]


def oldest(*archs: str) -> str:
    """The oldest of some `sm_XY` architectures."""
    return min(archs, key=lambda s: int(s[3:].rstrip("af")))


def lowered_for(module: ModuleOp, cpu: str) -> str:
    """`cpu`, or an older architecture a kernel of `module` was lowered for."""
    archs = [
        op.gpu_launch.arch.data
        for op in module.ops
        if isinstance(op, loop.KernelInfoOp) and op.gpu_launch is not None
    ]
    return oldest(cpu, *archs)


def emit_ptx(module: ModuleOp, cpu: str = "sm_90", opt: int = 3) -> str:
    """PTX of all kernel phases of a module lowered by `bs-lower-to-llvm{target=nvptx}`
    (for `cpu`, or the older architecture the module was lowered for)."""
    return NVPTXBackend(lowered_for(module, cpu)).emit_ptx(module, opt)


def emit_llvm_ir(module: ModuleOp, cpu: str = "sm_90", opt: int = 3) -> str:
    """LLVM IR (NVPTX) of all kernel phases of a lowered module."""
    return NVPTXBackend(cpu).emit_llvm_ir(module, opt)

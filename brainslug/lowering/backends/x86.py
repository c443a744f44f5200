"""The x86-64 backend: lane width, TargetMachine, helpers and code emission.

`cpu="host"` reads the host CPU's name and features from LLVM and uses 16
lanes with AVX-512F, 8 with AVX2, 4 otherwise; a named CPU (skylake-avx512,
znver3, haswell, ...) takes its lane width from a table. Phase functions get
"target-cpu"/"target-features" attributes, and with 16 lanes also
"min-legal-vector-width"/"prefer-vector-width"="512" so that LLVM keeps
`<16 x float>` in zmm registers instead of splitting it into ymm halves.

No fast-math flags are used and LLVM does not contract fmul+fadd into fma
without them, so the code computes what a plain scalar C loop computes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import tempfile
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir
from xdsl.backend.llvm.convert import convert_module
from xdsl.dialects import llvm as xllvm
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr

from brainslug.dialects import loop
from brainslug.lowering.llvm_helpers import (
    F32,
    I32,
    PTR,
    declare,
    define_helpers,
    lookup_per_lane,
    max_step,
    onednn_gelu_erf,
    per_lane,
    per_lane_unless_all_nan,
)
from brainslug.lowering.loop_to_llvm import LOOP_LOWERINGS
from brainslug.lowering.phase_emitter import TargetParams
from brainslug.lowering.simd_to_llvm import SIMD_LOWERINGS
from brainslug.lowering.windowed_reduce import windowed_reduce

TARGET = "x86-64"

AVX512_CPUS = frozenset(
    "skylake-avx512 skx cascadelake cooperlake cannonlake icelake-client icelake-server "
    "tigerlake rocketlake sapphirerapids emeraldrapids graniterapids graniterapids-d "
    "diamondrapids znver4 znver5 knl knm x86-64-v4".split()
)
AVX2_CPUS = frozenset(
    "haswell broadwell skylake alderlake raptorlake meteorlake arrowlake arrowlake-s "
    "lunarlake pantherlake gracemont sierraforest grandridge clearwaterforest znver1 znver2 "
    "znver3 bdver4 x86-64-v3".split()
)

LIBM_FUNCTIONS = ("expf", "logf", "sqrtf", "tanhf", "erff")
"""Scalar libm functions the generated code may call (made known to the JIT)."""

_MAXPS = {
    16: ("llvm.x86.avx512.max.ps.512", (ir.Constant(I32, 4),)),  # 4: current rounding
    8: ("llvm.x86.avx.max.ps.256", ()),
    4: ("llvm.x86.sse.max.ps", ()),
}


def _fmax(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    """The max-reduction step `(v > acc || isnan(v)) ? v : acc` with `maxps v, acc`
    (`v > acc ? v : acc`, acc where either is NaN) and a NaN blend off the
    accumulator's dependency chain: one max and one blend per step rather than
    compare, compare, or and blend."""
    acc, v = fn.args
    if not isinstance(v.type, ir.VectorType) or v.type.count not in _MAXPS:
        return max_step(b, acc, v)
    name, extra = _MAXPS[v.type.count]
    maxps = declare(b.module, name, ir.FunctionType(v.type, [v.type, v.type, *(a.type for a in extra)]))
    m = b.call(maxps, [v, acc, *extra])
    return b.select(b.fcmp_unordered("uno", v, v), v, m)


def _permute_lookup(b: ir.IRBuilder, table: tuple[float, ...], idx: ir.Value) -> ir.Value:
    """A 32-entry table lookup, one `vpermi2ps` per 16 lanes (oneDNN's own way):
    a register block of V vectors (64 lanes) is split into V lookups and joined
    again. (Per lane, a 64-lane GELU epilogue took 768 extracts per erf, and its
    unit 5 s of LLVM.)"""
    n = idx.type.count
    if n % 16 or (n // 16) & (n // 16 - 1):
        return lookup_per_lane(b, table, idx)
    vt = ir.VectorType(F32, 16)
    it = ir.VectorType(I32, 16)
    padded = [*table, *[0.0] * (32 - len(table))]
    lo, hi = ir.Constant(vt, padded[:16]), ir.Constant(vt, padded[16:])
    perm = declare(b.module, "llvm.x86.avx512.vpermi2var.ps.512", ir.FunctionType(vt, [vt, it, vt]))
    if n == 16:
        return b.call(perm, [lo, idx, hi])
    pieces = [b.call(perm, [lo, b.shuffle_vector(idx, idx, ir.Constant(
        it, list(range(16 * k, 16 * k + 16)))), hi]) for k in range(n // 16)]
    while len(pieces) > 1:  # join pairs: 16 + 16 lanes, then 32 + 32
        width = 2 * pieces[0].type.count
        both = ir.Constant(ir.VectorType(I32, width), list(range(width)))
        pieces = [b.shuffle_vector(pieces[i], pieces[i + 1], both)
                  for i in range(0, len(pieces), 2)]
    return pieces[0]


def _erf_onednn(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return onednn_gelu_erf(b, fn.args[0], _permute_lookup)


MXCSR_FLUSH = 0x8040
"""MXCSR's FTZ (bit 15: denormal results are zero) and DAZ (bit 6: denormal
inputs are zero), as TensorFlow's threads run its kernels."""


def _mxcsr_calls(b: ir.IRBuilder) -> tuple[ir.Function, ir.Function]:
    void = ir.FunctionType(ir.VoidType(), [PTR])
    return (declare(b.module, "llvm.x86.sse.stmxcsr", void),
            declare(b.module, "llvm.x86.sse.ldmxcsr", void))


def _mxcsr_flush(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    """`bs.mxcsr_flush() -> i32`: sets FTZ and DAZ, returns the mode before."""
    store, load = _mxcsr_calls(b)
    cell = b.alloca(I32)
    b.call(store, [cell])
    old = b.load(cell)
    b.store(b.or_(old, ir.Constant(I32, MXCSR_FLUSH)), cell)
    b.call(load, [cell])
    return old


def _mxcsr_set(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> None:
    """`bs.mxcsr_set(i32 mode)`: restores a mode `bs.mxcsr_flush` returned."""
    _, load = _mxcsr_calls(b)
    cell = b.alloca(I32)
    b.store(fn.args[0], cell)
    b.call(load, [cell])


LANE_FUNCTIONS = {
    "mxcsr_flush": _mxcsr_flush,
    "mxcsr_set": _mxcsr_set,
    "exp_libm": per_lane_unless_all_nan("expf"),
    "erf_onednn": _erf_onednn,
    "tanh": per_lane("tanhf"),
    "tanh_libm": per_lane_unless_all_nan("tanhf"),
    "erf": per_lane("erff"),
    "fmax": _fmax,
}
"""x86 bodies of `bs.*` helpers: libm per lane (exp/log/sqrt use LLVM
intrinsics; `bs.exp_libm` and `bs.tanh_libm` skip vectors that are all NaN), and the max step on
`maxps`, oneDNN's GELU erf with its table lookups on `vpermi2ps`. PyTorch's
vector exp and tanh (`bs.exp_sleef_u10`, `bs.tanh_sleef_u10`) are generic helpers."""


@functools.cache
def _init_llvm() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    name = ctypes.util.find_library("m")
    libm = ctypes.CDLL(name) if name else ctypes.CDLL(None)
    for fn in LIBM_FUNCTIONS:
        llvm.add_symbol(fn, ctypes.cast(getattr(libm, fn), ctypes.c_void_p).value)


@functools.cache
def known_cpu(cpu: str) -> bool:
    """Whether LLVM knows `cpu` as an x86-64 processor. LLVM only prints a
    warning for an unknown one and then aborts the process while emitting code,
    so the check reads that warning (from the stderr file descriptor) when a
    target machine is made."""
    _init_llvm()
    with tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(err.fileno(), 2)
            llvm.Target.from_default_triple().create_target_machine(cpu=cpu)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        return b"not a recognized processor" not in err.read()


def check_cpu(cpu: object) -> str:
    """`cpu` if it is "host" or a processor LLVM knows, else ValueError."""
    if not isinstance(cpu, str) or not cpu:
        raise ValueError(f"cpu must be 'host' or an LLVM CPU name such as 'znver4', got {cpu!r}")
    if cpu != "host" and not known_cpu(cpu):
        raise ValueError(f"cpu {cpu!r} is not an x86-64 processor LLVM knows (for example "
                         f"'znver4', 'skylake-avx512', 'haswell', or 'host')")
    return cpu


def lanes_for(cpu: str, features: str = "") -> int:
    """SIMD width in f32 lanes for a CPU name or an LLVM feature string."""
    feats = set(features.split(","))
    if "+avx512f" in feats or cpu in AVX512_CPUS:
        return 16
    if "+avx2" in feats or cpu in AVX2_CPUS:
        return 8
    return 4


class _Attributes(ir.values.FunctionAttributes):
    """llvmlite's function attributes plus `"key"="value"` string attributes."""

    def __init__(self, strings: dict[str, str], flags: set[str] = frozenset()):
        super().__init__(["nounwind", *flags])
        self.strings = strings

    def _to_list(self, ret_type: ir.Type) -> list[str]:
        return [*super()._to_list(ret_type), *(f'"{k}"="{v}"' for k, v in self.strings.items())]


@dataclass
class X86Backend:
    """Compiles the `llvm` dialect output of bs-lower-to-llvm for x86-64."""

    cpu: str = "host"
    flush_denormals: bool = False
    """Kernels run with denormals flushed (FTZ and DAZ), as TensorFlow's do."""
    name = TARGET

    def __post_init__(self) -> None:
        _init_llvm()
        check_cpu(self.cpu)
        self.features = ""
        if self.cpu == "host":
            self.cpu = llvm.get_host_cpu_name()
            self.features = llvm.get_host_cpu_features().flatten()
        self.lanes = lanes_for(self.cpu, self.features)

    def func_attributes(self) -> dict[str, str]:
        attrs = {"target-cpu": self.cpu}
        if self.features:
            attrs["target-features"] = self.features
        if self.lanes == 16:
            attrs["min-legal-vector-width"] = "512"
            attrs["prefer-vector-width"] = "512"
        if self.flush_denormals:  # (LLVM folds constants in the mode the code runs in)
            attrs["denormal-fp-math"] = "preserve-sign,preserve-sign"
        return attrs

    def params(self) -> TargetParams:
        """What the generic lowering needs: the lane count, the op lowerings and
        function properties."""
        passthrough = [
            ArrayAttr([StringAttr(k), StringAttr(v)])
            for k, v in self.func_attributes().items()
            if k.endswith("vector-width")
        ]
        props: list[tuple[str, ArrayAttr | StringAttr]] = [("target_cpu", StringAttr(self.cpu))]
        if passthrough:
            props.append(("passthrough", ArrayAttr(passthrough)))
        lowerings = {**LOOP_LOWERINGS, **SIMD_LOWERINGS, loop.ReduceOp: windowed_reduce}
        return TargetParams(TARGET, self.lanes, lowerings, tuple(props),  # type: ignore[arg-type]
                            helper_variants=AVX512_HELPERS if self.lanes == 16 else {},
                            rolled_runs=True, generic_allocas=True,
                            flush_denormals=self.flush_denormals)

    def target_machine(self, jit: bool = False) -> llvm.TargetMachine:
        """A fresh TargetMachine (MCJIT takes ownership of the one it is given)."""
        return llvm.Target.from_default_triple().create_target_machine(
            cpu=self.cpu, features=self.features, opt=3, jit=jit
        )

    # ------------------------------------------------------------------ IR

    def to_llvmlite(
        self, module: ModuleOp, data_layout: str = "", funcs: list[xllvm.FuncOp] | None = None
    ) -> ir.Module:
        """The module's `llvm.func`s (or just `funcs`; other ops are ignored) with
        helpers defined."""
        if funcs is None:
            funcs = [op for op in module.ops if isinstance(op, xllvm.FuncOp)]
        # convert_module reads `ops` and `attributes`; hand it the llvm.funcs only
        ir_mod = convert_module(
            _OpsView(module, funcs),  # type: ignore[arg-type]
            fallback_target_triple=llvm.get_default_triple(),
            data_layout=data_layout,
        )
        define_helpers(ir_mod, LANE_FUNCTIONS)
        attrs = self.func_attributes()
        for fn in ir_mod.functions:
            if fn.blocks:
                fn.attributes = _Attributes(attrs, fn.attributes)
        return ir_mod

    def build(
        self, module: ModuleOp, opt: int = 3, tm: llvm.TargetMachine | None = None
    ) -> llvm.ModuleRef:
        """Parsed, verified and optimized (new pass manager at level `opt`) LLVM module."""
        tm = tm or self.target_machine()
        mod = llvm.parse_assembly(str(self.to_llvmlite(module, str(tm.target_data))))
        mod.verify()
        if opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
        return mod

    # ------------------------------------------------------------------ separate compilation

    def fingerprint(self) -> str:
        """What, besides the IR, decides the machine code (part of cache keys)."""
        return (f"{llvm.get_default_triple()};{self.cpu};{self.features};{self.lanes}"
                + (";ftz" if self.flush_denormals else ""))

    def phase_units(self, module: ModuleOp, data_layout: str) -> list[tuple[str, str]]:
        """One compilation unit per phase function: (its name, the LLVM IR of a
        module with just that function, renamed to `PLACEHOLDER`, and the helpers
        it calls). The text is the same wherever the same code is needed, so
        it keys the kernel cache."""
        funcs = [op for op in module.ops if isinstance(op, xllvm.FuncOp)]
        decls = {op.sym_name.data: op for op in funcs if not op.body.blocks}
        units = []
        for fn in funcs:
            if not fn.body.blocks:
                continue
            callees = {
                op.callee.string_value()
                for op in fn.walk()
                if isinstance(op, xllvm.CallOp) and op.callee is not None
            }
            ops = [fn, *(decls[c] for c in sorted(callees) if c in decls)]
            name = fn.sym_name.data
            text = str(self.to_llvmlite(module, data_layout, ops))
            units.append((name, text.replace(f'@"{name}"', f'@"{PLACEHOLDER}"')))
        return units

    @staticmethod
    def named(text: str, symbol: str) -> str:
        """A `phase_units` text with its phase function named `symbol`."""
        return text.replace(f'@"{PLACEHOLDER}"', f'@"{symbol}"')

    def compile_object(self, text: str, opt: int = 3) -> bytes:
        """Object code of one unit (in its own LLVM context, with its own
        TargetMachine)."""
        ctx = llvm.create_context()
        mod = llvm.parse_assembly(text, ctx)
        mod.verify()
        tm = self.target_machine(jit=True)
        if opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
        return tm.emit_object(mod)

    def emit_llvm_ir(self, module: ModuleOp, opt: int = 3) -> str:
        return str(self.build(module, opt))

    def emit_asm(self, module: ModuleOp, opt: int = 3) -> str:
        tm = self.target_machine()
        return tm.emit_assembly(self.build(module, opt, tm))


AVX512_HELPERS = {"exp_sleef_u10_normal": "exp_sleef_u10_scalef"}
"""Helpers computed otherwise with AVX-512, to the same bits (`helper_variants`)."""

PLACEHOLDER = "bs.phase"
"""The name a phase function has in its compilation unit."""


class _OpsView:
    """Duck-typed stand-in for a ModuleOp exposing only some of its ops."""

    def __init__(self, module: ModuleOp, ops: list[xllvm.FuncOp]):
        self.attributes = module.attributes
        self.ops = ops


def backend_for(module: ModuleOp, cpu: str = "host") -> X86Backend:
    """The backend for a lowered module: `cpu`, or with "host" the CPU its phases
    were lowered for (their `target_cpu`)."""
    _init_llvm()
    if cpu == "host":
        for op in module.ops:
            if isinstance(op, xllvm.FuncOp) and op.target_cpu is not None:
                if op.target_cpu.data != llvm.get_host_cpu_name():
                    cpu = op.target_cpu.data
                break
    return X86Backend(cpu)


def emit_llvm_ir(module: ModuleOp, cpu: str = "host", opt: int = 3) -> str:
    """LLVM IR of all kernel phases of a lowered module (unoptimized with opt=0)."""
    return backend_for(module, cpu).emit_llvm_ir(module, opt)


def emit_asm(module: ModuleOp, cpu: str = "host") -> str:
    """x86-64 assembly of all kernel phases of a lowered module."""
    return backend_for(module, cpu).emit_asm(module)

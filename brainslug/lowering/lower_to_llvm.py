"""`bs-lower-to-llvm`: kernels in `loop`/`simd` to `llvm` dialect phase functions."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from brainslug.ir.compile_time import gc_paused
from brainslug.lowering.to_llvm import lower_kernels


def make_backend(target: str = "x86-64", cpu: str = "host"):
    """The backend object for a target name (it gives the lowering its parameters)."""
    if target in ("x86-64", "x86_64", "x86"):
        from brainslug.lowering.backends.x86 import X86Backend

        return X86Backend(cpu)
    if target in ("nvptx", "nvptx64", "cuda"):
        from brainslug.lowering.backends.nvptx import NVPTXBackend

        return NVPTXBackend("sm_90" if cpu == "host" else cpu)
    raise ValueError(f"bs-lower-to-llvm: unknown target '{target}' (known: x86-64, nvptx)")


@dataclass(frozen=True)
class LowerToLLVMPass(ModulePass):
    """Replaces each `bs.kernel` function by one `llvm.func` per phase and a
    `loop.kernel_info`; graph functions are left as they are. Phases are generic
    over extents and structurally identical ones share a function across
    kernels; `generic=false` gives every phase its own, with its extents built in."""

    name = "bs-lower-to-llvm"

    target: str = "x86-64"
    cpu: str = "host"
    generic: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            backend = make_backend(self.target, self.cpu)
            if hasattr(backend, "lower"):  # a backend with its own steps (nvptx)
                backend.lower(op, self.generic)
            else:
                lower_kernels(op, backend.params(), self.generic)

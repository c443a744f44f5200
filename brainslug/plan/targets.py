"""The backends a plan compiles its kernels for.

A target names the default pipeline's lowering (`target`, `cpu`), compiles a
lowered module's kernels into runners (`KernelRunner`s on the CPU,
`CudaKernelRunner`s on a GPU), and, where it caches object code, loads them
back from the kernel cache for a plan-cache hit.
"""

from __future__ import annotations

from typing import Any, Protocol

from xdsl.dialects.builtin import ModuleOp


class Target(Protocol):
    name: str
    """The lowering target of the default pipeline (`x86-64`, `nvptx`)."""
    cpu: str
    """The CPU (or `sm_XY`) it lowers for."""
    convs: bool
    """Whether convolutions are compiled (else they stay in the framework)."""

    def fingerprint(self) -> str | None:
        """What its code depends on, for the plan cache; None: not cached."""

    def compile(self, module: ModuleOp) -> Any:
        """Runners of the module's kernels, by kernel name."""

    def load(self, infos: list[dict[str, Any]], unit_keys: dict[str, str]) -> Any | None:
        """Runners from the kernel cache (None on a miss), of the kernels that
        `infos` describe (`runtime.abi.kernel_record`s)."""

    def unit_keys(self, kernels: Any) -> dict[str, str]:
        """The kernel-cache keys of compiled kernels' object code."""


class CpuTarget:
    """x86-64 kernels, JIT-compiled and run on a thread pool of `threads`
    threads (None: the process-wide pool). With `convs`, channels-last
    convolutions are compiled too, with their epilogues; with
    `flush_denormals`, kernels flush denormals as TensorFlow's do."""

    name = "x86-64"

    def __init__(self, cpu: str = "host", threads: int | None = None, convs: bool = False,
                 flush_denormals: bool = False):
        from brainslug.lowering.backends.x86 import X86Backend

        self.cpu = cpu
        self.threads = threads
        self.convs = convs
        self.flush_denormals = flush_denormals
        self.backend = X86Backend(cpu, flush_denormals)

    def fingerprint(self) -> str | None:
        return self.backend.fingerprint() + (";convs" if self.convs else "")

    def _pool(self) -> Any:
        from brainslug.runtime.threads import sized_pool

        return sized_pool(self.threads)

    def compile(self, module: ModuleOp) -> Any:
        from brainslug.runtime.jit import compile_kernels

        return compile_kernels(module, self.backend, self._pool())

    def load(self, infos: list[dict[str, Any]], unit_keys: dict[str, str]) -> Any | None:
        from brainslug.runtime.jit import CompiledKernels

        return CompiledKernels.from_cache(infos, unit_keys, self.backend, self._pool())

    def unit_keys(self, kernels: Any) -> dict[str, str]:
        return dict(kernels.unit_keys)

    def link(self, infos: list[dict[str, Any]], objects: dict[str, bytes],
             unit_keys: dict[str, str], compiled: int = 0) -> Any:
        """Runners of the kernels of `infos` (`runtime.abi.kernel_record`s whose
        phases are named by their symbols) from the object code of those
        symbols; `compiled` of them were compiled just now."""
        from brainslug.runtime.jit import CompiledKernels

        kernels = CompiledKernels.from_objects(infos, {s: s for s in objects}, objects,
                                               self.backend, self._pool(), unit_keys)
        kernels.stats = {"compiled": compiled, "cached": max(0, len(objects) - compiled)}
        return kernels


class CudaTarget:
    """PTX kernels for the GPU `device` (an opaque framework device), of
    architecture `cpu` (`sm_XY`), loaded with cuda-python."""

    name = "nvptx"
    convs = False

    def __init__(self, cpu: str, device: Any):
        self.cpu = cpu
        self.device = device

    def fingerprint(self) -> str | None:
        return None  # CUDA plans are not cached yet

    def compile(self, module: ModuleOp) -> Any:
        from brainslug.runtime import cuda

        return cuda.compile_cuda_kernels(module, self.cpu, self.device)

    def load(self, infos: list[dict[str, Any]], unit_keys: dict[str, str]) -> Any | None:
        return None

    def unit_keys(self, kernels: Any) -> dict[str, str]:
        return {}

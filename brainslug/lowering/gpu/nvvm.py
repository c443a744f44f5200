"""NVVM names of the GPU lowering: special registers, the barrier, the shared
arrays and libdevice (shared by the emitter, the nvptx backend and the CUDA
emulator)."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import IntAttr

SREG = "llvm.nvvm.read.ptx.sreg."
"""Prefix of the NVVM intrinsics that read the thread and block indices."""
BARRIER = "llvm.nvvm.barrier0"
"""`bar.sync 0`: every thread of the block waits for all others."""
SHARED_PREFIX = "bs_shared_"
"""Name of the shared array of `n` bytes: `bs_shared_<n>` (one per size)."""
SHARED_PTR = llvm.LLVMPointerType(IntAttr(3))
"""A pointer to shared memory (NVPTX address space 3)."""
TO_GENERIC = "bs.gpu.generic"
"""`ptr (ptr addrspace(3))`: the generic address of a shared one (defined by
the backend as an `addrspacecast`; LLVM infers the address space of the
accesses back, so they are `ld.shared`/`st.shared`)."""
MATH_FUNCTIONS = {"exp": "__nv_expf", "log": "__nv_logf", "tanh": "__nv_tanhf", "erf": "__nv_erff"}
"""libdevice functions for `simd.math`/`math.*` (the CUDA math library's own,
so results match PyTorch's CUDA kernels); sqrt is `sqrt.rn.f32`."""

"""Runs nvptx-lowered kernels on the CPU, one GPU thread after another.

The GPU phases never synchronize (no barriers, no shared memory; see
`brainslug.lowering.gpu_lanes`), so running every thread of the grid to
completion, one at a time, is a valid schedule of the launch. This module
compiles the LLVM IR that the nvptx backend feeds to NVPTX for x86-64 instead,
with the special registers (`tid.x`, `ctaid.x`, ...) read from a global that
the emulator sets before each thread, and libdevice calls mapped to libm.
`EmulatedCudaKernels` has the call contract of the CUDA runtime (its runners
are `CudaKernelRunner`s with the same slot layout and launch shapes) on numpy
arrays or CPU tensors, so the GPU mapping is tested numerically without a GPU.
"""

from __future__ import annotations

import ctypes
import itertools
import re
from collections.abc import Sequence
from typing import Any

import llvmlite.binding as llvm
import numpy as np
from xdsl.dialects.builtin import ModuleOp

from brainslug.dialects import loop
from brainslug.lowering.backends.nvptx import launches
from brainslug.lowering.gpu_lanes import MATH_FUNCTIONS
from brainslug.runtime.cuda import CudaKernelRunner

REGISTERS = (
    "tid.x", "tid.y", "tid.z", "ntid.x", "ntid.y", "ntid.z", "ctaid.x", "nctaid.x", "ctaid.y",
    "nctaid.y",
)
_PhaseFn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


def cpu_ir(text: str) -> str:
    """The nvptx LLVM IR of a module rewritten for the host: registers read
    `@bs.emu.regs`, kernels are plain functions, libdevice calls are libm calls."""
    text = text.replace("ptx_kernel ", "")
    text = re.sub(r'^target (triple|datalayout) = .*$', "", text, flags=re.M)
    text = re.sub(r'^declare i32 @"llvm\.nvvm\.read\.ptx\.sreg\.[^"]*"\(\)\s*$', "", text, flags=re.M)
    for fn, name in MATH_FUNCTIONS.items():
        text = text.replace(f'@"{name}"', f'@"{fn}f"')
    defs = [f"@bs.emu.regs = global [{len(REGISTERS)} x i32] zeroinitializer"]
    for i, reg in enumerate(REGISTERS):
        text = text.replace(f'@"llvm.nvvm.read.ptx.sreg.{reg}"', f'@"bs.emu.{reg}"')
        defs.append(
            f'define internal i32 @"bs.emu.{reg}"() {{\n'
            f"  %p = getelementptr [{len(REGISTERS)} x i32], ptr @bs.emu.regs, i32 0, i32 {i}\n"
            f"  %v = load i32, ptr %p\n  ret i32 %v\n}}"
        )
    return text + "\n" + "\n".join(defs) + "\n"


class EmulatedRunner(CudaKernelRunner):
    """A `CudaKernelRunner` whose launches run on the CPU emulator."""

    grid: int | None = None
    """Overrides the grid size of every parallel phase (None: the runtime's choice)."""
    block: tuple[int, int] | None = None
    """Overrides the block shape (x, y) of every phase."""

    def _check(self, i: int, buf: Any) -> tuple[int, tuple[int, ...]]:
        if isinstance(buf, np.ndarray):
            ok = buf.dtype == np.float32 and buf.flags.c_contiguous
            ptr, shape = buf.ctypes.data, buf.shape
        else:
            ok = buf.dtype.is_floating_point and buf.device.type == "cpu" and buf.is_contiguous()
            ptr, shape = buf.data_ptr(), tuple(buf.shape)
        expected = self.shapes[i]
        if not ok or len(shape) != len(expected) or any(
            s >= 0 and s != d for s, d in zip(expected, shape, strict=True)
        ):
            raise ValueError(f"{self.name}: buffer {i} does not fit {expected}: {shape}")
        return ptr, tuple(shape)

    def _scratch_for(self, args: Sequence[Any], batch: int, device: Any) -> list[Any]:
        return [np.empty(s, np.float32) for s in self.scratch_shapes(args, batch)]

    def __call__(self, buffers: Sequence[Any], batch_hint: int | None = None) -> None:
        n = len(buffers)
        batch = batch_hint or 1
        if batch_hint is None and self.shapes:
            batch = int(np.prod([d for d, s in zip(buffers[0].shape, self.shapes[0], strict=False) if s < 0]))
        if n == self.num_args and self.num_args < len(self.shapes):
            buffers = [*buffers, *self._scratch_for(buffers, batch, None)]
        slots = self._init.copy()
        for i, buf in enumerate(buffers):
            ptr, shape = self._check(i, buf)
            slot, dyn = self.layout[i]
            slots[slot] = ptr
            for d, s in dyn:
                slots[s] = shape[d]
        base = slots.ctypes.data
        shapes = self.launch_shapes(batch, self._owner.sms)
        for launch, fn, ((gx, gy, _), (bx, by, _)) in zip(
            self.launches, self.functions, shapes, strict=True
        ):
            if self.block is not None:
                bx, by = self.block
            if self.grid is not None:
                gx = self.grid
            self._owner.run(fn, base + 8 * self.phase_offsets[launch.first], (gx, gy), bx, by)


class EmulatedCudaKernels:
    """A module lowered for nvptx, compiled for the host and run thread by thread."""

    def __init__(self, module: ModuleOp, sms: int = 2):
        from brainslug.lowering.backends.nvptx import NVPTXBackend
        from brainslug.lowering.backends.x86 import X86Backend

        self.sms = sms
        host = X86Backend("host")  # also makes libm known to the JIT
        text = cpu_ir(str(NVPTXBackend().to_llvmlite(module)))
        tm = host.target_machine(jit=True)
        mod = llvm.parse_assembly(text)
        mod.triple = llvm.get_default_triple()
        mod.verify()
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=1))
        pb.getModulePassManager().run(mod, pb)
        self.engine = llvm.create_mcjit_compiler(mod, tm)
        self.engine.finalize_object()
        regs = self.engine.get_global_value_address("bs.emu.regs")
        self.regs = (ctypes.c_int32 * len(REGISTERS)).from_address(regs)
        self.kernels: dict[str, EmulatedRunner] = {}
        for op in module.ops:
            if isinstance(op, loop.KernelInfoOp):
                fns = [
                    _PhaseFn(self.engine.get_function_address(launch.entry))
                    for launch in launches(op)
                ]
                self.kernels[op.kernel.data] = EmulatedRunner(op, fns, self)

    def run(self, fn: Any, args: int, grid: tuple[int, int], bx: int, by: int) -> None:
        """One launch: every thread of a (grid, (bx, by)) launch, in turn."""
        r = self.regs
        r[3], r[4], r[5], r[7], r[9], r[2] = bx, by, 1, grid[0], grid[1], 0
        for gy, b, y, x in itertools.product(range(grid[1]), range(grid[0]), range(by), range(bx)):
            r[0], r[1], r[6], r[8] = x, y, b, gy
            fn(0, 0, args)

    def __getitem__(self, name: str) -> EmulatedRunner:
        return self.kernels[name]

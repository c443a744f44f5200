"""Runs nvptx-lowered kernels on the CPU, one GPU thread after another.

This module compiles the LLVM IR that the nvptx backend feeds to NVPTX for
x86-64 instead, with the special registers (`tid.x`, `ctaid.x`, ...) read from
a global that the emulator sets before each thread, and libdevice calls mapped
to libm. `EmulatedCudaKernels` has the call contract of the CUDA runtime (its
runners are `CudaKernelRunner`s with the same slot layout and launch shapes) on
numpy arrays or CPU tensors, so the GPU mapping is tested numerically without a
GPU.

A launch without barriers (lane and serial mode, see
`brainslug.lowering.gpu`) runs every thread of the grid to completion, one
at a time: its threads never synchronize, so that is a valid schedule. A launch
of a block-mode tile phase (shared memory, `bar.sync`) runs its blocks one after
another, and the threads of a block as coroutines (`makecontext`/`swapcontext`
on one OS thread, each with its own stack): a thread runs until its next
barrier and then passes control to the next thread of the block, so every
thread of the block arrives at a barrier before any leaves it. The shared
arrays are one copy, which the running block owns; they are filled with NaNs
before each block, so a read of a point no thread of the block wrote shows.
A thread that skips a barrier the others pass (divergent barriers, undefined
on a GPU) makes the launch raise. The schedule is deterministic (each thread
runs as far as it can), so a missing barrier between a writer and a reader
shows as wrong values rather than as a rare race.
"""

from __future__ import annotations

import ctypes
import itertools
import platform
import re
from collections.abc import Sequence
from typing import Any

import llvmlite.binding as llvm
import numpy as np
from xdsl.dialects.builtin import ModuleOp

from brainslug.dialects import loop
from brainslug.lowering.backends.nvptx import launches
from brainslug.lowering.gpu.nvvm import BARRIER, MATH_FUNCTIONS, SHARED_PREFIX
from brainslug.runtime.cuda import CudaKernelRunner

REGISTERS = (
    "tid.x", "tid.y", "tid.z", "ntid.x", "ntid.y", "ntid.z", "ctaid.x", "nctaid.x", "ctaid.y",
    "nctaid.y",
)
_PhaseFn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_Run = ctypes.CFUNCTYPE(None)

CONTEXT_BYTES = 8192
"""Room for one `ucontext_t` (968 bytes on x86-64 glibc, 4560 on aarch64)."""
STACK_BYTES = 128 * 1024
"""The stack of one emulated thread of a block-mode launch."""
POISON = 0x7FC0DEAD
"""A quiet NaN: the content of the shared arrays when a block starts."""

_SCHEDULER = """
@bs.emu.ctx = global ptr null
@bs.emu.stack = global ptr null
@bs.emu.bars = global ptr null
@bs.emu.fn = global ptr null
@bs.emu.args = global ptr null
@bs.emu.n = global i64 0
@bs.emu.cur = global i64 0
@bs.emu.done = global i64 0

declare i32 @getcontext(ptr)
declare void @makecontext(ptr, ptr, i32, ...)
declare i32 @swapcontext(ptr, ptr)
declare i32 @setcontext(ptr)

define internal ptr @bs.emu.context(i64 %i) {
  %base = load ptr, ptr @bs.emu.ctx
  %off = mul i64 %i, CONTEXT
  %p = getelementptr i8, ptr %base, i64 %off
  ret ptr %p
}

; thread %i of the block runs next: its tid.x and tid.y
define internal void @bs.emu.enter(i64 %i) {
  store i64 %i, ptr @bs.emu.cur
  %nxp = getelementptr [NREGS x i32], ptr @bs.emu.regs, i32 0, i32 3
  %nx = load i32, ptr %nxp
  %i32 = trunc i64 %i to i32
  %x = urem i32 %i32, %nx
  %y = udiv i32 %i32, %nx
  store i32 %x, ptr @bs.emu.regs
  %yp = getelementptr [NREGS x i32], ptr @bs.emu.regs, i32 0, i32 1
  store i32 %y, ptr %yp
  ret void
}

; bar.sync 0: count it, and pass control to the next thread of the block
define void @bs.emu.barrier() {
  %i = load i64, ptr @bs.emu.cur
  %bars = load ptr, ptr @bs.emu.bars
  %bp = getelementptr i64, ptr %bars, i64 %i
  %b = load i64, ptr %bp
  %b1 = add i64 %b, 1
  store i64 %b1, ptr %bp
  %n = load i64, ptr @bs.emu.n
  %j0 = add i64 %i, 1
  %wrap = icmp eq i64 %j0, %n
  %j = select i1 %wrap, i64 0, i64 %j0
  call void @bs.emu.enter(i64 %j)
  %from = call ptr @bs.emu.context(i64 %i)
  %to = call ptr @bs.emu.context(i64 %j)
  %r = call i32 @swapcontext(ptr %from, ptr %to)
  ret void
}

; a thread: the launch's entry, then the next thread (the launcher after the last)
define internal void @bs.emu.thread() {
  %i = load i64, ptr @bs.emu.cur
  %fn = load ptr, ptr @bs.emu.fn
  %args = load ptr, ptr @bs.emu.args
  call void %fn(i64 0, i64 0, ptr %args)
  %d = load i64, ptr @bs.emu.done
  %d1 = add i64 %d, 1
  store i64 %d1, ptr @bs.emu.done
  %n = load i64, ptr @bs.emu.n
  %j = add i64 %i, 1
  %last = icmp eq i64 %j, %n
  br i1 %last, label %launcher, label %next
launcher:
  %m = call ptr @bs.emu.context(i64 %n)
  %r1 = call i32 @setcontext(ptr %m)
  unreachable
next:
  call void @bs.emu.enter(i64 %j)
  %c = call ptr @bs.emu.context(i64 %j)
  %r2 = call i32 @setcontext(ptr %c)
  unreachable
}

; one block: a context per thread, then thread 0
define void @bs.emu.run_block() {
entry:
  %n = load i64, ptr @bs.emu.n
  %stack = load ptr, ptr @bs.emu.stack
  %bars = load ptr, ptr @bs.emu.bars
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %body]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %body, label %go
body:
  %ctx = call ptr @bs.emu.context(i64 %i)
  %r0 = call i32 @getcontext(ptr %ctx)
  %link = getelementptr i8, ptr %ctx, i64 8
  store ptr null, ptr %link
  %so = mul i64 %i, STACK
  %sp = getelementptr i8, ptr %stack, i64 %so
  %ssp = getelementptr i8, ptr %ctx, i64 16
  store ptr %sp, ptr %ssp
  %ssf = getelementptr i8, ptr %ctx, i64 24
  store i32 0, ptr %ssf
  %ssz = getelementptr i8, ptr %ctx, i64 32
  store i64 STACK, ptr %ssz
  call void (ptr, ptr, i32, ...) @makecontext(ptr %ctx, ptr @bs.emu.thread, i32 0)
  %bp = getelementptr i64, ptr %bars, i64 %i
  store i64 0, ptr %bp
  %i1 = add i64 %i, 1
  br label %loop
go:
  store i64 0, ptr @bs.emu.done
  call void @bs.emu.enter(i64 0)
  %launcher = call ptr @bs.emu.context(i64 %n)
  %first = call ptr @bs.emu.context(i64 0)
  %r = call i32 @swapcontext(ptr %launcher, ptr %first)
  ret void
}
"""
"""The coroutine scheduler of block-mode launches (`ucontext_t`'s `uc_link` at
byte 8 and `uc_stack` {ss_sp, ss_flags, ss_size} at 16, 24 and 32 on x86-64
and aarch64 Linux)."""


def cpu_ir(text: str) -> str:
    """The nvptx LLVM IR of a module rewritten for the host: registers read
    `@bs.emu.regs`, kernels are plain functions, libdevice calls are libm calls,
    shared arrays are plain globals and `bar.sync` is `@bs.emu.barrier`."""
    text = text.replace("ptx_kernel ", "")
    text = re.sub(r'^target (triple|datalayout) = .*$', "", text, flags=re.M)
    text = re.sub(r'^declare i32 @"llvm\.nvvm\.read\.ptx\.sreg\.[^"]*"\(\)\s*$', "", text, flags=re.M)
    for fn, name in MATH_FUNCTIONS.items():
        text = text.replace(f'@"{name}"', f'@"{fn}f"')
    # shared memory: one plain (exported) copy; its generic address is itself
    text = text.replace(" addrspace(3)", "")
    text = re.sub(r"addrspacecast ptr (\S+) to ptr", r"bitcast ptr \1 to ptr", text)
    text = re.sub(
        rf'^(@"{SHARED_PREFIX}\d+") = internal global (\[\d+ x i8\]) undef',
        r"\1 = global \2 zeroinitializer",
        text,
        flags=re.M,
    )
    text = re.sub(rf'^declare void @"{re.escape(BARRIER)}"\(\)\s*$', "", text, flags=re.M)
    text = text.replace(f'@"{BARRIER}"', '@"bs.emu.barrier"')
    defs = [f"@bs.emu.regs = global [{len(REGISTERS)} x i32] zeroinitializer"]
    for i, reg in enumerate(REGISTERS):
        text = text.replace(f'@"llvm.nvvm.read.ptx.sreg.{reg}"', f'@"bs.emu.{reg}"')
        defs.append(
            f'define internal i32 @"bs.emu.{reg}"() {{\n'
            f"  %p = getelementptr [{len(REGISTERS)} x i32], ptr @bs.emu.regs, i32 0, i32 {i}\n"
            f"  %v = load i32, ptr %p\n  ret i32 %v\n}}"
        )
    scheduler = (
        _SCHEDULER.replace("CONTEXT", str(CONTEXT_BYTES))
        .replace("STACK", str(STACK_BYTES))
        .replace("NREGS", str(len(REGISTERS)))
    )
    return text + "\n" + "\n".join(defs) + "\n" + scheduler


def _libc_symbols() -> None:
    """The ucontext functions for the JIT (from the process's libc)."""
    libc = ctypes.CDLL(None)
    for fn in ("getcontext", "makecontext", "swapcontext", "setcontext"):
        llvm.add_symbol(fn, ctypes.cast(getattr(libc, fn), ctypes.c_void_p).value)


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
        abi = self.abi
        abi.check_count(len(buffers))
        batch = abi.batch(buffers, batch_hint)
        if abi.needs_scratch(len(buffers)):
            buffers = [*buffers, *self._scratch_for(buffers, batch, None)]
        slots = abi.initial_slots.copy()
        abi.fill_slots(slots, [self._check(i, buf) for i, buf in enumerate(buffers)])
        base = slots.ctypes.data
        shapes = self.launch_shapes(batch, self._owner.sms)
        for launch, fn, ((gx, gy, _), (bx, by, _)) in zip(
            self.launches, self.functions, shapes, strict=True
        ):
            if self.block is not None:
                bx, by = self.block
            if self.grid is not None:
                gx = self.grid
            args = base + 8 * abi.phase_offsets[launch.first]
            if any(self.tiles[i] > 0 for i in range(launch.first, launch.first + launch.count)):
                self._owner.run_blocks(fn, args, (gx, gy), bx, by)
            else:
                self._owner.run(fn, args, (gx, gy), bx, by)


class EmulatedCudaKernels:
    """A module lowered for nvptx, compiled for the host and run thread by thread."""

    def __init__(self, module: ModuleOp, sms: int = 2):
        from brainslug.lowering.backends.nvptx import NVPTXBackend
        from brainslug.lowering.backends.x86 import X86Backend

        self.sms = sms
        host = X86Backend("host")  # also makes libm known to the JIT
        _libc_symbols()
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
        self.shared = [
            np.frombuffer(
                (ctypes.c_uint32 * (int(n) // 4)).from_address(
                    self.engine.get_global_value_address(f"{SHARED_PREFIX}{n}")
                ),
                np.uint32,
            )
            for n in sorted(set(re.findall(rf'^@"{SHARED_PREFIX}(\d+)" = global', text, re.M)))
        ]
        """The shared arrays (one copy, for the block that runs)."""
        self._run_block = _Run(self.engine.get_function_address("bs.emu.run_block"))
        self._globals = {
            name: ctypes.c_uint64.from_address(self.engine.get_global_value_address(f"bs.emu.{name}"))
            for name in ("ctx", "stack", "bars", "fn", "args", "n", "done")
        }
        self._memory: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.kernels: dict[str, EmulatedRunner] = {}
        for op in module.ops:
            if isinstance(op, loop.KernelInfoOp):
                fns = [
                    _PhaseFn(self.engine.get_function_address(launch.entry))
                    for launch in launches(op)
                ]
                self.kernels[op.kernel.data] = EmulatedRunner(op, fns, self)

    def run(self, fn: Any, args: int, grid: tuple[int, int], bx: int, by: int) -> None:
        """One launch without barriers: every thread of a (grid, (bx, by)) launch, in turn."""
        r = self.regs
        r[3], r[4], r[5], r[7], r[9], r[2] = bx, by, 1, grid[0], grid[1], 0
        for gy, b, y, x in itertools.product(range(grid[1]), range(grid[0]), range(by), range(bx)):
            r[0], r[1], r[6], r[8] = x, y, b, gy
            fn(0, 0, args)

    def run_blocks(self, fn: Any, args: int, grid: tuple[int, int], bx: int, by: int) -> None:
        """One launch with barriers: block after block, the threads of a block
        as coroutines that meet at every barrier (see the module doc)."""
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
            raise NotImplementedError("cuda_emulator: barriers need Linux on x86-64 or aarch64")
        n = bx * by
        ctx, stack, bars = self._buffers(n)
        g = self._globals
        g["ctx"].value, g["stack"].value, g["bars"].value = (
            ctx.ctypes.data, stack.ctypes.data, bars.ctypes.data,
        )
        g["fn"].value = ctypes.cast(fn, ctypes.c_void_p).value or 0
        g["args"].value, g["n"].value = args, n
        r = self.regs
        r[3], r[4], r[5], r[7], r[9], r[2] = bx, by, 1, grid[0], grid[1], 0
        for gy, b in itertools.product(range(grid[1]), range(grid[0])):
            r[6], r[8] = b, gy
            for a in self.shared:
                a[:] = POISON
            self._run_block()
            passed = bars[:n]
            if g["done"].value != n or (passed != passed[0]).any():
                raise RuntimeError(
                    f"cuda_emulator: the threads of block ({b}, {gy}) passed different numbers "
                    f"of barriers ({sorted(set(passed.tolist()))}): a barrier in divergent code"
                )

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Contexts (n threads and the launcher), stacks and barrier counts for n threads."""
        if self._memory is None or len(self._memory[2]) < n:
            self._memory = (
                np.zeros((n + 1) * CONTEXT_BYTES, np.uint8),
                np.empty(n * STACK_BYTES, np.uint8),  # untouched pages cost nothing
                np.zeros(n, np.int64),
            )
        return self._memory

    def __getitem__(self, name: str) -> EmulatedRunner:
        return self.kernels[name]

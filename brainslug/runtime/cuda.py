"""CUDA runtime: PTX from the nvptx backend, loaded and launched with cuda-python.

Importing this module needs neither a GPU nor cuda-python: `cuda.bindings.driver`
is imported on first use, and its absence raises an ImportError that says how
to install it. Kernels live in the primary context of the device that PyTorch
uses and run on PyTorch's current stream, on torch CUDA tensors by pointer.

`CompiledCudaKernels(module)` turns a module lowered by
`bs-lower-to-llvm{target=nvptx}` into PTX (kept in the on-disk kernel cache),
loads it with cuModuleLoadData and maps every `loop.kernel_info` to a
`CudaKernelRunner`, which has the call contract of the CPU `KernelRunner`: the
kernel's buffers in ABI order, optionally followed by its scratch buffers.

A runner keeps the kernel's i64 slot array (see `brainslug.runtime.abi`)
in device memory: the buffer slots change with the tensors' pointers and
extents, so each distinct content is uploaded once (stream-ordered) and then
reused; a plan with static buffers uploads nothing after its first call. The
phases of a kernel are separate launches on one stream, so each sees the
writes of the one before; a run of independent phases is one launch (see
`brainslug.lowering.backends.nvptx.launches`). A phase's block is `(x, y)`
threads with x its lane extent (capped at 256) and y rows, and its grid covers
its rows up to a few waves; a block-mode tile phase (one tile per block, its
scratch in shared memory) gets blocks of the threads it asks for and a block
per tile up to a few waves (the kernels are grid- and block-strided, so any
launch shape is correct).
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from brainslug.dialects import loop
from brainslug.runtime.abi import KernelAbi

INSTALL_HINT = "pip install 'brainslug[cuda]'  (or: pip install cuda-python)"
THREADS_PER_BLOCK = 256
MAX_LANES = 256
"""The most threads of a block that share one row (more lanes loop)."""
BLOCKS_PER_SM = 16
"""Grid size cap per multiprocessor (grid-stride loops do the rest)."""
SLOT_CACHE_SIZE = 64
"""Distinct slot contents kept on the device per kernel."""


def driver() -> Any:
    """`cuda.bindings.driver` (or the older `cuda.cuda`); ImportError with the
    install command when cuda-python is missing."""
    try:
        from cuda.bindings import driver as cu  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cuda as cu  # type: ignore[import-not-found,no-redef]
        except ImportError as e:
            raise ImportError(
                f"BrainSlug's CUDA backend needs cuda-python: {INSTALL_HINT}"
            ) from e
    return cu


def available() -> bool:
    """Whether cuda-python imports and PyTorch sees a CUDA device."""
    try:
        driver()
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def check(result: Any) -> Any:
    """Unpacks a cuda-python result tuple, raising RuntimeError on an error code."""
    cu = driver()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        _, text = cu.cuGetErrorString(err)
        raise RuntimeError(f"CUDA driver error {_decode(name)}: {_decode(text)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def _decode(s: Any) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def torch_context(device: Any = None) -> Any:
    """Makes PyTorch's primary context of `device` current on this thread; returns it."""
    import torch

    cu = driver()
    torch.cuda.init()
    dev = torch.device("cuda", torch.cuda.current_device()) if device is None else device
    dev = torch.device(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    with torch.cuda.device(index):
        torch.empty(1, device=dev)  # PyTorch has created its context and made it current
        check(cu.cuInit(0))
        ctx = check(cu.cuCtxGetCurrent())
        if ctx is None or int(ctx) == 0:
            handle = check(cu.cuDeviceGet(index))
            ctx = check(cu.cuDevicePrimaryCtxRetain(handle))
            check(cu.cuCtxSetCurrent(ctx))
    return ctx


def device_arch(device: Any = None) -> str:
    """`sm_XY` of a CUDA device (PyTorch's current one by default)."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def load_ptx(ptx: str) -> Any:
    """A CUmodule from PTX text (JIT-compiled by the driver for the current device)."""
    cu = driver()
    image = ctypes.create_string_buffer(ptx.encode())  # NUL-terminated, alive for the call
    return check(cu.cuModuleLoadData(ctypes.addressof(image)))


class CudaKernelRunner:
    """Launches one compiled kernel's phases on torch CUDA tensors."""

    def __init__(self, info: loop.KernelInfoOp, functions: Sequence[Any], owner: Any):
        from brainslug.lowering.backends.nvptx import launches

        abi = self.abi = KernelAbi.of(info)
        if abi.gpu is None:
            raise ValueError(f"{abi.name}: the kernel was not lowered for nvptx (no gpu_launch)")
        self.name, self.phase_names, self.shapes = abi.name, abi.phases, abi.shapes
        self.num_args, self.work, self.parallel = abi.num_args, abi.work, abi.parallel
        self.lanes, self.tiles = abi.gpu.lanes, abi.gpu.tiles
        """The lane extent and the tiles per batch item (0: not block mode) of each phase."""
        self.launches = launches(info)
        self.functions = list(functions)
        """The function of each launch."""
        self._owner = owner  # keeps the CUmodule loaded
        self._device_slots: dict[tuple[int, bytes], tuple[Any, set[int]]] = {}
        self._params: dict[int, tuple[Any, list[Any]]] = {}
        self._shapes: dict[int, list[tuple[tuple[int, int, int], tuple[int, int, int]]]] = {}
        self._scratch: dict[tuple[int, tuple[tuple[int, ...], ...]], list[Any]] = {}
        # per buffer: its expected shape and how many leading extents are dynamic
        # (None: a dynamic extent after a static one), for `_check`'s fast path
        self._expected = [(tuple(s), _leading_dynamic(s)) for s in self.shapes]
        self._streams: dict[int, Any] = {}  # raw stream -> cu.CUstream

    def __repr__(self) -> str:
        return f"CudaKernelRunner({self.name}, phases={self.phase_names}, buffers={self.shapes})"

    # ------------------------------------------------------------------ launch shape

    def launch_shape(
        self, i: int, batch: int, sms: int
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(grid, block) of phase `i` for a batch of `batch` on `sms` multiprocessors."""
        lanes = self.lanes[i]
        if self.tiles[i] > 0:  # block mode: a tile per block, `lanes` threads
            grid = min(self.tiles[i] * batch, sms * BLOCKS_PER_SM) if self.parallel[i] else 1
            return (max(grid, 1), 1, 1), (max(lanes, 1), 1, 1)
        if lanes == 1:  # serial: every thread is a row
            bx, by = THREADS_PER_BLOCK, 1
            rows = max(self.work[i] * batch, 1)
        else:
            bx = min(lanes if lanes > 0 else 128, MAX_LANES)
            by = max(1, THREADS_PER_BLOCK // bx)
            rows = max(math.ceil(self.work[i] * batch / max(lanes, 1)), 1)
        if not self.parallel[i]:
            return (1, 1, 1), (bx, 1, 1)
        grid = min(math.ceil(rows / (by if lanes != 1 else bx)), sms * BLOCKS_PER_SM)
        return (max(grid, 1), 1, 1), (bx, by, 1)

    def launch_shapes(
        self, batch: int, sms: int
    ) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """(grid, block) of each launch: the block of its phase with the most
        work, the largest grid of its phases, `grid.y` its phases."""
        out = []
        for launch in self.launches:
            phases = range(launch.first, launch.first + launch.count)
            shapes = [self.launch_shape(i, batch, sms) for i in phases]
            main = max(phases, key=lambda i: self.work[i] * (self.parallel[i] > 0))
            gx = max(g[0] for g, _ in shapes)
            out.append(((gx, launch.count, 1), shapes[main - launch.first][1]))
        return out

    # ------------------------------------------------------------------ buffers

    def scratch_shapes(self, args: Sequence[Any], batch: int) -> list[tuple[int, ...]]:
        return self.abi.scratch_shapes(args, batch)

    def _scratch_for(self, args: Sequence[Any], batch: int, device: Any) -> list[Any]:
        import torch

        shapes = self.scratch_shapes(args, batch)
        key = (device.index or 0, tuple(shapes))
        if (bufs := self._scratch.get(key)) is None:
            bufs = self._scratch[key] = [
                torch.empty(s, dtype=torch.float32, device=device) for s in shapes
            ]
        return bufs

    def _check(self, i: int, buf: Any) -> tuple[int, tuple[int, ...]]:
        import torch

        expected, lead = self._expected[i]
        if (lead is not None and isinstance(buf, torch.Tensor) and buf.dtype is torch.float32
                and buf.is_cuda and buf.is_contiguous()):
            shape = buf.shape
            if len(shape) == len(expected) and shape[lead:] == expected[lead:]:
                return buf.data_ptr(), shape
        return self._check_slowly(i, buf)

    def _check_slowly(self, i: int, buf: Any) -> tuple[int, tuple[int, ...]]:
        import torch

        expected = self.shapes[i]
        ok = (
            isinstance(buf, torch.Tensor)
            and buf.dtype == torch.float32
            and buf.device.type == "cuda"
            and buf.is_contiguous()
        )
        shape = tuple(buf.shape) if isinstance(buf, torch.Tensor) else ()
        if (
            not ok
            or len(shape) != len(expected)
            or any(s >= 0 and s != d for s, d in zip(expected, shape, strict=True))
        ):
            want = "x".join("?" if s < 0 else str(s) for s in expected)
            got = f"{getattr(buf, 'dtype', type(buf).__name__)} {shape} on {getattr(buf, 'device', '?')}"
            raise ValueError(
                f"{self.name}: buffer {i} must be a contiguous float32 CUDA tensor of "
                f"shape {want}, got {got}"
            )
        return buf.data_ptr(), shape

    def _slots_on_device(self, slots: np.ndarray, device: Any, stream: Any,
                         raw_stream: int) -> int:
        """Device address of a copy of `slots` (uploaded once per distinct content)."""
        import torch

        key = (device.index or 0, slots.tobytes())
        if (entry := self._device_slots.get(key)) is not None and raw_stream in entry[1]:
            return entry[0].data_ptr()
        current = torch.cuda.current_stream(device)
        if entry is None:
            if len(self._device_slots) >= SLOT_CACHE_SIZE:
                # the allocator reuses them in the order of their streams
                self._device_slots.clear()
                self._params.clear()
            t = torch.empty(len(slots), dtype=torch.int64, device=device)
            cu = driver()
            check(cu.cuMemcpyHtoDAsync(t.data_ptr(), slots.ctypes.data, slots.nbytes, stream))
            entry = self._device_slots[key] = (t, {current.cuda_stream})
        t, streams = entry
        if current.cuda_stream not in streams:  # used on another stream: keep it alive there
            t.record_stream(current)
            streams.add(current.cuda_stream)
        return t.data_ptr()

    def _kernel_params(self, address: int) -> int:
        """A `void**` array for (0, 0, address), kept alive and reused."""
        if (p := self._params.get(address)) is None:
            values = [ctypes.c_int64(0), ctypes.c_int64(0), ctypes.c_uint64(address)]
            array = (ctypes.c_void_p * 3)(*(ctypes.addressof(v) for v in values))
            p = self._params[address] = (array, values)
        return ctypes.addressof(p[0])

    # ------------------------------------------------------------------ calls

    def __call__(self, buffers: Sequence[Any], batch_hint: int | None = None) -> None:
        """Launches the kernel on PyTorch's current stream (asynchronously)."""
        import torch

        abi = self.abi
        abi.check_count(len(buffers))
        device = buffers[0].device if buffers else torch.device("cuda", torch.cuda.current_device())
        batch = abi.batch(buffers, batch_hint)
        if abi.needs_scratch(len(buffers)):
            buffers = [*buffers, *self._scratch_for(buffers, batch, device)]
        slots = abi.initial_slots.copy()
        abi.fill_slots(slots, [self._check(i, buf) for i, buf in enumerate(buffers)])
        if device.index is not None and device.index != torch.cuda.current_device():
            with torch.cuda.device(device):  # the context of the tensors' device
                self._launch(slots, batch, device)
        else:
            self._launch(slots, batch, device)

    def _launch(self, slots: np.ndarray, batch: int, device: Any) -> None:
        cu = driver()
        ctx = check(cu.cuCtxGetCurrent())
        if ctx is None or int(ctx) == 0:  # a thread on which PyTorch made no CUDA call yet
            check(cu.cuCtxSetCurrent(self._owner.context))
        raw = _raw_stream(device)
        if (stream := self._streams.get(raw)) is None:
            stream = self._streams[raw] = cu.CUstream(raw)
        base = self._slots_on_device(slots, device, stream, raw)
        if (shapes := self._shapes.get(batch)) is None:
            shapes = self._shapes[batch] = self.launch_shapes(
                batch, self._owner.multiprocessors(device)
            )
        ok = cu.CUresult.CUDA_SUCCESS
        for launch, fn, ((gx, gy, gz), (bx, by, bz)) in zip(
            self.launches, self.functions, shapes, strict=True
        ):
            params = self._kernel_params(base + 8 * self.abi.phase_offsets[launch.first])
            result = cu.cuLaunchKernel(fn, gx, gy, gz, bx, by, bz, 0, stream, params, 0)
            if (result[0] if isinstance(result, tuple) else result) != ok:
                check(result)


def _leading_dynamic(shape: Sequence[int]) -> int | None:
    """How many leading extents of `shape` are dynamic (< 0), or None when a
    dynamic extent follows a static one."""
    lead = 0
    while lead < len(shape) and shape[lead] < 0:
        lead += 1
    return None if any(d < 0 for d in shape[lead:]) else lead


def _raw_stream(device: Any) -> int:
    """The address of PyTorch's current stream on `device` (its private fast
    accessor where it has one: `current_stream()` costs ~10 µs a call)."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    if (fast := _raw_stream_accessor()) is not None:
        return int(fast(index))
    return torch.cuda.current_stream(index).cuda_stream


@functools.cache
def _raw_stream_accessor() -> Any:
    import torch

    return getattr(torch._C, "_cuda_getCurrentRawStream", None)


class CompiledCudaKernels:
    """A module's kernels loaded on a CUDA device; `kernels[name]` is a `CudaKernelRunner`."""

    def __init__(self, module: ModuleOp, cpu: str | None = None, device: Any = None):
        import torch

        from brainslug.lowering.backends.nvptx import NVPTXBackend, launches

        self.device = torch.device(device if device is not None else "cuda")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.context = torch_context(self.device)
        self.backend = NVPTXBackend(cpu or device_arch(self.device))
        self.ptx = ptx_for(module, self.backend)
        cu = driver()
        with torch.cuda.device(self.device):
            self.module = load_ptx(self.ptx)
            self.functions: dict[str, Any] = {}
            self.kernels: dict[str, CudaKernelRunner] = {}
            for op in module.ops:
                if isinstance(op, loop.KernelInfoOp):
                    fns = [self.function(launch.entry) for launch in launches(op)]
                    self.kernels[op.kernel.data] = CudaKernelRunner(op, fns, self)
        self._sms: dict[int, int] = {}
        self._cu = cu

    def function(self, name: str) -> Any:
        if (fn := self.functions.get(name)) is None:
            fn = self.functions[name] = check(driver().cuModuleGetFunction(self.module, name.encode()))
        return fn

    def multiprocessors(self, device: Any) -> int:
        index = device.index or 0
        if (n := self._sms.get(index)) is None:
            import torch

            n = self._sms[index] = torch.cuda.get_device_properties(index).multi_processor_count
        return n

    def __getitem__(self, name: str) -> CudaKernelRunner:
        return self.kernels[name]

    def __contains__(self, name: str) -> bool:
        return name in self.kernels

    def __del__(self) -> None:
        mod = getattr(self, "module", None)
        if mod is not None:
            try:
                self._cu.cuModuleUnload(mod)
            except Exception:
                pass


def ptx_for(module: ModuleOp, backend: Any) -> str:
    """The module's PTX, from the on-disk kernel cache when it was made before."""
    from brainslug.runtime import cache

    tm = backend.target_machine()
    text = str(backend.to_llvmlite(module, str(tm.target_data)))
    k = cache.key(backend.fingerprint(), "ptx", text)
    if (data := cache.load(k)) is not None:
        return data.decode()
    ptx = backend.emit_ptx(module)
    cache.store(k, ptx.encode())
    return ptx


def compile_cuda_kernels(module: ModuleOp, cpu: str | None = None, device: Any = None):
    """Loads every kernel of a module lowered for nvptx on a CUDA device."""
    return CompiledCudaKernels(module, cpu, device)

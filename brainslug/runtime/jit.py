"""JIT compilation of lowered kernels and a runner per kernel.

`compile_kernels` turns the `llvm.func` phases of a module that went through
bs-lower-to-llvm into machine code and maps every `loop.kernel_info` to a
`KernelRunner`. Each phase function is compiled on its own (LLVM O3 to an
object file), and its object code is kept in the on-disk kernel cache
(`brainslug.runtime.cache`), keyed by its LLVM IR and the target; the objects
are linked into one MCJIT engine per call. The symbol of a phase is derived
from that key, so the same code is loaded once.

A runner takes numpy arrays or torch CPU tensors (by data pointer, never
copied), writes their pointers and dynamic dims into the buffer slots of its
i64 slot array (the kernel ABI, see `brainslug.runtime.abi`; the phases'
parameter blocks that follow are constant) and calls the phases in order, each
with its own `args` pointer into that array, splitting a phase over the thread
pool when it has enough work.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Collection, Sequence
from typing import Any

import llvmlite.binding as llvm
import numpy as np
from xdsl.dialects.builtin import ModuleOp

from brainslug.dialects import loop
from brainslug.ir.compile_time import gc_paused
from brainslug.runtime.abi import KernelAbi, kernel_record
from brainslug.runtime.aligned import aligned_empty
from brainslug.runtime.forked import fork_map
from brainslug.runtime.threads import PhaseFn, Pool, default_pool

PARALLEL_THRESHOLD = 32 * 1024
"""A phase runs on all threads of a native pool when work * batch exceeds this
many points (dispatch costs a few microseconds)."""
PYTHON_POOL_THRESHOLD = 256 * 1024
"""The same for the Python thread pool, whose dispatch costs 50-80 microseconds."""

Fill = tuple[int, list[tuple[int, int]]]
"""What `shape_slots` returns: the scratch generation, and (slot, value) pairs."""


class KernelRunner:
    """Calls one compiled kernel on buffers in ABI order (arguments, then scratch)."""

    def __init__(
        self,
        info: loop.KernelInfoOp | dict[str, Any],
        phases: Sequence[Any],
        owner: CompiledKernels,
        pool: Pool | None = None,
    ):
        abi = self.abi = KernelAbi.of(info)
        self.name, self.phase_names, self.shapes = abi.name, abi.phases, abi.shapes
        self.num_args, self.work, self.phase_offsets = abi.num_args, abi.work, abi.phase_offsets
        self.phases = list(phases)
        self.phase_addrs = [ctypes.cast(f, ctypes.c_void_p).value for f in self.phases]
        self.pool = pool
        self._owner = owner  # keeps the execution engine alive
        self.slots = abi.initial_slots.copy()
        self._slots_ptr = self.slots.ctypes.data
        self._phase_args = [self._slots_ptr + 8 * o for o in self.phase_offsets]
        self._slots_lock = threading.Lock()
        self._scratch: dict[tuple[int, tuple[tuple[int, ...], ...]], list[np.ndarray]] = {}
        self._scratch_lock = threading.Lock()  # (made once: a fill points at them)
        self._generation = 0  # bumped when cached scratch is dropped (stale fast-path fills)

    def __repr__(self) -> str:
        return f"KernelRunner({self.name}, phases={self.phase_names}, buffers={self.shapes})"

    # ------------------------------------------------------------------ scratch

    def scratch_shapes(
        self, args: Sequence[Any] | None = None, batch: int = 1
    ) -> list[tuple[int, ...]]:
        """Shapes of the scratch buffers (see `KernelAbi.scratch_shapes`)."""
        return self.abi.scratch_shapes(args, batch)

    def _scratch_for(self, args: Sequence[Any], batch: int, cached: bool) -> list[np.ndarray]:
        shapes = self.scratch_shapes(args, batch)
        key = (batch, tuple(shapes))
        if not cached:
            return [aligned_empty(s) for s in shapes]
        with self._scratch_lock:
            if (bufs := self._scratch.get(key)) is None:
                bufs = self._scratch[key] = [aligned_empty(s) for s in shapes]
        return bufs

    def scratch_bytes(self) -> int:
        """Bytes of the cached scratch buffers."""
        return sum(a.nbytes for bufs in list(self._scratch.values()) for a in bufs)

    def release(self, batches: Collection[int] | None = None) -> None:
        """Drops the cached scratch buffers (of these batch sizes, or all);
        fast-path fills made before are then refused (`call_pointers`)."""
        with self._slots_lock, self._scratch_lock:
            for key in list(self._scratch):
                if batches is None or key[0] in batches:
                    del self._scratch[key]
            self._generation += 1

    # ------------------------------------------------------------------ calls

    def _check(self, i: int, buf: Any) -> tuple[int, tuple[int, ...]]:
        """(data pointer, shape) of a C-contiguous float32 array or CPU tensor."""
        expected = self.shapes[i]
        if isinstance(buf, np.ndarray):
            ok = buf.dtype == np.float32 and buf.flags.c_contiguous
            ptr, shape = buf.__array_interface__["data"][0], buf.shape
        elif type(buf).__module__.startswith("torch"):
            import torch

            ok = buf.dtype == torch.float32 and buf.device.type == "cpu" and buf.is_contiguous()
            ptr, shape = buf.data_ptr(), tuple(buf.shape)
        else:
            raise ValueError(f"{self.name}: buffer {i} is a {type(buf).__name__}, not an array")
        if (
            not ok
            or len(shape) != len(expected)
            or any(s >= 0 and s != d for s, d in zip(expected, shape, strict=True))
        ):
            want = "x".join("?" if s < 0 else str(s) for s in expected)
            raise ValueError(
                f"{self.name}: buffer {i} must be a C-contiguous float32 CPU array of shape "
                f"{want}, got {getattr(buf, 'dtype', '?')} {tuple(shape)}"
            )
        return ptr, shape

    def __call__(self, buffers: Sequence[Any], batch_hint: int | None = None) -> None:
        """Runs the kernel. `buffers` are the arguments, optionally followed by the
        scratch buffers (allocated and cached here when left out)."""
        abi = self.abi
        abi.check_count(len(buffers))
        batch = abi.batch(buffers, batch_hint)
        # a concurrent call gets its own slots and scratch
        locked = self._slots_lock.acquire(blocking=False)
        slots = self.slots if locked else abi.initial_slots.copy()
        try:
            if abi.needs_scratch(len(buffers)):
                buffers = [*buffers, *self._scratch_for(buffers, batch, locked)]
            abi.fill_slots(slots, [self._check(i, buf) for i, buf in enumerate(buffers)])
            if locked:
                phase_args = self._phase_args
            else:
                base = slots.ctypes.data
                phase_args = [base + 8 * o for o in self.phase_offsets]
            self._run(phase_args, batch)
        finally:
            if locked:
                self._slots_lock.release()

    def threads(self, pool: Pool, batch: int) -> list[int]:
        """On how many of the pool's threads each phase runs at this batch size."""
        threshold = PARALLEL_THRESHOLD if pool.native else PYTHON_POOL_THRESHOLD
        size = pool.size
        return [size if parallel and size > 1 and work * batch > threshold else 1
                for parallel, work in zip(self.abi.parallel, self.work, strict=True)]

    def _run(self, phase_args: Sequence[int], batch: int) -> None:
        pool = self.pool or default_pool()
        for i, n in enumerate(self.threads(pool, batch)):
            fn, args = self.phases[i], phase_args[i]
            if n > 1:
                pool.run(self.phase_addrs[i] if pool.native else fn, n, args)
            else:
                fn(0, 1, args)

    # ------------------------------------------------------------------ fast path

    def shape_slots(self, buffers: Sequence[Any], batch: int) -> Fill:
        """(slot, value) of everything but the argument pointers for arguments
        of these shapes: dynamic extents, and the cached scratch buffers.

        For callers that pass buffers of the same shapes over and over (a
        plan's stack kernels): after one checked call (`__call__`) with them,
        `call_pointers` runs the kernel on new pointers without checking again."""
        generation = self._generation  # (read first: a release after it refuses the fill)
        bufs = list(buffers)
        layout = self.abi.layout
        fill: list[tuple[int, int]] = []
        if self.abi.needs_scratch(len(bufs)):
            scratch = self._scratch_for(bufs, batch, True)
            for i, a in enumerate(scratch, start=self.num_args):
                fill.append((layout[i].pointer, a.ctypes.data))
            bufs += scratch
        for i, buf in enumerate(bufs):
            fill += [(s, int(buf.shape[d])) for d, s in layout[i].dims]
        return generation, fill

    def call_pointers(self, pointers: Sequence[int], fill: Fill, batch: int) -> bool:
        """Runs the kernel on argument data pointers, with the other slots from
        `shape_slots`. False (nothing run) when another thread holds the slots,
        or when the scratch that `fill` points at was released since: the
        caller then makes a checked call (and takes a new fill)."""
        if not self._slots_lock.acquire(blocking=False):
            return False
        try:
            generation, pairs = fill
            if generation != self._generation:
                return False
            slots = self.slots
            for where, p in zip(self.abi.layout, pointers, strict=False):
                slots[where.pointer] = p
            for slot, v in pairs:
                slots[slot] = v
            self._run(self._phase_args, batch)
        finally:
            self._slots_lock.release()
        return True


OPT_LEVEL = 2
"""LLVM's optimization level for kernels (its IR pipeline; code generation
stays at its aggressive level). O2 against O3, cold optimize() in a fresh
process (`bench --compile-time`): densenet121 4.6 against 5.3 s, resnet50 3.65
against 3.8 s, mobilenet_v2 5.2 against 6.1 s; the kernels ran as fast (whole
networks at batch 8, both plans in one process, timed interleaved: resnet50,
densenet121, mobilenet_v2, efficientnet_b0 0.99-1.00 of the time, swin_t
0.96)."""


class CompiledKernels:
    """Machine code of a module's kernels; `kernels[name]` is a `KernelRunner`.

    `stats` says how many phase functions were compiled and how many came from
    the kernel cache."""

    def __init__(
        self, module: ModuleOp, backend: Any = None, pool: Pool | None = None
    ):
        if backend is None:
            from brainslug.lowering.backends.x86 import backend_for

            backend = backend_for(module)
        self.backend = backend
        self.symbols: dict[str, str] = {}
        """Phase function name -> its symbol in the engine."""
        self.unit_keys: dict[str, str] = {}
        """Phase function name -> the kernel-cache key of its object code."""
        self.stats = {"compiled": 0, "cached": 0}
        if hasattr(backend, "phase_units"):
            with gc_paused():
                self._link_units(module)
        else:  # a backend without separate compilation: one module
            tm = backend.target_machine(jit=True)
            self.llvm_module = backend.build(module, OPT_LEVEL, tm)
            self.engine = llvm.create_mcjit_compiler(self.llvm_module, tm)  # owns tm
            self.engine.finalize_object()
        self._bind(module, pool)

    def _bind(self, infos: ModuleOp | list[dict[str, Any]], pool: Pool | None) -> None:
        """Runners of the kernels of a lowered module, or of their records
        (`abi.kernel_record`)."""
        self.kernels: dict[str, KernelRunner] = {}
        self.functions: dict[str, Any] = {}
        """Every phase function by name (kernels share them)."""
        records = infos if isinstance(infos, list) else [
            kernel_record(op) for op in infos.ops if isinstance(op, loop.KernelInfoOp)]
        for d in records:
            fns = [self.function(p) for p in d["phases"]]
            self.kernels[d["kernel"]] = KernelRunner(d, fns, self, pool)

    @classmethod
    def from_cache(
        cls,
        infos: list[dict[str, Any]],
        unit_keys: dict[str, str],
        backend: Any,
        pool: Pool | None = None,
    ) -> CompiledKernels | None:
        """The kernels of `infos` (`abi.kernel_record`s) from object code in the
        kernel cache, without lowering anything; None on a miss."""
        from brainslug.runtime import cache

        symbols = {name: f"bs_{k[:32]}" for name, k in unit_keys.items()}
        objects: dict[str, bytes] = {}
        for name, k in unit_keys.items():
            if symbols[name] not in objects:
                data = cache.load(k)
                if data is None:
                    return None
                objects[symbols[name]] = data
        return cls.from_objects(infos, symbols, objects, backend, pool, unit_keys)

    @classmethod
    def from_objects(
        cls,
        infos: list[dict[str, Any]],
        symbols: dict[str, str],
        objects: dict[str, bytes],
        backend: Any,
        pool: Pool | None = None,
        unit_keys: dict[str, str] | None = None,
    ) -> CompiledKernels:
        """The kernels of `infos` from object code (symbol -> its object file,
        phase function -> its symbol), as a saved plan stores them."""
        self = cls.__new__(cls)
        self.backend = backend
        self.symbols, self.unit_keys = dict(symbols), dict(unit_keys or {})
        self.stats = {"compiled": 0, "cached": len(objects)}
        self._link_objects(objects)
        self._bind(infos, pool)
        return self

    def _link_units(self, module: ModuleOp) -> None:
        from brainslug.runtime import cache

        backend = self.backend
        tm = backend.target_machine(jit=True)
        fingerprint = f"{backend.fingerprint()};O{OPT_LEVEL}"
        objects: dict[str, bytes] = {}
        todo: dict[str, tuple[str, str]] = {}
        for name, text in backend.phase_units(module, str(tm.target_data)):
            k = self.unit_keys[name] = cache.key(fingerprint, text)
            sym = self.symbols[name] = f"bs_{k[:32]}"
            if sym in objects or sym in todo:
                continue
            data = cache.load(k)
            if data is None:
                todo[sym] = (k, backend.named(text, sym))
            else:
                objects[sym] = data
        self.stats = {"compiled": len(todo), "cached": len(objects)}

        def build(text: str) -> bytes:
            return backend.compile_object(text, OPT_LEVEL)

        # in forked processes: llvmlite serializes every call into LLVM with a
        # global lock, so threads would compile one unit after the other
        built = fork_map(build, [text for _, text in todo.values()])
        for (sym, (k, _)), data in zip(todo.items(), built, strict=True):
            cache.store(k, data)
            objects[sym] = data
        self._link_objects(objects, tm)

    def _link_objects(self, objects: dict[str, bytes], tm: Any = None) -> None:
        """An execution engine holding `objects` (symbol -> object code)."""
        tm = tm or self.backend.target_machine(jit=True)
        empty = llvm.parse_assembly(f'target triple = "{llvm.get_default_triple()}"')
        self.engine = llvm.create_mcjit_compiler(empty, tm)  # owns tm
        self.objects = objects  # (what a saved plan stores)
        self._objects = [llvm.ObjectFileRef.from_data(data) for data in objects.values()]
        for obj in self._objects:
            self.engine.add_object_file(obj)
        self.engine.finalize_object()

    def function(self, name: str) -> Any:
        if (fn := self.functions.get(name)) is None:
            addr = self.engine.get_function_address(self.symbols.get(name, name))
            if not addr:
                raise KeyError(f"no compiled phase function {name}")
            fn = self.functions[name] = PhaseFn(addr)
        return fn

    def __getitem__(self, name: str) -> KernelRunner:
        return self.kernels[name]

    def __contains__(self, name: str) -> bool:
        return name in self.kernels


def compile_kernels(
    module: ModuleOp, backend: Any = None, pool: Pool | None = None
) -> CompiledKernels:
    """JIT-compiles every kernel of a module lowered by bs-lower-to-llvm."""
    return CompiledKernels(module, backend, pool)

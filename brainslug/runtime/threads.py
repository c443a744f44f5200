"""Persistent thread pools for the parallel phases of kernels.

A pool has N-1 worker threads plus the calling thread (N = `os.cpu_count()`,
or the environment variable `BRAINSLUG_NUM_THREADS`). `run(fn, n, *args)` calls
`fn(tid, n, *args)` for tid in 0..n-1, tid 0 on the calling thread, and waits.

- `ThreadPool`: Python threads. Compiled kernels are called through ctypes,
  which releases the GIL, so the calls really run in parallel. Dispatch is one
  lock hand-off per worker and one for completion, which costs tens of
  microseconds (two thread wake-ups through the GIL).
- `NativePool` (Linux x86-64): native threads, JIT-compiled from a little LLVM
  IR. Workers spin briefly on a generation counter, then sleep on a futex; a
  phase is a native function pointer called as `fn(tid, n, args)`. Dispatch
  costs a few microseconds and never touches the GIL.

- `OmpPool`: the OpenMP team of PyTorch's libgomp, through `GOMP_parallel`, so
  kernels and PyTorch's operators share one set of threads.

`default_pool()` is an OmpPool where PyTorch's libgomp is loaded, else a
NativePool where possible (BRAINSLUG_POOL=omp|native|python chooses).

After `fork`, GNU OpenMP's team is gone in the child, but libgomp does not
know it: a parallel region of more than one thread waits for it forever. In a
forked child, OmpPools therefore hand their phases to NativePools (whose
threads are started again in the child), and new pools are NativePools.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import sys
import threading
from collections.abc import Callable
from typing import Any

WORKER_STACK_SIZE = 64 << 20
"""Stack of each worker (per-tile scratch lives on the stack)."""


def asked_num_threads() -> int | None:
    """`BRAINSLUG_NUM_THREADS`, where it is set."""
    env = os.environ.get("BRAINSLUG_NUM_THREADS")
    return max(1, int(env)) if env else None


def default_num_threads() -> int:
    return asked_num_threads() or os.cpu_count() or 1


class ThreadPool:
    """Runs a function on `size` threads at once; reused across calls."""

    native = False

    def __init__(self, num_threads: int | None = None):
        self.size = num_threads or default_num_threads()
        self._go: list[threading.Lock] = []
        self._threads: list[threading.Thread] = []
        self._done = threading.Lock()
        self._done.acquire()
        self._count_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._pending = 0
        self._task: tuple[Callable[..., Any], int, tuple[Any, ...]] | None = None
        self._error: BaseException | None = None

    def _start(self) -> None:
        old = threading.stack_size()
        try:
            threading.stack_size(WORKER_STACK_SIZE)
            for tid in range(1, self.size):
                go = threading.Lock()
                go.acquire()
                self._go.append(go)
                t = threading.Thread(
                    target=self._worker, args=(tid, go), name=f"brainslug-{tid}", daemon=True
                )
                t.start()
                self._threads.append(t)
        finally:
            threading.stack_size(old)

    def _worker(self, tid: int, go: threading.Lock) -> None:
        while True:
            go.acquire()
            task = self._task
            if task is None:
                return
            fn, n, args = task
            if tid < n:
                try:
                    fn(tid, n, *args)
                except BaseException as e:  # reported by run()
                    self._error = e
            with self._count_lock:
                self._pending -= 1
                if self._pending == 0:
                    self._done.release()

    def run(self, fn: Callable[..., Any], n: int | None = None, *args: Any) -> None:
        """Calls `fn(tid, n, *args)` on n threads (at most `size`) and waits for all."""
        n = self.size if n is None else max(1, min(n, self.size))
        # one parallel run at a time; a concurrent or nested caller runs serially
        if n == 1 or not self._run_lock.acquire(blocking=False):
            fn(0, 1, *args)
            return
        try:
            if not self._threads:
                self._start()
            self._task = (fn, n, args)
            self._error = None
            self._pending = self.size - 1
            for go in self._go:
                go.release()
            try:
                fn(0, n, *args)
            finally:
                self._done.acquire()
                self._task = None
            if self._error is not None:
                raise self._error
        finally:
            self._run_lock.release()

    def run_phases(self, entries: int, count: int) -> None:
        """Runs `count` phases in order (see `NativePool.run_phases`), through
        ctypes: this pool has no native driver."""
        rows = (ctypes.c_int64 * (3 * count)).from_address(entries)
        for i in range(count):
            fn, args, n = rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]
            self.run(PhaseFn(fn), n, args)

    def shutdown(self) -> None:
        """Stops the workers (the pool restarts them on the next run)."""
        with self._run_lock:
            self._task = None
            for go in self._go:
                go.release()
            for t in self._threads:
                t.join()
            self._go.clear()
            self._threads.clear()


_NATIVE_IR = r"""
@gen = internal global i32 0, align 64
@done = internal global i32 0, align 64
@sleepers = internal global i32 0, align 64
@stop = internal global i32 0, align 4
@fn = internal global ptr null, align 8
@args = internal global ptr null, align 8
@n = internal global i64 0, align 8

declare i64 @syscall(i64, ...)
declare void @llvm.x86.sse2.pause()

define internal void @futex_wait(ptr %addr, i32 %val) {
  %v = zext i32 %val to i64
  %r = call i64 (i64, ...) @syscall(i64 202, ptr %addr, i64 128, i64 %v, ptr null)
  ret void
}

define internal void @futex_wake(ptr %addr) {
  %r = call i64 (i64, ...) @syscall(i64 202, ptr %addr, i64 129, i64 2147483647)
  ret void
}

; spins, then sleeps, until *addr != val; returns the new value
define internal i32 @wait_ne(ptr %addr, i32 %val, i1 %count_sleep) {
entry:
  br label %spin
spin:
  %i = phi i32 [ 0, %entry ], [ %i1, %pause ]
  %cur = load atomic i32, ptr %addr seq_cst, align 4
  %ne = icmp ne i32 %cur, %val
  br i1 %ne, label %out, label %pause
pause:
  call void @llvm.x86.sse2.pause()
  %i1 = add i32 %i, 1
  %more = icmp ult i32 %i1, SPIN
  br i1 %more, label %spin, label %sleep
sleep:
  br i1 %count_sleep, label %inc, label %wait
inc:
  %s0 = atomicrmw add ptr @sleepers, i32 1 seq_cst
  br label %wait
wait:
  call void @futex_wait(ptr %addr, i32 %val)
  %cur2 = load atomic i32, ptr %addr seq_cst, align 4
  %ne2 = icmp ne i32 %cur2, %val
  br i1 %ne2, label %woke, label %wait
woke:
  br i1 %count_sleep, label %dec, label %out2
dec:
  %s1 = atomicrmw sub ptr @sleepers, i32 1 seq_cst
  br label %out2
out:
  ret i32 %cur
out2:
  ret i32 %cur2
}

define ptr @bs_pool_worker(ptr %arg) {
entry:
  %tid = ptrtoint ptr %arg to i64
  br label %loop
loop:
  %my = phi i32 [ 0, %entry ], [ %g, %cont ]
  %g = call i32 @wait_ne(ptr @gen, i32 %my, i1 true)
  %st = load atomic i32, ptr @stop seq_cst, align 4
  %isstop = icmp ne i32 %st, 0
  br i1 %isstop, label %exit, label %work
work:
  %n = load i64, ptr @n, align 8
  %f = load ptr, ptr @fn, align 8
  %a = load ptr, ptr @args, align 8
  %mine = icmp slt i64 %tid, %n
  br i1 %mine, label %call, label %next
call:
  call void %f(i64 %tid, i64 %n, ptr %a)
  br label %next
next:
  %r = atomicrmw sub ptr @done, i32 1 seq_cst
  %last = icmp eq i32 %r, 1
  br i1 %last, label %wake, label %cont
wake:
  call void @futex_wake(ptr @done)
  br label %cont
cont:
  br label %loop
exit:
  ret ptr null
}

define void @bs_pool_run(ptr %f, i64 %n, ptr %a, i32 %workers) {
entry:
  store ptr %f, ptr @fn, align 8
  store ptr %a, ptr @args, align 8
  store i64 %n, ptr @n, align 8
  store atomic i32 %workers, ptr @done seq_cst, align 4
  %old = atomicrmw add ptr @gen, i32 1 seq_cst
  %sl = load atomic i32, ptr @sleepers seq_cst, align 4
  %any = icmp ne i32 %sl, 0
  br i1 %any, label %wake, label %mine
wake:
  call void @futex_wake(ptr @gen)
  br label %mine
mine:
  %run = icmp sgt i64 %n, 0
  br i1 %run, label %call, label %wait
call:
  call void %f(i64 0, i64 %n, ptr %a)
  br label %wait
wait:
  %d = load atomic i32, ptr @done seq_cst, align 4
  %finished = icmp eq i32 %d, 0
  br i1 %finished, label %out, label %sleep
sleep:
  %d2 = call i32 @wait_ne(ptr @done, i32 %d, i1 false)
  br label %wait
out:
  ret void
}

define void @bs_pool_reset() {
  store atomic i32 0, ptr @stop seq_cst, align 4
  store atomic i32 0, ptr @sleepers seq_cst, align 4
  store atomic i32 0, ptr @done seq_cst, align 4
  store atomic i32 0, ptr @gen seq_cst, align 4
  ret void
}

define void @bs_pool_stop() {
  store atomic i32 1, ptr @stop seq_cst, align 4
  %old = atomicrmw add ptr @gen, i32 1 seq_cst
  call void @futex_wake(ptr @gen)
  ret void
}
"""

_PHASES_IR = r"""
; runs `count` phases, each {fn, args, n}: on n threads where n > 1 (and not
; `serial`), else on this one; no Python between them
define void @bs_run_phases(ptr %entries, i64 %count, i32 %workers, i32 %serial) {
entry:
  %none = icmp sle i64 %count, 0
  %ser = icmp ne i32 %serial, 0
  br i1 %none, label %out, label %phase
phase:
  %i = phi i64 [ 0, %entry ], [ %i1, %next ]
  %e = getelementptr [3 x i64], ptr %entries, i64 %i
  %f = load ptr, ptr %e, align 8
  %ap = getelementptr i64, ptr %e, i64 1
  %a = load ptr, ptr %ap, align 8
  %np = getelementptr i64, ptr %e, i64 2
  %n = load i64, ptr %np, align 8
  %many = icmp sgt i64 %n, 1
  %notser = xor i1 %ser, true
  %par = and i1 %many, %notser
  br i1 %par, label %pool, label %one
pool:
  call void @RUN(ptr %f, i64 %n, ptr %a, i32 %workers)
  br label %next
one:
  call void %f(i64 0, i64 1, ptr %a)
  br label %next
next:
  %i1 = add i64 %i, 1
  %more = icmp slt i64 %i1, %count
  br i1 %more, label %phase, label %out
out:
  ret void
}
"""
"""The driver of `run_phases`, with RUN the pool's `run(fn, n, args, workers)`."""

_ENGINES: list[Any] = []

PhasesFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32)
"""`bs_run_phases(entries, count, workers, serial)`: entries are `count` rows of
int64 {phase function, its args pointer, threads}."""
PhaseFn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)

SPIN_ITERATIONS = 4096
"""`pause` iterations a native worker spins before it sleeps (tens of microseconds)."""


class NativePool:
    """Native worker threads driven by JIT-compiled code (Linux x86-64 only)."""

    native = True

    def __init__(self, num_threads: int | None = None):
        import llvmlite.binding as llvm

        self.size = num_threads or default_num_threads()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        mod = llvm.parse_assembly(_NATIVE_IR.replace("SPIN", str(SPIN_ITERATIONS))
                                  + _PHASES_IR.replace("RUN", "bs_pool_run"))
        mod.verify()
        tm = llvm.Target.from_default_triple().create_target_machine(opt=2, jit=True)
        self._engine = llvm.create_mcjit_compiler(mod, tm)
        self._engine.finalize_object()
        # sleeping workers run this code: never free it, stop them at exit
        _ENGINES.append(self._engine)
        atexit.register(self.shutdown)
        addr = self._engine.get_function_address
        self._run = ctypes.CFUNCTYPE(
            None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32
        )(addr("bs_pool_run"))
        self._stop = ctypes.CFUNCTYPE(None)(addr("bs_pool_stop"))
        self._reset = ctypes.CFUNCTYPE(None)(addr("bs_pool_reset"))
        self._phases = PhasesFn(addr("bs_run_phases"))
        self._worker = addr("bs_pool_worker")
        self._lock = threading.Lock()
        self._threads: list[ctypes.c_ulong] = []
        self._pid = -1

    def _start(self) -> None:
        self._reset()  # workers start waiting for generation 0 to change
        libc = ctypes.CDLL(None)
        attr = ctypes.create_string_buffer(64)
        libc.pthread_attr_init(attr)
        libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(WORKER_STACK_SIZE))
        for tid in range(1, self.size):
            handle = ctypes.c_ulong()
            err = libc.pthread_create(
                ctypes.byref(handle), attr, ctypes.c_void_p(self._worker), ctypes.c_void_p(tid)
            )
            if err:
                raise OSError(err, "pthread_create failed")
            self._threads.append(handle)
        libc.pthread_attr_destroy(attr)
        self._pid = os.getpid()

    def _address(self, fn: Any) -> int:
        return fn if isinstance(fn, int) else ctypes.cast(fn, ctypes.c_void_p).value  # type: ignore[return-value]

    def run(self, fn: Any, n: int | None = None, args: Any = None) -> None:
        """Calls the native `fn(tid, n, args)` (an address or ctypes function) on n threads."""
        n = self.size if n is None else max(1, min(n, self.size))
        if n == 1 or not self._lock.acquire(blocking=False):
            if not callable(fn):
                fn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)(fn)
            fn(0, 1, args)
            return
        try:
            if self._pid != os.getpid():  # not started yet, or forked
                self._threads.clear()
                self._start()
            self._run(self._address(fn), n, args, len(self._threads))
        finally:
            self._lock.release()

    def run_phases(self, entries: int, count: int) -> None:
        """Runs `count` phases in order in one native call: `entries` is the
        address of int64 rows {phase function, its args pointer, threads}
        (a row of more than one thread runs on the pool, clamped to its size).
        A concurrent or nested caller runs them all on its own thread."""
        if not self._lock.acquire(blocking=False):
            self._phases(entries, count, 0, 1)
            return
        try:
            if self._pid != os.getpid():
                self._threads.clear()
                self._start()
            self._phases(entries, count, len(self._threads), 1 if self.size == 1 else 0)
        finally:
            self._lock.release()

    def shutdown(self) -> None:
        """Stops and joins the workers (they restart on the next run)."""
        with self._lock:
            if self._threads and self._pid == os.getpid():
                self._stop()
                libc = ctypes.CDLL(None)
                for h in self._threads:
                    libc.pthread_join(h, None)
            self._threads.clear()
            self._pid = -1


_OMP_IR = r"""
%ctx = type { ptr, ptr }

declare void @GOMP_parallel(ptr, ptr, i32, i32)
declare i32 @omp_get_thread_num()
declare i32 @omp_get_num_threads()

define internal void @bs_omp_body(ptr %data) {
  %fp = getelementptr %ctx, ptr %data, i32 0, i32 0
  %f = load ptr, ptr %fp
  %ap = getelementptr %ctx, ptr %data, i32 0, i32 1
  %a = load ptr, ptr %ap
  %t = call i32 @omp_get_thread_num()
  %n = call i32 @omp_get_num_threads()
  %t64 = sext i32 %t to i64
  %n64 = sext i32 %n to i64
  call void %f(i64 %t64, i64 %n64, ptr %a)
  ret void
}

define void @bs_omp_run(ptr %f, i64 %n, ptr %a, i32 %unused) {
  %c = alloca %ctx
  %fp = getelementptr %ctx, ptr %c, i32 0, i32 0
  store ptr %f, ptr %fp
  %ap = getelementptr %ctx, ptr %c, i32 0, i32 1
  store ptr %a, ptr %ap
  %n32 = trunc i64 %n to i32
  call void @GOMP_parallel(ptr @bs_omp_body, ptr %c, i32 %n32, i32 0)
  ret void
}
"""


def loaded_libgomp() -> str | None:
    """Path of the GNU OpenMP runtime loaded in this process (PyTorch's), if any."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                if "/libgomp" in path and ".so" in path:
                    return path
    except OSError:
        pass
    return None


class OmpPool:
    """Phases run on the OpenMP team of the framework (GNU libgomp, loaded by
    PyTorch): the threads that just ran PyTorch's operator are still spinning
    and take the phase at once. A pool of our own would compete with them for
    the cores while they spin (on 2 cores, a 3x3 convolution interleaved with
    PyTorch calls ran at half speed on two NativePool threads).

    Unless a size is given (or `BRAINSLUG_NUM_THREADS`), the team is as large
    as the OpenMP runtime's `omp_get_max_threads()`, as PyTorch's operators'
    teams are: `torch.set_num_threads(1)` makes the kernels run on one thread
    too (a Ray actor given one core otherwise ran them on all)."""

    native = True

    def __init__(self, num_threads: int | None = None, libgomp: str | None = None):
        import llvmlite.binding as llvm

        path = libgomp or loaded_libgomp()
        if path is None:
            raise OSError("no libgomp in this process")
        self._fixed = num_threads or asked_num_threads()
        self._omp_max_threads = ctypes.CDLL(path).omp_get_max_threads
        self._omp_max_threads.restype = ctypes.c_int
        self._omp_max_threads.argtypes = []
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.load_library_permanently(path)
        mod = llvm.parse_assembly(_OMP_IR + _PHASES_IR.replace("RUN", "bs_omp_run"))
        mod.verify()
        tm = llvm.Target.from_default_triple().create_target_machine(opt=2, jit=True)
        self._engine = llvm.create_mcjit_compiler(mod, tm)
        self._engine.finalize_object()
        _ENGINES.append(self._engine)
        self._run = ctypes.CFUNCTYPE(
            None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32
        )(self._engine.get_function_address("bs_omp_run"))
        self._phases = PhasesFn(self._engine.get_function_address("bs_run_phases"))

    @property
    def size(self) -> int:
        """The team's size: the one given, else the OpenMP runtime's for this thread."""
        return self._fixed or max(1, self._omp_max_threads())

    def run(self, fn: Any, n: int | None = None, args: Any = None) -> None:
        """Calls the native `fn(tid, n, args)` on a team of (at most) n threads."""
        if _forked_from_omp:  # the team did not survive fork: threads of our own
            _native_after_fork(self.size).run(fn, n, args)
            return
        n = self.size if n is None else max(1, min(n, self.size))
        addr = fn if isinstance(fn, int) else ctypes.cast(fn, ctypes.c_void_p).value
        self._run(addr, n, args, 0)

    def run_phases(self, entries: int, count: int) -> None:
        """Runs `count` phases in order in one native call (see
        `NativePool.run_phases`), each of more than one thread on a team of
        at most that many."""
        if _forked_from_omp:
            _native_after_fork(self.size).run_phases(entries, count)
            return
        self._phases(entries, count, 0, 0)

    def shutdown(self) -> None:
        """Nothing to stop: the team belongs to the OpenMP runtime."""


def pool_kind() -> str:
    """`omp` where PyTorch's libgomp is loaded, else `native` where supported,
    else `python`; BRAINSLUG_POOL=omp|native|python chooses."""
    asked = os.environ.get("BRAINSLUG_POOL", "auto")
    if asked == "python" or not native_pool_supported():
        return "python"
    if asked in ("auto", "omp") and not _forked_from_omp and loaded_libgomp() is not None:
        return "omp"
    return "native"


def _new_pool(threads: int | None) -> ThreadPool | NativePool | OmpPool:
    kind = pool_kind()
    if kind == "omp":
        try:
            return OmpPool(threads)
        except (OSError, RuntimeError):
            kind = "native"
    return NativePool(threads) if kind == "native" else ThreadPool(threads)


def native_pool_supported() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


Pool = ThreadPool | NativePool | OmpPool

_default: Pool | None = None


def default_pool() -> Pool:
    """The process-wide pool (see `_pool_kind`)."""
    global _default
    if _default is None or (isinstance(_default, NativePool) and pool_kind() == "omp"):
        _default = _new_pool(None)  # (PyTorch may have been imported since)
    return _default


_sized: dict[int, Pool] = {}
_forked_from_omp = False
"""True in a forked child (where an OmpPool exists, libgomp was loaded before fork)."""
_native_pools: dict[int, NativePool] = {}


def _native_after_fork(size: int) -> NativePool:
    pool = _native_pools.get(size)
    if pool is None:
        pool = _native_pools[size] = NativePool(size)
    return pool


def _after_fork_in_child() -> None:
    # (only flags: a child of a threaded process must not take locks here)
    global _default, _forked_from_omp
    _forked_from_omp = True
    _default = None
    _sized.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def sized_pool(threads: int | None) -> Pool:
    """The process-wide pool (None), or one of `threads` threads, shared by
    every caller that asks for that many."""
    if threads is None:
        return default_pool()
    pool = _sized.get(threads)
    if pool is None or (isinstance(pool, NativePool) and pool_kind() == "omp"):
        pool = _sized[threads] = _new_pool(threads)
    return pool

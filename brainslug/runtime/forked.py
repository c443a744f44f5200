"""`fork_map`: a parallel map over forked worker processes.

For CPU-bound work that cannot run in parallel threads: llvmlite serializes
every call into LLVM with a process-wide lock, so a network's kernels compile
one after the other in threads. Forked children and this process take the
next item from a shared counter until none is left (the items' costs differ
tenfold: fixed shares left one process idle for a third of densenet121's
compile), and the children send their results back through a pipe (pickled). A child that fails leaves its items to this process, so
the result never depends on the children. The children only run `fn`: they
never touch the framework (whose thread pools do not survive a fork) and leave
with `os._exit`. No thread is inside LLVM when they are forked (llvmlite's
lock is held around the forks), and a child that never answers is killed and
its items computed here.

`BRAINSLUG_COMPILE_WORKERS=1` turns it off; another number caps the processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def workers() -> int:
    """How many processes `fork_map` uses (this one included)."""
    if not hasattr(os, "fork"):
        return 1
    env = os.environ.get("BRAINSLUG_COMPILE_WORKERS", "").strip()
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(
                f"BRAINSLUG_COMPILE_WORKERS must be a positive integer, got {env!r}"
            ) from None
    return max(1, n or 1)


def fork_map(fn: Callable[[T], Any], items: Sequence[T], min_items: int = 4) -> list[Any]:
    """`[fn(x) for x in items]`, shared between this process and forked children
    when there are at least `min_items` items and more than one core."""
    n = min(workers(), len(items) // max(1, min_items // 2))
    if n <= 1 or len(items) < min_items:
        return [fn(x) for x in items]
    taken = multiprocessing.Value("l", 0)  # the next item to take, shared by the processes

    def mine() -> dict[int, Any]:
        out = {}
        lock = taken.get_lock()
        while lock.acquire(timeout=TAKE_TIMEOUT):  # (a process killed holding it: stop)
            i = taken.value
            taken.value += 1
            lock.release()
            if i >= len(items):
                break
            out[i] = fn(items[i])
        return out

    children: list[tuple[int, int]] = []
    # No other thread may be inside LLVM when we fork: a child would wait for
    # ever on llvmlite's process-wide lock, held by a thread it does not have.
    # The forking thread holds it (reentrant) in the children too.
    with _llvm_lock():
        for _ in range(n - 1):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: compute what it takes, send it, leave
                status = 1
                try:
                    os.close(r)
                    data = pickle.dumps(mine())
                    with os.fdopen(w, "wb") as out:
                        out.write(data)
                    status = 0
                finally:
                    os._exit(status)
            os.close(w)
            children.append((pid, r))
    t0 = time.monotonic()
    results: dict[int, Any] = mine()
    # a child that is not done long after this process ran out of items is
    # stuck: this process computes its items (a hang here would hang optimize())
    deadline = time.monotonic() + CHILD_GRACE + 2 * (time.monotonic() - t0)
    for pid, r in children:
        data = _read_until(r, deadline)
        if data is None:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if status == 0 and data:
            try:
                results.update(pickle.loads(data))
            except Exception:  # a partial message: this process computes those
                pass
    return [results[i] if i in results else fn(items[i]) for i in range(len(items))]


TAKE_TIMEOUT = 10.0
"""Seconds a process waits to take the next item; past them it stops taking
(what is left, this process computes at the end)."""

CHILD_GRACE = 60.0
"""Seconds a compile child may take beyond twice this process's own share."""


def _llvm_lock() -> Any:
    """llvmlite's process-wide lock around every call into LLVM (a no-op
    context where llvmlite is not loaded or has none)."""
    ffi = sys.modules.get("llvmlite.binding.ffi")
    lock = getattr(getattr(ffi, "lib", None), "_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def _read_until(fd: int, deadline: float) -> bytes | None:
    """All of pipe `fd` (closed after), or None when the deadline passes first."""
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)

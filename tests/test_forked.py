"""fork_map: parallel compilation in forked processes, with a fallback."""

from __future__ import annotations

import os
import threading
import time

import pytest

from brainslug.runtime.forked import fork_map, workers


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _slow_square_and_pid(x: int) -> tuple[int, int]:
    time.sleep(0.01)
    return x * x, os.getpid()


def test_fork_map_keeps_order_and_uses_children(monkeypatch):
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "3")
    out = fork_map(_slow_square_and_pid, list(range(23)))
    assert [v for v, _ in out] == [x * x for x in range(23)]
    assert len({pid for _, pid in out}) == 3  # this process and two children


def test_fork_map_balances_items_of_unequal_cost(monkeypatch):
    """Each process takes the next item when it is done with one: a long item
    does not leave the others' share waiting behind it (fixed shares would
    give one process items 0, 2, 4, ...)."""
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "2")
    costs = [0.4] + [0.02] * 20

    def work(k: int) -> int:
        time.sleep(costs[k])
        return os.getpid()

    pids = fork_map(work, list(range(len(costs))))
    assert pids.count(pids[0]) == 1  # whoever took the long item took no other
    assert len(set(pids)) == 2


def test_fork_map_recomputes_what_a_child_failed(monkeypatch):
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "2")
    parent = os.getpid()

    def only_here(x: int) -> int:
        if os.getpid() != parent:
            raise RuntimeError("a child fails")
        return x + 1

    assert fork_map(only_here, list(range(9))) == list(range(1, 10))


def test_fork_map_serial_when_asked(monkeypatch):
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "1")
    out = fork_map(_square_and_pid, list(range(8)))
    assert {pid for _, pid in out} == {os.getpid()}


def test_bad_worker_count_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="BRAINSLUG_COMPILE_WORKERS"):
        workers()


def test_fork_map_kills_a_child_that_never_answers(monkeypatch):
    import brainslug.runtime.forked as forked

    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "2")
    monkeypatch.setattr(forked, "CHILD_GRACE", 0.5)
    parent = os.getpid()

    def stuck_in_children(x: int) -> int:
        if os.getpid() != parent:
            time.sleep(3600)
        return -x

    t = time.monotonic()
    assert fork_map(stuck_in_children, list(range(8))) == [-x for x in range(8)]
    assert time.monotonic() - t < 30


def test_fork_map_waits_for_llvm_calls_of_other_threads(monkeypatch):
    """A thread inside LLVM while another forks: the children would inherit
    llvmlite's lock held by a thread they don't have and wait for ever (the
    4-thread optimize() of the deploy check hung so)."""
    import llvmlite.binding as llvm
    from llvmlite.binding import ffi

    from brainslug.lowering.backends.x86 import X86Backend

    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "2")
    backend = X86Backend("host")
    text = ('define void @f(ptr %p) {\n  store float 1.0, ptr %p\n  ret void\n}\n')
    held = threading.Event()
    release = threading.Event()

    def hold_llvm() -> None:
        with ffi.lib._lock:
            held.set()
            release.wait(10)
        llvm.parse_assembly(text)

    other = threading.Thread(target=hold_llvm)
    other.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()  # it leaves LLVM only after fork_map began
    t = time.monotonic()
    out = fork_map(lambda _: len(backend.compile_object(text)), list(range(6)))
    other.join()
    assert all(n > 0 for n in out)
    assert time.monotonic() - t < 60

"""fork_map: parallel compilation in forked processes, with a fallback."""

from __future__ import annotations

import os

import pytest

from brainslug.runtime.forked import fork_map, workers


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_fork_map_keeps_order_and_uses_children(monkeypatch):
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "3")
    out = fork_map(_square_and_pid, list(range(23)))
    assert [v for v, _ in out] == [x * x for x in range(23)]
    assert len({pid for _, pid in out}) == 3  # this process and two children


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

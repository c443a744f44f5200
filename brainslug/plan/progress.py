"""One line of progress on a terminal while a cold `optimize()` runs long.

`showing(verbose)` wraps an `optimize()`; inside it, `note(phase, done,
total)` says where it is. Nothing is written during the first `DELAY`
seconds (a warm `optimize()` stays silent), nor when stderr is not a
terminal, nor with `verbose=False`. The line is redrawn in place (`\\r`) and
erased when the block ends, so a finished `optimize()` leaves no trace.
Notes from another thread than the one that opened the block, and from
forked compile workers, are ignored.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

DELAY = 2.0
"""Seconds of silence before the line appears."""


class _Line:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self.start = time.monotonic()
        self.pid = os.getpid()
        self.thread = threading.get_ident()
        self.width = 0

    def draw(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed < DELAY:
            return
        line = f"BrainSlug: {text} ({elapsed:.0f} s)"
        pad = max(0, self.width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self.width = max(self.width, len(line))

    def erase(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


_line: _Line | None = None


def _on_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def showing(verbose: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Shows `note`s on `stream` (stderr) while the block runs, if it is a
    terminal and `verbose`; re-entrant (an inner block changes nothing)."""
    global _line
    stream = stream if stream is not None else sys.stderr
    if _line is not None or not verbose or not _on_terminal(stream):
        yield
        return
    _line = line = _Line(stream)
    try:
        yield
    finally:
        _line = None
        line.erase()


def note(phase: str, done: int | None = None, total: int | None = None) -> None:
    """Where a long `optimize()` is: a phase, and how many of its units are
    done (shown only inside `showing`, on its thread and in its process)."""
    line = _line
    if line is None or line.pid != os.getpid() or line.thread != threading.get_ident():
        return
    line.draw(phase if total is None else f"{phase} {done}/{total}")

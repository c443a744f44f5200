"""Helpers that keep compile time down.

`gc_paused()`: xDSL IR is full of reference cycles (an op points to its block,
the block to its ops, values to their uses), so while a pass creates tens of
thousands of objects, Python's cyclic garbage collector keeps running full
collections that walk the whole module. On DenseNet-121 that was about a
quarter of the compile time (9 full collections of ~0.1 s). The passes pause it
while they run; garbage is collected as usual afterwards. A caller that runs a
whole pipeline can wrap all of it (`with gc_paused(): ...`), which also covers
the passes that do not pause it themselves.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_FROZEN = [False]
"""Whether an enclosing `gc_paused` froze the heap (`gc.get_freeze_count` walks
every frozen object, ~50 ms with PyTorch loaded, so it is asked only once)."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keeps the cyclic garbage collector off the objects that exist on entry
    (re-entrant). They are frozen (`gc.freeze`), so collections inside the
    block only look at what the block creates, and thawed on exit. Inside such
    a block, a nested one disables the collector and, on exit, freezes what it
    created too (the next collections don't walk it again); where the program
    froze objects itself, the collector is just disabled instead."""
    if not gc.isenabled():
        yield
        return
    if _FROZEN[0] or gc.get_freeze_count():
        refreeze = _FROZEN[0]
        gc.disable()
        try:
            yield
        finally:
            if refreeze:
                gc.freeze()
            gc.enable()
        return
    gc.freeze()
    _FROZEN[0] = True
    try:
        yield
    finally:
        _FROZEN[0] = False
        gc.unfreeze()

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


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keeps the cyclic garbage collector off the objects that exist on entry
    (re-entrant). They are frozen (`gc.freeze`), so collections inside the
    block only look at what the block creates, and thawed on exit; where the
    program froze objects itself, the collector is just disabled instead."""
    if not gc.isenabled():
        yield
        return
    if gc.get_freeze_count():
        gc.disable()
        try:
            yield
        finally:
            gc.enable()
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

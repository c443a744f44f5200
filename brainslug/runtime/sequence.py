"""A run of kernels in one native call.

Between two compiled stacks with no framework layer between them, nothing
needs Python: `PhaseProgram` holds, for a run of kernel calls at one set of
argument shapes, a slot array per call (the kernel's ABI slots, with the
dynamic extents and scratch pointers of `KernelRunner.shape_slots`) and a
table of every phase of every call {function, args, threads}. The pool's
native driver runs the table in one call (`run_phases`), with the GIL
released throughout. The caller sets the argument pointers that change
between calls (`values`) and runs it.

A call of a plan's stack through `KernelRunner.call_pointers` costs 15-20 µs
of Python (pointers, slots, one ctypes call per phase, the pool's dispatch
per parallel phase); resnet50 has 55 stacks, mobilenet_v2 at batch 1 runs
in 7 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainslug.runtime.jit import Fill, KernelRunner
from brainslug.runtime.threads import Pool, default_pool


class PhaseProgram:
    """Kernel calls (runner, fill from `shape_slots`, batch size) run in order
    as one native call, each on a slot array of its own: one runner may be
    called twice in a run, and a concurrent call of a runner on its own slots
    does not disturb the program."""

    def __init__(self, calls: Sequence[tuple[KernelRunner, Fill, int]]):
        if not calls:
            raise ValueError("a phase program needs at least one kernel call")
        pools = {id(r.pool or default_pool()) for r, _, _ in calls}
        if len(pools) != 1:
            raise ValueError("the kernels of a phase program must share one thread pool")
        self.runners = [r for r, _, _ in calls]
        self.pool: Pool = self.runners[0].pool or default_pool()
        self._batches = [b for _, _, b in calls]
        self._generations = [fill[0] for _, fill, _ in calls]
        self._distinct = list({id(r): r for r in self.runners}.values())
        # every call's slots, one after the other in one array
        self._starts = np.cumsum([0] + [len(r.abi.initial_slots) for r in self.runners]).tolist()
        self.flat = np.concatenate([r.abi.initial_slots for r in self.runners])
        self.slots: list[np.ndarray] = []
        rows: list[tuple[int, int]] = []
        for k, (runner, (_, pairs), _) in enumerate(calls):
            slots = self.flat[self._starts[k]:self._starts[k + 1]]
            for slot, value in pairs:
                slots[slot] = value
            self.slots.append(slots)
            base = slots.ctypes.data
            rows += [(addr, base + 8 * offset)
                     for addr, offset in zip(runner.phase_addrs, runner.phase_offsets, strict=True)]
        self._entries = np.zeros((len(rows), 3), np.int64)
        self._entries[:, :2] = rows
        self._table = (self._entries.ctypes.data, len(self._entries))  # (ctypes.data: 0.8 µs)
        self._size = -1  # the pool size the thread counts are for

    def pointer_index(self, call: int, buffer: int) -> int:
        """Where in `flat` (all calls' slots) call `call` takes the pointer of
        its buffer `buffer` (ABI order: arguments, then scratch)."""
        return self._starts[call] + self.runners[call].abi.layout[buffer].pointer

    def values(self, index: np.ndarray, values: Sequence[int] | np.ndarray) -> None:
        """Sets `flat[index[i]] = values[i]` (pointers that may change between runs)."""
        self.flat[index] = values

    def _thread_counts(self) -> None:
        counts: list[int] = []
        for runner, batch in zip(self.runners, self._batches, strict=True):
            counts += runner.threads(self.pool, batch)
        self._entries[:, 2] = counts
        self._size = self.pool.size

    def run(self) -> bool:
        """Runs every phase of every call; False (nothing run) where another
        thread holds a runner (its cached scratch is in use) or a runner's
        scratch was released since the fills were taken."""
        taken = []
        try:
            for r in self._distinct:
                if not r._slots_lock.acquire(blocking=False):
                    return False
                taken.append(r)
            if any(r._generation != g for r, g in zip(self.runners, self._generations,
                                                       strict=True)):
                return False
            if self.pool.size != self._size:
                self._thread_counts()
            self.pool.run_phases(*self._table)
            return True
        finally:
            for r in taken:
                r._slots_lock.release()

"""Consecutive stack steps of a TensorFlow schedule as one native call.

With its convolutions compiled, a Keras CNN's schedule is long runs of
stacks with no TensorFlow op between them. Step by step, each stack costs
numpy views of its inputs, a kernel call from Python and DLPack tensors of
its outputs. `KernelRun` runs such a run's kernels in one native call
(`runtime.sequence.PhaseProgram`) once a step-by-step pass has checked them,
and makes TensorFlow tensors only of the outputs that something after the
run reads."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainslug.runtime.sequence import PhaseProgram


def pointer(a: np.ndarray) -> int:
    """The address of an array's data."""
    return a.__array_interface__["data"][0]


Source = tuple[str, Any, Any]
"""What one pointer of a run's slots holds: ("in", value name, shape), an
input from before the run; ("out", stack of the run, output index)."""


@dataclass
class _Fixed:
    """A run's pointers into one thread's arena storage for a batch size:
    the slot values with every arena output's pointer set, and the arena
    views of the outputs read after the run."""

    store: Sequence[np.ndarray]
    values: np.ndarray
    views: dict[tuple[int, int], np.ndarray]


class _Prepared:
    """A run at one set of input shapes: the program, and where each pointer
    that may change between calls goes in its slots. The arena outputs'
    pointers are set once per storage (`_Fixed`); a call sets the inputs'
    and the fresh outputs' pointers only."""

    def __init__(self, program: PhaseProgram, index: np.ndarray, sources: list[Source],
                 outputs: list[list[tuple[tuple[int, ...], int | None]]],
                 published: list[tuple[str, int, int]]):
        self.program, self.index, self.outputs = program, index, outputs
        self.sources = sources
        self.published = published  # (value, stack, output) read after the run
        at: dict[Any, list[int]] = {}
        for k, (kind, a, b) in enumerate(sources):
            at.setdefault((kind, a, b), []).append(k)
        self.inputs = [(a, b, np.asarray(ks, np.int64))
                       for (kind, a, b), ks in at.items() if kind == "in"]
        self.fresh = [(outputs[a][b][0], (a, b), np.asarray(ks, np.int64))
                      for (kind, a, b), ks in at.items()
                      if kind == "out" and outputs[a][b][1] is None]
        self._fixed: _Fixed | None = None

    def fixed(self, store: Sequence[np.ndarray]) -> _Fixed:
        """The arena pointers and views for `store` (one thread's storage of
        one batch size: the same list on every call of that thread)."""
        f = self._fixed
        if f is not None and f.store is store:
            return f
        values = np.zeros(len(self.sources), np.int64)
        views: dict[tuple[int, int], np.ndarray] = {}
        for k, (kind, a, b) in enumerate(self.sources):
            if kind == "out" and (slot := self.outputs[a][b][1]) is not None:
                dims = self.outputs[a][b][0]
                view = views.get((a, b))
                if view is None:
                    view = views[(a, b)] = store[slot][: math.prod(dims)].reshape(dims)
                values[k] = pointer(view)
        self._fixed = _Fixed(store, values, views)  # (threads: the last storage used)
        return self._fixed


class KernelRun:
    """Steps `start` to `end` (exclusive) of a schedule, all stacks."""

    def __init__(self, steps: Sequence[Any], start: int, end: int, needed: set[str]):
        self.start, self.end = start, end
        self.steps = list(steps[start:end])
        self.needed = needed  # outputs read after the run
        self._made = {s.stack.outputs[j]: (i, j) for i, s in enumerate(self.steps)
                      for j in range(len(s.stack.outputs))}
        self._inputs = list(dict.fromkeys(
            i for s in self.steps for i in s.stack.inputs
            if isinstance(i, str) and i not in self._made))  # read from before the run
        self._prepared: dict[tuple[Any, ...], _Prepared | None] = {}
        self._lock = threading.Lock()

    def _key(self, env: dict[str, Any], batch: int) -> tuple[Any, ...]:
        return (batch, *(tuple(env[i].shape) for i in self._inputs))

    def __call__(self, env: dict[str, Any], batch: int, store: Sequence[np.ndarray],
                 to_tf: Callable[[np.ndarray], Any],
                 empty: Callable[[tuple[int, ...]], np.ndarray]) -> bool:
        """Runs the steps natively, their needed outputs into `env`; False
        (nothing run) where they are not prepared for these shapes yet, or
        can't run natively this time."""
        prepared = self._prepared.get(self._key(env, batch))
        if prepared is None or not self._lock.acquire(blocking=False):
            return False
        try:
            fixed = prepared.fixed(store)
            values = fixed.values.copy()
            for name, shape, at in prepared.inputs:
                a = np.asarray(env[name])
                if not a.flags.c_contiguous or a.shape != shape or a.dtype != np.float32:
                    return False
                values[at] = pointer(a)
            made: dict[tuple[int, int], np.ndarray] = {}
            for dims, key, at in prepared.fresh:
                a = made[key] = empty(dims)
                values[at] = pointer(a)
            prepared.program.values(prepared.index, values)
            if not prepared.program.run():
                return False
        finally:
            self._lock.release()
        for name, i, j in prepared.published:
            a = made.get((i, j))
            env[name] = to_tf(fixed.views[(i, j)] if a is None else a)
        return True

    def prepare(self, env: dict[str, Any], batch: int, fills: dict[tuple, Any],
                assignment: dict[Any, int]) -> None:
        """After a step-by-step pass over the run at these shapes (`env` holds
        every value it read and made; `fills` the `FastCalls` fills), the
        native call that repeats it."""
        key = self._key(env, batch)
        if key in self._prepared:
            return
        self._prepared[key] = None
        calls, index = [], []
        sources: list[Source] = []
        outputs: list[list[tuple[tuple[int, ...], int | None]]] = []
        for i, s in enumerate(self.steps):
            st = s.stack
            bufs = [np.asarray(env[x]) if isinstance(x, str) else x.value for x in st.inputs]
            dims = [tuple(batch if d < 0 else d for d in sh) for sh in st.output_shapes]
            fill = fills.get((self.start + i, batch, *(b.shape for b in bufs), *dims))
            if fill is None or not hasattr(s.runner, "abi") or any(
                    not b.flags.c_contiguous for b in bufs):
                return
            calls.append((s.runner, fill, batch))
            order = []
            for j, x in enumerate(st.inputs):
                if isinstance(x, str) and x not in self._made:
                    sources.append(("in", x, tuple(bufs[j].shape)))
                    order.append(j)
            for j, x in enumerate(st.inputs):
                if isinstance(x, str) and x in self._made:
                    sources.append(("out", *self._made[x]))
                    order.append(j)
            sources += [("out", i, j) for j in range(len(dims))]
            order += range(len(bufs), len(bufs) + len(dims))
            outputs.append([(d, assignment.get((st.name, j))) for j, d in enumerate(dims)])
            index.append((i, order, bufs))
        try:
            program = PhaseProgram(calls)
        except ValueError:
            return
        flat = []
        for i, order, bufs in index:
            for j, x in enumerate(self.steps[i].stack.inputs):  # bound arrays: set once
                if not isinstance(x, str):
                    program.values(np.asarray([program.pointer_index(i, j)]),
                                   [pointer(bufs[j])])
            flat += [program.pointer_index(i, j) for j in order]
        published = [(o, i, j) for i, s in enumerate(self.steps)
                     for j, o in enumerate(s.stack.outputs) if o in self.needed]
        self._prepared[key] = _Prepared(program, np.asarray(flat, np.int64), sources,
                                        outputs, published)


def kernel_runs(steps: Sequence[Any], outputs: Sequence[str],
                min_stacks: int = 2) -> dict[int, KernelRun]:
    """The runs of at least `min_stacks` consecutive stack steps, by first step."""
    reads: list[set[str]] = []
    for st in steps:
        names = st.piece.inputs if st.piece is not None else st.stack.inputs
        reads.append({x for x in names if isinstance(x, str)})
    runs: dict[int, KernelRun] = {}
    k = 0
    while k < len(steps):
        end = k
        while end < len(steps) and steps[end].stack is not None:
            end += 1
        if end - k >= min_stacks:
            after = set(outputs).union(*(reads[i] for i in range(len(steps))
                                         if not k <= i < end))
            runs[k] = KernelRun(steps, k, end, after)
        k = max(end, k + 1)
    return runs

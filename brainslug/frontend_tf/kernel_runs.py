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


@dataclass
class _Prepared:
    program: PhaseProgram
    index: np.ndarray
    external: list[list[tuple[str, tuple[int, ...]]]]  # per stack: (value, shape)
    internal: list[list[tuple[int, int]]]  # per stack: (stack of the run, output)
    outputs: list[list[tuple[tuple[int, ...], int | None]]]  # per stack: (dims, arena slot)


class KernelRun:
    """Steps `start` to `end` (exclusive) of a schedule, all stacks."""

    def __init__(self, steps: Sequence[Any], start: int, end: int, needed: set[str]):
        self.start, self.end = start, end
        self.steps = list(steps[start:end])
        self.needed = needed  # outputs read after the run
        self._made = {s.stack.outputs[j]: (i, j) for i, s in enumerate(self.steps)
                      for j in range(len(s.stack.outputs))}
        self._prepared: dict[tuple[Any, ...], _Prepared | None] = {}
        self._lock = threading.Lock()

    def _key(self, env: dict[str, Any], batch: int) -> tuple[Any, ...]:
        return (batch, *(tuple(env[i].shape) for s in self.steps for i in s.stack.inputs
                         if isinstance(i, str) and i not in self._made))

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
            values: list[int] = []
            arrays: list[list[np.ndarray]] = []
            for ext, internal, outs in zip(prepared.external, prepared.internal,
                                           prepared.outputs, strict=True):
                for name, shape in ext:
                    a = np.asarray(env[name])
                    if not a.flags.c_contiguous or a.shape != shape or a.dtype != np.float32:
                        return False
                    values.append(a.__array_interface__["data"][0])
                values += [arrays[p][o].__array_interface__["data"][0] for p, o in internal]
                made = [empty(dims) if slot is None else
                        store[slot][: math.prod(dims)].reshape(dims) for dims, slot in outs]
                values += [a.__array_interface__["data"][0] for a in made]
                arrays.append(made)
            prepared.program.values(prepared.index, values)
            if not prepared.program.run():
                return False
        finally:
            self._lock.release()
        for s, made in zip(self.steps, arrays, strict=True):
            for o, a in zip(s.stack.outputs, made, strict=True):
                if o in self.needed:
                    env[o] = to_tf(a)
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
        external, internal, outputs = [], [], []
        for i, s in enumerate(self.steps):
            st = s.stack
            bufs = [np.asarray(env[x]) if isinstance(x, str) else x.value for x in st.inputs]
            dims = [tuple(batch if d < 0 else d for d in sh) for sh in st.output_shapes]
            fill = fills.get((self.start + i, batch, *(b.shape for b in bufs), *dims))
            if fill is None or not hasattr(s.runner, "abi") or any(
                    not b.flags.c_contiguous for b in bufs):
                return
            calls.append((s.runner, fill, batch))
            ext, inside, order = [], [], []
            for j, x in enumerate(st.inputs):
                if isinstance(x, str) and x not in self._made:
                    ext.append((x, tuple(bufs[j].shape)))
                    order.append(j)
            for j, x in enumerate(st.inputs):
                if isinstance(x, str) and x in self._made:
                    inside.append(self._made[x])
                    order.append(j)
            order += range(len(bufs), len(bufs) + len(dims))
            external.append(ext)
            internal.append(inside)
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
                                   [bufs[j].__array_interface__["data"][0]])
            flat += [program.pointer_index(i, j) for j in order]
        self._prepared[key] = _Prepared(program, np.asarray(flat, np.int64), external,
                                        internal, outputs)


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

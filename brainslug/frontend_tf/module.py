"""`OptimizedModel`: what `brainslug.tensorflow.optimize` returns.

Calling it runs the schedule eagerly: TensorFlow pieces on `tf.Tensor`s, and
compiled stacks on the same memory through numpy views. A CPU `tf.Tensor` is
read with `np.asarray`, which aliases its buffer (no copy); a kernel writes
into 64-byte aligned numpy buffers of a static arena, which TensorFlow then
reads through DLPack (no copy either). Arena slots are reused once every
value that may alias them is dead; outputs that leave the model get fresh
buffers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from brainslug.frontend_tf.kernel_runs import kernel_runs, pointer
from brainslug.frontend_tf.optimize import Plan, Step
from brainslug.plan.arena import Arena
from brainslug.plan.report import PlanInfo
from brainslug.runtime.aligned import aligned_copy, aligned_empty


def to_tf(a: np.ndarray) -> tf.Tensor:
    """A tf.Tensor on the memory of `a` (DLPack, zero-copy)."""
    return tf.experimental.dlpack.from_dlpack(a.__dlpack__())


class FastCalls:
    """Kernel calls by data pointer: the first call of a step with a set of
    buffer shapes is checked (`KernelRunner.__call__`), later ones with the same
    shapes pass pointers only (`call_pointers`), as the PyTorch plan does.
    Checking every buffer on every call cost DenseNet-121 about 5 ms at batch 1."""

    def __init__(self) -> None:
        self.fills: dict[tuple, Any] = {}

    def __call__(self, key: Any, runner: Any, bufs: list[np.ndarray], batch: int) -> None:
        k = (key, batch, *(b.shape for b in bufs))
        fill = self.fills.get(k)
        if fill is not None and all(b.flags.c_contiguous for b in bufs) and \
                runner.call_pointers([pointer(b) for b in bufs], fill, batch):
            return
        runner(bufs, batch)
        if hasattr(runner, "call_pointers"):  # (new, or refused: scratch released since)
            self.fills[k] = runner.shape_slots(bufs, batch)


def _kernel_call(st: Step) -> Any:
    """The numpy_function body of a stack step."""
    s = st.stack
    template = [v if isinstance(v, str) else v.value for v in s.inputs]
    slots = [k for k, v in enumerate(template) if isinstance(v, str)]
    shapes = s.output_shapes
    runner = st.runner
    fast = FastCalls()

    def call(*acts: np.ndarray) -> list[np.ndarray]:
        bufs = list(template)
        for k, a in zip(slots, acts, strict=True):
            bufs[k] = a if a.flags.c_contiguous else aligned_copy(a)
        batch = int(acts[0].shape[0]) if acts else 1
        outs = [aligned_empty(tuple(batch if d < 0 else d for d in sh)) for sh in shapes]
        fast(0, runner, bufs + outs, batch)
        return outs

    return call


class OptimizedModel:
    """The Keras model plus its BrainSlug schedule; call it like the model."""

    def __init__(self, model: Any, plan: Plan | None, shape: list[int], info: PlanInfo,
                 mode: str = "eager"):
        self.original = model
        self.plan = plan
        self.steps = plan.steps if plan is not None else None
        self.outputs = plan.outputs if plan is not None else []
        self.input_name = plan.input if plan is not None else ""
        self.input_shape = list(shape)
        self.info = info
        self.arena = Arena(plan.buffers, lambda n: aligned_empty((n,))) \
            if plan is not None else None
        self._plan = plan.buffers if plan is not None else None
        self._graph: Any = None
        self.mode = mode
        self.options: dict[str, Any] = {}  # optimize()'s options (what a saved plan keeps)
        self._calls = FastCalls()
        # runs of stacks with no TensorFlow op between: one native call each
        self._runs = kernel_runs(self.steps, self.outputs) if self.steps else {}

    def __repr__(self) -> str:
        n = sum(1 for s in self.info.stacks if s.compiled)
        return f"OptimizedModel({type(self.original).__name__}, shape={self.input_shape}, " \
               f"stacks={n})"

    def check_input(self, x: Any) -> tf.Tensor:
        """`x` as a float32 tf.Tensor, or ValueError naming what was expected."""
        want = "x".join("N" if d == 0 else str(d) for d in self.input_shape)
        if isinstance(x, np.ndarray):
            if x.dtype != np.float32:
                raise ValueError(f"expected dtype float32, got {x.dtype}")
        elif isinstance(x, tf.Tensor):
            if x.dtype != tf.float32:
                raise ValueError(f"expected dtype float32, got {x.dtype.name}")
        else:
            raise ValueError(f"expected a tf.Tensor or numpy array of shape {want}, "
                             f"got {type(x).__name__}")
        shape = tuple(x.shape)
        if len(shape) != len(self.input_shape):
            raise ValueError(f"expected a {len(self.input_shape)}-d input of shape {want}, "
                             f"got {len(shape)}-d {shape}")
        for k, (d, e) in enumerate(zip(shape, self.input_shape, strict=True)):
            if e and d != e:
                raise ValueError(f"expected input shape {want}, got {shape} "
                                 f"(dim {k} is {d}, expected {e})")
            if not e and d == 0:
                raise ValueError(f"dim {k} of the input is empty")
        if isinstance(x, np.ndarray):
            x = tf.convert_to_tensor(x)
        if "CPU" not in x.device.upper() and x.device:
            x = tf.identity(x)
        return x

    def __call__(self, x: Any, training: bool = False) -> tf.Tensor:
        if training or self.steps is None:
            import keras

            if isinstance(self.original, keras.Model):
                return self.original(x, training=training)
            return self.original(x)
        x = self.check_input(x)
        return self.graph()(x) if self.mode == "graph" else self.run(x)

    def graph(self) -> Any:
        """The schedule as one `tf.function`: TensorFlow pieces in graph mode, each
        stack a `tf.numpy_function` (inputs arrive as numpy views of the tensors;
        outputs are fresh aligned buffers that TensorFlow adopts without a copy)."""
        if self._graph is None:
            spec = tf.TensorSpec([None if d == 0 else d for d in self.input_shape], tf.float32)
            self._graph = tf.function(self._graph_body, input_signature=[spec],
                                      autograph=False)
        return self._graph

    def _graph_body(self, x: tf.Tensor) -> Any:
        env: dict[str, Any] = {self.input_name: x}
        for st in self.steps:
            p = st.piece
            if p is not None:
                env[p.name] = p.run(*[env[i] for i in p.inputs])
                continue
            s = st.stack
            acts = [env[i] for i in s.inputs if isinstance(i, str)]
            outs = tf.numpy_function(_kernel_call(st), acts, [tf.float32] * len(s.outputs),
                                     stateful=True, name=s.name)
            for o, t, shape in zip(s.outputs, outs, s.output_shapes, strict=True):
                t.set_shape([None if d < 0 else d for d in shape])
                env[o] = t
        res = [env[o] for o in self.outputs]
        return res[0] if len(res) == 1 else res

    def run(self, x: tf.Tensor) -> tf.Tensor:
        """The schedule on a checked input."""
        batch = int(x.shape[0])
        env: dict[str, Any] = {self.input_name: x}
        plan = self._plan
        store = self.arena.storage(batch) if plan.slots else []
        steps, runs = self.steps, self._runs
        k = 0
        while k < len(steps):
            run = runs.get(k)
            if run is not None:
                if run(env, batch, store, to_tf, aligned_empty):
                    k = run.end
                    continue
                for j in range(k, run.end):
                    self._stack_step(j, steps[j], env, batch, store)
                run.prepare(env, batch, self._calls.fills, plan.assignment)
                k = run.end
                continue
            st = steps[k]
            p = st.piece
            if p is not None:
                env[p.name] = p.run(*[env[i] for i in p.inputs])
            else:
                self._stack_step(k, st, env, batch, store)
            k += 1
        res = [env[o] for o in self.outputs]
        return res[0] if len(res) == 1 else res

    def _stack_step(self, k: int, st: Step, env: dict[str, Any], batch: int,
                    store: list[Any]) -> None:
        s = st.stack
        plan = self._plan
        bufs = [np.asarray(env[i]) if isinstance(i, str) else i.value for i in s.inputs]
        outs = []
        for j, shape in enumerate(s.output_shapes):
            dims = tuple(batch if d < 0 else d for d in shape)
            slot = plan.assignment.get((s.name, j))
            if slot is None:
                outs.append(aligned_empty(dims))
            else:
                outs.append(store[slot][: math.prod(dims)].reshape(dims))
        self._calls(k, st.runner, bufs + outs, batch)
        for o, a in zip(s.outputs, outs, strict=True):
            env[o] = to_tf(a)

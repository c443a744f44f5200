"""The TensorFlow plan: capture, compile the stacks (through `brainslug.plan`),
schedule.

The schedule is the model's pieces in topological order with every compiled
stack replaced by one kernel call; convolutions, dense layers and everything
BrainSlug does not map stay TensorFlow calls. Kernel outputs live in the
plan's static arena (`brainslug.frontend_tf.module`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from brainslug.frontend_tf.capture import Capture, Piece, capture
from brainslug.frontend_tf.graphdef import capture_function, is_tf_function
from brainslug.frontend_tf.keras_layers import LAYOUT
from brainslug.plan.arena import BufferPlan, plan_buffers
from brainslug.plan.capture import Bound, Captured
from brainslug.plan.compile import compile_stacks
from brainslug.plan.report import PlanInfo
from brainslug.plan.saved import PlanKernels
from brainslug.plan.schedule import schedule
from brainslug.plan.stacks import StackBinding
from brainslug.plan.targets import CpuTarget

FRESH_CALLEES = {"nn.conv2d", "nn.linear", "nn.add", "nn.mul", "nn.cat", "nn.max_pool2d",
                 "nn.avg_pool2d", "nn.mean", "nn.batch_norm", "nn.softmax"}
"""Pieces whose TensorFlow result is a new buffer, never a view of an input."""


def check_shape(shape: Any) -> list[int]:
    """The input shape as a list of ints, NHWC; 0 means any extent (the batch)."""
    if hasattr(shape, "as_list"):
        shape = shape.as_list()
    if not isinstance(shape, list | tuple) or not shape:
        raise ValueError(f"shape must be a non-empty list of ints such as [0, 224, 224, 3], "
                         f"got {shape!r}")
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0:
            raise ValueError(f"shape entries must be ints >= 0 (0 = any size), got {shape!r}")
        out.append(int(d))
    if any(d == 0 for d in out[1:]):
        raise ValueError(f"only the batch (the first entry) may be 0 (any size), got {shape!r}")
    return out


@dataclass
class Step:
    """One step of the schedule: a TensorFlow piece, or a compiled stack and its runner."""

    piece: Piece | None = None
    stack: StackBinding | None = None
    runner: Any = None


@dataclass
class Plan:
    """A compiled schedule: its steps, input and output values, buffer plan,
    report and IR."""

    steps: list[Step]
    input: str
    outputs: list[str]
    buffers: BufferPlan
    info: PlanInfo
    module: ModuleOp
    kernels: PlanKernels | None = None  # what `brainslug.tensorflow.save` stores of them


def captured(cap: Capture) -> Captured:
    """The capture as the plan layer sees it: graph arguments are pieces (by
    name) or the model's weights (bound arrays)."""
    out = Captured(cap.module, [], cap.library_reasons)
    args = out.function.body.block.args
    out.sources = [src if isinstance(src, str) else Bound(src, a.name_hint or "param")
                   for src, a in zip(cap.arg_sources, args, strict=True)]
    return out


def compile_plan(model: Any, shape: list[int], *, cpu: str = "host",
                 threads: int | None = None, convs: bool = False,
                 saved: PlanKernels | None = None) -> Plan:
    """Capture `model` (a Keras model or a tf.function), compile its stacks and
    schedule them with its TensorFlow pieces. With `convs`, the convolutions
    are compiled too, each with the layers after it that it can apply. With
    `saved` (a saved plan's kernels), they are used instead of compiling."""
    import keras

    t0 = time.perf_counter()
    how = "keras functional graph"
    if not isinstance(model, keras.Model) and is_tf_function(model):
        cap, how = capture_function(model, shape), "tf.function (frozen graph)"
    else:
        cap = capture(model, shape, conv_block=4 * CpuTarget(cpu).backend.lanes if convs else 0)
    # TensorFlow's kernels run with denormals flushed: so do the plan's
    stacks = compile_stacks(captured(cap), CpuTarget(cpu, threads, convs, flush_denormals=True),
                            default_layout=LAYOUT, library_prefix="tf ", saved=saved)
    info = stacks.info
    info.capture = how
    if cap.folded_padding:
        info.notes.append("zero padding folded into the layer that reads it: "
                          + ", ".join(cap.folded_padding))

    def inputs_of(name: str) -> list[str]:
        return cap.pieces[name].inputs

    compiled = [b for b in stacks.bindings if b.name in stacks.runners]
    order = schedule(list(cap.pieces), inputs_of, compiled, stacks.aliases, cap.outputs,
                     cap.inputs)
    steps = []
    for st in order.steps:
        if st.stack is not None:
            steps.append(Step(stack=st.stack, runner=stacks.runners[st.stack.name]))
        else:
            p = cap.pieces[st.node]  # type: ignore[index]
            steps.append(Step(piece=Piece(p.name, [order.resolve(i) for i in p.inputs], p.run,
                                          p.callee)))
    buffers = plan_buffers(order, inputs_of,
                           lambda name: cap.pieces[name].callee in FRESH_CALLEES, cap.outputs)
    outputs = [order.resolve(o) for o in cap.outputs]
    info.compile_seconds = time.perf_counter() - t0
    return Plan(steps, cap.inputs[0], outputs, buffers, info, stacks.module, stacks.kernels)

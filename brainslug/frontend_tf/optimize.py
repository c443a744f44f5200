"""`optimize(model, shape)` for Keras: capture, form stacks, compile, schedule.

The schedule is the model's pieces in topological order with every compiled
stack replaced by one kernel call; convolutions, dense layers and everything
BrainSlug does not map stay TensorFlow calls. Kernel outputs live in a static
arena (`brainslug.frontend_tf.runtime`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from brainslug.dialects import nn
from brainslug.frontend_tf.capture import LAYOUT, NODE_ATTR, Capture, Piece, capture
from brainslug.frontend_torch.optimize import (
    PlanInfo,
    StackInfo,
    record_library,
    stack_launches,
)


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


def _bytes(v: SSAValue) -> int:
    n = 4
    for d in v.type.get_shape():
        n *= 1 if d < 0 else d
    return n


def piece_of(v: SSAValue) -> str | None:
    """The piece name of an IR value (through stack results)."""
    owner = v.owner
    if isinstance(owner, nn.StackOp):
        return piece_of(owner.yield_op.values[v.index])
    if hasattr(owner, "attributes") and NODE_ATTR in owner.attributes:
        return owner.attributes[NODE_ATTR].data
    return None


@dataclass
class StackBinding:
    """How the schedule calls one stack."""

    name: str
    members: set[str]
    inputs: list[str | np.ndarray]   # in kernel argument order: value names or bound arrays
    outputs: list[str]               # piece names, in kernel output order
    output_shapes: list[tuple[int, ...]]


def _source(v: SSAValue, args: list[SSAValue], cap: Capture) -> str | np.ndarray:
    if v in args:
        return cap.arg_sources[args.index(v)]
    name = piece_of(v)
    if name is None:
        raise KeyError(f"stack input {v} has no piece")
    return name


def describe(fn: func.FuncOp, cap: Capture) -> tuple[list[StackInfo], list[StackBinding]]:
    """Report rows and schedule bindings of the stacks of `fn`."""
    infos, bindings = [], []
    args = list(fn.body.block.args)
    for op in fn.body.block.ops:
        if not isinstance(op, nn.StackOp):
            continue
        members = [o for o in op.body.block.ops if not isinstance(o, nn.YieldOp)]
        unfused = sum(sum(_bytes(x) for x in o.operands) + sum(_bytes(r) for r in o.results)
                      for o in members)
        fused = sum(_bytes(x) for x in op.inputs) + sum(_bytes(r) for r in op.outputs)
        sources = [_source(v, args, cap) for v in op.inputs]
        names = [s if isinstance(s, str) else (v.name_hint or "param")
                 for s, v in zip(sources, op.inputs, strict=True)]
        outs = [piece_of(v) or "?" for v in op.yield_op.values]
        infos.append(StackInfo(
            op.stack_name_value, [f"{o.attributes[NODE_ATTR].data}: {o.name}" for o in members],
            names, outs, LAYOUT, unfused, fused))
        bindings.append(StackBinding(
            op.stack_name_value,
            {o.attributes[NODE_ATTR].data for o in members if NODE_ATTR in o.attributes},
            sources, outs, [tuple(r.type.get_shape()) for r in op.outputs]))
    return infos, bindings


def removed_aliases(fn: func.FuncOp) -> dict[str, str]:
    """Pieces of dropout/identity layers (bs-form-stacks removes them) -> their input."""
    out = {}
    for op in fn.body.block.ops:
        if nn.is_removable(op) and NODE_ATTR in op.attributes:
            src = piece_of(op.operands[0])
            if src is None:
                src = "<input>"
            out[op.attributes[NODE_ATTR].data] = src
    return out


@dataclass
class Step:
    """One step of the schedule: a TensorFlow piece or a compiled stack."""

    piece: Piece | None = None
    stack: StackBinding | None = None
    runner: Any = None


def schedule(cap: Capture, bindings: Sequence[StackBinding], compiled: set[str],
             aliases: dict[str, str]) -> list[Step]:
    """The steps that compute the model's outputs, in a topological order."""
    member_of = {m: b for b in bindings if b.name in compiled for m in b.members}
    order = {name: k for k, name in enumerate(cap.pieces)}
    done: set[str] = set(cap.inputs)
    placed: set[str] = set()
    steps: list[Step] = []

    def resolve(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    def place(name: str) -> None:
        name = resolve(name)
        if name in done:
            return
        if name in member_of:
            b = member_of[name]
            if b.name not in placed:
                placed.add(b.name)
                deps = [s for s in b.inputs if isinstance(s, str)]
                for d in sorted(deps, key=lambda n: order.get(n, -1)):
                    place(d)
                steps.append(Step(stack=b))
                done.update(b.outputs)
            if name not in done:
                raise KeyError(f"{name} is used outside its stack but is not an output")
            return
        p = cap.pieces[name]
        for d in p.inputs:
            place(d)
        steps.append(Step(piece=Piece(p.name, [resolve(i) for i in p.inputs], p.run, p.callee)))
        done.add(name)

    for o in cap.outputs:
        place(o)
    return steps


@dataclass
class Plan:
    """A compiled schedule: its steps, input and output values, report and IR."""

    steps: list[Step]
    input: str
    outputs: list[str]
    info: PlanInfo
    module: ModuleOp


def kernel_pool(threads: int | None) -> Any:
    """The thread pool the kernels run on: the process-wide one (None), or one of
    `threads` threads, shared by every plan that asks for that many."""
    from brainslug.runtime.threads import sized_pool

    return sized_pool(threads)


def compile_plan(model: Any, shape: list[int], *, cpu: str = "host",
                 threads: int | None = None) -> Plan:
    """Capture `model` (a Keras model or a tf.function), run the default
    pipeline, compile and schedule."""
    from brainslug.frontend_tf.graphdef import capture_function, is_tf_function
    from brainslug.ir.context import make_context
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.passes.form_stacks import FormStacksPass
    from brainslug.pipeline.default import default_passes
    from brainslug.runtime.jit import compile_kernels

    t0 = time.perf_counter()
    how = "keras functional graph"
    import keras

    if not isinstance(model, keras.Model) and is_tf_function(model):
        cap, how = capture_function(model, shape), "tf.function (frozen graph)"
    else:
        cap = capture(model, shape)
    ctx = make_context()
    module = cap.module
    fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
    aliases = removed_aliases(fn)
    if "<input>" in aliases.values():
        aliases = {k: (cap.inputs[0] if v == "<input>" else v) for k, v in aliases.items()}
    FormStacksPass().apply(ctx, module)
    infos, bindings = describe(fn, cap)
    for p in default_passes("x86-64", cpu)[1:]:
        p.apply(ctx, module)
    launch_of, fallback = stack_launches(fn)
    runners = compile_kernels(module, X86Backend(cpu), kernel_pool(threads)) if launch_of else {}
    info = PlanInfo(stacks=infos, capture=how)
    if hasattr(info, "layout"):
        info.layout = LAYOUT
    if cap.folded_padding:
        info.notes.append("zero padding folded into the layer that reads it: "
                          + ", ".join(cap.folded_padding))
    record_library(info, fn, fallback, cap.library_reasons, "tf ")
    steps = schedule(cap, bindings, set(launch_of), aliases)
    for st in steps:
        if st.stack is not None:
            st.runner = runners[launch_of[st.stack.name]]
    info.compile_seconds = time.perf_counter() - t0
    outputs = [aliases.get(o, o) for o in cap.outputs]
    return Plan(steps, cap.inputs[0], outputs, info, module)

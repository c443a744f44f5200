"""The CPU plan of a traced model: capture, compile the stacks (through
`brainslug.plan`), rewrite the graph.

The plan is the model's own fx graph with every compiled stack replaced by
one `StackKernel` call; convolutions, linear layers and everything BrainSlug
does not map stay the original PyTorch calls, in a stable topological order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch.bind import rewrite_graph
from brainslug.frontend_torch.capture import Capture, batch_outer_copies, capture
from brainslug.frontend_torch.graph import Spec, captured, input_shapes, spec_text
from brainslug.frontend_torch.graph_builder import Order, default_order
from brainslug.frontend_torch.kernel_module import StackKernel
from brainslug.frontend_torch.shapes import memory_orders, propagate_shapes
from brainslug.plan.compile import CompiledStacks, cached_record, compile_stacks
from brainslug.plan.report import PlanInfo
from brainslug.plan.stacks import StackBinding
from brainslug.plan.targets import CpuTarget, Target

Metas = dict[str, tuple[tuple[int, ...], torch.dtype]]

CHANNELS_LAST_NOTE = ("layout: NHWC (channels-last) activations; stacks are generated for "
                      "NHWC and the library's convolutions run channels-last")


def plan_key_parts(gm: fx.GraphModule, shape: Spec | None, layout: str,
                   target: Target) -> list[str]:
    """What determines a plan: the traced graph (its code and module tree,
    which shows every layer's hyperparameters), the names, shapes and dtypes of
    the parameters and buffers, the input shapes (all of them), the layout and the target.
    Parameter values are not part of it: kernels read them at run time."""
    tensors = [
        (name, tuple(t.shape), str(t.dtype))
        for name, t in [*gm.named_parameters(), *gm.named_buffers()]
    ]
    return [type(gm).__name__, _renumbered(str(gm)), _renumbered(gm.code),
            _renumbered(repr(tensors)), repr(shape), layout, target.fingerprint() or ""]


_CONSTANT = re.compile(r"_tensor_constant\d+")


def _renumbered(text: str) -> str:
    """`text` with fx's tensor constants numbered in order of appearance: fx
    numbers them with a process-wide counter, so two traces of one model differ."""
    names: dict[str, str] = {}
    return _CONSTANT.sub(lambda m: names.setdefault(m[0], f"_tensor_constant{len(names)}"), text)


def _metas_to_json(metas: Metas, orders: dict[str, Order]) -> dict[str, Any]:
    return {"metas": {n: [list(s), str(t)] for n, (s, t) in metas.items()},
            "orders": {n: list(o) for n, o in orders.items()}}


def _metas_from_json(d: Any) -> tuple[Metas, dict[str, Order]] | None:
    try:
        metas = {name: (tuple(shape), getattr(torch, dtype.removeprefix("torch.")))
                 for name, (shape, dtype) in d["metas"].items()}
        return metas, {name: tuple(o) for name, o in d["orders"].items()}
    except (ValueError, TypeError, AttributeError, KeyError):
        return None


def stack_orders(cap: Capture, binding: StackBinding, layout: str) -> list[Order | None]:
    """The memory order of each buffer of a stack's kernel: inputs, then outputs."""
    out: list[Order | None] = []
    for src in binding.inputs:
        if isinstance(src, str):
            out.append(cap.orders.get(src))
        else:
            t = src.value
            out.append(default_order(t.dim(), layout) if isinstance(t, torch.Tensor) else None)
    return out + [cap.orders.get(name) for name in binding.outputs]


def compile_plan(
    gm: fx.GraphModule,
    shape: Spec | None = None,
    *,
    metas: Metas | None = None,
    cpu: str = "host",
    layout: str = "NCHW",
    threads: int | None = None,
    convs: bool | Collection[str] = False,
    only_convs: bool = False,
    linears: bool | Collection[str] = False,
) -> tuple[fx.GraphModule, PlanInfo, CompiledStacks]:
    """Capture, compile, rewrite: the optimized graph, its report and its
    compiled stacks (their IR, and the kernels as a saved plan stores them).

    Shapes come from running `gm` on inputs of `shape` (0 = the batch) unless
    `metas` (node name -> (shape, dtype)) are given; `shape` is one shape or
    one per input (`graph.check_shape`). With `layout="NHWC"` the
    stacks are generated channels-last and rank-4 inputs are made channels-last
    on entry, so that PyTorch's convolutions run channels-last too. With
    `convs` (NHWC only: True, or the fx names of some), convolutions are
    compiled with their epilogues; `only_convs` compiles only their stacks (a
    plan that times them). With `linears` (True, or the fx names of some, in
    any layout), linear layers are compiled as pointwise convolutions are."""
    t0 = time.perf_counter()
    if layout != "NHWC":
        convs = False
    target = CpuTarget(cpu, threads, bool(convs) or bool(linears))
    key = record = None
    orders: dict[str, Order] = {}
    examples = input_shapes(shape)
    if metas is None:
        compiled = ",".join(sorted(convs)) if not isinstance(convs, bool) else str(convs)
        lin = ",".join(sorted(linears)) if not isinstance(linears, bool) else str(linears)
        key, record = cached_record([*plan_key_parts(gm, shape, layout, target), compiled,
                                     f"only_convs={only_convs}", f"linears={lin}"])
        found = _metas_from_json(record.frontend) if record is not None else None
        if found is None:
            record = None
            metas = _shapes(gm, shape)
            orders = memory_orders(gm, examples, layout == "NHWC")
        else:
            metas, orders = found
    else:
        orders = memory_orders(gm, examples, layout == "NHWC")
    metas, orders = dict(metas), dict(orders)
    cold = record is None and orders
    gm = batch_outer_copies(gm, metas, orders, reorder=(
        lambda g: memory_orders(g, examples, layout == "NHWC")) if cold else None)
    # a register block of 4 vectors reads one block of packed weights
    cap = capture(gm, examples, metas, layout, convs,
                  conv_block=4 * target.backend.lanes, orders=orders, compile_linears=linears)
    stacks = compile_stacks(captured(cap), target, key=key, record=record,
                            frontend_data=_metas_to_json(metas, orders),
                            only=_has_conv if only_convs else None)
    kernels = {
        b.name: StackKernel(b.name, stacks.runners[b.name], b.inputs, b.output_shapes,
                            stack_orders(cap, b, layout), _batched(b, metas))
        for b in stacks.bindings if b.name in stacks.runners
    }
    info = stacks.info
    info.layout = layout
    if layout == "NHWC":
        info.notes.append(CHANNELS_LAST_NOTE)
    cl_inputs = _channels_last_inputs(cap, layout)
    new_gm = rewrite_graph(gm, stacks, kernels, cl_inputs, metas)
    info.compile_seconds = time.perf_counter() - t0
    return new_gm, info, stacks


def _batched(binding: StackBinding, metas: Metas) -> list[bool]:
    """Whether each input of a stack's kernel has the batch in dim 0 (its
    extent there follows the batch size)."""
    return [isinstance(src, str) and src in metas and bool(metas[src][0])
            and metas[src][0][0] < 0 for src in binding.inputs]


def _has_conv(stack: Any) -> bool:
    return any(op.name == "nn.conv2d" or (op.name == "nn.linear" and op.packed)
               for op in stack.body.walk())


def _shapes(gm: fx.GraphModule, shape: Spec | None) -> Metas:
    """The traced graph's shapes for inputs of `shape` (one shape, or one per
    input); ValueError when the model does not run on them."""
    shapes = input_shapes(shape)
    try:
        return propagate_shapes(gm, shapes)
    except Exception as e:
        what = "inputs of shape" if len(shapes) == 1 else "inputs of shapes"
        raise ValueError(f"the model does not run on {what} {spec_text(shape)}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e


def _channels_last_inputs(cap: Capture, layout: str) -> list[str]:
    """The placeholders that the plan makes channels-last on entry (rank-4
    activations of an NHWC plan)."""
    if layout != "NHWC":
        return []
    fn = captured(cap).function
    return [
        src.name for src, a in zip(cap.arg_sources, fn.body.block.args, strict=True)
        if isinstance(src, fx.Node) and src.op == "placeholder" and len(a.type.get_shape()) == 4
    ]


"""Binding a compiled plan to PyTorch: the model's fx graph rewritten along
the plan's schedule (compiled stacks as kernel modules, everything else the
original calls), and the kernels' outputs in the plan's static arena."""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from brainslug.frontend_torch.kernel_sequence import group_kernel_runs
from brainslug.frontend_torch.library_linear import ArenaLinear
from brainslug.frontend_torch.linear_bias import LinearWithoutBias
from brainslug.plan.arena import LIBRARY, Arena, plan_buffers
from brainslug.plan.compile import CompiledStacks
from brainslug.plan.schedule import needed, schedule

FRESH_FUNCTIONS = {
    torch.conv2d, F.conv2d, F.linear, torch.addmm, torch.matmul, torch.cat, torch.concat,
    F.batch_norm, F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d, operator.add,
    operator.mul, torch.add, torch.mul, torch.relu, torch.sigmoid, torch.tanh, F.relu,
    F.gelu, F.silu, F.hardswish, F.hardsigmoid, torch.softmax, F.softmax, torch.mean,
}
"""Functions whose result is a fresh tensor, never a view of an input."""
FRESH_MODULES = (
    torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, torch.nn.AdaptiveAvgPool2d,
    torch.nn.AvgPool2d, torch.nn.MaxPool2d,
)
"""Modules whose result is a fresh tensor (unless in place)."""


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """The plan's entry conversion of a rank-4 input (free when already channels-last)."""
    return x.contiguous(memory_format=torch.channels_last)


def allocate_f32(numel: int) -> torch.Tensor:
    """Storage of an arena slot."""
    return torch.empty(numel, dtype=torch.float32)


def _getitem(t: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    return t[k]


def shape_from(batch: torch.Tensor | None, shape: tuple[int, ...], what: str,
               *args: int) -> Any:
    """What `what` ("shape", "size", "dim") gives for a tensor of `shape`
    (a negative extent: the batch, dim 0 of `batch`) without the tensor:
    `t.shape`, `t.size()`, `t.size(d)`, `t.dim()`."""
    if what == "dim":
        return len(shape)
    dims = torch.Size(int(batch.shape[0]) if s < 0 and batch is not None else s
                      for s in shape)
    return dims[args[0]] if args else dims


def _shape_read(n: fx.Node) -> tuple[fx.Node, str, tuple[int, ...]] | None:
    """(the tensor, what, the dim) when `n` reads only a tensor's shape:
    `t.shape`, `t.size()`, `t.size(d)`, `t.dim()`, `aten.sym_size.int(t, d)`."""
    args, t = n.args, n.args[0] if n.args else None
    if not isinstance(t, fx.Node):
        return None
    if n.op == "call_function" and n.target is getattr and args[1:] == ("shape",):
        return t, "shape", ()
    if n.op == "call_function" and n.target is torch.ops.aten.sym_size.int \
            and isinstance(args[1], int):
        return t, "size", (args[1],)
    if n.op == "call_method" and n.target in ("size", "dim"):
        dim = (*args[1:], *n.kwargs.values())
        if n.kwargs.keys() <= {"dim"} and all(isinstance(d, int) for d in dim) \
                and (n.target == "size" or not dim):
            return t, str(n.target), tuple(dim)  # type: ignore[arg-type]
    return None


def _fresh(n: fx.Node, gm: fx.GraphModule) -> bool:
    if n.op == "call_function":
        return n.target in FRESH_FUNCTIONS
    if n.op == "call_module":
        m = gm.get_submodule(str(n.target))
        return isinstance(m, FRESH_MODULES) and not getattr(m, "inplace", False)
    return False


def _shape_reads(nodes: Mapping[str, fx.Node], members: set[str], aliases: Mapping[str, str],
                 metas: Mapping[str, Any]) -> dict[str, tuple[str | None, tuple[Any, ...]]]:
    """Nodes that read only the shape of a stack's value, with the input that
    gives the batch (None where the shape has none) and `shape_from`'s other
    arguments. Where no input has a free batch, nothing is rewritten."""
    batch_input = next((name for name, n in nodes.items() if n.op == "placeholder"
                        and metas.get(name) and metas[name][0] and metas[name][0][0] < 0),
                       None)
    out: dict[str, tuple[str | None, tuple[Any, ...]]] = {}
    for name, n in nodes.items():
        read = _shape_read(n)
        if read is None:
            continue
        t, what, dim = read
        source = t.name
        while source in aliases:
            source = aliases[source]
        meta = metas.get(source)
        if source not in members or not meta or not isinstance(meta[0], tuple | list):
            continue
        shape = tuple(int(d) for d in meta[0])
        batched = any(d < 0 for d in shape)
        if batched and batch_input is None:
            continue
        out[name] = (batch_input if batched else None, (shape, what, *dim))
    return out


def rewrite_graph(gm: fx.GraphModule, compiled: CompiledStacks,
                  kernels: dict[str, torch.nn.Module],
                  channels_last_inputs: Sequence[str] = (),
                  metas: Mapping[str, Any] | None = None) -> fx.GraphModule:
    """A new GraphModule: the stacks in `kernels` (stack name -> module)
    replace their layers, in the plan's schedule. Placeholders named in
    `channels_last_inputs` are made channels-last on entry. With `metas`
    (node -> (shape, dtype), negative extents the batch), a node that reads
    only the shape of a stack's value computes it from the shape instead
    (`shape_from`): the stack need not run first (XCiT reads the shape of its
    patch embedding, a stack's value, to build the positional encoding that
    the same stack adds)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    stacks = [b for b in compiled.bindings if b.name in kernels]
    members = {m for b in stacks for m in b.members}
    shape_reads = _shape_reads(nodes, members, compiled.aliases, metas or {})

    def inputs_of(name: str) -> list[str]:
        if name in shape_reads:
            return [shape_reads[name][0]] if shape_reads[name][0] else []
        return [x.name for x in nodes[name].all_input_nodes]

    # (every placeholder stays: the forward's signature is the model's)
    live = needed([n for n, node in nodes.items() if not node.users or node.op == "placeholder"],
                  inputs_of, stacks, compiled.aliases)
    plan = schedule(
        list(nodes), inputs_of, stacks, compiled.aliases,
        [n for n in nodes if n in live and n not in members and n not in compiled.aliases],
    )
    library_sizes = {name: size for name, size in _arena_linears(gm, nodes, metas or {}).items()
                     if name not in members} if any(
        hasattr(k, "use_arena") for k in kernels.values()) else {}
    graph = fx.Graph()
    graph._codegen = copy.deepcopy(gm.graph._codegen)  # pytree in/out specs (torch.export)
    root = torch.nn.Module()
    for name, mod in gm.named_children():
        root.add_module(name, mod)
    env: dict[str, fx.Node] = {}

    def value(n: fx.Node) -> fx.Node:
        return env[plan.resolve(n.name)]

    for st in plan.steps:
        if st.stack is None and st.node in shape_reads:
            batch, args = shape_reads[st.node]
            env[st.node] = graph.call_function(shape_from, (
                env[batch] if batch else None, *args))
            continue
        if st.stack is None and st.node in library_sizes:
            n = nodes[st.node]
            attr = f"bs_arena_{n.name}"
            root.add_module(attr, ArenaLinear(gm.get_submodule(str(n.target))))
            env[n.name] = graph.call_module(attr, (value(n.args[0]),))
            continue
        if st.stack is None:
            n = nodes[st.node]  # type: ignore[index]
            env[n.name] = graph.node_copy(n, value)
            if n.op == "placeholder" and n.name in channels_last_inputs:
                env[n.name] = graph.call_function(to_channels_last, (env[n.name],))
            continue
        b = st.stack
        attr = f"bs_{b.name}"
        root.add_module(attr, kernels[b.name])
        call = graph.call_module(attr, tuple(env[plan.resolve(x)] for x in b.inputs
                                             if isinstance(x, str)))
        if len(b.outputs) == 1:
            env[b.outputs[0]] = call
        else:
            for k, o in enumerate(b.outputs):
                env.setdefault(o, graph.call_function(_getitem, (call, k)))
    for n in gm.graph.nodes:
        if n.op == "get_attr" and not hasattr(root, str(n.target).split(".")[0]):
            setattr(root, str(n.target).split(".")[0], getattr(gm, str(n.target).split(".")[0]))
    new = fx.GraphModule(root, graph, class_name=f"{type(gm).__name__}BrainSlug")
    new.graph.eliminate_dead_code()
    new.recompile()
    arena_users = {name: k for name, k in kernels.items() if hasattr(k, "use_arena")}
    if arena_users:
        outputs = [x for n in nodes.values() if n.op == "output" for x in inputs_of(n.name)]
        buffers = plan_buffers(plan, inputs_of, lambda name: _fresh(nodes[name], gm), outputs,
                               library_sizes, in_place=True)
        arena = Arena(buffers, allocate_f32)
        for name, k in arena_users.items():
            outs = len(next(b for b in stacks if b.name == name).outputs)
            k.use_arena(arena, [buffers.assignment.get((name, i))  # type: ignore[operator]
                                for i in range(outs)])
        for name in library_sizes:
            new.get_submodule(f"bs_arena_{name}").use_arena(  # type: ignore[operator]
                arena, buffers.assignment.get((LIBRARY + name, 0)))
    group_kernel_runs(new, _getitem)
    return new


def _arena_linears(gm: fx.GraphModule, nodes: Mapping[str, fx.Node],
                   metas: Mapping[str, Any]) -> dict[str, tuple[int, bool]]:
    """The library linear layers (call_module of an `nn.Linear` on the CPU,
    one input) whose float32 result has static extents but for a batch in dim
    0, with (elements per batch item or in all, whether it has a batch): their
    results go into the arena (`ArenaLinear`)."""
    out: dict[str, tuple[int, bool]] = {}
    for name, n in nodes.items():
        if n.op != "call_module" or len(n.args) != 1 or n.kwargs or \
                not isinstance(n.args[0], fx.Node):
            continue
        m = gm.get_submodule(str(n.target))
        meta = metas.get(name)
        if type(m) not in (torch.nn.Linear, LinearWithoutBias) or m.weight.device.type != "cpu" \
                or not meta or meta[1] != torch.float32 or not meta[0]:
            continue
        shape = [int(d) for d in meta[0]]
        if any(d < 0 for d in shape[1:]):
            continue
        out[name] = (math.prod(shape[1:]) if shape[0] < 0 else math.prod(shape), shape[0] < 0)
    return out

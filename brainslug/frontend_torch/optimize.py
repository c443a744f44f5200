"""`optimize(model, shape)`: trace, form stacks, compile kernels, rewrite the graph.

The plan is the model's own fx graph with every compiled stack replaced by one
`StackKernel` call; convolutions, linear layers and everything BrainSlug does
not map stay the original PyTorch calls, in a stable topological order.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import SSAValue

from brainslug.dialects import loop, nn
from brainslug.frontend_torch.capture import (
    NODE_ATTR,
    Capture,
    capture,
    export,
    propagate_shapes,
    trace,
)
from brainslug.frontend_torch.kernel_module import StackKernel
from brainslug.ir.compile_time import gc_paused


def check_shape(shape: Any) -> list[int]:
    """The input shape as a list of ints; 0 means any extent (the batch)."""
    if isinstance(shape, torch.Size):
        shape = list(shape)
    if not isinstance(shape, list | tuple) or not shape:
        raise ValueError(f"shape must be a non-empty list of ints such as [0, 3, 224, 224], "
                         f"got {shape!r}")
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"shape entries must be ints >= 0 (0 = any size), got {shape!r}")
        out.append(int(d))
    return out


@dataclass
class StackInfo:
    """One stack as the report shows it."""

    name: str
    layers: list[str]            # "node: nn.op"
    inputs: list[str]
    outputs: list[str]
    layout: str
    bytes_unfused: int           # per batch item: every layer reads its inputs, writes its output
    bytes_fused: int             # per batch item: the stack reads its inputs, writes its outputs
    compiled: bool = True
    reason: str = ""


@dataclass
class PlanInfo:
    """What optimize() did, for report()."""

    stacks: list[StackInfo] = field(default_factory=list)
    library: list[tuple[str, str]] = field(default_factory=list)   # (node, callee)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # (node, reason)
    capture: str = "torch.fx"
    compile_seconds: float = 0.0
    target: str = "x86-64"
    notes: list[str] = field(default_factory=list)
    layout: str = "NCHW"         # how the plan stores rank-4 activations


def _bytes(v: SSAValue) -> int:
    n = 4
    for d in v.type.get_shape():
        n *= 1 if d < 0 else d
    return n


def _layout_of(ops) -> str:
    for o in ops:
        lay = getattr(o, "layout_value", None)
        if lay:
            return lay
    return "NCHW"


def _fx_name(v: SSAValue) -> str | None:
    owner = v.owner
    if isinstance(owner, nn.StackOp):
        inner = owner.yield_op.values[v.index]
        return _fx_name(inner)
    if hasattr(owner, "attributes") and NODE_ATTR in owner.attributes:
        return owner.attributes[NODE_ATTR].data
    return None


def describe_stacks(fn: func.FuncOp, cap: Capture) -> list[StackInfo]:
    infos = []
    args = list(fn.body.block.args)
    for op in fn.body.block.ops:
        if not isinstance(op, nn.StackOp):
            continue
        members = [o for o in op.body.block.ops if not isinstance(o, nn.YieldOp)]
        unfused = sum(
            sum(_bytes(x) for x in o.operands) + sum(_bytes(r) for r in o.results)
            for o in members
        )
        fused = sum(_bytes(x) for x in op.inputs) + sum(_bytes(r) for r in op.outputs)
        names = []
        for v in op.inputs:
            if v in args:
                src = cap.arg_sources[args.index(v)]
                names.append(src.name if isinstance(src, fx.Node) else (v.name_hint or "param"))
            else:
                names.append(_fx_name(v) or "?")
        infos.append(StackInfo(
            op.stack_name_value,
            [f"{o.attributes[NODE_ATTR].data}: {o.name}" for o in members],
            names,
            [_fx_name(v) or "?" for v in op.yield_op.values],
            _layout_of(members),
            unfused,
            fused,
        ))
    return infos


@dataclass
class _StackBinding:
    name: str
    members: set[str]
    inputs: list[fx.Node | torch.Tensor]     # in kernel argument order
    outputs: list[str]                       # fx node names, in kernel output order
    output_types: list[Any]


def _bindings(fn: func.FuncOp, cap: Capture, nodes: dict[str, fx.Node]) -> list[_StackBinding]:
    args = list(fn.body.block.args)
    out = []
    for op in fn.body.block.ops:
        if not isinstance(op, nn.StackOp):
            continue
        members = {o.attributes[NODE_ATTR].data for o in op.body.block.ops
                   if NODE_ATTR in o.attributes}
        inputs: list[fx.Node | torch.Tensor] = []
        for v in op.inputs:
            if v in args:
                inputs.append(cap.arg_sources[args.index(v)])
            else:
                inputs.append(nodes[_fx_name(v)])
        outs = [_fx_name(v) for v in op.yield_op.values]
        out.append(_StackBinding(op.stack_name_value, members, inputs, outs,
                                 [r.type for r in op.outputs]))
    return out


def removed_aliases(fn: func.FuncOp) -> dict[str, str]:
    """fx nodes of dropout/identity layers (bs-form-stacks removes them) -> their input."""
    out = {}
    for op in fn.body.block.ops:
        if nn.is_removable(op) and NODE_ATTR in op.attributes:
            src = _fx_name(op.operands[0])
            if src is not None:
                out[op.attributes[NODE_ATTR].data] = src
    return out


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """The plan's entry conversion of a rank-4 input (free when already channels-last)."""
    return x.contiguous(memory_format=torch.channels_last)


def rewrite_graph(gm: fx.GraphModule, bindings: list[_StackBinding],
                  kernels: dict[str, StackKernel],
                  aliases: dict[str, str] | None = None,
                  channels_last_inputs: Sequence[str] = ()) -> fx.GraphModule:
    """A new GraphModule: stacks replaced by kernel calls, stable topological order.

    Placeholders named in `channels_last_inputs` are made channels-last on entry."""
    old_nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(old_nodes)}
    member_of: dict[str, _StackBinding] = {}
    for b in bindings:
        if b.name in kernels:
            for m in b.members:
                member_of[m] = b
    graph = fx.Graph()
    graph._codegen = copy.deepcopy(gm.graph._codegen)  # pytree in/out specs (torch.export)
    env: dict[str, fx.Node] = {}
    placed_stacks: set[str] = set()
    root = torch.nn.Module()
    for name, mod in gm.named_children():
        root.add_module(name, mod)

    def arg_of(n: fx.Node) -> fx.Node:
        place(n)
        return env[n.name]

    def place_stack(b: _StackBinding) -> None:
        if b.name in placed_stacks:
            return
        placed_stacks.add(b.name)
        node_inputs = [x for x in b.inputs if isinstance(x, fx.Node)]
        for x in sorted(node_inputs, key=position.__getitem__):
            place(x)
        attr = f"bs_{b.name}"
        root.add_module(attr, kernels[b.name])
        call = graph.call_module(attr, tuple(env[x.name] for x in node_inputs))
        if len(b.outputs) == 1:
            env[b.outputs[0]] = call
        else:
            for k, o in enumerate(b.outputs):
                if o not in env:
                    env[o] = graph.call_function(_getitem, (call, k))

    aliases = aliases or {}
    by_name = {n.name: n for n in old_nodes}

    def place(n: fx.Node) -> None:
        if n.name in env:
            return
        if n.name in aliases:
            env[n.name] = arg_of(by_name[aliases[n.name]])
            return
        if n.name in member_of:
            place_stack(member_of[n.name])
            if n.name not in env:
                raise KeyError(f"{n.name} is used outside its stack but is not an output")
            return
        for x in sorted(n.all_input_nodes, key=position.__getitem__):
            place(x)
        env[n.name] = graph.node_copy(n, lambda x: env[x.name])
        if n.op == "placeholder" and n.name in channels_last_inputs:
            env[n.name] = graph.call_function(to_channels_last, (env[n.name],))

    for n in old_nodes:
        if n.name in member_of or n.name in aliases:
            continue  # placed when something outside needs them
        place(n)
    for n in gm.graph.nodes:
        if n.op == "get_attr" and not hasattr(root, str(n.target).split(".")[0]):
            setattr(root, str(n.target).split(".")[0], getattr(gm, str(n.target).split(".")[0]))
    new = fx.GraphModule(root, graph, class_name=f"{type(gm).__name__}BrainSlug")
    new.graph.eliminate_dead_code()
    new.recompile()
    attach_arena(new)
    return new


def attach_arena(gm: fx.GraphModule) -> None:
    """Give the stack kernels of `gm` their slots of a static buffer plan."""
    from brainslug.frontend_torch.buffers import Arena, plan_buffers

    calls = {
        n.name: gm.get_submodule(str(n.target)) for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), StackKernel)
    }
    plan = plan_buffers(gm, {name: k.output_sizes() for name, k in calls.items()})
    arena = Arena(plan)
    for name, k in calls.items():
        k.use_arena(arena, [plan.assignment.get((name, i)) for i in range(len(k.output_sizes()))])


def _getitem(t: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    return t[k]


def stack_launches(fn: func.FuncOp) -> tuple[dict[str, str], dict[str, str]]:
    """After the pipeline: stack name -> the kernel it runs (identical stacks
    share one), and stack name -> why it was not lowered (stacks left as `nn.stack`)."""
    launch_of = {
        op.attributes["bs.stack"].data: op.callee_name
        for op in fn.body.block.ops if isinstance(op, loop.LaunchOp)
    }
    fallback_stacks = {
        op.stack_name_value: op.attributes.get("bs.fallback", StringAttr("")).data
        for op in fn.body.block.ops if isinstance(op, nn.StackOp)
    }
    return launch_of, fallback_stacks


def record_library(info: PlanInfo, fn: func.FuncOp, fallback_stacks: dict[str, str],
                   library_reasons: dict[str, str], library_prefix: str = "") -> None:
    """Mark the stacks that run in the framework, and list the library calls
    (with the reasons of those that are fallbacks) in `info`."""
    for s in info.stacks:
        if s.name in fallback_stacks:
            s.compiled, s.reason = False, fallback_stacks[s.name] or "no loop lowering"
            info.fallbacks.append((s.name, s.reason))
    for op in fn.body.block.ops:
        if isinstance(op, nn.LibraryOp) and op.results:
            name = op.attributes[NODE_ATTR].data
            info.library.append((name, op.callee.data))
            if name in library_reasons:
                info.fallbacks.append((name, library_reasons[name]))
        elif isinstance(op, nn.Conv2dOp | nn.LinearOp):
            info.library.append((op.attributes[NODE_ATTR].data, library_prefix + op.name))


def compile_plan(
    gm: fx.GraphModule,
    shape: list[int] | None = None,
    *,
    metas: dict[str, Any] | None = None,
    cpu: str = "host",
    layout: str = "NCHW",
    threads: int | None = None,
) -> tuple[fx.GraphModule, PlanInfo, ModuleOp]:
    """Capture, run the default pipeline, compile, rewrite: the optimized graph.

    Shapes come from running `gm` on inputs of `shape` (0 = the batch) unless
    `metas` (node name -> (shape, dtype)) are given. With `layout="NHWC"` the
    stacks are generated channels-last and rank-4 inputs are made channels-last
    on entry, so that PyTorch's convolutions run channels-last too."""
    from brainslug.frontend_torch import plan_cache
    from brainslug.ir.context import make_context
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.passes.form_stacks import FormStacksPass
    from brainslug.pipeline.default import default_passes
    from brainslug.runtime import cache
    from brainslug.runtime.jit import CompiledKernels, compile_kernels
    from brainslug.runtime.threads import sized_pool

    t0 = time.perf_counter()
    backend = X86Backend(cpu)
    key = record = None
    if metas is None and cache.enabled():
        key = plan_cache.plan_key(gm, shape, layout, backend.fingerprint())
        record = plan_cache.load(key)
    if metas is None:
        metas = record.metas if record else propagate_shapes(gm, [shape] if shape else [])
    cap = capture(gm, [shape] if shape is not None else [], metas, layout)
    ctx = make_context()
    module = cap.module
    fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
    aliases = removed_aliases(fn)
    FormStacksPass().apply(ctx, module)
    nodes = {n.name: n for n in gm.graph.nodes}
    infos = describe_stacks(fn, cap)
    bindings = _bindings(fn, cap, nodes)
    runners: Any = None
    if record is not None:
        launch_of, fallback_stacks = record.launch_of, record.fallback_stacks
        infos_module = plan_cache.infos_from_json(record.infos)
        runners = CompiledKernels.from_cache(infos_module, record.unit_keys, backend,
                                             sized_pool(threads))
        if runners is not None:
            info_notes = ["plan loaded from the plan cache"]
    if runners is None:
        info_notes = []
        for p in default_passes("x86-64", cpu)[1:]:
            p.apply(ctx, module)
        launch_of, fallback_stacks = stack_launches(fn)
        runners = compile_kernels(module, backend, sized_pool(threads)) if launch_of else None
        infos_json = plan_cache.infos_to_json(module)
        if key is not None and infos_json is not None:
            plan_cache.store(key, plan_cache.PlanRecord(
                metas, launch_of, fallback_stacks, infos_json,
                runners.unit_keys if runners is not None else {}))
    compiled: dict[str, Any] = {}
    launches = set(launch_of)
    kernels: dict[str, StackKernel] = {}
    for b in bindings:
        if b.name in launches:
            kernels[b.name] = StackKernel(b.name, runners[launch_of[b.name]], b.inputs,
                                          b.output_types, channels_last=layout == "NHWC")
            compiled[b.name] = True
    if layout == "NHWC":
        info_notes.append("layout: NHWC (channels-last) activations; stacks are generated for "
                          "NHWC and PyTorch's convolutions run channels-last")
    info = PlanInfo(stacks=infos, notes=info_notes)
    record_library(info, fn, fallback_stacks, cap.library_reasons)
    cl_inputs = [
        src.name for src, a in zip(cap.arg_sources, fn.body.block.args, strict=True)
        if layout == "NHWC" and isinstance(src, fx.Node) and src.op == "placeholder"
        and len(a.type.get_shape()) == 4
    ]
    new_gm = rewrite_graph(gm, bindings, kernels, aliases, cl_inputs)
    info.layout = layout
    info.compile_seconds = time.perf_counter() - t0
    return new_gm, info, module


def kernel_threads(threads: Any = "auto") -> int | None:
    """How many threads the stack kernels use (None: all cores, the process-wide
    pool). `auto` leaves the cores PyTorch's own threads don't use, at least one:
    PyTorch's OpenMP threads keep spinning between its operators, so a second
    pool on the same cores waits for them at every phase (on 2 cores, densenet121
    at batch 8 ran 127 ms with one kernel thread and 165 ms with two)."""
    if threads == "auto":
        if os.environ.get("BRAINSLUG_NUM_THREADS"):
            return None  # the process-wide pool, of that size
        return max(1, (os.cpu_count() or 1) - torch.get_num_threads())
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto', None or a positive int, got {threads!r}")
    return threads


LAYOUTS = ("auto", "NCHW", "NHWC")
"""Values of optimize()'s `layout` option."""


def choose_layout(model: torch.nn.Module, layout: Any = "auto") -> str:
    """The activation layout of the plan: `auto` picks channels-last (NHWC) for
    models with 2-d convolutions when oneDNN runs them (its channels-last
    kernels are faster than NCHW ones on x86), else NCHW."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if layout != "auto":
        return layout
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return "NHWC" if has_conv and torch.backends.mkldnn.is_available() else "NCHW"


OPTIONS = ("cpu", "layout", "fold_batchnorm", "pack_convolutions", "threads")
"""optimize()'s keyword options (CPU plans)."""


def optimize(model: torch.nn.Module, shape: Sequence[int], **options: Any):
    """The BrainSlug-accelerated module for inputs of `shape` (0 = any size).

    Options: `layout` ("auto", "NCHW", "NHWC"; see `choose_layout`);
    `pack_convolutions` (default True: with a channels-last plan, convolutions
    run on oneDNN with prepacked weights, bitwise equal to PyTorch's
    channels-last convolutions); `threads` (the kernels' threads; see
    `kernel_threads`); `fold_batchnorm` (default False: folds each
    batch norm that follows a convolution into its weights, which changes the
    rounding; the report says so); `cpu` (LLVM CPU name, default the host)."""
    from brainslug.frontend_torch.module import BrainSlugModule

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"optimize() expects a torch.nn.Module, got {type(model).__name__}")
    spec = check_shape(list(shape) if isinstance(shape, tuple) else shape)
    from brainslug.frontend_torch.cuda_kernel import is_cuda_model, optimize_cuda

    if is_cuda_model(model):  # stacks become CUDA kernels; convolutions stay in cuDNN
        return optimize_cuda(model, spec, **options)
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown optimize() options: {sorted(unknown)} "
                         f"(known: {', '.join(OPTIONS)})")
    for flag in ("fold_batchnorm", "pack_convolutions"):
        if not isinstance(options.get(flag, False), bool):
            raise ValueError(f"{flag} must be True or False, got {options[flag]!r}")
    cpu = options.get("cpu", "host")
    layout = choose_layout(model, options.get("layout", "auto"))
    threads = kernel_threads(options.get("threads", "auto"))
    how, notes = "torch.fx", []
    try:
        gm = trace(model)
    except Exception as e:  # fx can't trace it: torch.export, else run the model as it is
        notes.append(f"torch.fx could not trace the model ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:200]}); captured with torch.export")
        try:
            gm, how = export(model, spec), "torch.export"
        except Exception as e2:
            info = PlanInfo(capture="none", notes=notes[:1])
            info.fallbacks.append(("<model>", f"neither torch.fx nor torch.export could "
                                   f"capture it: {type(e2).__name__}: {e2}"))
            return BrainSlugModule(model, None, spec, info)
    if options.get("fold_batchnorm", False):
        from brainslug.frontend_torch.fold import fold_batchnorm

        gm, folded = fold_batchnorm(gm, assume_eval=True)
        notes.append(f"fold_batchnorm=True: {len(folded)} batch norms folded into the "
                     f"convolutions before them (weights computed in float64 at optimize() "
                     f"time; results round differently from the model's)")
    pack = layout == "NHWC" and options.get("pack_convolutions", True)
    if pack:
        from brainslug.frontend_torch.library_conv import fuse_conv_activations, fuse_conv_add

        if fused := fuse_conv_add(gm):
            notes.append(f"{len(fused)} residual adds (and the ReLUs after them) run as "
                         f"oneDNN post-ops of the convolutions before them (bit for bit the "
                         f"separate ops)")
        if fused := fuse_conv_activations(gm):
            notes.append(f"{len(fused)} ReLU/ReLU6 layers run as oneDNN post-ops of the "
                         f"convolutions before them (bit for bit the separate activation)")
    with gc_paused():
        new_gm, info, _ = compile_plan(gm, spec, cpu=cpu, layout=layout, threads=threads)
    if pack:
        from brainslug.frontend_torch.library_conv import PackedConv2d, pack_graph_convolutions

        packed = pack_graph_convolutions(new_gm)
        convs = [m for m in new_gm.modules() if isinstance(m, PackedConv2d)]
        reasons = sorted({m.reason for m in convs if not m.packed})
        notes.append(f"{sum(m.packed for m in convs)} of {len(packed)} convolutions run on "
                     f"oneDNN with prepacked weights"
                     + (f" (the others: {'; '.join(reasons)})" if reasons else ""))
    info.capture, info.notes = how, notes + info.notes
    return BrainSlugModule(model, new_gm, spec, info)

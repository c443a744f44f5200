"""`conv="auto"`: each convolution runs where it is faster, measured at optimize().

A convolution whose epilogue oneDNN's post-ops apply (ReLU, a residual add),
or that has none, saves no memory pass in BrainSlug's kernel: it stays in the
library without being compiled or timed (all of DenseNet's, which feed a
`cat`). The plan with the others compiled is built first. One
call of it on a random input of the plan's shape (batch 1 where the batch is
free) records the inputs of each convolution's kernel; then, per distinct
convolution (shapes, hyperparameters and epilogue), BrainSlug's kernel with
its epilogue is timed against what the library plan would run: oneDNN's
convolution with prepacked weights, plus one memory pass for the epilogue
where oneDNN's post-ops can't take it (batch norm, other activations). The
faster wins, BrainSlug's kernel up to `FAVOR` slower (it also saves the
epilogue's buffer and call). The choices are kept in the kernel cache, keyed like the plan, so a
warm optimize() times nothing, and the report lists them with both times.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch.capture import capture
from brainslug.frontend_torch.compile import compile_plan
from brainslug.frontend_torch.graph import Spec, example_inputs, input_shapes
from brainslug.frontend_torch.speed import medians
from brainslug.plan import progress
from brainslug.plan.report import ConvChoice
from brainslug.runtime import cache

BUDGET_SECONDS = 3.0
"""Timing stops after this long; the convolutions left run in the library."""
FAVOR = 1.25
"""BrainSlug's kernel wins up to this much slower than the library call: the
library side's estimate leaves out the epilogue kernel's dispatch and the cache
misses of its extra buffer (mobilenet_v2 at batch 1 ran 8.8 ms with the bare
comparison, 7.6 ms with every convolution compiled)."""
POST_OPS = {"nn.add"}
"""Epilogue layers the library plan applies inside oneDNN's convolution, bit for
bit: a residual add. (oneDNN's ReLU post-op turns NaN into 0: in exact mode a
ReLU after a library convolution is a pass of its own.)"""
MAX_TIMED = 64
"""Convolutions compiled and timed at most, those with the largest outputs first
(the largest epilogue passes saved): compiling is most of a cold optimize()."""


def choose_convs(gm: fx.GraphModule, spec: Spec, key_parts: list[str], *,
                 cpu: str, threads: int | None) -> list[ConvChoice]:
    """Who runs each channels-last convolution of `gm` (fx node names)."""
    key = cache.key("conv-choice", *key_parts)
    if (blob := cache.load(key)) is not None:
        try:
            return [ConvChoice(**c) for c in json.loads(blob)]
        except (ValueError, TypeError):
            pass
    choices = _measure(gm, spec, cpu, threads)
    cache.store(key, json.dumps([c.__dict__ for c in choices]).encode())
    return choices


def _conv_stacks(info: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Compiled stack name -> (its convolution's fx node, the layer ops)."""
    out = {}
    for s in info.stacks:
        nodes = s.layer_ops()
        convs = [n for n, op in nodes if op == "nn.conv2d"]
        if s.compiled and len(convs) == 1:
            out[s.name] = (convs[0], tuple(op for _, op in nodes))
    return out


def candidates(gm: fx.GraphModule, spec: Spec) -> tuple[set[str], list[ConvChoice]]:
    """The convolutions worth timing (fx node names), and the choices made
    without timing: a convolution whose epilogue oneDNN's post-ops apply (or
    that has none, as DenseNet's before a `cat`) saves no memory pass in
    BrainSlug's kernel, so it stays in the library, uncompiled."""
    from brainslug.frontend_torch.compile import _shapes
    from brainslug.frontend_torch.graph import captured
    from brainslug.passes.form_stacks import conv_epilogue_chains, remove_identities
    from brainslug.plan.capture import NODE_ATTR

    cap = capture(gm, input_shapes(spec), _shapes(gm, spec), "NHWC", compile_convs=True)
    block = captured(cap).function.body.block
    remove_identities(block)
    decided, worth = [], []
    for chain in conv_epilogue_chains(block):
        node = chain[0].attributes[NODE_ATTR].data  # type: ignore[attr-defined]
        if {op.name for op in chain[1:]} <= POST_OPS:
            decided.append(ConvChoice(node, "library", why="no epilogue pass to save"))
        else:  # the pass saved is one over the output
            worth.append((-math.prod(chain[-1].results[0].type.get_shape()[1:]), node))
    worth.sort()
    for _, node in worth[MAX_TIMED:]:
        decided.append(ConvChoice(node, "library", why="beyond the convolutions timed"))
    return {node for _, node in worth[:MAX_TIMED]}, decided


def _measure(gm: fx.GraphModule, spec: Spec, cpu: str,
             threads: int | None) -> list[ConvChoice]:
    from brainslug.frontend_torch.library_conv import PackedConv2d

    timed, decided = candidates(gm, spec)
    if not timed:
        return decided
    plan, info, _ = compile_plan(gm, spec, cpu=cpu, layout="NHWC", threads=threads,
                                 convs=timed, only_convs=True)
    stacks = _conv_stacks(info)
    kernels = {k.stack_name: k for k in plan.modules() if getattr(k, "is_stack_kernel", False)
               and k.stack_name in stacks}
    seen: dict[str, tuple[torch.Tensor, ...]] = {}
    hooks = [k.register_forward_pre_hook(
        lambda mod, args: seen.setdefault(mod.stack_name, tuple(a.clone() for a in args)))
        for k in kernels.values()]
    try:
        with torch.no_grad():
            plan(*example_inputs(spec))
    finally:
        for h in hooks:
            h.remove()
    nodes = {n.name: n for n in gm.graph.nodes}
    measured: dict[tuple[Any, ...], tuple[float, float]] = {}
    choices, start = [], time.perf_counter()
    for i, (name, kernel) in enumerate(kernels.items()):
        progress.note("timing convolutions", i, len(kernels))
        node_name, ops = stacks[name]
        node, args = nodes.get(node_name), seen.get(name)
        conv = gm.get_submodule(str(node.target)) if node is not None and \
            node.op == "call_module" else None
        if conv is None or not args or not isinstance(conv, torch.nn.Conv2d):
            choices.append(ConvChoice(node_name, "brainslug", why="not a module call"))
            continue
        sig = (tuple(a.shape for a in args), repr(conv), ops)
        if sig not in measured:
            if time.perf_counter() - start > BUDGET_SECONDS:
                choices.append(ConvChoice(node_name, "library", why="timing budget spent"))
                continue
            library = _library_call(PackedConv2d(conv), args, ops)
            m = medians({"brainslug": lambda _, k=kernel, a=args: k(*a), "library": library},
                        args[0], rounds=7)
            measured[sig] = (m["brainslug"], m["library"])
        bs, lib = measured[sig]
        runs = "brainslug" if bs <= lib * FAVOR else "library"
        choices.append(ConvChoice(node_name, runs, bs * 1e3, lib * 1e3))
    return decided + choices


def _library_call(conv: torch.nn.Module, args: tuple[torch.Tensor, ...],
                  ops: tuple[str, ...]) -> Callable[[torch.Tensor], Any]:
    """The library plan's work for one convolution with this epilogue: the
    convolution, and one pass over its output (and a residual) unless
    oneDNN's post-ops apply the whole epilogue."""
    epilogue = set(ops) - {"nn.conv2d"}
    if epilogue <= POST_OPS:
        return lambda x: conv(x)
    if "nn.add" in epilogue and len(args) > 1:
        other = args[1]
        return lambda x: torch.add(conv(x), other)
    return lambda x: torch.relu(conv(x))

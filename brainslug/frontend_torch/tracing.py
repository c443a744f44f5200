"""Tracing a PyTorch model into an fx graph: symbolic tracing, or torch.export
where that fails, one capture at a time and safe against other threads, with
the graph made ready for capture (in-place view methods made functional,
torch.export's guard call dropped)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn as tnn

from brainslug.frontend_torch.capture import know_torchvision

TRACE_LOCK = threading.RLock()
"""One capture at a time: fx and torch.export patch process-wide state while
they trace."""


class _ThreadTracer(fx.Tracer):
    """fx's tracer for the calling thread only. While it traces, fx patches
    `nn.Module.__call__` and `__getattr__` for the whole process: module calls
    and attribute reads of other threads (a model being served) pass through
    unchanged here, where fx's own would fail ("module is not installed as a
    submodule") or record them into this graph."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def call_module(self, m: tnn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def trace(model: tnn.Module) -> fx.GraphModule:
    """fx symbolic trace of `model` in eval mode (dropout off, BN running stats),
    safe against other threads (`TRACE_LOCK`, `_ThreadTracer`)."""
    know_torchvision()
    with TRACE_LOCK:
        was_training = model.training
        model.eval()
        try:
            tracer = _ThreadTracer()
            graph = tracer.trace(model)
            return _functional_views(fx.GraphModule(tracer.root, graph, type(model).__name__))
        finally:
            model.train(was_training)


_IN_PLACE_VIEWS = {"transpose_": "transpose", "t_": "t", "squeeze_": "squeeze",
                   "unsqueeze_": "unsqueeze", "swapdims_": "swapdims",
                   "swapaxes_": "swapaxes", "as_strided_": "as_strided"}
"""Tensor methods that change a tensor's shape in place, and their functional
forms."""


def _functional_views(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with each in-place change of a tensor's shape (`y.transpose_(2, 3)`)
    made functional: the call returns the new view, and the nodes after it that
    read `y` read that view. fx's graph otherwise gives `y` the shape it had
    before the call, and the plan expected the wrong one (the first call
    raised)."""
    nodes = list(gm.graph.nodes)
    changed = False
    for i, n in enumerate(nodes):
        if n.op != "call_method" or n.target not in _IN_PLACE_VIEWS or not n.args or \
                not isinstance(n.args[0], fx.Node):
            continue
        src = n.args[0]
        n.target = _IN_PLACE_VIEWS[n.target]
        for later in nodes[i + 1:]:
            if src in later.all_input_nodes:
                later.replace_input_with(src, n)
        changed = True
    if changed:
        gm.recompile()
    return gm


def export(model: tnn.Module, shape: Sequence[int] | Sequence[Sequence[int]]) -> fx.GraphModule:
    """torch.export of `model` in eval mode on inputs of `shape` (one shape, or
    one per input), the batch (0 in dim 0 of an input's shape) dynamic and
    shared by those inputs: the fallback for models that symbolic tracing
    can't handle."""
    know_torchvision()
    shapes = [list(s) for s in shape] if shape and all(
        isinstance(s, Sequence) for s in shape) else [list(shape)]  # type: ignore[arg-type]
    with TRACE_LOCK:
        was_training = model.training
        model.eval()
        try:
            examples = tuple(torch.randn([2 if d == 0 else d for d in s]) for s in shapes)
            batch = torch.export.Dim("batch", min=1)
            dyn = tuple({0: batch} if s and s[0] == 0 else {} for s in shapes)
            ep = torch.export.export(model, examples,
                                     dynamic_shapes=_by_parameter(model, dyn) if any(dyn)
                                     else None)
            return _without_guards(ep.module())
        finally:
            model.train(was_training)


def _by_parameter(model: tnn.Module, dyn: tuple[dict[int, Any], ...]) -> tuple[Any, ...]:
    """Dynamic shapes per input, as torch.export matches them to the forward's
    parameters: the inputs that a `*args` parameter takes are one tuple."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return dyn
    star = next((k for k, p in enumerate(params) if p.kind is p.VAR_POSITIONAL), None)
    return dyn if star is None else (*dyn[:star], tuple(dyn[star:]))


def _without_guards(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` without torch.export's input-guard call (`_guards_fn`, a local
    function that a saved plan can't name): a plan checks its inputs against
    its shape itself."""
    for n in list(gm.graph.nodes):
        if n.op == "call_module" and n.target == "_guards_fn" and not n.users:
            gm.graph.erase_node(n)
    if hasattr(gm, "_guards_fn") and not any(
            n.op == "call_module" and n.target == "_guards_fn" for n in gm.graph.nodes):
        delattr(gm, "_guards_fn")
    gm.recompile()
    return gm

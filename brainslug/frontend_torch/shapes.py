"""Shapes and memory orders of a traced graph's values, without computing them.

`propagate_shapes` runs the graph on meta tensors at batch 1 and 2, so the
extents that follow the batch become -1; `memory_orders` runs it once more on
channels-last or row-major inputs for the stride order of every result. The
meta runs are cached per graph module (`_META_RUNS`) and fall back to real
runs on random inputs where an op has no meta kernel or a value depends on
data. An eval batch norm takes a shortcut on meta tensors (`_meta_batch_norm`).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn as tnn

from brainslug.frontend_torch.graph_builder import stride_order

_CONV_FUNCTIONS = {F.conv2d, torch.conv2d, torch.ops.aten.conv2d.default,
                   torch.ops.aten.convolution.default}
_CONV_MODULES = ("Conv2d", "PackedConv2d", "ConvAct", "ConvAdd")


def _is_conv(n: fx.Node, modules: dict[str, tnn.Module]) -> bool:
    if n.op == "call_function":
        return n.target in _CONV_FUNCTIONS
    if n.op == "call_module" and str(n.target) in modules:
        return any(t.__name__ in _CONV_MODULES for t in type(modules[str(n.target)]).__mro__)
    return False


def tensor_meta(gm: fx.GraphModule, inputs: Sequence[torch.Tensor],
                orders: bool = False, channels_last: bool = True) -> dict[str, Any]:
    """Shape and dtype of every node's result (tensors), or with `orders` its
    `stride_order` (convolutions channels-last with `channels_last`)."""
    metas: dict[str, Any] = {}
    modules = dict(gm.named_modules())

    class Recorder(fx.Interpreter):
        def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
            m = self.fetch_attr(target)
            if (out := _meta_batch_norm(m, args, kwargs)) is not None:
                return out
            return super().call_module(target, args, kwargs)

        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if orders and channels_last and isinstance(out, torch.Tensor) \
                    and out.dim() == 4 and _is_conv(n, modules):
                # oneDNN's convolutions keep channels-last; their meta kernels don't
                out = out.contiguous(memory_format=torch.channels_last)
            if isinstance(out, torch.Tensor):
                metas[n.name] = stride_order(out) if orders else (tuple(out.shape), out.dtype)
            return out

    mods = list(gm.modules())
    was = [m.training for m in mods]
    for m in mods:
        m.training = False
    try:
        with torch.no_grad():
            Recorder(gm).run(*inputs)
    finally:
        for m, t in zip(mods, was, strict=True):
            m.training = t
    return metas


_BATCH_NORMS = {tnn.BatchNorm1d: (2, 3), tnn.BatchNorm2d: (4,), tnn.BatchNorm3d: (5,)}


def _meta_batch_norm(m: tnn.Module, args: Any, kwargs: Any) -> torch.Tensor | None:
    """An eval batch norm's result on a meta input, without PyTorch's Python
    decomposition (three quarters of a meta run's time: densenet121's 121
    batch norms took 70 of 92 ms): a tensor like its input, which is what
    the decomposition's elementwise arithmetic makes of an input in a standard
    layout. None (run the module) where the input is not plainly one: another
    rank, channel count, dtype or layout, and so any error comes from PyTorch."""
    ranks = _BATCH_NORMS.get(type(m))
    if ranks is None or m.training or kwargs or len(args) != 1:
        return None
    x = args[0]
    if not isinstance(x, torch.Tensor) or not x.is_meta or x.dim() not in ranks:
        return None
    params = [t for t in (m.weight, m.bias, m.running_mean, m.running_var) if t is not None]
    if any(t.shape != (x.shape[1],) or t.dtype != x.dtype for t in params) or not (
            x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(
                memory_format=torch.channels_last))):
        return None
    if m.running_mean is None and x.numel() // x.shape[1] <= 1:
        return None  # (batch statistics of one value: PyTorch's error)
    return torch.empty_like(x)


def _meta_run(
    gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]], batches: Sequence[int],
    orders: bool = False, channels_last: bool = True,
) -> list[dict[str, Any]]:
    """`tensor_meta` per batch size, on meta tensors: a copy of `gm` whose
    parameters and buffers are meta tensors (the model is neither changed nor
    copied in memory), so nothing is computed. Raises where an op has no meta
    kernel or a value depends on data."""
    structure = _structure(gm)
    key = (structure, tuple(map(tuple, example_shapes)), tuple(batches), orders,
           channels_last)
    runs = _META_RUNS.setdefault(gm, {})
    if key not in runs:
        try:
            if (copied := runs.get(("meta copy", structure))) is None:
                copied = runs[("meta copy", structure)] = meta_copy(gm)
            runs[key] = _meta_run_uncached(gm, example_shapes, batches, orders, channels_last,
                                           copied)
        except Exception as e:
            runs[key] = e.with_traceback(None)
    found = runs[key]
    if isinstance(found, Exception):
        raise found
    return [dict(d) for d in found]


_META_RUNS: weakref.WeakKeyDictionary[fx.GraphModule, dict[Any, Any]] = \
    weakref.WeakKeyDictionary()
"""`_meta_run`'s results per graph module, and its copy on meta tensors: a cold
optimize() asks for the same shapes and orders several times (conv="auto"'s
candidates, its trial plan and the final plan), each a run of the whole graph
on meta tensors."""


def _structure(gm: fx.GraphModule) -> tuple[Any, ...]:
    """What a meta run's results depend on: the graph, and the type and tensor
    shapes of each module (a module replaced under its name changes it)."""
    return (str(gm.graph), tuple(
        (name, type(m).__name__,
         tuple((k, tuple(t.shape)) for k, t in m.named_parameters(recurse=False)),
         tuple((k, tuple(t.shape)) for k, t in m.named_buffers(recurse=False)
               if t is not None))
        for name, m in gm.named_modules()))


def meta_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` whose parameters and buffers are meta tensors."""
    memo: dict[int, Any] = {}
    for p in gm.parameters():
        memo[id(p)] = tnn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in gm.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(gm, memo)


def _meta_run_uncached(
    gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]], batches: Sequence[int],
    orders: bool, channels_last: bool, meta: fx.GraphModule | None = None,
) -> list[dict[str, Any]]:
    """`_meta_run` on `meta` (`meta_copy(gm)` unless given)."""
    meta = meta if meta is not None else meta_copy(gm)
    out = []
    for batch in batches:
        xs = [_channels_last_if(orders and channels_last,
                                torch.empty([batch if d == 0 else d for d in shape],
                                            device="meta"))
              for shape in example_shapes]
        out.append(tensor_meta(meta, xs, True, channels_last) if orders
                   else tensor_meta(meta, xs))
    return out


def _channels_last_if(cond: bool, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cond and x.dim() == 4 else x


def memory_orders(gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]],
                  channels_last: bool = True) -> dict[str, tuple[int, ...]]:
    """The `stride_order` of every tensor node's result when the rank-4 inputs
    are channels-last (as in an NHWC plan) or row-major: the memory order in
    which PyTorch hands each layer's result to the next (a permute of a
    channels-last tensor is a contiguous one). Meta tensors at batch 2, else a
    real run; {} when neither runs."""
    try:
        return _meta_run(gm, example_shapes, (2,), True, channels_last)[0]
    except Exception:
        pass
    try:
        return tensor_meta(gm, [
            _channels_last_if(channels_last, torch.randn([2 if d == 0 else d for d in shape]))
            for shape in example_shapes], True, channels_last)
    except Exception:
        return {}


def propagate_shapes(
    gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]]
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes with -1 where an extent follows the batch size (0 in the shape).

    The graph runs on meta tensors at batch 1 and 2 (shapes only, no compute);
    where that fails it runs for real on random inputs."""
    def inputs(batch: int) -> list[torch.Tensor]:
        return [
            torch.randn([batch if d == 0 else d for d in shape]) for shape in example_shapes
        ]

    dynamic = any(0 in s for s in example_shapes)
    batches = (1, 2) if dynamic else (1,)
    try:
        a, *rest = _meta_run(gm, example_shapes, batches)
    except Exception:  # an op without a meta kernel, data-dependent code: run it for real
        a = tensor_meta(gm, inputs(1))
        rest = [tensor_meta(gm, inputs(2))] if dynamic else []
    if not dynamic:
        return a
    b = rest[0]
    out = {}
    for name, (shape, dtype) in a.items():
        other = b.get(name, (shape, dtype))[0]
        if len(other) != len(shape):
            continue  # rank depends on the batch: leave it to PyTorch
        out[name] = (tuple(-1 if x != y else x for x, y in zip(shape, other, strict=True)), dtype)
    return out

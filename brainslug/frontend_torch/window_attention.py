"""Swin's shifted-window attention traced through for a plan's static H and W.

torchvision wraps `shifted_window_attention` for fx (`torch.fx.wrap`): its
body branches on the input's height and width, so symbolic tracing can't see
into it, and the plan ran the whole function in PyTorch: the pad, both cyclic
shifts, the window partition and its reverse (a copy each), the scale, the
relative position bias and the mask (two broadcast passes over the attention
scores), softmax, and the mask itself, rebuilt on every call.

A plan knows H and W. Each call becomes the function's own steps as graph
nodes, with the branches taken for those extents and the mask a constant made
once by torchvision's own steps. The nodes are the ones the function runs, in
its order, so results are PyTorch's; what changes is that BrainSlug compiles
the memory-bound steps between the GEMMs (shift + partition into one copy,
bias + mask + softmax into one pass, reverse + shift + crop into the residual
add after the block) and packs the two linear layers like any other.
"""

from __future__ import annotations

import inspect
import math
import operator
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from brainslug.frontend_torch.param_views import attr_at


def _shifted_window_attention() -> Any:
    """torchvision's function, where torchvision is imported (a model using it
    has imported it)."""
    if "torchvision" not in sys.modules:
        return None
    try:
        from torchvision.models import swin_transformer
    except ImportError:
        return None
    return getattr(swin_transformer, "shifted_window_attention", None)


def window_mask(pad_h: int, pad_w: int, window: Sequence[int], shift: Sequence[int],
                like: torch.Tensor) -> torch.Tensor:
    """The additive mask of shifted windows, shape (1, windows, 1, N, N): -100
    between tokens that the cyclic shift brought together from different
    regions, else 0, made by torchvision's steps."""
    mask = like.new_zeros((pad_h, pad_w))
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    windows = (pad_h // window[0]) * (pad_w // window[1])
    mask = mask.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(windows, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, (-100.0)).masked_fill(mask == 0, 0.0)
    return mask.unsqueeze(1).unsqueeze(0)


def _owning_linear(gm: fx.GraphModule, model: nn.Module | None, weight: Any,
                   bias: Any) -> str | None:
    """The `nn.Linear` of `model` whose weight (and bias) the get_attr nodes
    `weight` and `bias` read, so that the layer is called as the module (and
    packed); it becomes that submodule of `gm` (fx kept only a holder of the
    parameters there)."""
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return None
    owner, _, leaf = str(weight.target).rpartition(".")
    if leaf != "weight":
        return None
    try:
        m = model.get_submodule(owner) if model is not None else gm.get_submodule(owner)
        held = gm.get_submodule(owner)
    except AttributeError:
        return None
    if type(m) is not nn.Linear or held.weight is not m.weight:
        return None
    if m.bias is None and bias is not None:
        return None
    if m.bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"
                                   and bias.target == f"{owner}.bias"):
        return None
    if held is not m:
        parent, _, leaf = owner.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, m)
    return owner


class _Emit:
    """Nodes inserted before a node of `graph`, in order."""

    def __init__(self, graph: fx.Graph, before: fx.Node) -> None:
        self.graph, self.before = graph, before

    def function(self, fn: Any, *args: Any, **kwargs: Any) -> fx.Node:
        with self.graph.inserting_before(self.before):
            return self.graph.call_function(fn, args, kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> fx.Node:
        with self.graph.inserting_before(self.before):
            return self.graph.call_method(name, args, kwargs)

    def module(self, target: str, *args: Any) -> fx.Node:
        with self.graph.inserting_before(self.before):
            return self.graph.call_module(target, args)

    def attr(self, target: str) -> fx.Node:
        with self.graph.inserting_before(self.before):
            return self.graph.get_attr(target)


def wraps_window_attention(gm: fx.GraphModule) -> bool:
    """Whether `gm` calls torchvision's `shifted_window_attention`."""
    fn = _shifted_window_attention()
    return fn is not None and any(
        n.op == "call_function" and n.target is fn for n in gm.graph.nodes)


def inline_window_attention(gm: fx.GraphModule, metas: dict[str, Any],
                            model: nn.Module | None = None) -> list[str]:
    """Replace each call of torchvision's `shifted_window_attention` whose input
    has static H, W and C in `metas` (fx name -> (shape, dtype), -1 for the
    batch) by the function's steps; the fx names so replaced. The linear
    layers are called as `model`'s modules where the weights are theirs. Calls in
    training mode, of another rank or with dynamic extents stay as they are."""
    fn = _shifted_window_attention()
    if fn is None:
        return []
    signature = inspect.signature(fn)
    done: list[str] = []
    masks: dict[tuple[Any, ...], str] = {}
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target is not fn:
            continue
        try:
            bound = signature.bind(*n.args, **n.kwargs)
        except TypeError:
            continue
        bound.apply_defaults()
        a = bound.arguments
        x = a["input"]
        meta = metas.get(x.name) if isinstance(x, fx.Node) else None
        if a["training"] is not False or meta is None or len(meta[0]) != 4 or \
                min(meta[0][1:]) <= 0 or meta[1] != torch.float32:
            continue
        window, shift, heads = a["window_size"], a["shift_size"], a["num_heads"]
        if not (isinstance(window, list | tuple) and isinstance(shift, list | tuple)
                and isinstance(heads, int) and len(window) == 2 and len(shift) == 2
                and all(isinstance(v, int) for v in [*window, *shift])):
            continue
        _, h, w, c = meta[0]
        _inline(gm, model, n, a, (h, w, c), masks)
        done.append(n.name)
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


def _inline(gm: fx.GraphModule, model: nn.Module | None, n: fx.Node, a: dict[str, Any], hwc: tuple[int, int, int],
            masks: dict[tuple[Any, ...], str]) -> None:
    """Emit the steps of one call (the function's branches taken for `hwc`)
    and make its users read their result."""
    e = _Emit(gm.graph, n)
    h, w, c = hwc
    window, heads = list(a["window_size"]), a["num_heads"]
    logit_scale, qkv_bias = a["logit_scale"], a["qkv_bias"]
    pad_r = (window[1] - w % window[1]) % window[1]
    pad_b = (window[0] - h % window[0]) % window[0]
    pad_h, pad_w = h + pad_b, w + pad_r
    shift = list(a["shift_size"])
    if window[0] >= pad_h:
        shift[0] = 0
    if window[1] >= pad_w:
        shift[1] = 0
    rows, cols = pad_h // window[0], pad_w // window[1]
    tokens = window[0] * window[1]

    # Windows keep the batch as a dim of its own, (B, windows, N, C), where
    # torchvision merges them (B * windows, N, C): the same elements in the
    # same memory order, read by the same GEMMs (they fold all leading dims),
    # and a plan's stacks can hold the batch outermost.
    windows = rows * cols
    x = a["input"]
    if pad_r or pad_b:
        x = e.function(F.pad, x, (0, 0, 0, pad_r, 0, pad_b))
    if sum(shift) > 0:
        x = e.function(torch.roll, x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    x = e.method("view", x, -1, rows, window[0], cols, window[1], c)
    x = e.method("permute", x, 0, 1, 3, 2, 4, 5)
    x = e.method("reshape", x, -1, windows, tokens, c)

    qkv_layer = _owning_linear(gm, model, a["qkv_weight"], qkv_bias)
    if logit_scale is not None and qkv_bias is not None:
        # Swin V2: the keys have no bias (a copy of the bias with its middle third 0)
        length = _numel(gm, qkv_bias) // 3
        qkv_bias = e.function(torch.cat, (
            e.function(operator.getitem, qkv_bias, slice(None, length)),
            e.function(torch.zeros_like,
                       e.function(operator.getitem, qkv_bias, slice(length, 2 * length))),
            e.function(operator.getitem, qkv_bias, slice(2 * length, None))))
        qkv_layer = None
    qkv = e.module(qkv_layer, x) if qkv_layer else \
        e.function(F.linear, x, a["qkv_weight"], qkv_bias)
    qkv = e.method("reshape", qkv, -1, windows, tokens, 3, heads, c // heads)

    def dense(t: fx.Node) -> fx.Node:
        # the matrix operands as torch.matmul copies them (it can't fold their
        # batch dims as views), here written by the stacks that compute them
        return e.method("contiguous", t)

    q, k, v = (e.method("transpose", e.function(
        operator.getitem, qkv, (slice(None), slice(None), slice(None), i)), 2, 3)
        for i in range(3))  # (B, windows, heads, N, C / heads)
    if logit_scale is not None:
        attn = e.function(operator.matmul, dense(e.function(F.normalize, q, dim=-1)),
                          dense(e.method("transpose", e.function(F.normalize, k, dim=-1), -2, -1)))
        scale = e.method("exp", e.function(torch.clamp, logit_scale, max=math.log(100.0)))
        attn = e.function(operator.mul, attn, scale)
    else:
        q = dense(e.function(operator.mul, q, (c // heads) ** -0.5))
        attn = e.method("matmul", q, dense(e.method("transpose", k, -2, -1)))
    attn = e.function(operator.add, attn, a["relative_position_bias"])
    if sum(shift) > 0:
        key = (pad_h, pad_w, *window, *shift)
        if key not in masks:
            masks[key] = _register_mask(gm, pad_h, pad_w, window, shift)
        attn = e.function(operator.add, attn, e.attr(masks[key]))
    attn = e.function(F.softmax, attn, dim=-1)

    x = e.method("matmul", attn, dense(v))
    x = e.method("transpose", x, 2, 3)
    x = e.method("reshape", x, -1, windows, tokens, c)
    proj_layer = _owning_linear(gm, model, a["proj_weight"], a["proj_bias"])
    x = e.module(proj_layer, x) if proj_layer else \
        e.function(F.linear, x, a["proj_weight"], a["proj_bias"])
    x = e.method("view", x, -1, rows, cols, window[0], window[1], c)
    x = e.method("permute", x, 0, 1, 3, 2, 4, 5)
    x = e.method("reshape", x, -1, pad_h, pad_w, c)
    if sum(shift) > 0:
        x = e.function(torch.roll, x, shifts=(shift[0], shift[1]), dims=(1, 2))
    if pad_r or pad_b:  # torchvision's result is dense: so is the crop
        x = e.method("contiguous", e.function(
            operator.getitem, x, (slice(None), slice(None, h), slice(None, w), slice(None))))
    n.replace_all_uses_with(x)
    gm.graph.erase_node(n)


def _numel(gm: fx.GraphModule, t: Any) -> int:
    """The element count of the parameter that get_attr node `t` reads."""
    if not isinstance(t, fx.Node) or t.op != "get_attr":
        raise ValueError(f"expected a parameter, got {t}")
    return int(attr_at(gm, str(t.target)).numel())


def _register_mask(gm: fx.GraphModule, pad_h: int, pad_w: int, window: list[int],
                   shift: list[int]) -> str:
    """A buffer of `gm` holding the mask for these extents; its name."""
    like = next(gm.parameters(), torch.empty(0))
    name, k = f"bs_window_mask_{pad_h}x{pad_w}_s{shift[0]}x{shift[1]}", 1
    while hasattr(gm, name):
        name, k = f"bs_window_mask_{pad_h}x{pad_w}_s{shift[0]}x{shift[1]}_{k}", k + 1
    with torch.no_grad():
        gm.register_buffer(name, window_mask(pad_h, pad_w, window, shift,
                                             like.detach().to(torch.float32)))
    return name

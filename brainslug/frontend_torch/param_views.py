"""Parameters seen through views that only add or drop unit dims.

A layer scale or an affine channel parameter is often shaped for broadcasting
inside `forward`: timm's `Scale` multiplies by `scale.view(C, 1, 1)`, others
by `gamma.unsqueeze(-1).unsqueeze(-1)` or `gamma[:, None, None]`. The view is
an fx node of its own, so the reader does not see a parameter; against a
channels-last tensor of rank 4, the broadcast then had no memory order to read
it in. Such a view has the parameter's elements in the parameter's order, so
the reader can bind the parameter itself, viewed in its own memory order
(`GraphBuilder.param_like` with the view's shape): in-place updates of the
parameter are seen as for any bound parameter.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

_UNIT_VIEW_METHODS = {"view", "reshape", "unsqueeze", "squeeze", "flatten", "view_as",
                      "reshape_as", "contiguous", "detach"}
_UNIT_VIEW_FUNCTIONS = {torch.reshape, torch.unsqueeze, torch.squeeze, torch.flatten,
                        torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.unsqueeze}


def is_unit_index(index: Any) -> bool:
    """`x[:, None, None]`-style indices: whole slices, None and Ellipsis only."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or p == slice(None) for p in parts)


def _source(n: fx.Node) -> fx.Node | None:
    """The tensor a view-like node reads, where the node is one."""
    if n.op == "call_method" and n.target in _UNIT_VIEW_METHODS:
        src = n.args[0]
    elif n.op == "call_function" and n.target in _UNIT_VIEW_FUNCTIONS:
        src = n.args[0] if n.args else n.kwargs.get("input")
    elif n.op == "call_function" and getattr(n.target, "__name__", "") == "getitem" \
            and len(n.args) == 2 and is_unit_index(n.args[1]):
        src = n.args[0]
    else:
        return None
    return src if isinstance(src, fx.Node) else None


def attr_at(root: Any, path: str) -> Any:
    """`root.a.b.c` for the dotted `path` "a.b.c" (what a get_attr node reads)."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def unit_view_of_parameter(gm: fx.GraphModule, n: Any,
                           shape: tuple[int, ...]) -> torch.Tensor | None:
    """The model's own tensor that fx node `n` (of logical `shape`) views with
    unit dims added or dropped only, else None."""
    if not isinstance(n, fx.Node):
        return None
    node = n
    while node.op != "get_attr":
        src = _source(node)
        if src is None:
            return None
        node = src
    if node is n:
        return None
    t = attr_at(gm, str(node.target))
    if not isinstance(t, torch.Tensor):
        return None
    if [d for d in t.shape if d != 1] != [d for d in shape if d != 1]:
        return None
    return t

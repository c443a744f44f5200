"""`x[index]` with ints and unit-step slices as a box of the tensor the plan
holds, where a layer computes with the result (`op_specs.INDEX_BOX`); PyTorch's
view where only matrix work reads it, in place."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from brainslug.frontend_torch.graph_builder import GraphBuilder

_VIEW_CHAIN_METHODS = {"transpose", "permute", "view", "reshape", "flatten", "unsqueeze",
                       "squeeze", "swapaxes", "swapdims", "view_as", "reshape_as"}
_VIEW_CHAIN_FUNCTIONS = {operator.getitem, torch.transpose, torch.permute, torch.flatten,
                         torch.reshape, torch.unsqueeze, torch.squeeze, torch.swapaxes,
                         torch.swapdims}


def _computed_on(n: fx.Node, modules: Mapping[str, nn.Module],
                 reads_in_place: Callable[[fx.Node, Mapping[str, nn.Module]], bool]) -> bool:
    """Whether a reader of view `n`, through further views, computes with it
    (a layer that BrainSlug may compile, or a copy), not only matrix work that
    reads the view in place (or the graph's output)."""
    todo, seen = list(n.users), set()
    while todo:
        u = todo.pop()
        if u in seen or u.op == "output":
            continue
        seen.add(u)
        if (u.op == "call_method" and u.target in _VIEW_CHAIN_METHODS) or (
                u.op == "call_function" and u.target in _VIEW_CHAIN_FUNCTIONS):
            todo.extend(u.users)
        elif (u.op == "call_method" and u.target == "contiguous") or not reads_in_place(u, modules):
            return True
    return False


def index_of(n: fx.Node) -> tuple[Any, Any] | None:
    """(x, index) of `x[index]`, or of ATen's `slice.Tensor` and `select.int`
    (torch.export's form of it) as the same index; None for other calls."""
    if n.op != "call_function":
        return None
    if n.target is operator.getitem and len(n.args) == 2:
        return n.args[0], n.args[1]
    if n.kwargs or not isinstance(n.target, torch._ops.OpOverload):
        return None
    name = f"{n.target.overloadpacket.__name__}.{n.target._overloadname}"
    if name == "slice.Tensor" and 1 <= len(n.args) <= 5:
        x, dim, start, end, step = (*n.args, *(0, None, None, 1)[len(n.args) - 1:])
        if isinstance(dim, int) and dim >= 0:
            return x, (*[slice(None)] * dim, slice(start, end, step))
    if name == "select.int" and len(n.args) == 3 and isinstance(n.args[1], int) \
            and n.args[1] >= 0:
        x, dim, i = n.args
        return x, (*[slice(None)] * dim, i)
    return None


def takes_whole(b: GraphBuilder, x: Any, idx: Any) -> bool:
    """Whether `x[idx]` is `x` (every entry a slice over its whole dim, as
    torch.export writes `x[:, :h]` for a dim of h: `slice(x, 0, 0, 2**63 - 1)`)."""
    if not (isinstance(x, fx.Node) and x.name in b.metas):
        return False
    items = idx if isinstance(idx, tuple) else (idx,)
    shape = b.logical_shape(x)
    if len(items) > len(shape):
        return False
    for item, extent in zip(items, shape, strict=False):
        if not (isinstance(item, slice) and item.step in (None, 1)
                and item.start in (None, 0) and all(isinstance(v, int | None) for v in (
                    item.start, item.stop))):
            return False
        if item.stop is not None and item.stop < (2**62 if extent < 0 else extent):
            return False
    return True


def index_box_args(b: GraphBuilder, n: fx.Node,
                   reads_in_place: Callable[[fx.Node, Mapping[str, nn.Module]], bool],
                   ) -> tuple[Any, ...] | None:
    """(input, starts, lengths, dropped) of `x[index]` with ints and unit-step
    slices over static dims of a tensor the plan holds (the batch dim whole),
    where a reader computes with the result; else None (PyTorch's view: its
    readers are matrix work, which reads it in place)."""
    indexed = index_of(n)
    if indexed is None:
        return None
    x, idx = indexed
    if not (isinstance(x, fx.Node) and x.name in b.values and x.name in b.metas):
        return None
    items = list(idx) if isinstance(idx, tuple) else [idx]
    shape = b.logical_shape(x)
    if items.count(Ellipsis) > 1 or any(i is None for i in items):
        return None
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items[k:k + 1] = [slice(None)] * (len(shape) - len(items) + 1)
    if len(items) > len(shape):
        return None
    items += [slice(None)] * (len(shape) - len(items))
    starts, lengths, dropped = [], [], []
    for k, (item, extent) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice) and item == slice(None):
            starts.append(0)
            lengths.append(extent)
            continue
        if extent < 0 or k == 0 or isinstance(item, bool):
            return None
        if isinstance(item, int):
            if not -extent <= item < extent:
                return None
            starts.append(item % extent)
            lengths.append(1)
            dropped.append(k)
        elif isinstance(item, slice) and all(v is None or isinstance(v, int) and not isinstance(
                v, bool) for v in (item.start, item.stop, item.step)) and item.step in (None, 1):
            start, stop, _ = item.indices(extent)
            if stop <= start:
                return None
            starts.append(start)
            lengths.append(stop - start)
        else:
            return None
    if not dropped and lengths == list(shape):
        return None
    if not _computed_on(n, b.modules, reads_in_place):
        return None
    return x, tuple(starts), tuple(lengths), tuple(dropped)

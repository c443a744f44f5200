"""Size arithmetic that doesn't follow the batch, folded into the graph.

Models compute pads, slice bounds and window counts from `x.shape` in Python
(`pad_r = (window - W % window) % window`); torch.fx records the arithmetic as
nodes, and a layer whose arguments are nodes can't be planned (its pad or slice
is "computed"). `fold_static_sizes` evaluates those nodes over the traced
shapes, with each extent that follows the batch unknown, and puts the value of
every one that doesn't depend on an unknown extent into its readers as a
constant. The batch itself, and anything computed from it, stays a node.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch.shapes import _meta_run


class _Dynamic:
    """An extent that follows the batch, or a value computed from one."""

    def __repr__(self) -> str:
        return "dynamic"


DYNAMIC = _Dynamic()

_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod,
               operator.neg, operator.truediv, operator.pow}
_UNKNOWN = object()


def _has_dynamic(v: Any) -> bool:
    if v is DYNAMIC:
        return True
    return isinstance(v, tuple) and any(_has_dynamic(x) for x in v)


def _constant(v: Any) -> bool:
    """A value a node argument may hold: an int or float, or a tuple of them."""
    if isinstance(v, tuple):
        return all(_constant(x) for x in v)
    return isinstance(v, int | float | torch.dtype) and not isinstance(v, bool)


def _arg(values: dict[fx.Node, Any], a: Any) -> Any:
    if isinstance(a, fx.Node):
        return values.get(a, _UNKNOWN)
    if isinstance(a, list | tuple):
        out = tuple(_arg(values, x) for x in a)
        return _UNKNOWN if any(x is _UNKNOWN for x in out) else out
    return a


def _evaluate(n: fx.Node, values: dict[fx.Node, Any], shapes: dict[str, tuple[Any, ...]],
              dtypes: dict[str, Any]) -> Any:
    """`n`'s value where it is size arithmetic (or a tensor's dtype), with
    `DYNAMIC` for what follows the batch; `_UNKNOWN` otherwise."""
    args = [_arg(values, a) for a in n.args]
    if n.op == "call_function" and n.target is getattr and len(n.args) == 2:
        x, name = n.args
        if isinstance(x, fx.Node) and x.name in shapes:
            if name == "shape":
                return shapes[x.name]
            if name == "ndim":
                return len(shapes[x.name])
            if name == "dtype":
                return dtypes[x.name]
        return _UNKNOWN
    if n.op == "call_method" and n.target in ("size", "dim") and not n.kwargs:
        x = n.args[0]
        if not isinstance(x, fx.Node) or x.name not in shapes:
            return _UNKNOWN
        shape = shapes[x.name]
        if n.target == "dim":
            return len(shape) if len(n.args) == 1 else _UNKNOWN
        if len(n.args) == 1:
            return shape
        d = args[1]
        return shape[d] if isinstance(d, int) and -len(shape) <= d < len(shape) else _UNKNOWN
    if n.kwargs or any(a is _UNKNOWN for a in args) or n.op != "call_function":
        return _UNKNOWN
    if n.target is operator.getitem and isinstance(args[0], tuple) \
            and isinstance(args[1], int | slice):
        try:
            return args[0][args[1]]
        except IndexError:
            return _UNKNOWN
    if n.target in _ARITHMETIC and all(
            isinstance(a, int | float | tuple) or a is DYNAMIC for a in args):
        if any(_has_dynamic(a) for a in args):
            if n.target is operator.add and all(isinstance(a, tuple) for a in args):
                return args[0] + args[1]  # (shapes joined: each element stays what it is)
            return DYNAMIC
        try:
            return n.target(*args)
        except (ArithmeticError, TypeError, ValueError):
            return _UNKNOWN
    return _UNKNOWN


def fold_static_sizes(gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]]) -> int:
    """Put the size arithmetic of `gm` that doesn't follow the batch into its
    readers as constants (in place); the number of nodes folded."""
    if not any(n.op == "call_function" and n.target is getattr
               or n.op == "call_method" and n.target in ("size", "dim") for n in gm.graph.nodes):
        return 0
    dynamic = any(s and s[0] == 0 for s in example_shapes)
    try:
        runs = _meta_run(gm, example_shapes, (1, 2) if dynamic else (1,))
    except Exception:
        return 0
    shapes: dict[str, tuple[Any, ...]] = {}
    dtypes = {name: dtype for name, (_, dtype) in runs[0].items()}
    for name, (s1, _) in runs[0].items():
        s2 = runs[-1].get(name, (s1,))[0]
        if len(s1) == len(s2):
            shapes[name] = tuple(DYNAMIC if a != b else a for a, b in zip(s1, s2, strict=True))
    values: dict[fx.Node, Any] = {}
    for n in gm.graph.nodes:
        if n.op in ("call_function", "call_method"):
            v = _evaluate(n, values, shapes, dtypes)
            if v is not _UNKNOWN:
                values[n] = v
    folded = 0
    for n, v in values.items():
        if _has_dynamic(v) or not _constant(v):
            continue
        for user in list(n.users):
            if user.op == "call_method" and user.args and user.args[0] is n:
                continue  # (a method of the value itself)
            user.replace_input_with(n, v)
        if not n.users:
            folded += 1
    if folded:
        for n in reversed(list(gm.graph.nodes)):
            if n in values and not n.users:
                gm.graph.erase_node(n)
        gm.graph.lint()
        gm.recompile()
    return folded


__all__ = ["DYNAMIC", "fold_static_sizes"]

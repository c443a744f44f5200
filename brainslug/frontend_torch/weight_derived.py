"""Values computed from parameters and buffers alone, computed again only
when one of them changed.

A model may compute, on every call, something that depends on its weights
but not on its input: Swin's relative position bias (a gather of a table by
a fixed index, then a permute and a copy: 12 calls of 40-60 us each in
swin_t), Swin V2's bias (a two-layer MLP over a coordinate table, then a
gather and a sigmoid), a standardised convolution weight. The plan calls a
`WeightDerived` module there instead: the same nodes, in a graph of their own
whose inputs are those tensors, and a cached result that a `WeightWatch` per
tensor invalidates (an in-place update, `load_state_dict`, an optimizer step,
a new tensor). The result is the one the nodes compute, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from brainslug.frontend_torch.param_views import attr_at, is_unit_index
from brainslug.frontend_torch.weight_watch import WeightWatch

_IN_PLACE_FUNCTIONS = {"iadd", "isub", "imul", "itruediv", "setitem"}
_RANDOM = {"rand_like", "randn_like", "randint_like", "bernoulli", "multinomial", "normal",
           "poisson", "dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d",
           "dropout2d", "dropout3d", "rrelu", "uniform_", "normal_"}
"""Calls whose results are random: computed on every call."""
_VIEWS = {"view", "reshape", "permute", "transpose", "unsqueeze", "squeeze", "expand",
          "flatten", "t", "size", "dim", "reshape_as", "expand_as", "view_as", "getattr",
          "detach", "contiguous", "to", "type_as", "float"}
"""Calls that cost nothing worth caching (a view of a parameter: the plan
reads it as it is)."""


class WeightDerived(nn.Module):
    """`compute(*sources)`, cached while no source changed. Gradients, and
    tensors off the CPU, are computed on every call."""

    def __init__(self, compute: fx.GraphModule) -> None:
        super().__init__()
        self.compute = compute
        self._reset()

    def _reset(self) -> None:
        self._cached: Any = None
        self._watches: list[WeightWatch] = []

    def forward(self, *sources: torch.Tensor) -> Any:
        if any(t.device.type != "cpu" for t in sources) or (
                torch.is_grad_enabled() and any(t.requires_grad for t in sources)):
            return self.compute(*sources)
        if self._cached is None or len(self._watches) != len(sources) or any(
                w.changed(t) for w, t in zip(self._watches, sources, strict=True)):
            with torch.no_grad():
                self._cached = self.compute(*sources)
            self._watches = [WeightWatch() for _ in sources]
            for w, t in zip(self._watches, sources, strict=True):
                w.remember(t)
        return self._cached

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__().copy()
        state.pop("_cached", None)
        state.pop("_watches", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reset()


def _in_place(n: fx.Node) -> bool:
    """Whether node `n` may write one of its tensor operands."""
    if n.op == "call_method":
        return str(n.target).endswith("_") and not str(n.target).startswith("_")
    if n.op == "call_function":
        name = getattr(n.target, "__name__", "")
        return name in _IN_PLACE_FUNCTIONS or (name.endswith("_") and not name.startswith("_"))
    return False


def _name(n: fx.Node) -> str:
    if n.op == "call_method":
        return str(n.target)
    return getattr(n.target, "__name__", str(n.target))


def _is_view(n: fx.Node) -> bool:
    """A call that costs nothing worth caching: `_VIEWS`, and `x[:, None]`-style
    indexing (whole slices and new unit dims)."""
    if n.op == "call_module":
        return False
    if _name(n) == "getitem":
        return len(n.args) == 2 and is_unit_index(n.args[1])
    return _name(n) in _VIEWS


def cache_weight_derived(gm: fx.GraphModule) -> list[str]:
    """Each tensor that `gm` computes on the CPU from get_attr tensors alone,
    by more than views, and that a node depending on the input reads becomes a
    call of a `WeightDerived` module (a new top-level attribute of `gm`); the
    fx names of the values so cached. Values that anything writes in place,
    and random ones, stay as they are."""
    nodes = list(gm.graph.nodes)
    constant: set[fx.Node] = set()
    for n in nodes:
        if n.op == "get_attr" or (
                n.op in ("call_function", "call_method", "call_module")
                and n.all_input_nodes and all(p in constant for p in n.all_input_nodes)
                and not _in_place(n) and _name(n) not in _RANDOM):
            constant.add(n)
    frontier = [n for n in nodes if n in constant and n.op != "get_attr"
                and any(u not in constant for u in n.users)]
    done: list[str] = []
    for n in frontier:
        members = _ancestors(n)
        if any(_in_place(u) for m in members for u in m.users) or all(
                m.op == "get_attr" or _is_view(m) for m in members):
            continue
        sources = [m for m in nodes if m in members and m.op == "get_attr"]
        tensors = [attr_at(gm, str(s.target)) for s in sources]
        if not all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors):
            continue
        compute = _subgraph(gm, members, sources, n)
        try:
            with torch.no_grad():
                value = compute(*tensors)
        except Exception:  # noqa: BLE001 (it fails in the plan as it would in the model)
            continue
        if not isinstance(value, torch.Tensor):
            continue
        name, k = f"bs_weight_derived_{n.name}", 1
        while hasattr(gm, name):
            name, k = f"bs_weight_derived_{n.name}_{k}", k + 1
        gm.add_module(name, WeightDerived(compute))
        with gm.graph.inserting_before(n):
            call = gm.graph.call_module(name, tuple(sources))
        n.replace_all_uses_with(call)
        done.append(n.name)
    if done:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return done


def _ancestors(n: fx.Node) -> set[fx.Node]:
    out: set[fx.Node] = set()
    todo = [n]
    while todo:
        m = todo.pop()
        if m not in out:
            out.add(m)
            todo.extend(m.all_input_nodes)
    return out


def _subgraph(gm: fx.GraphModule, members: set[fx.Node], sources: list[fx.Node],
              result: fx.Node) -> fx.GraphModule:
    """The nodes of `members` in a graph of their own: the get_attr `sources`
    become its inputs, `result` its output; called modules are `gm`'s."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for s in sources:
        env[s] = g.placeholder(str(s.target).replace(".", "_"))
    for m in gm.graph.nodes:
        if m in members and m not in env:
            env[m] = g.node_copy(m, lambda p: env[p])
    g.output(env[result])
    return fx.GraphModule(gm, g, "WeightDerivedGraph")

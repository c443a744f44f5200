"""What a frontend's capture hands to the plan layer.

A capture is a `builtin.module` with one graph `func.func` of `nn` ops. Every
op made from a framework node carries that node's name in `NODE_ATTR`, and
values are named after their nodes with `value_name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

NODE_ATTR = "bs.node"
"""Discardable attribute of a captured `nn` op: the framework node it came from."""


def value_name(node: str) -> str:
    """An xDSL name hint for the value of framework node `node`.

    Only letters, digits and `_`, and a letter first: when xDSL renames a
    value it drops a `_<digits>` suffix, so "_2" would become an empty name."""
    s = "".join(c if c.isalnum() or c == "_" else "_" for c in node)
    return s if s and s[0].isalpha() else f"v{s}"


@dataclass(frozen=True)
class Bound:
    """A graph argument bound at capture: a framework tensor (a parameter or
    buffer of the model) that kernels read in place. The plan layer only
    carries it; the frontend binds it."""

    value: Any
    name: str


Source = str | Bound
"""Where a graph argument comes from: the name of the framework node whose
value it is (an activation), or a bound tensor."""


@dataclass
class Captured:
    """A framework graph as `nn`: the module, the source of each argument of
    its graph function, and why layers were left to the framework."""

    module: ModuleOp
    sources: list[Source]
    library_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def function(self) -> func.FuncOp:
        """The graph function."""
        return next(o for o in self.module.ops if isinstance(o, func.FuncOp))

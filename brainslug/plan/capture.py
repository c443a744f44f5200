"""What a frontend's capture hands to the plan layer.

A capture is a `builtin.module` with one graph `func.func` of `nn` ops. Every
op made from a framework node carries that node's name in `NODE_ATTR`, and
values are named after their nodes with `value_name`.
"""

from __future__ import annotations

NODE_ATTR = "bs.node"
"""Discardable attribute of a captured `nn` op: the framework node it came from."""


def value_name(node: str) -> str:
    """An xDSL name hint for the value of framework node `node`.

    Only letters, digits and `_`, and a letter first: when xDSL renames a
    value it drops a `_<digits>` suffix, so "_2" would become an empty name."""
    s = "".join(c if c.isalnum() or c == "_" else "_" for c in node)
    return s if s and s[0].isalpha() else f"v{s}"

"""Builders of `torch.stack`, negation and dtype conversions that change
nothing: what rotary position embeddings (EVA, timm's RoPE ViTs) and XCiT's
position encodings are made of, and what ran in PyTorch before."""

from __future__ import annotations

import torch
import torch.fx as fx

from brainslug.dialects import nn
from brainslug.frontend_torch.graph_builder import Unmapped, rank
from brainslug.frontend_torch.op_specs import Call, OpSpec, Ordered


def _stack(c: Call) -> Ordered:
    """`torch.stack`: each operand, row-major, with a dim of 1 at `dim` (a
    reshape, no copy), then their `cat` along it."""
    values = c.tensors("tensors")
    if not values:
        raise Unmapped("stack of no tensors")
    r = rank(values[0])
    dim = c["dim"]
    if not isinstance(dim, int) or not -(r + 1) <= dim <= r:
        raise Unmapped(f"stack along dim {dim!r} of rank-{r} tensors")
    dim %= r + 1
    if dim == 0:
        raise Unmapped("stack along the batch dimension")
    row_major = tuple(range(r + 1))
    parts = []
    for v in values:
        v = c.b.in_order(v, tuple(range(r)), c.node)
        shape = list(v.type.get_shape())
        shape.insert(dim, 1)
        parts.append(c.b.add_part(nn.ReshapeOp(v, nn.make_tensor(shape)), c.node, row_major))
    return Ordered(nn.CatOp(parts, dim), row_major)


def _neg(c: Call) -> nn.MulOp:
    """`-x` as `x * -1`: the same float32 for every x (NaN stays NaN)."""
    x = c.tensor("input")
    minus_one = c.b.param(torch.full([1] * rank(x), -1.0), f"{c.node.name}.scalar")
    return nn.MulOp(x, minus_one)


def _dtype_of(c: Call, v: object) -> torch.dtype | None:
    """The dtype a `to`/`type_as` argument asks for (a dtype, or a tensor's)."""
    if isinstance(v, torch.dtype):
        return v
    if isinstance(v, fx.Node) and v.name in c.b.metas:
        return c.b.metas[v.name][1]
    if isinstance(v, torch.Tensor):
        return v.dtype
    return None


def _same_dtype(c: Call) -> Ordered:
    """`x.to(...)` and `x.type_as(y)` of a float32 `x` into float32, on its
    device, with no copy or layout asked for: `x` itself."""
    x = c.tensor("input")
    asked = [*c["args"], c["dtype"]] if "args" in c.args else [c["other"]]
    if c.args.get("device") is not None or c.args.get("copy") or \
            c.args.get("memory_format") is not None:
        raise Unmapped("a conversion to another device, layout or copy")
    for v in asked:
        if v is None:
            continue
        if _dtype_of(c, v) != torch.float32:
            raise Unmapped(f"a conversion to {v}")
    return Ordered(nn.IdentityOp(x), c.b.order(x))


STACK = OpSpec.parse("stack(tensors, dim=0)", _stack)
NEG = OpSpec.parse("neg(input)", _neg)
TO = OpSpec.parse("to(input, *args, dtype=None, device=None, non_blocking=False, copy=False, "
                  "memory_format=None)", _same_dtype)
TYPE_AS = OpSpec.parse("type_as(input, other)", _same_dtype)

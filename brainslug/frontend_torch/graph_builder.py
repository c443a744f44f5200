"""Emit the `nn` graph function of a captured fx graph: types, layouts and values."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.fx as fx
from xdsl.dialects.builtin import StringAttr, TensorType, f32, i1, i64
from xdsl.ir import Attribute, Block, Operation, SSAValue

from brainslug.dialects import nn
from brainslug.pipeline.target import conv_weight_block
from brainslug.plan.capture import NODE_ATTR, value_name


class Unmapped(Exception):
    """The node runs in PyTorch; the message says why."""


class LibraryCall(Exception):
    """The node runs in PyTorch by design (a channels-last convolution), not as a fallback."""


NCHW_TO_NHWC = (0, 2, 3, 1)
"""Physical NHWC dims as logical NCHW dims: physical axis i holds logical axis [i]."""


def physical_axis(axis: int, rank: int, layout: str) -> int:
    """The physical axis of logical (PyTorch) axis `axis` under `layout`."""
    return NCHW_TO_NHWC.index(axis) if layout == "NHWC" and rank == 4 else axis


def physical_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """A logical NCHW shape as stored under `layout` (rank-4 tensors only)."""
    shape = tuple(shape)
    return tuple(shape[d] for d in NCHW_TO_NHWC) if layout == "NHWC" and len(shape) == 4 \
        else shape


_DTYPES: dict[torch.dtype, Attribute] = {torch.float32: f32, torch.int64: i64, torch.bool: i1}


def tensor_type(shape: Sequence[int], dtype: torch.dtype) -> TensorType:
    """The IR type of a tensor (-1 extents are dynamic); Unmapped for other dtypes."""
    elem = _DTYPES.get(dtype)
    if elem is None:
        raise Unmapped(f"dtype {dtype}")
    return nn.make_tensor(shape) if elem == f32 else TensorType(elem, [
        nn.DYN if d < 0 else d for d in shape])


def rank(v: SSAValue) -> int:
    return len(v.type.get_shape())


class GraphBuilder:
    """Emits IR for fx nodes into the graph function's block."""

    def __init__(self, gm: fx.GraphModule, metas: dict[str, Any], layout: str = "NCHW",
                 compile_convs: bool | Collection[str] = False, conv_block: int = 0):
        self.gm = gm
        self.metas = metas
        self.layout = layout
        self.compile_convs = compile_convs if layout == "NHWC" else False
        self.conv_block = conv_block
        self.block = Block()
        self.args: list[fx.Node | torch.Tensor] = []
        self.values: dict[str, SSAValue] = {}
        self.param_args: dict[Any, SSAValue] = {}
        self.reasons: dict[str, str] = {}

    def arg(self, t: TensorType, source: fx.Node | torch.Tensor, name: str) -> SSAValue:
        v = self.block.insert_arg(t, len(self.block.args))
        v.name_hint = value_name(name)
        self.args.append(source)
        return v

    def param(self, tensor: torch.Tensor, name: str) -> SSAValue:
        key = id(tensor)
        if key not in self.param_args:
            shape = physical_shape(tensor.shape, self.layout)
            self.param_args[key] = self.arg(tensor_type(shape, tensor.dtype), tensor, name)
        return self.param_args[key]

    def conv_weight(self, tensor: torch.Tensor, name: str, groups: int) -> SSAValue:
        """A convolution's OIHW weight as the argument of a compiled
        channels-last convolution (packed at run time, repacked on change):
        blocked by output channels (`conv_weight_block`, for register blocks of
        up to `conv_block` lanes) when there is more than one block of them
        (and no groups), else HWIO."""
        block = conv_weight_block(tensor.shape[0], self.conv_block // 4) \
            if groups == 1 and self.conv_block else 0
        key = ("packed", block, id(tensor))
        if key not in self.param_args:
            from brainslug.frontend_torch.weight_watch import PackedWeight

            packed = PackedWeight(tensor, block)
            self.param_args[key] = self.arg(tensor_type(packed.shape, tensor.dtype), packed,
                                            name)  # type: ignore[arg-type]
        return self.param_args[key]

    def value(self, n: Any) -> SSAValue:
        if not isinstance(n, fx.Node) or n.name not in self.values:
            raise Unmapped(f"operand {n} is not a tensor known to BrainSlug")
        return self.values[n.name]

    def result_type(self, n: fx.Node) -> TensorType:
        meta = self.metas.get(n.name)
        if meta is None:
            raise Unmapped("its result is not a tensor")
        shape, dtype = meta
        return tensor_type(physical_shape(shape, self.layout), dtype)

    def axis(self, v: SSAValue, axis: int) -> int:
        """The physical axis of logical axis `axis` of value `v`."""
        r = rank(v)
        return physical_axis(axis % r, r, self.layout)

    def channels_last(self, *values: SSAValue) -> bool:
        return self.layout == "NHWC" and any(rank(v) == 4 for v in values)

    def layout_of(self, v: SSAValue) -> str:
        """The `layout` property of a layer whose input is `v`."""
        return "NHWC" if self.channels_last(v) else "NCHW"

    def library_conv(self, node: str) -> None:
        """LibraryCall unless the convolution at fx node `node` is compiled:
        `compile_convs` is True (all of them) or names it."""
        if self.layout != "NHWC":
            return
        wanted = self.compile_convs
        if wanted is True or (not isinstance(wanted, bool) and node in wanted):
            return
        raise LibraryCall("channels-last convolution in PyTorch")

    def emit(self, n: fx.Node, op: Operation) -> None:
        op.attributes[NODE_ATTR] = StringAttr(n.name)
        if op.results:
            declared = self.result_type(n)
            if op.results[0].type != declared:
                raise Unmapped(f"inferred {op.results[0].type}, traced {declared}")
        self.block.add_op(op)
        if op.results:
            op.results[0].name_hint = value_name(n.name)
            self.values[n.name] = op.results[0]

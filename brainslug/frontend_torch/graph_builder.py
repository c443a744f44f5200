"""Emit the `nn` graph function of a captured fx graph: types, layouts and values."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.fx as fx
from xdsl.dialects.builtin import StringAttr, TensorType, UnitAttr, f32, i1, i64
from xdsl.ir import Attribute, Block, Operation, SSAValue

from brainslug.dialects import nn
from brainslug.pipeline.target import conv_weight_block
from brainslug.plan.capture import NODE_ATTR, value_name


class Unmapped(Exception):
    """The node runs in PyTorch; the message says why."""


class LibraryCall(Exception):
    """The node runs in PyTorch by design (a channels-last convolution), not as
    a fallback; `order` is the memory order of its result where PyTorch's meta
    kernels don't tell it (a channels-last convolution's)."""

    def __init__(self, message: str, order: tuple[int, ...] | None = None):
        super().__init__(message)
        self.order = order


NCHW_TO_NHWC = (0, 2, 3, 1)
"""Physical NHWC dims as logical NCHW dims: physical axis i holds logical axis [i]."""

Order = tuple[int, ...]
"""A value's memory order: physical axis i (row-major) holds logical axis order[i]."""


def default_order(rank: int, layout: str) -> Order:
    """Channels-last for rank-4 tensors of an NHWC plan, else row-major."""
    return NCHW_TO_NHWC if layout == "NHWC" and rank == 4 else tuple(range(rank))


def stride_order(t: torch.Tensor) -> tuple[int, ...]:
    """The logical dims of `t` from the outermost in memory to the innermost
    (largest stride first; ties in logical order)."""
    return tuple(sorted(range(t.dim()), key=lambda k: (-t.stride(k), k)))


def canonical_order(order: Sequence[int], shape: Sequence[int], preferred: Order) -> Order:
    """`preferred` where it lays out the same memory as `order` (they differ
    only in where extents of 1 go), else `order`."""
    def moving(o: Sequence[int]) -> list[int]:
        return [k for k in o if shape[k] != 1]
    return preferred if moving(order) == moving(preferred) else tuple(order)


def physical_axis(axis: int, rank: int, layout: str) -> int:
    """The physical axis of logical (PyTorch) axis `axis` under `layout`."""
    return default_order(rank, layout).index(axis)


def physical_shape(shape: Sequence[int], layout_or_order: str | Sequence[int]) -> tuple[int, ...]:
    """A logical shape as stored in `order` (or a layout's default order)."""
    order = default_order(len(shape), layout_or_order) if isinstance(layout_or_order, str) \
        else layout_or_order
    return tuple(shape[k] for k in order)


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


def _names(wanted: bool | Collection[str], node: str) -> bool:
    """Whether `wanted` (True: all, False: none, else fx node names) takes `node`."""
    return wanted is True or (not isinstance(wanted, bool) and node in wanted)


class GraphBuilder:
    """Emits IR for fx nodes into the graph function's block."""

    def __init__(self, gm: fx.GraphModule, metas: dict[str, Any], layout: str = "NCHW",
                 compile_convs: bool | Collection[str] = False, conv_block: int = 0,
                 memory_orders: dict[str, Order] | None = None,
                 compile_linears: bool | Collection[str] = False):
        self.gm = gm
        self.metas = metas
        self.layout = layout
        # the stride order PyTorch gives each node's result in this plan (`memory_orders`)
        self.memory_orders = memory_orders or {}
        # the memory order of every IR value (default_order where absent)
        self.orders: dict[SSAValue, Order] = {}
        self.compile_convs = compile_convs if layout == "NHWC" else False
        self.compile_linears = compile_linears  # (in any layout: rows of features)
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

    def param_like(self, tensor: torch.Tensor, name: str, like: SSAValue,
                   shape: Sequence[int] | None = None) -> SSAValue:
        """`tensor` (a parameter, seen with logical `shape` where a view gives it
        one with other unit dims) as an operand broadcast against `like`: where
        `like` has a higher rank or another memory order, or a view reshapes
        it, the argument is the view of `tensor` in `like`'s physical order
        (`ParamView`); Unmapped where no view of its memory has that order."""
        r, order = rank(like), self.order(like)
        logical = list(tensor.shape if shape is None else shape)
        if len(logical) > r:
            raise Unmapped("a parameter of higher rank than the tensor it broadcasts to")
        if logical == list(tensor.shape) and (
                (tensor.dim() == r and order == default_order(r, self.layout))
                or (tensor.dim() < 4 and order == tuple(range(r)))):
            return self.param(tensor, name)  # numpy broadcasting
        ext = [1] * (r - len(logical)) + logical
        moving = [k for k in order if ext[k] != 1]
        if moving != sorted(moving):
            raise Unmapped("a parameter whose memory order differs from the tensor's")
        shape = physical_shape(ext, order)
        key = ("view", shape, id(tensor))
        if key not in self.param_args:
            from brainslug.frontend_torch.weight_watch import ParamView

            view = ParamView(tensor, shape)
            self.param_args[key] = self.arg(tensor_type(shape, tensor.dtype), view,
                                            name)  # type: ignore[arg-type]
        return self.param_args[key]
    def conv_weight(self, tensor: torch.Tensor, name: str, groups: int) -> SSAValue:
        """A convolution's OIHW weight (or a linear layer's [O, K]) as the
        argument of a compiled channels-last convolution (packed at run time,
        repacked on change):
        blocked by output channels (`conv_weight_block`, for register blocks of
        up to `conv_block` lanes, of 3 vectors for a pointwise one) when there
        is more than one block of them (and no groups), else HWIO."""
        block = conv_weight_block(tensor.shape[0], self.conv_block // 4,
                                  three=tensor.dim() == 2 or tuple(tensor.shape[2:]) == (1, 1)) \
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

    @functools.cached_property
    def modules(self) -> dict[str, torch.nn.Module]:
        """The graph module's submodules by name (made once per capture)."""
        return dict(self.gm.named_modules())

    def logical_shape(self, n: fx.Node) -> tuple[int, ...]:
        meta = self.metas.get(n.name)
        if meta is None:
            raise Unmapped("its result is not a tensor")
        return tuple(meta[0])

    def result_type(self, n: fx.Node, order: Sequence[int] | None = None) -> TensorType:
        """The IR type of `n`'s result stored in `order` (the default order of its rank)."""
        shape = self.logical_shape(n)
        order = default_order(len(shape), self.layout) if order is None else order
        return tensor_type(physical_shape(shape, order), self.metas[n.name][1])

    def library_order(self, n: fx.Node, found: Sequence[int] | None = None) -> Order:
        """The memory order of a result that PyTorch computes (`found`, else
        what its meta kernel gives in this plan), as the default order of its
        rank where that is the same memory."""
        shape = self.logical_shape(n)
        preferred = default_order(len(shape), self.layout)
        found = found or self.memory_orders.get(n.name)
        if found is None or len(found) != len(shape):
            return preferred
        return canonical_order(found, shape, preferred)

    def logical_shape_of(self, v: SSAValue) -> tuple[int, ...]:
        """The PyTorch shape of IR value `v`."""
        phys, order = v.type.get_shape(), self.order(v)
        shape = [0] * len(phys)
        for i, k in enumerate(order):
            shape[k] = phys[i]
        return tuple(shape)

    def order(self, v: SSAValue) -> Order:
        """The memory order of IR value `v`."""
        return self.orders.get(v) or default_order(rank(v), self.layout)

    def axis(self, v: SSAValue, axis: int) -> int:
        """The physical axis of logical axis `axis` of value `v`."""
        return self.order(v).index(axis % rank(v))

    def channels_last(self, *values: SSAValue) -> bool:
        """Whether a value is a rank-4 tensor stored channels-last."""
        return any(rank(v) == 4 and self.order(v) == NCHW_TO_NHWC for v in values)

    def row_major(self, v: SSAValue) -> bool:
        return self.order(v) == tuple(range(rank(v)))

    def layout_of(self, v: SSAValue) -> str:
        """The `layout` property of a layer whose input is `v`: NHWC for a
        channels-last value, NCHW for a row-major one; Unmapped for any other
        memory order."""
        if self.channels_last(v):
            return "NHWC"
        if not self.row_major(v):
            raise Unmapped(f"a layer that sees the memory order, on a tensor stored in "
                           f"order {self.order(v)}")
        return "NCHW"

    def compiles_linear(self, node: str) -> bool:
        """Whether the linear layer at fx node `node` is compiled:
        `compile_linears` is True (all of them) or names it."""
        return _names(self.compile_linears, node)

    def library_conv(self, node: str) -> None:
        """LibraryCall unless the convolution at fx node `node` is compiled:
        `compile_convs` is True (all of them) or names it."""
        if self.layout != "NHWC":
            return
        if _names(self.compile_convs, node):
            return
        raise LibraryCall("channels-last convolution in PyTorch", NCHW_TO_NHWC)

    def in_order(self, v: SSAValue, order: Sequence[int], node: fx.Node,
                 for_reader: bool = True) -> SSAValue:
        """`v` stored in `order`: `v` itself, or an `nn.permute` of it, part of
        node `node`. `for_reader`: made for the reader alone (it joins the
        reader's stack, where bs-fuse turns it into the load map); else it
        joins the producer's stack, which then writes `order`."""
        have, order = self.order(v), tuple(order)
        if have == order:
            return v
        if rank(v) and order[0] != have[0]:
            raise Unmapped(f"a memory order {have} whose outermost dim is not the batch")
        op = nn.PermuteOp(v, [have.index(k) for k in order])
        if for_reader:
            op.attributes[nn.OPERAND_OF_NEXT] = UnitAttr()
        return self.add_part(op, node, order)

    def add_part(self, op: Operation, node: fx.Node, order: Sequence[int]) -> SSAValue:
        """Add `op`, a step of node `node` before the op that makes its value
        (an operand's permute or reshape); its result, stored in `order`."""
        op.attributes[NODE_ATTR] = StringAttr(node.name)
        self.block.add_op(op)
        self.orders[op.results[0]] = tuple(order)
        return op.results[0]

    def store_result_in(self, node: fx.Node, order: Sequence[int]) -> None:
        """Store the result of `node` (a layer BrainSlug computes, its batch
        outermost) in `order` instead: its producer's stack writes that order."""
        v = self.values[node.name]
        if rank(v) and self.order(v)[0] != order[0]:
            return
        w = self.in_order(v, order, node, for_reader=False)
        if w is not v:
            w.name_hint = value_name(node.name)
            self.values[node.name] = w

    def layout_operand(self, v: SSAValue, node: fx.Node) -> SSAValue:
        """`v` channels-last or row-major for a layer that sees the memory
        order: as it is, or permuted to the default order of its rank."""
        if self.channels_last(v) or self.row_major(v):
            return v
        return self.in_order(v, default_order(rank(v), self.layout), node)

    def emit(self, n: fx.Node, op: Operation, order: Sequence[int] | None = None) -> None:
        """Add `op` as node `n`. Its result is stored in `order`; by default in
        the order of its first operand of the same rank (elementwise layers,
        norms, pools), else the default order of its rank."""
        op.attributes[NODE_ATTR] = StringAttr(n.name)
        if op.results:
            r = len(op.results[0].type.get_shape())
            if order is None:
                same = [self.orders[v] for v in op.operands
                        if v in self.orders and len(self.orders[v]) == r]
                order = same[0] if same else default_order(r, self.layout)
            declared = self.result_type(n, order)
            if op.results[0].type != declared:
                raise Unmapped(f"inferred {op.results[0].type}, traced {declared}")
        self.block.add_op(op)
        if op.results:
            op.results[0].name_hint = value_name(n.name)
            self.values[n.name] = op.results[0]
            self.orders[op.results[0]] = tuple(order)

    def emit_library(self, n: fx.Node, op: Operation, order: Order) -> None:
        """Add `op`, a call that PyTorch runs, as node `n` (its result stored in `order`)."""
        op.attributes[NODE_ATTR] = StringAttr(n.name)
        self.block.add_op(op)
        op.results[0].name_hint = value_name(n.name)
        self.values[n.name] = op.results[0]
        self.orders[op.results[0]] = order

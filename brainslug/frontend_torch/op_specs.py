"""One argument spec per captured op: its PyTorch functional signature and its builder.

An fx node reaches an op as a module call, a function call, a tensor method or an
ATen op (see `capture`); each kind binds its arguments to the op's parameters by
name, and the op's builder reads them from a `Call`. A builder raises `Unmapped`
where the arguments have no `nn` form.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from xdsl.dialects.builtin import StringAttr, TensorType, f32
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import nn
from brainslug.frontend_torch.graph_builder import (
    NCHW_TO_NHWC,
    GraphBuilder,
    LibraryCall,
    Unmapped,
    canonical_order,
    default_order,
    rank,
    stride_order,
)
from brainslug.frontend_torch.param_views import attr_at, unit_view_of_parameter
from brainslug.frontend_torch.resample_specs import interpolate
from brainslug.plan.capture import NODE_ATTR

REQUIRED = object()
"""The default of a parameter without one."""


@dataclass(frozen=True)
class Param:
    """A parameter of an op's functional signature."""

    name: str
    default: Any = REQUIRED
    keyword_only: bool = False
    variadic: bool = False  # `*shape`: the remaining positional arguments as a tuple


@dataclass(frozen=True)
class Ordered:
    """What a builder returns when its op's result is not stored in the order
    of its operand (see `GraphBuilder.emit`): a flatten or mean that changes
    the rank, a reshape."""

    op: Operation
    order: tuple[int, ...]


def _with_order(op: Operation, order: Sequence[int]) -> Ordered:
    return Ordered(op, tuple(order))


@dataclass(frozen=True)
class Call:
    """A node's arguments bound by name to its op's parameters."""

    b: GraphBuilder
    node: fx.Node
    args: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.args[name]

    def is_tensor(self, name: str) -> bool:
        return isinstance(self.args[name], fx.Node | torch.Tensor)

    def parameter(self, name: str) -> torch.Tensor | None:
        """The model's own tensor passed as argument `name` (directly or as a
        `get_attr` node), else None."""
        v = self.args[name]
        if isinstance(v, fx.Node) and v.op == "get_attr":
            v = attr_at(self.b.gm, str(v.target))
        return v if isinstance(v, torch.Tensor) else None

    def broadcast_parameter(self, name: str) -> tuple[torch.Tensor, tuple[int, ...]] | None:
        """The model's own tensor passed as argument `name`, directly or through
        views that only add or drop unit dims (`param_views`), with the shape
        the argument has; else None."""
        if (t := self.parameter(name)) is not None:
            return t, tuple(t.shape)
        v = self.args[name]
        if not isinstance(v, fx.Node) or v.name not in self.b.metas:
            return None
        shape = self.b.logical_shape(v)
        t = unit_view_of_parameter(self.b.gm, v, shape)
        return None if t is None else (t, shape)

    def tensor(self, name: str) -> SSAValue:
        """The IR value of a tensor argument: an fx node's, or a module's own tensor
        as a function argument (made on first use)."""
        v = self.args[name]
        if isinstance(v, torch.Tensor):
            return self.b.param(v, f"{self.node.target}.{name}")
        return self.b.value(v)

    def optional_tensor(self, name: str) -> SSAValue | None:
        return None if self.args[name] is None else self.tensor(name)

    def tensors(self, name: str) -> list[SSAValue]:
        return [self.b.value(t) for t in self.args[name]]


@dataclass(frozen=True)
class OpSpec:
    """A captured op: its parameters in PyTorch's functional signature and its builder."""

    name: str
    params: tuple[Param, ...]
    build: Callable[[Call], Operation | Ordered]

    @staticmethod
    def parse(signature: str, build: Callable[[Call], Operation | Ordered]) -> OpSpec:
        """The spec of `signature`, written as in PyTorch's documentation:
        `"max_pool2d(input, kernel_size, stride=None, ...)"`."""
        fn = ast.parse(f"def {signature}: ...").body[0]
        assert isinstance(fn, ast.FunctionDef)
        a = fn.args
        defaults = [REQUIRED] * (len(a.args) - len(a.defaults)) + a.defaults
        params = [Param(x.arg, _literal(d)) for x, d in zip(a.args, defaults, strict=True)]
        if a.vararg:
            params.append(Param(a.vararg.arg, (), variadic=True))
        params += [Param(x.arg, _literal(d if d is not None else REQUIRED), keyword_only=True)
                   for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
        return OpSpec(fn.name, tuple(params), build)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's argument, by name (defaults filled in)."""
        positional = [p.name for p in self.params if not (p.keyword_only or p.variadic)]
        variadic = [p.name for p in self.params if p.variadic]
        if len(args) > len(positional) and not variadic:
            raise Unmapped("extra arguments")
        bound = dict(zip(positional, args, strict=False))
        if len(args) > len(positional):
            bound[variadic[0]] = tuple(args[len(positional):])
        for name, v in kwargs.items():
            if name in bound or all(p.name != name for p in self.params):
                raise Unmapped("extra arguments")
            bound[name] = v
        for p in self.params:
            if p.name not in bound:
                if p.default is REQUIRED:
                    raise Unmapped(f"no argument {p.name}")
                bound[p.name] = p.default
        return bound


def _literal(node: ast.expr | object) -> Any:
    return node if node is REQUIRED else ast.literal_eval(node)


# ---------------------------------------------------------------------- builders


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _unary(ctor: Callable[[SSAValue], Operation]) -> Callable[[Call], Operation]:
    return lambda c: ctor(c.tensor("input"))


def _row_major(c: Call, x: SSAValue) -> None:
    if not c.b.row_major(x):
        raise Unmapped("an operand that is not row-major, of a layer that sees the memory "
                       f"order (stored in order {c.b.order(x)})")


def _hardtanh(c: Call) -> Operation:
    return nn.ClampOp(c.tensor("input"), min=float(c["min_val"]), max=float(c["max_val"]))


def _dropout(c: Call) -> Operation:
    x = c.tensor("input")
    if c["training"]:
        raise Unmapped("dropout in training mode")
    return nn.DropoutOp(x, float(c["p"]))


def _stochastic_depth(c: Call) -> Operation:
    x = c.tensor("input")
    if c["training"] and c["p"] > 0:
        raise Unmapped("stochastic depth in training mode")
    return nn.IdentityOp(x)


def _conv2d(c: Call) -> Operation:
    x = c.tensor("input")
    c.b.library_conv(c.node.name)
    if isinstance(c["padding"], str):
        raise Unmapped(f"padding {c['padding']!r}")
    ph, pw = _pair(c["padding"])
    bias = c.optional_tensor("bias")  # a module's bias becomes an argument before its weight
    layout = c.b.layout_of(x)
    if layout == "NHWC":  # compiled: the weight as HWIO, bound to the model's parameter
        w = c.args["weight"]
        if not isinstance(w, torch.Tensor) or w.dim() != 4:
            raise LibraryCall("a convolution whose weight is computed runs in PyTorch")
        weight = c.b.conv_weight(w, f"{c.node.target}.weight", int(c["groups"]))
    else:
        weight = c.tensor("weight")
    return nn.Conv2dOp(x, weight, bias, strides=_pair(c["stride"]),
                       padding=(ph, pw, ph, pw), dilation=_pair(c["dilation"]),
                       groups=int(c["groups"]), layout=layout,
                       result_type=c.b.result_type(c.node))


def _linear(c: Call) -> Operation:
    x = c.tensor("input")
    if not c.b.row_major(x):
        raise LibraryCall("linear of a tensor that is not row-major (PyTorch reads its strides)")
    bias = c.optional_tensor("bias")  # before the weight, as in `_conv2d`
    w = c.args["weight"]
    if c.b.compiles_linear(c.node.name) and isinstance(w, torch.Tensor) and w.dim() == 2 \
            and rank(x) >= 3:
        # compiled where each batch item has rows (tokens, pixels) to block in
        # registers: the weight packed as a 1x1 convolution's, bound to the parameter
        weight = c.b.conv_weight(w, f"{c.node.target}.weight", 1)
        return nn.LinearOp(x, weight, bias, result_type=c.b.result_type(c.node, c.b.order(x)))
    return nn.LinearOp(x, c.tensor("weight"), bias)


def _batch_norm(c: Call) -> Operation:
    x = c.b.layout_operand(c.tensor("input"), c.node)
    if c["training"]:
        raise Unmapped("batch norm with batch statistics")
    if c["running_mean"] is None:
        raise Unmapped("batch norm without running statistics")
    weight, bias = c.optional_tensor("weight"), c.optional_tensor("bias")
    return nn.BatchNormOp(x, weight, bias, c.tensor("running_mean"), c.tensor("running_var"),
                          eps=float(c["eps"]), layout=c.b.layout_of(x))


def _layer_norm(c: Call) -> Operation:
    """Over the last dim, where that is the innermost in memory (the last dim
    of a row-major tensor, C of a channels-last one seen through a permute)."""
    x = c.tensor("input")
    shape = tuple(c["normalized_shape"]) if not isinstance(c["normalized_shape"], int) \
        else (c["normalized_shape"],)
    if len(shape) != 1:
        raise Unmapped(f"layer norm over {len(shape)} dims")
    if c.b.order(x)[-1] != rank(x) - 1:  # the rows contiguous first
        x = c.b.in_order(x, range(rank(x)), c.node)
    return nn.LayerNormOp(x, c.optional_tensor("weight"), c.optional_tensor("bias"),
                          eps=float(c["eps"]))


def _group_norm(c: Call) -> Operation:
    """Over groups of the channels (dim 1), in any memory order."""
    x = c.tensor("input")
    if rank(x) < 3:
        raise Unmapped(f"group norm of a rank-{rank(x)} tensor")
    return nn.GroupNormOp(x, int(c["num_groups"]), c.b.axis(x, 1), c.optional_tensor("weight"),
                          c.optional_tensor("bias"), eps=float(c["eps"]))


def _window(c: Call) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """Kernel, strides (the kernel's by default) and padding of a pooling window."""
    k = _pair(c["kernel_size"])
    s = _pair(c["stride"]) if c["stride"] not in (None, []) else k
    ph, pw = _pair(c["padding"])
    return k, s, (ph, pw, ph, pw)


def _max_pool2d(c: Call) -> Operation:
    x = c.b.layout_operand(c.tensor("input"), c.node)
    if c["return_indices"]:
        raise Unmapped("max pool returning indices")
    return nn.MaxPool2dOp(x, *_window(c), _pair(c["dilation"]), bool(c["ceil_mode"]),
                          layout=c.b.layout_of(x))


def _avg_pool2d(c: Call) -> Operation:
    x = c.b.layout_operand(c.tensor("input"), c.node)
    return nn.AvgPool2dOp(x, *_window(c), bool(c["ceil_mode"]), bool(c["count_include_pad"]),
                          c["divisor_override"], layout=c.b.layout_of(x))


def _adaptive_avg_pool2d(c: Call) -> Operation:
    x = c.b.layout_operand(c.tensor("input"), c.node)
    size = c["output_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if any(s is None for s in size):
        raise Unmapped("adaptive pool with a None output extent")
    return nn.AdaptiveAvgPool2dOp(x, _pair(size), layout=c.b.layout_of(x))


def _flatten(c: Call) -> Ordered:
    """Flatten of logical dims start..end: the flatten of the physical dims they
    occupy, where those are adjacent and in logical order (extents of 1 aside);
    else, as PyTorch does, the flatten of a row-major copy."""
    x = c.tensor("input")
    r = rank(x)
    lo, hi = c["start_dim"] % max(r, 1), c["end_dim"] % max(r, 1)
    order, shape = c.b.order(x), c.b.logical_shape_of(x)
    where = sorted(order.index(k) for k in range(lo, hi + 1))
    p0, p1 = where[0], where[-1]
    moving = [k for k in order[p0:p1 + 1] if shape[k] != 1]
    copies = where != list(range(p0, p1 + 1)) or moving != sorted(moving)
    if lo == 0 and any(shape[k] != 1 for k in range(1, hi + 1)):
        if not copies:
            raise LibraryCall("a view that merges the batch with other dims (PyTorch's, "
                              "no copy)")
        raise Unmapped("flatten merges the batch dimension with others")
    if copies:
        # PyTorch copies to row-major first: so do we
        x = c.b.in_order(x, tuple(range(r)), c.node)
        order, p0, p1 = tuple(range(r)), lo, hi
    def merged(k: int) -> int:  # a logical dim outside lo..hi, after the flatten
        return k if k < lo else k - (hi - lo)

    result = [merged(k) for k in order[:p0]] + [lo] + [merged(k) for k in order[p1 + 1:]]
    return _with_order(nn.FlattenOp(x, p0, p1), result)


def _reduced_order(order: Sequence[int], dims: Sequence[int], keep: bool) -> tuple[int, ...]:
    """The memory order of a reduction's result over `dims` of a value stored in `order`."""
    if keep:
        return tuple(order)
    return tuple(k - sum(d < k for d in dims) for k in order if k not in dims)


def _reduce_dims(op: type[nn.MeanOp] | type[nn.SumOp], what: str) -> Callable[[Call], Ordered]:
    """mean or sum over the given dims (not all: the batch stays)."""

    def build(c: Call) -> Ordered:
        x, dims, keep = c.tensor("input"), c["dim"], c["keepdim"]
        if dims is None or (isinstance(dims, list | tuple) and not dims) or \
                c["dtype"] is not None:
            raise Unmapped(f"{what} over all dimensions")
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = sorted({d % rank(x) for d in dims})
        kept = _reduced_order(c.b.order(x), dims, keep)
        return _with_order(op(x, sorted(c.b.axis(x, d) for d in dims), bool(keep)), kept)

    return build


def _reshape(c: Call) -> Ordered:
    """reshape, view, reshape_as (the result's traced type is the shape). Where
    PyTorch makes a view (always for a row-major tensor), the data stays where
    it is: `nn.reshape` of the stored (physical) shape, the result in the
    view's memory order; else PyTorch's copy to row-major, as `nn.permute` and
    `nn.reshape`."""
    x = c.tensor("input")
    shape = c.b.logical_shape(c.node)
    order = view_order(c.b.logical_shape_of(x), c.b.order(x), shape)
    if order is None:
        x = c.b.in_order(x, tuple(range(rank(x))), c.node)
        order = tuple(range(len(shape)))
    order = canonical_order(order, shape, tuple(range(len(shape))))
    if order[0] != 0:
        raise LibraryCall("a view whose batch dim is not outermost", order)
    return _with_order(nn.ReshapeOp(x, c.b.result_type(c.node, order)), order)


def view_order(shape: Sequence[int], order: Sequence[int], new_shape: Sequence[int]
               ) -> tuple[int, ...] | None:
    """The memory order of the view of shape `new_shape` of a tensor of
    `shape` stored in `order`, as PyTorch makes it (no copy); None where
    PyTorch's reshape would copy. Dynamic (-1) extents count as 2."""
    def extents(s: Sequence[int]) -> list[int]:
        return [2 if d < 0 else d for d in s]
    stored = torch.empty([extents(shape)[k] for k in order], device="meta")
    inverse = sorted(range(len(order)), key=lambda i: order[i])
    try:
        v = stored.permute(inverse).view(extents(new_shape))
    except RuntimeError:
        return None
    return stride_order(v)


def _permute(c: Call) -> Ordered:
    """permute and transpose: a view that PyTorch makes without a copy. The
    data stays where it is; the result is the same stored tensor in a new
    memory order (the next layer reads it so)."""
    x = c.tensor("input")
    r = rank(x)
    transpose = "dim0" in c.args
    if transpose:
        given = [c["dim0"], c["dim1"]]
    else:
        d = c["dims"]
        given = list(d[0] if len(d) == 1 and isinstance(d[0], list | tuple) else d)
    if not all(isinstance(k, int) for k in given):
        raise LibraryCall("a view (a new memory order, no copy)")
    dims = [k % r for k in given]
    if transpose:
        i, j = dims
        dims = list(range(r))
        dims[i], dims[j] = j, i
    have = c.b.order(x)
    order = tuple(dims.index(k) for k in have)
    if order[0] != 0:
        raise LibraryCall("a view (a new memory order, no copy) that moves the batch dim",
                          order)
    return _with_order(nn.ReshapeOp(x, x.type), order)


def _contiguous(c: Call) -> Ordered:
    """A dense copy, row-major (or channels-last), as PyTorch makes it:
    `nn.permute`, or nothing where the tensor is stored so already."""
    x = c.tensor("input")
    fmt = c["memory_format"] or torch.contiguous_format
    if fmt is torch.preserve_format:
        return _with_order(nn.IdentityOp(x), c.b.order(x))
    want = NCHW_TO_NHWC if fmt is torch.channels_last else tuple(range(rank(x)))
    if fmt not in (torch.contiguous_format, torch.channels_last) or len(want) != rank(x):
        raise Unmapped(f"contiguous in {fmt}")
    have = c.b.order(x)
    shape = c.b.logical_shape_of(x)
    if canonical_order(have, shape, want) == want:
        # (PyTorch's contiguous() returns such a tensor itself; it stays the
        # judge of strides that a library layer gave)
        raise LibraryCall("nothing to copy: stored so already", want)
    if have[0] != want[0]:
        raise LibraryCall("a copy that brings the batch dim outermost (PyTorch's; stacks "
                          "keep the batch outermost)", want)
    return _with_order(nn.PermuteOp(x, [have.index(k) for k in want]), want)


def _patch_merging(c: Call) -> Ordered:
    """Swin's `_patch_merging_pad`: the 2x2 patches of [B, H, W, C] side by
    side in channels, [B, H/2, W/2, 4C] with the patch (dh, dw) at 2 * dw + dh.
    At odd H or W a zero row or column is padded first, as PyTorch does; then a
    view as [B, H/2, 2, W/2, 2, C], a permute and a view back."""
    x = c.tensor("x")
    shape = c.b.logical_shape_of(x)
    if len(shape) != 4 or min(shape[1:]) < 0:
        raise Unmapped(f"patch merging of shape {_shape_text(shape)} (static [B, H, W, C])")
    _, h, w, ch = shape
    x = c.b.in_order(x, (0, 1, 2, 3), c.node)
    steps: list[Operation] = []
    if h % 2 or w % 2:
        steps.append(nn.PadOp(x, [0, 0, 0, 0], [0, h % 2, w % 2, 0], 0.0))
        x, h, w = steps[-1].results[0], h + h % 2, w + w % 2
    steps.append(nn.ReshapeOp(x, nn.make_tensor([-1, h // 2, 2, w // 2, 2, ch])))
    steps.append(nn.PermuteOp(steps[-1].results[0], [0, 1, 3, 4, 2, 5]))
    for op in steps:
        op.attributes[NODE_ATTR] = StringAttr(c.node.name)
        c.b.block.add_op(op)
    return _with_order(nn.ReshapeOp(steps[-1].results[0],
                                    c.b.result_type(c.node, range(4))), range(4))


def _shape_text(shape: Sequence[int]) -> str:
    """[?, 15, 19, 24]: a shape with its dynamic extents as `?`."""
    return "[" + ", ".join(str(e) if e >= 0 else "?" for e in shape) + "]"


def _pad(c: Call) -> Operation:
    """Constant padding (`F.pad`, ZeroPad2d, ConstantPad1d/2d/3d), negative
    counts cropping, in the input's memory order. The counts come last dim
    first, as in `F.pad`."""
    x = c.tensor("input")
    counts = c["pad"] if "pad" in c.args else c["padding"]
    if c.args.get("mode", "constant") != "constant":
        raise Unmapped(f"padding mode {c['mode']!r}")
    counts = list(counts) if isinstance(counts, list | tuple) else [counts] * 2
    r = rank(x)
    if len(counts) % 2 or len(counts) // 2 > r - 1 or not all(isinstance(k, int) for k in counts):
        raise Unmapped(f"padding {counts} of a rank-{r} tensor (the batch dim stays)")
    low, high = [0] * r, [0] * r
    for j in range(len(counts) // 2):
        low[r - 1 - j], high[r - 1 - j] = counts[2 * j], counts[2 * j + 1]
    value = c["value"] or 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unmapped("a padding value that is not a number")
    order = c.b.order(x)
    return nn.PadOp(x, [low[k] for k in order], [high[k] for k in order], float(value))


def _split_part(c: Call) -> Ordered:
    """One part of `chunk`/`split` along a static dim: the points [start,
    start + length) of that dim, a crop stored in the plan's default order.
    Its reader loads through the crop's map; a library reader gets it
    contiguous from the producer's stack instead of copying a strided view."""
    x, dim, start, length = c.tensor("input"), c["dim"], c["start"], c["length"]
    extent = c.b.logical_shape_of(x)[dim]
    low, high = [0] * rank(x), [0] * rank(x)
    low[dim], high[dim] = -start, -(extent - start - length)
    # channels-last (what oneDNN's convolutions read) even where the input is
    # stored otherwise (ShuffleNet's shuffle is row-major)
    order = default_order(rank(x), c.b.layout)
    x = c.b.in_order(x, order, c.node)
    return _with_order(nn.PadOp(x, [low[k] for k in order], [high[k] for k in order], 0.0),
                       order)


def _index_box(c: Call) -> Ordered:
    """`x[index]` with ints and unit-step slices: a crop to the box in x's
    memory order, then the int-indexed dims (extent 1 after the crop) dropped
    by a reshape. Its reader loads through the crop's map, so a stack reads
    the part it needs of the whole tensor, which is stored densely, where
    PyTorch would hand over a strided view and the stack's call copy it."""
    x, starts, lengths, dropped = c.tensor("input"), c["starts"], c["lengths"], c["dropped"]
    shape, order = c.b.logical_shape_of(x), c.b.order(x)
    low = [-starts[k] for k in order]
    high = [-(shape[k] - starts[k] - lengths[k]) if shape[k] >= 0 else 0 for k in order]
    if any(low) or any(high):
        crop = nn.PadOp(x, low, high, 0.0)
        if not dropped:
            return _with_order(crop, order)
        crop.attributes[NODE_ATTR] = StringAttr(c.node.name)
        c.b.block.add_op(crop)
        x = crop.results[0]
    kept = [k for k in order if k not in dropped]
    renumber = {k: i for i, k in enumerate(sorted(kept))}
    physical = [lengths[k] if shape[k] >= 0 else shape[k] for k in kept]
    return _with_order(nn.ReshapeOp(x, nn.make_tensor(physical)),
                       tuple(renumber[k] for k in kept))


def _cat(c: Call) -> Operation:
    values = c.tensors("tensors")
    if len({c.b.order(v) for v in values}) > 1:
        want = default_order(rank(values[0]), c.b.layout)
        orders = [c.b.order(v) for v in values]
        order = want if want in orders else orders[0]
        values = [c.b.in_order(v, order, c.node) for v in values]
    return nn.CatOp(values, c.b.axis(values[0], c["dim"]))


def _with_scalar(c: Call, ctor: Callable[[SSAValue, SSAValue], Operation]) -> Operation:
    """`x + c` or `x * c` (either side) with a Python number: PyTorch computes
    it in float32 with float32(c), so c becomes a bound float32 tensor of
    extents 1, broadcast."""
    t, k = ("input", "other") if c.is_tensor("input") else ("other", "input")
    v = c[k]
    if not c.is_tensor(t) or isinstance(v, bool) or not isinstance(v, int | float):
        raise Unmapped("a scalar operand that is not a number")
    x = c.tensor(t)
    if not isinstance(x.type, TensorType) or x.type.element_type != f32:
        raise Unmapped("a scalar operand of a tensor that is not float32")
    const = torch.full([1] * rank(x), float(v), dtype=torch.float32)
    cv = c.b.param(const, f"{c.node.name}.scalar")  # bound: the plan keeps it alive
    return ctor(x, cv) if t == "input" else ctor(cv, x)


def _param_name(c: Call, name: str) -> str:
    v = c.args[name]
    return str(v.target) if isinstance(v, fx.Node) else f"{c.node.target}.{name}"


def _binary(ctor: Callable[[SSAValue, SSAValue], Operation]) -> Callable[[Call], Operation]:
    def build(c: Call) -> Operation:
        if not (c.is_tensor("input") and c.is_tensor("other")):
            return _with_scalar(c, ctor)
        a, b = c.broadcast_parameter("input"), c.broadcast_parameter("other")
        if a is not None and b is None:
            y = c.tensor("other")
            return ctor(c.b.param_like(a[0], _param_name(c, "input"), y, a[1]), y)
        x = c.tensor("input")
        if b is not None and a is None:
            return ctor(x, c.b.param_like(b[0], _param_name(c, "other"), x, b[1]))
        y = c.tensor("other")
        if rank(x) == rank(y) and c.b.order(x) == c.b.order(y):
            return ctor(x, y)
        if c.b.row_major(x) and c.b.row_major(y):
            return ctor(x, y)  # numpy broadcasting of row-major tensors
        if rank(x) == rank(y) and x.type.get_shape() and y.type.get_shape():
            # one operand read through a permuted map: the plan's order if either has it
            want = default_order(rank(x), c.b.layout)
            order = want if want in (c.b.order(x), c.b.order(y)) else c.b.order(x)
            lx, ly = c.b.logical_shape_of(x), c.b.logical_shape_of(y)
            if lx == ly:
                return ctor(c.b.in_order(x, order, c.node), c.b.in_order(y, order, c.node))
        raise Unmapped("broadcast between tensors of different ranks or memory orders "
                       f"({c.b.order(x)}, {c.b.order(y)})")
    return build


def _add(c: Call) -> Operation:
    if c["alpha"] != 1:
        raise Unmapped("add with alpha")
    return _binary(nn.AddOp)(c)


def _sub(c: Call) -> Operation:
    if c["alpha"] != 1:
        raise Unmapped("sub with alpha")
    return _binary(nn.SubOp)(c)


def _div(c: Call) -> Operation:
    if c["rounding_mode"] is not None:
        raise Unmapped(f"division with rounding mode {c['rounding_mode']}")
    if c.is_tensor("other") and not c.is_tensor("input"):
        return _number_over_tensor(c)
    return _binary(nn.DivOp)(c)  # x / c: PyTorch divides by float32(c)


def _addcmul(c: Call) -> Operation:
    """`addcmul(input, t1, t2)`: PyTorch's kernel computes `input + value * t1
    * t2`, which the compiler contracts to `fma(value * t1, t2, input)` (value
    1: `nn.addcmul`, one rounding). Parameters (ResMLP's affine layers) are
    broadcast against the tensor operand."""
    v = c["value"]
    if isinstance(v, bool) or v != 1:
        raise Unmapped("addcmul with a value other than 1")
    names = ("input", "tensor1", "tensor2")
    tensors = [k for k in names if c.broadcast_parameter(k) is None and c.is_tensor(k)]
    if not tensors:
        raise Unmapped("addcmul of parameters only")
    like = c.tensor(tensors[0])
    operands = []
    for k in names:
        p = c.broadcast_parameter(k)
        if p is not None:
            operands.append(c.b.param_like(p[0], _param_name(c, k), like, p[1]))
            continue
        if not c.is_tensor(k):
            raise Unmapped("addcmul of a number")
        x = c.tensor(k)
        if rank(x) != rank(like) or c.b.order(x) != c.b.order(like):
            raise Unmapped("addcmul of tensors of different ranks or memory orders")
        operands.append(x)
    return nn.AddcmulOp(*operands)


def _number_over_tensor(c: Call) -> Operation:
    """`c / x`: PyTorch's `Tensor.__rtruediv__` is `x.reciprocal() * c`."""
    v = c["input"]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Unmapped("a scalar operand that is not a number")
    x = c.tensor("other")
    if not isinstance(x.type, TensorType) or x.type.element_type != f32:
        raise Unmapped("a scalar operand of a tensor that is not float32")
    ones = [1] * rank(x)
    one = c.b.param(torch.ones(ones), f"{c.node.name}.one")
    recip = nn.DivOp(one, x)
    recip.attributes[NODE_ATTR] = StringAttr(c.node.name)
    c.b.block.add_op(recip)
    cv = c.b.param(torch.full(ones, float(v)), f"{c.node.name}.scalar")
    return nn.MulOp(recip.results[0], cv)


def _softmax(c: Call) -> Operation:
    x = c.tensor("input")
    if c["dim"] is None or c["dtype"] is not None:
        raise Unmapped("softmax without an explicit dim")
    return nn.SoftmaxOp(x, c.b.axis(x, c["dim"]))


def _power(exponent: float | None = None) -> Callable[[Call], Operation]:
    """`pow(x, c)` for a number c (or a fixed `exponent`: sqrt, rsqrt,
    reciprocal, square), where PyTorch computes it without `powf`."""

    def build(c: Call) -> Operation:
        if not c.is_tensor("input"):
            raise Unmapped("a power of a number")
        x = c.tensor("input")
        e = exponent if exponent is not None else c["exponent"]
        if isinstance(e, bool) or not isinstance(e, int | float):
            raise Unmapped("a power with a tensor exponent")
        if e == 1:
            return nn.IdentityOp(x)
        if float(e) not in nn.POW_EXPONENTS:
            raise Unmapped(f"pow with exponent {e}: PyTorch computes it with powf, "
                           f"BrainSlug only exponents {list(nn.POW_EXPONENTS)} and 1")
        return nn.PowOp(x, float(e))

    return build


def _norm(c: Call) -> Ordered:
    """The 2-norm over given dims (`x.norm(p=2, dim)`, `torch.linalg.vector_norm`,
    ConvNeXt-V2's global response norm): `sqrt(sum(x * x))`, the sum in
    `nn.sum`'s order (a reduction's rounding, not PyTorch's norm kernel's)."""
    p = c["ord"] if "ord" in c.args else c["p"]
    if p not in (2, 2.0, "fro") or c["dtype"] is not None or c.args.get("out") is not None:
        raise Unmapped(f"norm with p={p!r}" if p not in (2, 2.0, "fro") else "norm to a dtype or out=")
    x, dims, keep = c.tensor("input"), c["dim"], c["keepdim"]
    if dims is None or (isinstance(dims, list | tuple) and not dims):
        raise Unmapped("norm over all dimensions")
    dims = sorted({d % rank(x) for d in ([dims] if isinstance(dims, int) else dims)})
    if 0 in dims:
        raise Unmapped("norm over the batch dim")
    order = c.b.order(x)
    square = c.b.add_part(nn.MulOp(x, x), c.node, order)
    kept = _reduced_order(order, dims, keep)
    total = c.b.add_part(nn.SumOp(square, sorted(c.b.axis(x, d) for d in dims), bool(keep)),
                         c.node, kept)
    return _with_order(nn.PowOp(total, 0.5), kept)


def _normalize(c: Call) -> Operation:
    """`F.normalize` with p = 2 along one dim."""
    x = c.tensor("input")
    p, dim, eps = c["p"], c["dim"], c["eps"]
    if c["out"] is not None:
        raise Unmapped("normalize into an out= tensor")
    if p != 2 or not isinstance(dim, int) or not isinstance(eps, int | float):
        raise Unmapped(f"normalize with p={p} along {dim}")
    if dim % rank(x) == 0:
        raise Unmapped("normalize along the batch dim")
    return nn.L2NormalizeOp(x, c.b.axis(x, dim), float(eps))


def _roll(c: Call) -> Operation:
    """`torch.roll` along given dims: a cyclic index map, in the stored order."""
    x = c.tensor("input")
    shifts, dims = c["shifts"], c["dims"]
    if dims is None or (isinstance(dims, list | tuple) and not dims):
        raise Unmapped("roll of the flattened tensor (no dims)")
    shifts = list(shifts) if isinstance(shifts, list | tuple) else [shifts]
    dims = list(dims) if isinstance(dims, list | tuple) else [dims]
    if len(shifts) != len(dims) or not all(isinstance(v, int) for v in (*shifts, *dims)):
        raise Unmapped(f"roll by {shifts} along {dims}")
    r = rank(x)
    by_dim = [0] * r
    for s, k in zip(shifts, dims, strict=True):
        by_dim[k % r] += s
    if by_dim[0]:
        raise Unmapped("roll along the batch dim")
    return nn.RollOp(x, [by_dim[k] for k in c.b.order(x)])


# ---------------------------------------------------------------------- specs

_spec = OpSpec.parse
RELU = _spec("relu(input, inplace=False)", _unary(nn.ReluOp))
RELU6 = _spec("relu6(input, inplace=False)",
             _unary(lambda x: nn.ClampOp(x, min=0.0, max=6.0)))
HARDTANH = _spec("hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False)", _hardtanh)
LEAKY_RELU = _spec("leaky_relu(input, negative_slope=0.01, inplace=False)",
                  lambda c: nn.LeakyReluOp(c.tensor("input"), float(c["negative_slope"])))
SILU = _spec("silu(input, inplace=False)", _unary(nn.SiluOp))
SIGMOID = _spec("sigmoid(input)", _unary(nn.SigmoidOp))
TANH = _spec("tanh(input)", _unary(nn.TanhOp))
HARDSWISH = _spec("hardswish(input, inplace=False)", _unary(nn.HardswishOp))
HARDSIGMOID = _spec("hardsigmoid(input, inplace=False)", _unary(nn.HardsigmoidOp))
GELU = _spec("gelu(input, approximate='none')",
            lambda c: nn.GeluOp(c.tensor("input"), c["approximate"]))
DROPOUT = _spec("dropout(input, p=0.5, training=True, inplace=False)", _dropout)
IDENTITY = _spec("identity(input)", _unary(nn.IdentityOp))
STOCHASTIC_DEPTH = _spec("stochastic_depth(input, p, mode, training=True)", _stochastic_depth)
"""torchvision's stochastic depth (DropPath): the identity in eval."""
CONV2D = _spec("conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)",
              _conv2d)
LINEAR = _spec("linear(input, weight, bias=None)", _linear)
BATCH_NORM = _spec("batch_norm(input, running_mean, running_var, weight=None, bias=None, "
                  "training=False, momentum=0.1, eps=1e-05)", _batch_norm)
MAX_POOL2D = _spec("max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, "
                  "ceil_mode=False, return_indices=False)", _max_pool2d)
AVG_POOL2D = _spec("avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, "
                  "count_include_pad=True, divisor_override=None)", _avg_pool2d)
ADAPTIVE_AVG_POOL2D = _spec("adaptive_avg_pool2d(input, output_size)", _adaptive_avg_pool2d)
FLATTEN = _spec("flatten(input, start_dim=0, end_dim=-1)", _flatten)
MEAN = _spec("mean(input, dim=None, keepdim=False, *, dtype=None)", _reduce_dims(nn.MeanOp, "mean"))
SUM = _spec("sum(input, dim=None, keepdim=False, *, dtype=None)", _reduce_dims(nn.SumOp, "sum"))
RESHAPE = _spec("reshape(input, *shape)", _reshape)
RESHAPE_AS = _spec("reshape_as(input, other)", _reshape)
CONTIGUOUS = _spec("contiguous(input, memory_format=None)", _contiguous)
CAT = _spec("cat(tensors, dim=0)", _cat)
PATCH_MERGING = _spec("patch_merging_pad(x)", _patch_merging)
ADD = _spec("add(input, other, *, alpha=1)", _add)
MUL = _spec("mul(input, other)", _binary(nn.MulOp))
SUB = _spec("sub(input, other, *, alpha=1)", _sub)
DIV = _spec("div(input, other, *, rounding_mode=None)", _div)
SOFTMAX = _spec("softmax(input, dim=None, _stacklevel=3, dtype=None)", _softmax)
LAYER_NORM = _spec("layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05)",
                   _layer_norm)
PAD = _spec("pad(input, pad, mode='constant', value=None)", _pad)
SPLIT_PART = _spec("split_part(input, dim, start, length)", _split_part)
INDEX_BOX = _spec("index_box(input, starts, lengths, dropped)", _index_box)
CONSTANT_PAD = _spec("constant_pad(input, padding, value=0.0)", _pad)
"""The ConstantPad1d/2d/3d and ZeroPad2d modules (attributes `padding` and `value`)."""
CONSTANT_PAD_ND = _spec("constant_pad_nd(input, pad, value=0.0)", _pad)
GROUP_NORM = _spec("group_norm(input, num_groups, weight=None, bias=None, eps=1e-05)",
                   _group_norm)
PERMUTE = _spec("permute(input, *dims)", _permute)
TRANSPOSE = _spec("transpose(input, dim0, dim1)", _permute)
POW = _spec("pow(input, exponent)", _power())
SQRT = _spec("sqrt(input)", _power(0.5))
RSQRT = _spec("rsqrt(input)", _power(-0.5))
RECIPROCAL = _spec("reciprocal(input)", _power(-1.0))
SQUARE = _spec("square(input)", _power(2.0))
ADDCMUL = _spec("addcmul(input, tensor1, tensor2, *, value=1)", _addcmul)
NORM = _spec("norm(input, p='fro', dim=None, keepdim=False, out=None, dtype=None)", _norm)
VECTOR_NORM = _spec("vector_norm(input, ord=2, dim=None, keepdim=False, *, dtype=None)", _norm)
NORMALIZE = _spec("normalize(input, p=2.0, dim=1, eps=1e-12, out=None)", _normalize)
ROLL = _spec("roll(input, shifts, dims=None)", _roll)
INTERPOLATE = _spec("interpolate(input, size=None, scale_factor=None, mode='nearest', "
                    "align_corners=None, recompute_scale_factor=None, antialias=False)",
                    interpolate)

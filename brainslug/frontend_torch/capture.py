"""Capture a PyTorch model as `nn` IR.

The model is traced with `torch.fx` (symbolic tracing); shapes come from
running the traced graph at two batch sizes (on meta tensors, so nothing is
computed), so the extents that follow the batch become `?`. Modules,
functions, tensor methods and ATen ops with an `nn` counterpart map to it
through that op's one argument spec (`op_specs`); every other
tensor-producing node becomes an `nn.library` op that PyTorch runs.
Parameters and buffers become function arguments bound to the model's own
tensors (never copied: BatchNorm's running statistics stay live).
"""

from __future__ import annotations

import copy
import operator
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn as tnn
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, Region, SSAValue

from brainslug.dialects import nn
from brainslug.frontend_torch import assembly_specs as assembly
from brainslug.frontend_torch import batch_split
from brainslug.frontend_torch import op_specs as ops
from brainslug.frontend_torch.graph_builder import (
    NCHW_TO_NHWC,
    GraphBuilder,
    LibraryCall,
    Order,
    Unmapped,
    canonical_order,
    default_order,
    rank,
)
from brainslug.frontend_torch.index_box import index_box_args, index_of, takes_whole
from brainslug.frontend_torch.shapes import propagate_shapes
from brainslug.plan.capture import NODE_ATTR


@dataclass
class Capture:
    """The IR of a traced model and what ties it to the fx graph."""

    graph_module: fx.GraphModule
    module: ModuleOp
    # per IR function argument: the fx placeholder it stands for, or a bound tensor
    arg_sources: list[fx.Node | torch.Tensor]
    # fx node name -> IR value of its (tensor) result
    values: dict[str, SSAValue]
    # fx node name -> why it stayed in PyTorch
    library_reasons: dict[str, str] = field(default_factory=dict)
    # fx node name -> memory order of its IR value (physical axis i holds logical axis [i])
    orders: dict[str, Order] = field(default_factory=dict)



# ---------------------------------------------------------------------- mapping

_MODULES: dict[type, ops.OpSpec] = {
    tnn.ReLU: ops.RELU,
    tnn.ReLU6: ops.RELU6,
    tnn.Hardtanh: ops.HARDTANH,
    tnn.LeakyReLU: ops.LEAKY_RELU,
    tnn.SiLU: ops.SILU,
    tnn.Sigmoid: ops.SIGMOID,
    tnn.Tanh: ops.TANH,
    tnn.Hardswish: ops.HARDSWISH,
    tnn.Hardsigmoid: ops.HARDSIGMOID,
    tnn.GELU: ops.GELU,
    tnn.Dropout: ops.DROPOUT,
    tnn.Dropout2d: ops.DROPOUT,
    tnn.Identity: ops.IDENTITY,
    tnn.Conv2d: ops.CONV2D,
    tnn.Linear: ops.LINEAR,
    tnn.BatchNorm1d: ops.BATCH_NORM,
    tnn.BatchNorm2d: ops.BATCH_NORM,
    tnn.MaxPool2d: ops.MAX_POOL2D,
    tnn.AvgPool2d: ops.AVG_POOL2D,
    tnn.AdaptiveAvgPool2d: ops.ADAPTIVE_AVG_POOL2D,
    tnn.Flatten: ops.FLATTEN,
    tnn.Softmax: ops.SOFTMAX,
    tnn.LayerNorm: ops.LAYER_NORM,
    tnn.GroupNorm: ops.GROUP_NORM,
    tnn.modules.padding._ConstantPadNd: ops.CONSTANT_PAD,
    tnn.Upsample: ops.INTERPOLATE,
}
"""The op of each module type (and of its subclasses)."""

_FUNCTIONS: dict[Any, ops.OpSpec] = {
    F.relu: ops.RELU, torch.relu: ops.RELU,
    F.relu6: ops.RELU6,
    F.hardtanh: ops.HARDTANH,
    F.leaky_relu: ops.LEAKY_RELU,
    F.silu: ops.SILU,
    F.sigmoid: ops.SIGMOID, torch.sigmoid: ops.SIGMOID,
    torch.tanh: ops.TANH,
    F.hardswish: ops.HARDSWISH,
    F.hardsigmoid: ops.HARDSIGMOID,
    F.gelu: ops.GELU,
    F.dropout: ops.DROPOUT,
    F.conv2d: ops.CONV2D, torch.conv2d: ops.CONV2D,
    F.linear: ops.LINEAR,
    F.batch_norm: ops.BATCH_NORM,
    F.max_pool2d: ops.MAX_POOL2D,
    F.avg_pool2d: ops.AVG_POOL2D,
    F.adaptive_avg_pool2d: ops.ADAPTIVE_AVG_POOL2D,
    torch.flatten: ops.FLATTEN,
    torch.mean: ops.MEAN, torch.sum: ops.SUM, torch.norm: ops.NORM,
    torch.linalg.vector_norm: ops.VECTOR_NORM,
    torch.cat: ops.CAT, torch.concat: ops.CAT,
    operator.add: ops.ADD, torch.add: ops.ADD,
    operator.mul: ops.MUL, torch.mul: ops.MUL,
    operator.sub: ops.SUB, torch.sub: ops.SUB,
    operator.truediv: ops.DIV, torch.div: ops.DIV,
    F.softmax: ops.SOFTMAX, torch.softmax: ops.SOFTMAX,
    torch.permute: ops.PERMUTE, torch.transpose: ops.TRANSPOSE,
    F.layer_norm: ops.LAYER_NORM, torch.layer_norm: ops.LAYER_NORM,
    F.group_norm: ops.GROUP_NORM, torch.group_norm: ops.GROUP_NORM,
    F.pad: ops.PAD, torch.constant_pad_nd: ops.CONSTANT_PAD_ND,
    torch.pow: ops.POW, operator.pow: ops.POW, torch.square: ops.SQUARE,
    torch.sqrt: ops.SQRT, torch.rsqrt: ops.RSQRT, torch.reciprocal: ops.RECIPROCAL,
    torch.roll: ops.ROLL, F.interpolate: ops.INTERPOLATE, F.normalize: ops.NORMALIZE,
    torch.addcmul: ops.ADDCMUL,
    torch.stack: assembly.STACK, operator.neg: assembly.NEG, torch.neg: assembly.NEG,
}
_IN_PLACE_FUNCTIONS: dict[Any, ops.OpSpec] = {operator.iadd: ops.ADD, operator.imul: ops.MUL}

_MATRIX_FUNCTIONS = {torch.matmul, torch.bmm, torch.einsum, torch.baddbmm, torch.addmm,
                     operator.matmul, F.scaled_dot_product_attention,
                     F.multi_head_attention_forward, batch_split.attention}
"""Matrix work: library calls by design (issue: the framework keeps its GEMMs
and its fused attention), not fallbacks."""
_MATRIX_ATEN = {"matmul", "bmm", "mm", "addmm", "baddbmm", "einsum",
                "scaled_dot_product_attention"}
"""The same in a torch.export graph: ATen ops by packet name (any overload)."""
_VIEW_FUNCTIONS = {torch.swapaxes, torch.swapdims, torch.unsqueeze, torch.squeeze,
                   torch.chunk, torch.split, torch.unbind, torch.narrow}
_VIEW_METHODS = {"unsqueeze", "squeeze", "expand", "expand_as", "swapaxes", "swapdims",
                 "chunk", "split", "unbind", "narrow", "view_as", "size", "dim"}
"""Calls whose results are views of their input (or sizes): PyTorch makes them
without touching memory; the next layer reads the view in its memory order."""


def know_torchvision() -> None:
    """Adds torchvision's functions wrapped for fx (stochastic depth, Swin's
    attention, relative position bias and patch-merging pad) to the tables,
    once torchvision is imported (a model using them has imported it; importing
    it here would cost seconds to everyone else)."""
    if _TORCHVISION_DONE or "torchvision" not in sys.modules:
        return
    globals()["_TORCHVISION_DONE"] = True
    try:
        from torchvision.models import swin_transformer as swin
        from torchvision.ops import StochasticDepth, stochastic_depth
    except ImportError:
        return
    _FUNCTIONS[stochastic_depth] = ops.STOCHASTIC_DEPTH
    _MODULES[StochasticDepth] = ops.STOCHASTIC_DEPTH
    _MATRIX_FUNCTIONS.update({getattr(swin, "shifted_window_attention", None),
                              getattr(swin, "_get_relative_position_bias", None)} - {None})
    if hasattr(swin, "_patch_merging_pad"):
        _FUNCTIONS[swin._patch_merging_pad] = ops.PATCH_MERGING


_TORCHVISION_DONE = False


_READS_ANY_ORDER_METHODS = {"permute", "transpose", "view", "reshape", "flatten", "contiguous",
                            "size", "dim", "matmul", "bmm", "reshape_as"} | _VIEW_METHODS
_READS_ANY_ORDER_FUNCTIONS = {operator.getitem, torch.permute, torch.transpose, torch.flatten,
                              torch.reshape, F.linear} | _VIEW_FUNCTIONS


def _reads_any_order(n: fx.Node, modules: Mapping[str, tnn.Module]) -> bool:
    """Whether node `n` is a view or matrix work, which PyTorch does on any strides."""
    if n.op == "call_method":
        return n.target in _READS_ANY_ORDER_METHODS
    if n.op == "call_function":
        if isinstance(n.target, torch._ops.OpOverload):
            return n.target.overloadpacket.__name__ in _MATRIX_ATEN
        return n.target in _READS_ANY_ORDER_FUNCTIONS or n.target in _MATRIX_FUNCTIONS
    if n.op == "call_module":
        return isinstance(modules.get(str(n.target)), tnn.Linear | tnn.MultiheadAttention)
    return False


def batch_outer_copies(gm: fx.GraphModule, metas: dict[str, Any],
                       orders: dict[str, Order],
                       reorder: Callable[[fx.GraphModule], dict[str, Order]] | None = None,
                       ) -> fx.GraphModule:
    """Make every PyTorch result stored with its batch dim inside (attention's
    sequence-first output, a broadcast class token) dense with the batch
    outermost before layers that BrainSlug compiles read it: a `contiguous()`
    node after it (PyTorch's copy; compiled stacks keep the batch outermost).
    Views and matrix work read such a tensor as it is. The layers after a
    copy see the batch outermost too: `reorder` gives the memory orders of the
    new graph (None: `orders` already are the new graph's, as when they come
    from the cache), and copies go only where a result still needs one.
    Returns `gm`, or a copy of it with the new nodes; `metas` and `orders`
    are updated in place."""
    modules = dict(gm.named_modules())
    copied = False
    while True:
        needy = [n for n in gm.graph.nodes if _batch_inside(n, metas, orders, modules)]
        if not needy:
            return gm
        if not copied:
            gm = fx.GraphModule(gm, copy.deepcopy(gm.graph), type(gm).__name__)
            copied = True
            by_name = {n.name: n for n in gm.graph.nodes}
            needy = [by_name[n.name] for n in needy]
        if reorder is not None:  # the layers after a copy may not need their own
            inside = set(needy)
            needy = [n for n in needy if not inside.intersection(n.all_input_nodes)]
        for n in needy:
            shape = metas[n.name][0]
            with gm.graph.inserting_after(n):
                # named by the node it copies: the same name whichever round adds it
                c = gm.graph.create_node("call_method", "contiguous", (n,),
                                         name=f"{n.name}_batch_outer")
            n.replace_all_uses_with(c, delete_user_cb=lambda u, c=c: u is not c)
            metas[c.name] = metas[n.name]
            orders[c.name] = tuple(range(len(shape)))
        gm.recompile()
        if reorder is None:
            return gm
        new = reorder(gm)
        if not new:
            return gm
        orders.update(new)


def _batch_inside(n: fx.Node, metas: dict[str, Any], orders: dict[str, Order],
                  modules: Mapping[str, tnn.Module]) -> bool:
    """Whether `n`'s result is stored with its batch dim inside and read by a
    layer that BrainSlug may compile."""
    order, meta = orders.get(n.name), metas.get(n.name)
    if order is None or meta is None or len(order) < 2 or meta[0][0] != -1:
        return False
    shape = meta[0]
    channels_last = len(shape) == 4 and order[0] == 0 and canonical_order(
        order, shape, NCHW_TO_NHWC) == NCHW_TO_NHWC
    if channels_last or canonical_order(order, shape, tuple(range(len(shape))))[0] == 0:
        return False
    if any(u.op == "call_method" and u.target == "contiguous" for u in n.users):
        return False
    return not all(_reads_any_order(u, modules) for u in n.users)


def _library_function(b: GraphBuilder, n: fx.Node) -> None:
    """LibraryCall for matrix work, attention, views and tuple elements."""
    f = n.target
    if f in _MATRIX_FUNCTIONS:
        raise LibraryCall(f"matrix work ({getattr(f, '__name__', f)}) in the framework")
    if f in _VIEW_FUNCTIONS:
        raise LibraryCall("a view (no copy)")
    if f is operator.getitem:
        src = n.args[0]
        if isinstance(src, fx.Node) and src.name not in b.metas:
            raise LibraryCall("an element of a tuple result")
        if _basic_index(n.args[1]):
            raise LibraryCall("a view (basic indexing, no copy)")


_SPLITS = {"chunk", "split", torch.chunk, torch.split}


def _split_part_args(b: GraphBuilder, n: fx.Node) -> tuple[Any, ...] | None:
    """(input, dim, start, length) of `chunk(...)[i]` or `split(...)[i]` along
    the channels of a rank-4 tensor BrainSlug computes, else None (a view).
    ShuffleNet and Res2Net convolve such parts: as views, oneDNN first copies
    each strided part (twice: to and from its blocked order)."""
    src, idx = n.args[0], n.args[1]
    if not (isinstance(src, fx.Node) and src.target in _SPLITS and isinstance(idx, int)):
        return None
    x = src.args[0]
    if not (isinstance(x, fx.Node) and x.name in b.values and x.name in b.metas):
        return None
    shape = b.logical_shape(x)
    spec = ("chunks", "dim") if src.target in ("chunk", torch.chunk) else ("sizes", "dim")
    named = dict(zip(spec, src.args[1:], strict=False)) | {
        {"split_size_or_sections": "sizes", "split_size": "sizes"}.get(k, k): v
        for k, v in src.kwargs.items()}
    dim = named.get("dim", 0)
    if not isinstance(dim, int) or len(shape) != 4 or dim % 4 != 1 or shape[1] < 0:
        return None
    extent = shape[1]
    if "chunks" in named:
        k = named["chunks"]
        if not isinstance(k, int) or k < 1:
            return None
        step = -(-extent // k)
        sizes = [min(step, extent - s) for s in range(0, extent, step)]
    elif isinstance(named.get("sizes"), int) and named["sizes"] > 0:
        sizes = [min(named["sizes"], extent - s) for s in range(0, extent, named["sizes"])]
    elif isinstance(named.get("sizes"), list | tuple) and all(
            isinstance(v, int) for v in named["sizes"]) and sum(named["sizes"]) == extent:
        sizes = list(named["sizes"])
    else:
        return None
    if not -len(sizes) <= idx < len(sizes):
        return None
    idx %= len(sizes)
    return x, 1, sum(sizes[:idx]), sizes[idx]


def _basic_index(idx: Any) -> bool:
    """Whether `t[idx]` is a view: ints, slices, None and Ellipsis only."""
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, int | slice) for i in items)

_METHODS: dict[str, ops.OpSpec] = {
    "relu": ops.RELU,
    "sigmoid": ops.SIGMOID,
    "tanh": ops.TANH,
    "flatten": ops.FLATTEN,
    "mean": ops.MEAN,
    "sum": ops.SUM,
    "norm": ops.NORM,
    "view": ops.RESHAPE,
    "reshape": ops.RESHAPE,
    "reshape_as": ops.RESHAPE_AS,
    "contiguous": ops.CONTIGUOUS,
    "add": ops.ADD,
    "mul": ops.MUL,
    "sub": ops.SUB,
    "div": ops.DIV,
    "permute": ops.PERMUTE,
    "transpose": ops.TRANSPOSE,
    "pow": ops.POW,
    "square": ops.SQUARE,
    "sqrt": ops.SQRT,
    "rsqrt": ops.RSQRT,
    "reciprocal": ops.RECIPROCAL,
    "roll": ops.ROLL,
    "softmax": ops.SOFTMAX,
    "addcmul": ops.ADDCMUL,
    "neg": assembly.NEG,
    "to": assembly.TO,
    "type_as": assembly.TYPE_AS,
}
"""Tensor methods by name; `x.name_()` is the in-place form of `x.name()`."""

_ATEN: dict[str, ops.OpSpec] = {
    "relu.default": ops.RELU,
    "hardtanh.default": ops.HARDTANH,
    "leaky_relu.default": ops.LEAKY_RELU,
    "silu.default": ops.SILU,
    "sigmoid.default": ops.SIGMOID,
    "tanh.default": ops.TANH,
    "hardswish.default": ops.HARDSWISH,
    "hardsigmoid.default": ops.HARDSIGMOID,
    "gelu.default": ops.GELU,
    "dropout.default": ops.DROPOUT,
    "conv2d.default": ops.CONV2D,
    "linear.default": ops.LINEAR,
    "batch_norm.default": ops.BATCH_NORM,
    "max_pool2d.default": ops.MAX_POOL2D,
    "avg_pool2d.default": ops.AVG_POOL2D,
    "adaptive_avg_pool2d.default": ops.ADAPTIVE_AVG_POOL2D,
    "flatten.using_ints": ops.FLATTEN,
    "mean.dim": ops.MEAN,
    "sum.dim_IntList": ops.SUM,
    "view.default": ops.RESHAPE,
    "reshape.default": ops.RESHAPE,
    "cat.default": ops.CAT,
    "add.Tensor": ops.ADD,
    "mul.Tensor": ops.MUL,
    "softmax.int": ops.SOFTMAX,
    "addcmul.default": ops.ADDCMUL,
    "_softmax.default": ops.SOFTMAX,
    "layer_norm.default": ops.LAYER_NORM,
    "permute.default": ops.PERMUTE,
    "transpose.int": ops.TRANSPOSE,
    "constant_pad_nd.default": ops.CONSTANT_PAD_ND,
    "group_norm.default": ops.GROUP_NORM,
    "pow.Tensor_Scalar": ops.POW,
    "sqrt.default": ops.SQRT,
    "rsqrt.default": ops.RSQRT,
    "reciprocal.default": ops.RECIPROCAL,
    "roll.default": ops.ROLL,
    "contiguous.default": ops.CONTIGUOUS,
    "pad.default": ops.PAD,
    "stack.default": assembly.STACK,
    "neg.default": assembly.NEG,
    "to.dtype": assembly.TO,
    "type_as.default": assembly.TYPE_AS,
}
"""ATen overloads (`packet.overload`) by op; `packet_` is the in-place form of `packet`."""

_ATEN_NAMES = {"self": "input", "train": "training", "size": "shape"}
"""ATen argument names that the functional signatures spell otherwise."""

_ATEN_IGNORED = {"cudnn_enabled", "cudnn_enable", "half_to_float"}
"""ATen-only arguments that change nothing here: a backend choice, and a flag for
half inputs (which never have an IR value)."""


def _build(b: GraphBuilder, n: fx.Node, spec: ops.OpSpec, args: Sequence[Any],
           kwargs: Mapping[str, Any], in_place: bool = False) -> Operation | ops.Ordered:
    """`n`'s op from its arguments bound to `spec`. An in-place form (or
    `inplace=True`) is functional only where nothing else sees its input."""
    call = ops.Call(b, n, spec.bind(args, kwargs))
    if in_place or call.args.get("inplace"):
        x = call["input"]
        if isinstance(x, fx.Node) and not (len(x.users) == 1 and next(iter(x.users)) is n):
            raise Unmapped("in-place update of a tensor that is used elsewhere")
    return spec.build(call)


def _map_module(b: GraphBuilder, n: fx.Node, m: tnn.Module) -> Operation | ops.Ordered:
    """A module call: the module's attributes are the op's arguments of the same name
    (`training` aside: the capture is of inference)."""
    if type(m).__name__ in ("ConvAct", "ConvAdd"):
        what = "residual add" + (" and ReLU" if m.act else "") if type(m).__name__ == "ConvAdd" \
            else m.act
        raise LibraryCall(f"convolution with its {what} as oneDNN post-ops", NCHW_TO_NHWC)
    spec = next((_MODULES[t] for t in type(m).__mro__ if t in _MODULES), None)
    if spec is None:
        raise Unmapped(f"module {type(m).__name__}")
    if getattr(m, "padding_mode", "zeros") != "zeros":  # a conv that pads before F.conv2d
        b.library_conv(n.name)
        raise Unmapped(f"padding {m.padding!r} / mode {m.padding_mode}")
    attrs = {p.name: getattr(m, p.name) for p in spec.params
             if p.name != "input" and hasattr(m, p.name)}
    if "training" in attrs:
        attrs["training"] = False
    return _build(b, n, spec, n.args, {**n.kwargs, **attrs})


def _map_function(b: GraphBuilder, n: fx.Node) -> Operation | ops.Ordered:
    """A function call (torch, torch.nn.functional, operator) with its own arguments."""
    f = n.target
    if isinstance(f, torch._ops.OpOverload):
        if (indexed := index_of(n)) is not None:
            if takes_whole(b, *indexed):
                return _build(b, n, ops.IDENTITY, (indexed[0],), {})
            if (box := index_box_args(b, n, _reads_any_order)) is not None:
                return _build(b, n, ops.INDEX_BOX, box, {})
            raise LibraryCall("a view (basic indexing, no copy)")
        return _map_aten(b, n)
    if f in _IN_PLACE_FUNCTIONS:
        return _build(b, n, _IN_PLACE_FUNCTIONS[f], n.args, n.kwargs, in_place=True)
    if f is operator.getitem and (part := _split_part_args(b, n)) is not None:
        return _build(b, n, ops.SPLIT_PART, part, {})
    if f is operator.getitem and (box := index_box_args(b, n, _reads_any_order)) is not None:
        return _build(b, n, ops.INDEX_BOX, box, {})
    _library_function(b, n)
    if f not in _FUNCTIONS:
        raise Unmapped(f"function {getattr(f, '__name__', f)}")
    return _build(b, n, _FUNCTIONS[f], n.args, n.kwargs)


def _map_method(b: GraphBuilder, n: fx.Node) -> Operation | ops.Ordered:
    """A tensor method: the tensor is the first argument."""
    name = str(n.target)
    in_place = name.endswith("_")
    spec = _METHODS.get(name.removesuffix("_"))
    if spec is None and name in _VIEW_METHODS:
        raise LibraryCall("a view (no copy)")
    if spec is None and name in ("matmul", "bmm", "baddbmm"):
        raise LibraryCall(f"matrix work ({name}) in the framework")
    if spec is None:
        raise Unmapped(f"method {name}")
    return _build(b, n, spec, n.args, n.kwargs, in_place)


def _map_aten(b: GraphBuilder, n: fx.Node) -> Operation | ops.Ordered:
    """An ATen op of a torch.export graph (high-level training IR), its arguments
    named by the overload's schema."""
    op = n.target
    assert isinstance(op, torch._ops.OpOverload)
    packet = op.overloadpacket.__name__
    in_place = packet.endswith("_") and not packet.startswith("_")
    spec = _ATEN.get(f"{packet.removesuffix('_') if in_place else packet}.{op._overloadname}")
    if spec is None and packet in _MATRIX_ATEN:
        raise LibraryCall(f"matrix work ({packet}) in the framework")
    if spec is None:
        raise Unmapped(f"aten op {op}")
    named = {a.name: v for a, v in zip(op._schema.arguments, n.args, strict=False)} | n.kwargs
    args = {_ATEN_NAMES.get(k, k): v for k, v in named.items() if k not in _ATEN_IGNORED}
    return _build(b, n, spec, (), args, in_place)


def _tensor_inputs(b: GraphBuilder, n: fx.Node) -> list[SSAValue]:
    """The nearest tensor values that a library node depends on."""
    out: list[SSAValue] = []
    seen: set[str] = set()
    stack = list(n.all_input_nodes)
    while stack:
        p = stack.pop()
        if p.name in seen:
            continue
        seen.add(p.name)
        if p.name in b.values:
            if b.values[p.name] not in out:
                out.append(b.values[p.name])
        else:
            stack.extend(p.all_input_nodes)
    return out


def capture(
    gm: fx.GraphModule,
    example_shapes: Sequence[Sequence[int]],
    metas: dict[str, Any] | None = None,
    layout: str = "NCHW",
    compile_convs: bool | Collection[str] = False,
    conv_block: int = 0,
    orders: dict[str, Order] | None = None,
    compile_linears: bool | Collection[str] = False,
) -> Capture:
    """Build the graph function `@forward` of a traced module.

    With `layout="NHWC"` every rank-4 tensor is typed as it is stored
    channels-last: the value of an fx tensor `t` is `t.permute(0, 2, 3, 1)`.
    Layers that see the memory order (reshape, rank-changing flatten,
    broadcasts between ranks) then run in PyTorch, and so do convolutions
    unless `compile_convs` (True, or the fx names of those compiled; their
    weights blocked by `conv_block` output channels where there are more).
    `orders` (`memory_orders`) are the memory orders of the results that
    PyTorch computes; each value is typed as it is stored, so that a permute
    of a channels-last tensor is a row-major one, not a copy. Linear layers are
    compiled where `compile_linears` (True, or the fx names of some) says."""
    know_torchvision()
    metas = metas if metas is not None else propagate_shapes(gm, example_shapes)
    b = GraphBuilder(gm, metas, layout, compile_convs, conv_block, orders, compile_linears)
    modules = dict(gm.named_modules())
    outputs: list[SSAValue] = []
    # nodes computed from the inputs; the others (a relative position bias
    # gathered from its table) read parameters alone and stay PyTorch's
    reads_input: set[str] = set()
    for n in gm.graph.nodes:
        if n.op == "placeholder" or any(a.name in reads_input for a in n.all_input_nodes):
            reads_input.add(n.name)
        if n.op == "placeholder":
            if n.name in metas:
                v = b.values[n.name] = b.arg(b.result_type(n), n, n.name)
                b.orders[v] = default_order(rank(v), layout)
            continue
        if n.op == "get_attr":
            t = _get_attr(gm, str(n.target))
            if isinstance(t, torch.Tensor):
                b.values[n.name] = b.param(t, str(n.target))
            continue
        if n.op == "output":
            outputs = [b.values[x.name] for x in _flatten_nodes(n.args[0]) if x.name in b.values]
            continue
        mark = b.block.last_op
        try:
            if n.name not in reads_input:  # no batch: PyTorch computes it from the weights
                raise LibraryCall("computed from parameters alone")
            if n.op == "call_module":
                op = _map_module(b, n, modules[str(n.target)])
            elif n.op == "call_function":
                op = _map_function(b, n)
            elif n.op == "call_method":
                op = _map_method(b, n)
            else:
                raise Unmapped(n.op)
            if isinstance(op, ops.Ordered):
                b.emit(n, op.op, op.order)
            else:
                b.emit(n, op)
            v = b.values[n.name]
            if (layout == "NHWC" and rank(v) == 4 and not isinstance(v.owner, nn.LibraryOp)
                    and _read_by_convolutions_only(n, modules)):
                b.store_result_in(n, NCHW_TO_NHWC)
        except Exception as e:  # any node we can't map runs in PyTorch
            while b.block.last_op is not mark:  # ops that its builder added (permutes)
                dead = b.block.last_op
                assert dead is not None
                dead.detach()
                dead.erase()
            if n.name not in metas:
                # not a tensor (sizes, tuples): PyTorch computes it; the marker keeps
                # the tensors it reads alive outside stacks
                deps = _tensor_inputs(b, n)
                if deps:
                    marker = nn.LibraryOp(_callee(n), deps, [])
                    marker.attributes[NODE_ATTR] = StringAttr(n.name)
                    b.block.add_op(marker)
                continue
            if not isinstance(e, LibraryCall) and n.name in reads_input:
                b.reasons[n.name] = str(e) if isinstance(e, Unmapped) \
                    else f"{type(e).__name__}: {e}"
            order = b.library_order(n, e.order if isinstance(e, LibraryCall) else None)
            lib = nn.LibraryOp(_callee(n), _tensor_inputs(b, n), [b.result_type(n, order)])
            b.emit_library(n, lib, order)
    b.block.add_op(func.ReturnOp(*outputs))
    fn = func.FuncOp("forward", ([a.type for a in b.block.args], [o.type for o in outputs]),
                     Region(b.block))
    module = ModuleOp([fn])
    orders = {name: b.order(v) for name, v in b.values.items()}
    return Capture(gm, module, b.args, b.values, b.reasons, orders)


def _read_by_convolutions_only(n: fx.Node, modules: Mapping[str, tnn.Module]) -> bool:
    """Whether every user of `n` is a 2-d convolution module: in a
    channels-last plan its result is then stored channels-last, whatever
    order PyTorch's views give it (ShuffleNet's channel shuffle ends in a
    row-major view), so that oneDNN does not copy it first."""
    return bool(n.users) and all(
        u.op == "call_module" and isinstance(modules.get(str(u.target)), tnn.Conv2d)
        for u in n.users)


def _flatten_nodes(a: Any) -> list[fx.Node]:
    if isinstance(a, fx.Node):
        return [a]
    if isinstance(a, list | tuple):
        return [x for y in a for x in _flatten_nodes(y)]
    if isinstance(a, dict):
        return [x for y in a.values() for x in _flatten_nodes(y)]
    return []


def _get_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _callee(n: fx.Node) -> str:
    if n.op == "call_module":
        return f"module:{n.target}"
    if n.op == "call_method":
        return f"method:{n.target}"
    t = n.target
    mod = getattr(t, "__module__", None) or ""
    return f"{mod}.{getattr(t, '__name__', str(t))}".lstrip(".")

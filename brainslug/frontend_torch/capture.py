"""Capture a PyTorch model as `nn` IR.

The model is traced with `torch.fx` (symbolic tracing); shapes come from
running the traced graph at two batch sizes (on meta tensors, so nothing is
computed), so the extents that follow the batch become `?`. Modules and functions with an `nn` counterpart map to it;
every other tensor-producing node becomes an `nn.library` op that PyTorch
runs. Parameters and buffers become function arguments bound to the model's
own tensors (never copied: BatchNorm's running statistics stay live).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn as tnn
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, f32, i1, i64
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from brainslug.dialects import nn
from brainslug.plan.capture import NODE_ATTR, value_name

"""Name of the fx node an `nn` op came from."""


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


_DTYPES: dict[torch.dtype, Attribute] = {torch.float32: f32, torch.int64: i64, torch.bool: i1}


def trace(model: tnn.Module) -> fx.GraphModule:
    """fx symbolic trace of `model` in eval mode (dropout off, BN running stats)."""
    was_training = model.training
    model.eval()
    try:
        return fx.symbolic_trace(model)
    finally:
        model.train(was_training)


def export(model: tnn.Module, shape: Sequence[int]) -> fx.GraphModule:
    """torch.export of `model` in eval mode, the batch (0 in `shape`) dynamic:
    the fallback for models that symbolic tracing can't handle."""
    was_training = model.training
    model.eval()
    try:
        example = torch.randn([2 if d == 0 else d for d in shape])
        dyn = {0: torch.export.Dim("batch", min=1)} if shape and shape[0] == 0 else {}
        ep = torch.export.export(model, (example,), dynamic_shapes=(dyn,) if dyn else None)
        return ep.module()
    finally:
        model.train(was_training)


def _tensor_meta(gm: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Shape and dtype of every node's result (tensors; tuples of tensors as lists)."""
    metas: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                metas[n.name] = (tuple(out.shape), out.dtype)
            return out

    mods = list(gm.modules())
    was = [m.training for m in mods]
    for m in mods:
        m.training = False
    try:
        with torch.no_grad():
            Recorder(gm).run(*inputs)
    finally:
        for m, t in zip(mods, was, strict=True):
            m.training = t
    return metas


def _meta_run(
    gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]], batches: Sequence[int]
) -> list[dict[str, Any]]:
    """`_tensor_meta` per batch size, on meta tensors: a copy of `gm` whose
    parameters and buffers are meta tensors (the model is neither changed nor
    copied in memory), so nothing is computed. Raises where an op has no meta
    kernel or a value depends on data."""
    memo: dict[int, Any] = {}
    for p in gm.parameters():
        memo[id(p)] = tnn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in gm.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    meta = copy.deepcopy(gm, memo)
    return [
        _tensor_meta(meta, [
            torch.empty([batch if d == 0 else d for d in shape], device="meta")
            for shape in example_shapes
        ])
        for batch in batches
    ]


def propagate_shapes(
    gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]]
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes with -1 where an extent follows the batch size (0 in the shape).

    The graph runs on meta tensors at batch 1 and 2 (shapes only, no compute);
    where that fails it runs for real on random inputs."""
    def inputs(batch: int) -> list[torch.Tensor]:
        return [
            torch.randn([batch if d == 0 else d for d in shape]) for shape in example_shapes
        ]

    dynamic = any(0 in s for s in example_shapes)
    batches = (1, 2) if dynamic else (1,)
    try:
        a, *rest = _meta_run(gm, example_shapes, batches)
    except Exception:  # an op without a meta kernel, data-dependent code: run it for real
        a = _tensor_meta(gm, inputs(1))
        rest = [_tensor_meta(gm, inputs(2))] if dynamic else []
    if not dynamic:
        return a
    b = rest[0]
    out = {}
    for name, (shape, dtype) in a.items():
        other = b.get(name, (shape, dtype))[0]
        if len(other) != len(shape):
            continue  # rank depends on the batch: leave it to PyTorch
        out[name] = (tuple(-1 if x != y else x for x, y in zip(shape, other, strict=True)), dtype)
    return out


def tensor_type(shape: Sequence[int], dtype: torch.dtype) -> TensorType:
    elem = _DTYPES.get(dtype)
    if elem is None:
        raise Unmapped(f"dtype {dtype}")
    return nn.make_tensor(shape) if elem == f32 else TensorType(elem, [
        nn.DYN if d < 0 else d for d in shape])


# ---------------------------------------------------------------------- mapping


class _Builder:
    """Emits IR for fx nodes into the graph function's block."""

    def __init__(self, gm: fx.GraphModule, metas: dict[str, Any], layout: str = "NCHW"):
        self.gm = gm
        self.metas = metas
        self.layout = layout
        self.block = Block()
        self.args: list[fx.Node | torch.Tensor] = []
        self.values: dict[str, SSAValue] = {}
        self.param_args: dict[int, SSAValue] = {}
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
        rank = _rank(v)
        return physical_axis(axis % rank, rank, self.layout)

    def channels_last(self, *values: SSAValue) -> bool:
        return self.layout == "NHWC" and any(_rank(v) == 4 for v in values)

    def library_conv(self) -> None:
        if self.layout == "NHWC":
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


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _only_user(n: fx.Node, of: fx.Node) -> bool:
    return len(of.users) == 1 and next(iter(of.users)) is n


def _in_place_ok(n: fx.Node, x: Any) -> None:
    """An in-place op is functional only when nothing else sees its input."""
    if isinstance(x, fx.Node) and not _only_user(n, x):
        raise Unmapped("in-place update of a tensor that is used elsewhere")


_UNARY_MODULES: dict[type, Callable[[tnn.Module, SSAValue], Operation]] = {
    tnn.ReLU: lambda m, x: nn.ReluOp(x),
    tnn.ReLU6: lambda m, x: nn.ClampOp(x, min=0.0, max=6.0),
    tnn.Hardtanh: lambda m, x: nn.ClampOp(x, min=float(m.min_val), max=float(m.max_val)),
    tnn.LeakyReLU: lambda m, x: nn.LeakyReluOp(x, float(m.negative_slope)),
    tnn.SiLU: lambda m, x: nn.SiluOp(x),
    tnn.Sigmoid: lambda m, x: nn.SigmoidOp(x),
    tnn.Tanh: lambda m, x: nn.TanhOp(x),
    tnn.Hardswish: lambda m, x: nn.HardswishOp(x),
    tnn.Hardsigmoid: lambda m, x: nn.HardsigmoidOp(x),
    tnn.GELU: lambda m, x: nn.GeluOp(x, m.approximate),
    tnn.Dropout: lambda m, x: nn.DropoutOp(x, float(m.p)),
    tnn.Dropout2d: lambda m, x: nn.DropoutOp(x, float(m.p)),
    tnn.Identity: lambda m, x: nn.IdentityOp(x),
}

_UNARY_FUNCTIONS: dict[Any, Callable[..., Operation]] = {
    F.relu: lambda x, inplace=False: nn.ReluOp(x),
    torch.relu: lambda x: nn.ReluOp(x),
    F.relu6: lambda x, inplace=False: nn.ClampOp(x, min=0.0, max=6.0),
    F.hardtanh: lambda x, min_val=-1.0, max_val=1.0, inplace=False: nn.ClampOp(
        x, min=float(min_val), max=float(max_val)),
    F.leaky_relu: lambda x, negative_slope=0.01, inplace=False: nn.LeakyReluOp(
        x, float(negative_slope)),
    torch.sigmoid: lambda x: nn.SigmoidOp(x),
    F.sigmoid: lambda x: nn.SigmoidOp(x),
    torch.tanh: lambda x: nn.TanhOp(x),
    F.silu: lambda x, inplace=False: nn.SiluOp(x),
    F.hardswish: lambda x, inplace=False: nn.HardswishOp(x),
    F.hardsigmoid: lambda x, inplace=False: nn.HardsigmoidOp(x),
    F.gelu: lambda x, approximate="none": nn.GeluOp(x, approximate),
    F.dropout: lambda x, p=0.5, training=False, inplace=False: _dropout(x, p, training),
}

_UNARY_METHODS: dict[str, Callable[..., Operation]] = {
    "relu": lambda x: nn.ReluOp(x),
    "sigmoid": lambda x: nn.SigmoidOp(x),
    "tanh": lambda x: nn.TanhOp(x),
}
_IN_PLACE_METHODS = {"relu_": "relu", "sigmoid_": "sigmoid", "tanh_": "tanh"}


def _dropout(x: SSAValue, p: float, training: bool) -> Operation:
    if training:
        raise Unmapped("dropout in training mode")
    return nn.DropoutOp(x, float(p))


def _conv(b: _Builder, n: fx.Node, x: SSAValue, m: tnn.Conv2d) -> Operation:
    b.library_conv()
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise Unmapped(f"padding {m.padding!r} / mode {m.padding_mode}")
    ph, pw = _pair(m.padding)
    bias = b.param(m.bias, f"{n.target}.bias") if m.bias is not None else None
    return nn.Conv2dOp(x, b.param(m.weight, f"{n.target}.weight"), bias,
                       strides=_pair(m.stride), padding=(ph, pw, ph, pw),
                       dilation=_pair(m.dilation), groups=m.groups, layout="NCHW")


def _batch_norm(b: _Builder, n: fx.Node, x: SSAValue, m: tnn.modules.batchnorm._BatchNorm):
    if not m.track_running_stats or m.running_mean is None:
        raise Unmapped("batch norm without running statistics")
    t = str(n.target)
    w = b.param(m.weight, f"{t}.weight") if m.weight is not None else None
    bias = b.param(m.bias, f"{t}.bias") if m.bias is not None else None
    return nn.BatchNormOp(x, w, bias, b.param(m.running_mean, f"{t}.running_mean"),
                          b.param(m.running_var, f"{t}.running_var"), eps=float(m.eps),
                          layout=_layout_of(b, x))


def _layout_of(b: _Builder, x: SSAValue) -> str:
    return "NHWC" if b.channels_last(x) else "NCHW"


def _max_pool(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False,
              return_indices=False, *, layout: str = "NCHW"):
    if return_indices:
        raise Unmapped("max pool returning indices")
    k = _pair(kernel)
    s = _pair(stride) if stride not in (None, []) else k
    p = _pair(padding)
    return nn.MaxPool2dOp(x, k, s, (p[0], p[1], p[0], p[1]), _pair(dilation), bool(ceil_mode),
                          layout=layout)


def _avg_pool(x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None, *, layout: str = "NCHW"):
    k = _pair(kernel)
    s = _pair(stride) if stride not in (None, []) else k
    p = _pair(padding)
    return nn.AvgPool2dOp(x, k, s, (p[0], p[1], p[0], p[1]), bool(ceil_mode),
                          bool(count_include_pad), divisor_override, layout=layout)


def _adaptive_avg_pool(x, output_size, *, layout: str = "NCHW"):
    size = _pair(output_size) if not isinstance(output_size, int) else (output_size,) * 2
    if any(s is None for s in size):
        raise Unmapped("adaptive pool with a None output extent")
    return nn.AdaptiveAvgPool2dOp(x, size, layout=layout)


def _rank(v: SSAValue) -> int:
    return len(v.type.get_shape())


def _map_module(b: _Builder, n: fx.Node, m: tnn.Module) -> Operation:
    args = list(n.args)
    x = b.value(args[0])
    t = type(m)
    if t in _UNARY_MODULES:
        if getattr(m, "inplace", False):
            _in_place_ok(n, args[0])
        return _UNARY_MODULES[t](m, x)
    if isinstance(m, tnn.Conv2d):
        return _conv(b, n, x, m)
    if type(m).__name__ in ("ConvAct", "ConvAdd"):
        what = "residual add" + (" and ReLU" if m.act else "") if type(m).__name__ == "ConvAdd" \
            else m.act
        raise LibraryCall(f"convolution with its {what} as oneDNN post-ops")
    if isinstance(m, tnn.Linear):
        _rank2(b, x)
        bias = b.param(m.bias, f"{n.target}.bias") if m.bias is not None else None
        return nn.LinearOp(x, b.param(m.weight, f"{n.target}.weight"), bias)
    if isinstance(m, tnn.BatchNorm2d | tnn.BatchNorm1d):
        return _batch_norm(b, n, x, m)
    if isinstance(m, tnn.MaxPool2d):
        return _max_pool(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                         m.return_indices, layout=_layout_of(b, x))
    if isinstance(m, tnn.AvgPool2d):
        return _avg_pool(x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                         m.count_include_pad, m.divisor_override, layout=_layout_of(b, x))
    if isinstance(m, tnn.AdaptiveAvgPool2d):
        return _adaptive_avg_pool(x, m.output_size, layout=_layout_of(b, x))
    if isinstance(m, tnn.Flatten):
        return _flatten(b, x, m.start_dim, m.end_dim)
    if isinstance(m, tnn.Softmax) and m.dim is not None:
        return nn.SoftmaxOp(x, b.axis(x, m.dim))
    raise Unmapped(f"module {t.__name__}")


def _binary(b: _Builder, n: fx.Node, args, kwargs, ctor, in_place: bool = False) -> Operation:
    if len(args) != 2 or kwargs:
        raise Unmapped("extra arguments")
    lhs, rhs = args
    if not (isinstance(lhs, fx.Node) and isinstance(rhs, fx.Node)):
        raise Unmapped("a scalar operand")
    if in_place:
        _in_place_ok(n, lhs)
    x, y = b.value(lhs), b.value(rhs)
    if b.channels_last(x, y) and _rank(x) != _rank(y):
        raise Unmapped("broadcast between ranks of a channels-last tensor")
    return ctor(x, y)


def _rank2(b: _Builder, x: SSAValue) -> None:
    if b.channels_last(x):
        raise Unmapped("a rank-4 operand of a layer that sees the memory order (channels-last)")


def _flatten(b: _Builder, x: SSAValue, start: int, end: int) -> Operation:
    """Flatten; of a channels-last tensor only where the order can't show (1x1 planes)."""
    if b.channels_last(x):
        lo, hi = start % 4, end % 4
        if hi != 3 or any(d != 1 for d in x.type.get_shape()[1:3]) or lo > 1:
            raise Unmapped("flatten of a channels-last tensor with spatial extent")
    return nn.FlattenOp(x, start, end)


def _map_aten(b: _Builder, n: fx.Node) -> Operation:
    """ATen ops of torch.export graphs (high-level training IR)."""
    name = n.target.overloadpacket.__name__  # type: ignore[union-attr]
    args, kwargs = list(n.args), dict(n.kwargs)
    in_place = name.endswith("_") and not name.startswith("_")
    base = name[:-1] if in_place else name
    if in_place:
        _in_place_ok(n, args[0])
    x = lambda: b.value(args[0])  # noqa: E731
    if base == "conv2d":
        b.library_conv()
        return _functional_conv(b, args, kwargs)
    if base == "batch_norm":
        names = ("input", "weight", "bias", "running_mean", "running_var", "training",
                 "momentum", "eps")
        a = dict(zip(names, args, strict=False)) | kwargs
        order = ("input", "running_mean", "running_var", "weight", "bias", "training",
                 "momentum", "eps")
        return _functional_batch_norm(b, [a.get(k) for k in order], {})
    if base == "linear":
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        _rank2(b, x())
        return nn.LinearOp(x(), b.value(args[1]), b.value(bias) if bias is not None else None)
    if base in ("add", "mul") and n.target.name().endswith(".Tensor"):  # type: ignore[union-attr]
        if kwargs.pop("alpha", 1) != 1:
            raise Unmapped("add with alpha")
        return _binary(b, n, args, kwargs, nn.AddOp if base == "add" else nn.MulOp)
    unary = {"relu": nn.ReluOp, "sigmoid": nn.SigmoidOp, "tanh": nn.TanhOp, "silu": nn.SiluOp,
             "hardswish": nn.HardswishOp, "hardsigmoid": nn.HardsigmoidOp}
    if base in unary:
        return unary[base](x())
    if base == "hardtanh":
        lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return nn.ClampOp(x(), min=float(lo), max=float(hi))
    if base == "leaky_relu":
        return nn.LeakyReluOp(x(), float(args[1] if len(args) > 1 else 0.01))
    if base == "gelu":
        return nn.GeluOp(x(), kwargs.get("approximate", "none"))
    if base == "dropout":
        return _dropout(x(), args[1] if len(args) > 1 else 0.5, args[2] if len(args) > 2 else False)
    if base == "max_pool2d":
        return _max_pool(x(), *args[1:], **kwargs, layout=_layout_of(b, x()))
    if base == "avg_pool2d":
        return _avg_pool(x(), *args[1:], **kwargs, layout=_layout_of(b, x()))
    if base == "adaptive_avg_pool2d":
        return _adaptive_avg_pool(x(), *args[1:], **kwargs, layout=_layout_of(b, x()))
    if base == "cat":
        vals = [b.value(t) for t in args[0]]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        return nn.CatOp(vals, b.axis(vals[0], dim))
    if base == "flatten":
        return _flatten(b, x(), *(args[1:] or [0, -1]))
    if base == "mean" and n.target.name().endswith(".dim"):  # type: ignore[union-attr]
        return _mean(b, n, args, kwargs)
    if base in ("view", "reshape"):
        return _reshape(b, n, x())
    if base in ("softmax", "_softmax") and (len(args) < 3 or args[2] in (None, False)):
        return nn.SoftmaxOp(x(), b.axis(x(), args[1]))
    raise Unmapped(f"aten op {n.target}")


def _map_function(b: _Builder, n: fx.Node) -> Operation:
    f = n.target
    args, kwargs = list(n.args), dict(n.kwargs)
    if isinstance(f, torch._ops.OpOverload):
        return _map_aten(b, n)
    if f in (operator.add, torch.add, operator.iadd):
        if kwargs.get("alpha", 1) != 1:
            raise Unmapped("add with alpha")
        kwargs.pop("alpha", None)
        return _binary(b, n, args, kwargs, nn.AddOp, f is operator.iadd)
    if f in (operator.mul, torch.mul, operator.imul):
        return _binary(b, n, args, kwargs, nn.MulOp, f is operator.imul)
    if f in (torch.cat, torch.concat):
        tensors = args[0] if args else kwargs["tensors"]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        vals = [b.value(t) for t in tensors]
        return nn.CatOp(vals, b.axis(vals[0], dim))
    if f is torch.flatten:
        x = b.value(args[0])
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return _flatten(b, x, start, end)
    if f in _UNARY_FUNCTIONS:
        return _UNARY_FUNCTIONS[f](b.value(args[0]), *args[1:], **kwargs)
    if f is F.max_pool2d:
        x = b.value(args[0])
        return _max_pool(x, *args[1:], **kwargs, layout=_layout_of(b, x))
    if f is F.avg_pool2d:
        x = b.value(args[0])
        return _avg_pool(x, *args[1:], **kwargs, layout=_layout_of(b, x))
    if f is F.adaptive_avg_pool2d:
        x = b.value(args[0])
        return _adaptive_avg_pool(x, *args[1:], **kwargs, layout=_layout_of(b, x))
    if f is torch.mean:
        return _mean(b, n, args, kwargs)
    if f is F.batch_norm:
        return _functional_batch_norm(b, args, kwargs)
    if f in (torch.conv2d, F.conv2d):
        b.library_conv()
        return _functional_conv(b, args, kwargs)
    if f is F.linear:
        x, w = b.value(args[0]), b.value(args[1])
        _rank2(b, x)
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        return nn.LinearOp(x, w, b.value(bias) if bias is not None else None)
    if f is F.softmax or f is torch.softmax:
        x = b.value(args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None or kwargs.get("dtype") is not None:
            raise Unmapped("softmax without an explicit dim")
        return nn.SoftmaxOp(x, b.axis(x, dim))
    raise Unmapped(f"function {getattr(f, '__name__', f)}")


def _functional_batch_norm(b: _Builder, args, kwargs) -> Operation:
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
             "eps")
    a = dict(zip(names, args, strict=False)) | kwargs
    if a.get("training", False) or a.get("running_mean") is None:
        raise Unmapped("batch norm with batch statistics")
    w, bias = a.get("weight"), a.get("bias")
    return nn.BatchNormOp(
        b.value(a["input"]), b.value(w) if w is not None else None,
        b.value(bias) if bias is not None else None, b.value(a["running_mean"]),
        b.value(a["running_var"]), eps=float(a.get("eps", 1e-5)),
        layout=_layout_of(b, b.value(a["input"])))


def _functional_conv(b: _Builder, args, kwargs) -> Operation:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args, strict=False)) | kwargs
    if isinstance(a.get("padding", 0), str):
        raise Unmapped(f"padding {a['padding']!r}")
    ph, pw = _pair(a.get("padding", 0))
    bias = a.get("bias")
    return nn.Conv2dOp(b.value(a["input"]), b.value(a["weight"]),
                       b.value(bias) if bias is not None else None,
                       strides=_pair(a.get("stride", 1)), padding=(ph, pw, ph, pw),
                       dilation=_pair(a.get("dilation", 1)), groups=int(a.get("groups", 1)),
                       layout="NCHW")


def _mean(b: _Builder, n: fx.Node, args, kwargs) -> Operation:
    x = b.value(args[0])
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if dims is None or kwargs.get("dtype") is not None:
        raise Unmapped("mean over all dimensions")
    dims = [dims] if isinstance(dims, int) else list(dims)
    rank = _rank(x)
    dims = [d % rank for d in dims]
    if b.channels_last(x) and not keep:
        kept = [d for d in NCHW_TO_NHWC if d not in dims]
        if kept != sorted(kept):
            raise Unmapped("mean whose result order differs in channels-last")
    return nn.MeanOp(x, sorted(b.axis(x, d) for d in dims), bool(keep))


def _map_method(b: _Builder, n: fx.Node) -> Operation:
    name = str(n.target)
    args, kwargs = list(n.args), dict(n.kwargs)
    if name in _IN_PLACE_METHODS:
        _in_place_ok(n, args[0])
        name = _IN_PLACE_METHODS[name]
    if name in _UNARY_METHODS and len(args) == 1 and not kwargs:
        return _UNARY_METHODS[name](b.value(args[0]))
    if name == "flatten":
        x = b.value(args[0])
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return _flatten(b, x, start, end)
    if name == "mean":
        return _mean(b, n, args, kwargs)
    if name in ("view", "reshape"):
        return _reshape(b, n, b.value(args[0]))
    if name in ("add", "add_"):
        return _binary(b, n, args, kwargs, nn.AddOp, name == "add_")
    if name in ("mul", "mul_"):
        return _binary(b, n, args, kwargs, nn.MulOp, name == "mul_")
    raise Unmapped(f"method {name}")


def _reshape(b: _Builder, n: fx.Node, x: SSAValue) -> Operation:
    out = b.result_type(n)
    if b.layout == "NHWC" and (_rank(x) == 4 or len(out.get_shape()) == 4):
        raise Unmapped("reshape of a channels-last tensor")
    return nn.ReshapeOp(x, out)


def _tensor_inputs(b: _Builder, n: fx.Node) -> list[SSAValue]:
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
) -> Capture:
    """Build the graph function `@forward` of a traced module.

    With `layout="NHWC"` every rank-4 tensor is typed as it is stored
    channels-last: the value of an fx tensor `t` is `t.permute(0, 2, 3, 1)`.
    Layers that see the memory order (reshape, rank-changing flatten,
    broadcasts between ranks) then run in PyTorch, and so do convolutions."""
    metas = metas if metas is not None else propagate_shapes(gm, example_shapes)
    b = _Builder(gm, metas, layout)
    modules = dict(gm.named_modules())
    outputs: list[SSAValue] = []
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if n.name in metas:
                b.values[n.name] = b.arg(b.result_type(n), n, n.name)
            continue
        if n.op == "get_attr":
            t = _get_attr(gm, str(n.target))
            if isinstance(t, torch.Tensor):
                b.values[n.name] = b.param(t, str(n.target))
            continue
        if n.op == "output":
            outputs = [b.values[x.name] for x in _flatten_nodes(n.args[0]) if x.name in b.values]
            continue
        try:
            if n.op == "call_module":
                op = _map_module(b, n, modules[str(n.target)])
            elif n.op == "call_function":
                op = _map_function(b, n)
            elif n.op == "call_method":
                op = _map_method(b, n)
            else:
                raise Unmapped(n.op)
            b.emit(n, op)
        except Exception as e:  # any node we can't map runs in PyTorch
            if n.name not in metas:
                # not a tensor (sizes, tuples): PyTorch computes it; the marker keeps
                # the tensors it reads alive outside stacks
                deps = _tensor_inputs(b, n)
                if deps:
                    marker = nn.LibraryOp(_callee(n), deps, [])
                    marker.attributes[NODE_ATTR] = StringAttr(n.name)
                    b.block.add_op(marker)
                continue
            if not isinstance(e, LibraryCall):
                b.reasons[n.name] = str(e) if isinstance(e, Unmapped) \
                    else f"{type(e).__name__}: {e}"
            lib = nn.LibraryOp(_callee(n), _tensor_inputs(b, n), [b.result_type(n)])
            lib.attributes[NODE_ATTR] = StringAttr(n.name)
            lib.results[0].name_hint = value_name(n.name)
            b.block.add_op(lib)
            b.values[n.name] = lib.results[0]
    b.block.add_op(func.ReturnOp(*outputs))
    fn = func.FuncOp("forward", ([a.type for a in b.block.args], [o.type for o in outputs]),
                     Region(b.block))
    module = ModuleOp([fn])
    return Capture(gm, module, b.args, b.values, b.reasons)


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

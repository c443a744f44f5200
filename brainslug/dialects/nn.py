"""The `nn` dialect: one op per network layer, on value-semantic tensors.

Every op takes and returns ranked builtin `tensor`s of `f32`. Extents may be
dynamic (`?`, stored as xDSL's `DYNAMIC_INDEX`); in practice only the batch
extent is. Shape inference propagates `?`: a dynamic input extent gives a
dynamic output extent on that axis.

Property encodings (all written inside the attr-dict):

* integer lists: `DenseArrayBase` of i64, e.g. `strides = array<i64: 1, 1>`;
* integers: `IntegerAttr` i64, e.g. `groups = 1 : i64`;
* floats: `FloatAttr` f64, e.g. `eps = 1.000000e-05 : f64`;
* booleans: `BoolAttr` (an `IntegerAttr` of i1), written `true` / `false`;
* strings: `StringAttr`, e.g. `layout = "NCHW"`.

All properties are required and always printed, so that IR built in Python and
IR parsed from text compare equal; the only optional ones are `nn.clamp`'s
`min`/`max`, `nn.avg_pool2d`'s `divisor_override` (absent means "none") and
`nn.sigmoid`/`nn.silu`'s `impl` (absent means the exact formula).
Builders take Python values, with PyTorch's defaults.

Layout: ops whose meaning depends on the channel axis carry `layout`, which is
"NCHW" (channel axis 1, spatial axes 2, 3) or "NHWC" (channel axis 3, spatial
axes 1, 2). A rank-2 input to batch_norm (`[N, C]`) has its channels on axis 1
whatever the layout.

Every op except `nn.stack` and `nn.yield` has a classmethod `infer_type`, which
takes the operand types and the properties as Python values and returns the
result type (or raises `VerifyException`), and a builder `__init__` that infers
the result type when none is given. `verify_` checks the declared result type
against `infer_type`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    BoolAttr,
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    lazy_traits_def,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser, UnresolvedOperand
from xdsl.printer import Printer
from xdsl.traits import (
    HasParent,
    IsolatedFromAbove,
    IsTerminator,
    OpTrait,
    Pure,
    RecursiveMemoryEffect,
)
from xdsl.utils.exceptions import VerifyException

DYN = DYNAMIC_INDEX
"""The extent of a dynamic (`?`) tensor dimension."""

LAYOUTS = ("NCHW", "NHWC")
"""The supported values of the `layout` property."""

Shape = tuple[int, ...]
Operand = SSAValue | Operation

# ---------------------------------------------------------------------------
# Layout helpers
# ---------------------------------------------------------------------------


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}, expected one of {LAYOUTS}")


def channel_axis(layout: str, rank: int) -> int:
    """The channel axis of a rank-`rank` tensor in `layout`.

    Rank-2 tensors (`[N, C]`) have their channels on axis 1 in either layout.
    """
    _check_layout(layout)
    if rank < 2:
        raise ValueError(f"a tensor of rank {rank} has no channel axis")
    if rank == 2 or layout == "NCHW":
        return 1
    return rank - 1


def spatial_axes(layout: str) -> tuple[int, int]:
    """The (H, W) axes of a rank-4 tensor in `layout`."""
    _check_layout(layout)
    return (2, 3) if layout == "NCHW" else (1, 2)


# ---------------------------------------------------------------------------
# Marker traits
# ---------------------------------------------------------------------------


class MemoryBound(OpTrait):
    """A memory-bound layer that BrainSlug may group into a stack."""


class Elementwise(OpTrait):
    """Each output element depends only on the input elements at its index."""


class Removable(OpTrait):
    """The layer is the identity at inference time and can be removed."""


def is_optimizable(op: Operation) -> bool:
    """Whether `op` is a memory-bound layer (may join an `nn.stack`)."""
    return op.has_trait(MemoryBound)


def is_elementwise(op: Operation) -> bool:
    """Whether `op` is an elementwise layer (unary ops, add, mul)."""
    return op.has_trait(Elementwise)


def is_removable(op: Operation) -> bool:
    """Whether `op` is the identity at inference time (dropout, identity)."""
    return op.has_trait(Removable)


# ---------------------------------------------------------------------------
# Shape helpers
# ---------------------------------------------------------------------------


def is_dynamic(extent: int) -> bool:
    """Whether `extent` is dynamic (any negative value counts as `?`)."""
    return extent < 0


def make_tensor(shape: Iterable[int]) -> TensorType:
    """A `tensor<...xf32>`; negative extents become `?`."""
    return TensorType(f32, [DYN if d < 0 else d for d in shape])


def _fmt(extent: int) -> str:
    return "?" if extent < 0 else str(extent)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(_fmt(d) for d in shape) + "]"


def _err(op_name: str, msg: str) -> VerifyException:
    return VerifyException(f"{op_name}: {msg}")


def _shape(op_name: str, what: str, ty: Attribute) -> Shape:
    """The shape of a `tensor<...xf32>` operand type, `?` mapped to `DYN`."""
    if not isinstance(ty, TensorType):
        raise _err(op_name, f"{what} must be a ranked tensor, got {ty}")
    if not isinstance(ty.element_type, Float32Type):
        raise _err(op_name, f"{what} must have element type f32, got {ty.element_type}")
    return tuple(DYN if d < 0 else d for d in ty.get_shape())


def _ranked(op_name: str, what: str, ty: Attribute, ranks: Sequence[int]) -> Shape:
    shape = _shape(op_name, what, ty)
    if len(shape) not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise _err(op_name, f"{what} must have rank {expected}, got rank {len(shape)}")
    return shape


_PROP_KINDS: dict[str, tuple[str, type[Attribute], Attribute | None]] = {
    "i64 array": ("an array<i64: ...>", DenseArrayBase, i64),
    "i64": ("an i64 integer", IntegerAttr, i64),
    "f64": ("an f64 float", FloatAttr, f64),
    "bool": ("a bool (true or false)", IntegerAttr, IntegerType(1)),
    "string": ("a string", StringAttr, None),
}


def _verify_prop_kinds(op: Operation) -> None:
    """Check each property against its kind in the op's `PROP_KINDS`."""
    kinds: dict[str, str] = getattr(type(op), "PROP_KINDS", {})
    for name, kind in kinds.items():
        attr = op.properties.get(name)
        if attr is None:
            continue  # a missing required property is reported by IRDL
        what, base, elt = _PROP_KINDS[kind]
        ok = isinstance(attr, base)
        if ok and isinstance(attr, DenseArrayBase):
            ok = attr.elt_type == elt
        elif ok and isinstance(attr, IntegerAttr | FloatAttr):
            ok = attr.type == elt
        if not ok:
            raise _err(op.name, f"property {name} must be {what}, got {attr}")


def _check_result(op_name: str, declared: Attribute, inferred: TensorType) -> None:
    if declared != inferred:
        raise _err(op_name, f"result type {declared} does not match inferred type {inferred}")


def _ints(op_name: str, what: str, values: Sequence[int], n: int, minimum: int) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(values) != n:
        raise _err(op_name, f"{what} must have {n} values, got {len(values)}")
    if any(v < minimum for v in values):
        raise _err(op_name, f"{what} values must be >= {minimum}, got {list(values)}")
    return values


def _layout(op_name: str, layout: str) -> str:
    if layout not in LAYOUTS:
        raise _err(op_name, f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return layout


def _pair(value: int | Sequence[int]) -> tuple[int, ...]:
    """`k` -> `(k, k)`; sequences pass through."""
    return (value, value) if isinstance(value, int) else tuple(value)


def _quad(value: int | Sequence[int]) -> tuple[int, ...]:
    """Padding `p`, `(ph, pw)` or `(top, left, bottom, right)` -> 4 values."""
    if isinstance(value, int):
        return (value,) * 4
    value = tuple(value)
    return value * 2 if len(value) == 2 else value


def _i64_array(values: Iterable[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


def _i64(value: int) -> IntegerAttr:
    return IntegerAttr(value, i64)


def _f64(value: float) -> FloatAttr:
    return FloatAttr(float(value), f64)


def _type_of(value: Operand) -> Attribute:
    return SSAValue.get(value).type


def _pool_extent(
    op_name: str,
    axis: str,
    size: int,
    kernel: int,
    stride: int,
    pad_lo: int,
    pad_hi: int,
    dilation: int,
    ceil_mode: bool,
) -> int:
    """Output extent of a convolution or pooling window (PyTorch's rule)."""
    if size < 0 or kernel < 0:
        return DYN
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        # The last window must start inside the input or the low padding.
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
    else:
        out = span // stride + 1
    if out < 1:
        raise _err(
            op_name,
            f"output {axis} extent would be {out} (input {size}, kernel {kernel}, "
            f"stride {stride}, padding {pad_lo}+{pad_hi}, dilation {dilation})",
        )
    return out


def _meet(op_name: str, msg: str, a: int, b: int) -> int:
    """Two extents that must be equal (`?` matches anything); raise `msg` if not."""
    if a < 0:
        return b
    if b < 0 or a == b:
        return a
    raise _err(op_name, msg)


def broadcast_shapes(lhs: Sequence[int], rhs: Sequence[int], op_name: str = "broadcast") -> Shape:
    """Numpy-style broadcast of two shapes (right-aligned).

    Extents must be equal or one of them 1. A static 1 against `?` gives `?`;
    a static extent other than 1 against `?` gives that extent.
    """
    rank = max(len(lhs), len(rhs))
    a = (1,) * (rank - len(lhs)) + tuple(lhs)
    b = (1,) * (rank - len(rhs)) + tuple(rhs)
    out: list[int] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x < 0:
            out.append(y)
        elif y < 0 or x == y:
            out.append(x)
        else:
            raise _err(
                op_name,
                f"operands lhs {_fmt_shape(lhs)} and rhs {_fmt_shape(rhs)} do not "
                f"broadcast: extents {x} and {y} on result axis {i}",
            )
    return tuple(out)


# ---------------------------------------------------------------------------
# Compute-bound layers
# ---------------------------------------------------------------------------


@irdl_op_definition
class Conv2dOp(IRDLOperation):
    """2-D convolution (cross-correlation), as `torch.nn.functional.conv2d`.

    The weight is OIHW `[O, I/groups, KH, KW]` in layout NCHW and HWIO
    `[KH, KW, I/groups, O]` in layout NHWC. `padding` is (top, left, bottom,
    right).
    """

    name = "nn.conv2d"

    PROP_KINDS: ClassVar = {
        "strides": "i64 array",
        "padding": "i64 array",
        "dilation": "i64 array",
        "groups": "i64",
        "layout": "string",
    }

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    strides = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    dilation = prop_def(DenseArrayBase)
    groups = prop_def(IntegerAttr)
    layout = prop_def(StringAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"
    )
    traits = traits_def(Pure())

    def __init__(
        self,
        input: Operand,
        weight: Operand,
        bias: Operand | None = None,
        *,
        strides: int | Sequence[int] = (1, 1),
        padding: int | Sequence[int] = (0, 0, 0, 0),
        dilation: int | Sequence[int] = (1, 1),
        groups: int = 1,
        layout: str = "NCHW",
        result_type: Attribute | None = None,
    ):
        strides, padding, dilation = _pair(strides), _quad(padding), _pair(dilation)
        if result_type is None:
            result_type = self.infer_type(
                _type_of(input),
                _type_of(weight),
                None if bias is None else _type_of(bias),
                strides=strides,
                padding=padding,
                dilation=dilation,
                groups=groups,
                layout=layout,
            )
        super().__init__(
            operands=[input, weight, [] if bias is None else [bias]],
            result_types=[result_type],
            properties={
                "strides": _i64_array(strides),
                "padding": _i64_array(padding),
                "dilation": _i64_array(dilation),
                "groups": _i64(groups),
                "layout": StringAttr(layout),
            },
        )

    @property
    def strides_values(self) -> tuple[int, ...]:
        return self.strides.get_values()

    @property
    def padding_values(self) -> tuple[int, ...]:
        return self.padding.get_values()

    @property
    def dilation_values(self) -> tuple[int, ...]:
        return self.dilation.get_values()

    @property
    def groups_value(self) -> int:
        return self.groups.value.data

    @property
    def layout_value(self) -> str:
        return self.layout.data

    @classmethod
    def infer_type(
        cls,
        input_type: Attribute,
        weight_type: Attribute,
        bias_type: Attribute | None = None,
        *,
        strides: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
        layout: str,
    ) -> TensorType:
        n = cls.name
        x = _ranked(n, "input", input_type, (4,))
        w = _ranked(n, "weight", weight_type, (4,))
        strides = _ints(n, "strides", strides, 2, 1)
        padding = _ints(n, "padding", padding, 4, 0)
        dilation = _ints(n, "dilation", dilation, 2, 1)
        layout = _layout(n, layout)
        if groups < 1:
            raise _err(n, f"groups must be >= 1, got {groups}")
        if layout == "NCHW":
            out_ch, in_per_group, kh, kw = w
        else:
            kh, kw, in_per_group, out_ch = w
        c_axis = channel_axis(layout, 4)
        h_axis, w_axis = spatial_axes(layout)
        in_ch = x[c_axis]
        if in_ch >= 0 and in_per_group >= 0 and in_ch != in_per_group * groups:
            raise _err(
                n,
                f"input has {in_ch} channels, weight expects "
                f"{in_per_group * groups} (I={in_per_group} x groups={groups})",
            )
        if out_ch >= 0 and out_ch % groups != 0:
            raise _err(
                n,
                f"weight has {out_ch} output channels, not divisible by groups={groups}",
            )
        if bias_type is not None:
            b = _ranked(n, "bias", bias_type, (1,))
            msg = f"bias has length {b[0]}, weight has {out_ch} output channels"
            _meet(n, msg, b[0], out_ch)
        out_h = _pool_extent(
            n, "H", x[h_axis], kh, strides[0], padding[0], padding[2], dilation[0], False
        )
        out_w = _pool_extent(
            n, "W", x[w_axis], kw, strides[1], padding[1], padding[3], dilation[1], False
        )
        out = [x[0], 0, 0, 0]
        out[c_axis], out[h_axis], out[w_axis] = out_ch, out_h, out_w
        return make_tensor(out)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type,
            self.weight.type,
            None if self.bias is None else self.bias.type,
            strides=self.strides_values,
            padding=self.padding_values,
            dilation=self.dilation_values,
            groups=self.groups_value,
            layout=self.layout_value,
        )
        _check_result(self.name, self.output.type, inferred)


@irdl_op_definition
class LinearOp(IRDLOperation):
    """`y = x W^T + b`: input `[..., K]`, weight `[O, K]`, bias `[O]`."""

    name = "nn.linear"

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    assembly_format = (
        "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"
    )
    traits = traits_def(Pure())

    def __init__(
        self,
        input: Operand,
        weight: Operand,
        bias: Operand | None = None,
        *,
        result_type: Attribute | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(
                _type_of(input),
                _type_of(weight),
                None if bias is None else _type_of(bias),
            )
        super().__init__(
            operands=[input, weight, [] if bias is None else [bias]],
            result_types=[result_type],
        )

    @classmethod
    def infer_type(
        cls,
        input_type: Attribute,
        weight_type: Attribute,
        bias_type: Attribute | None = None,
    ) -> TensorType:
        n = cls.name
        x = _shape(n, "input", input_type)
        if not x:
            raise _err(n, "input must have rank >= 1, got rank 0")
        w = _ranked(n, "weight", weight_type, (2,))
        if x[-1] >= 0 and w[1] >= 0 and x[-1] != w[1]:
            raise _err(n, f"input has {x[-1]} features, weight expects {w[1]} (K of [O, K])")
        if bias_type is not None:
            b = _ranked(n, "bias", bias_type, (1,))
            msg = f"bias has length {b[0]}, weight has {w[0]} output features"
            _meet(n, msg, b[0], w[0])
        return make_tensor((*x[:-1], w[0]))

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type,
            self.weight.type,
            None if self.bias is None else self.bias.type,
        )
        _check_result(self.name, self.output.type, inferred)


# ---------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------


@irdl_op_definition
class BatchNormOp(IRDLOperation):
    """Inference batch normalisation.

    `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`, per
    channel; `weight` and `bias` are optional. Input rank 2 (`[N, C]`) or 4.

    Custom format (operands named by keyword, absent ones left out):
    `nn.batch_norm %x weight %w bias %b mean %m var %v {eps = ..., layout = ..}
    : (types of the operands present, in this order) -> type`
    """

    name = "nn.batch_norm"

    PROP_KINDS: ClassVar = {"eps": "f64", "layout": "string"}

    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    running_mean = operand_def(TensorType)
    running_var = operand_def(TensorType)
    output = result_def(TensorType)

    eps = prop_def(FloatAttr)
    layout = prop_def(StringAttr)

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        input: Operand,
        weight: Operand | None,
        bias: Operand | None,
        running_mean: Operand,
        running_var: Operand,
        *,
        eps: float = 1e-5,
        layout: str = "NCHW",
        result_type: Attribute | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(
                _type_of(input),
                None if weight is None else _type_of(weight),
                None if bias is None else _type_of(bias),
                _type_of(running_mean),
                _type_of(running_var),
                eps=eps,
                layout=layout,
            )
        super().__init__(
            operands=[
                input,
                [] if weight is None else [weight],
                [] if bias is None else [bias],
                running_mean,
                running_var,
            ],
            result_types=[result_type],
            properties={"eps": _f64(eps), "layout": StringAttr(layout)},
        )

    @property
    def eps_value(self) -> float:
        return self.eps.value.data

    @property
    def layout_value(self) -> str:
        return self.layout.data

    @classmethod
    def infer_type(
        cls,
        input_type: Attribute,
        weight_type: Attribute | None,
        bias_type: Attribute | None,
        mean_type: Attribute,
        var_type: Attribute,
        *,
        eps: float,
        layout: str,
    ) -> TensorType:
        n = cls.name
        x = _ranked(n, "input", input_type, (2, 4))
        layout = _layout(n, layout)
        if not eps >= 0.0 or math.isinf(eps):
            raise _err(n, f"eps must be finite and >= 0, got {eps}")
        channels = x[channel_axis(layout, len(x))]
        params = (
            ("weight", weight_type),
            ("bias", bias_type),
            ("running_mean", mean_type),
            ("running_var", var_type),
        )
        for what, ty in params:
            if ty is None:
                continue
            (length,) = _ranked(n, what, ty, (1,))
            if length >= 0 and channels >= 0 and length != channels:
                raise _err(n, f"{what} has length {length}, input has {channels} channels")
        return make_tensor(x)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type,
            None if self.weight is None else self.weight.type,
            None if self.bias is None else self.bias.type,
            self.running_mean.type,
            self.running_var.type,
            eps=self.eps_value,
            layout=self.layout_value,
        )
        _check_result(self.name, self.output.type, inferred)

    @classmethod
    def parse(cls, parser: Parser) -> BatchNormOp:
        pos = parser.pos
        x = parser.parse_unresolved_operand()
        optional: list[list[UnresolvedOperand]] = []
        for keyword in ("weight", "bias"):
            present = parser.parse_optional_keyword(keyword) is not None
            optional.append([parser.parse_unresolved_operand()] if present else [])
        parser.parse_keyword("mean")
        mean = parser.parse_unresolved_operand()
        parser.parse_keyword("var")
        var = parser.parse_unresolved_operand()
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        func_type = parser.parse_function_type()
        if len(func_type.outputs.data) != 1:
            parser.raise_error(f"{cls.name} expects one result type", pos)
        args = [x, *optional[0], *optional[1], mean, var]
        values = list(parser.resolve_operands(args, func_type.inputs.data, pos))
        w = [values.pop(1)] if optional[0] else []
        b = [values.pop(1)] if optional[1] else []
        prop_names = cls.get_irdl_definition().properties.keys()
        return cls.build(
            operands=[values[0], w, b, values[1], values[2]],
            result_types=[func_type.outputs.data[0]],
            properties={k: v for k, v in attrs.items() if k in prop_names},
            attributes={k: v for k, v in attrs.items() if k not in prop_names},
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.input)
        named = (
            ("weight", self.weight),
            ("bias", self.bias),
            ("mean", self.running_mean),
            ("var", self.running_var),
        )
        for keyword, value in named:
            if value is not None:
                printer.print_string(f" {keyword} ")
                printer.print_operand(value)
        printer.print_op_attributes(
            {**self.properties, **self.attributes},
            reserved_attr_names=(AttrSizedOperandSegments.attribute_name,),
        )
        printer.print_string(" : ")
        printer.print_function_type((o.type for o in self.operands), (r.type for r in self.results))


# ---------------------------------------------------------------------------
# Elementwise unary layers
# ---------------------------------------------------------------------------


class _UnaryOp(IRDLOperation):
    """Base of the elementwise unary layers: `output` has the type of `input`."""

    input = operand_def(TensorType)
    output = result_def(TensorType)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), Elementwise())

    def __init__(
        self,
        input: Operand,
        *,
        result_type: Attribute | None = None,
        properties: dict[str, Attribute | None] | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(_type_of(input))
        super().__init__(operands=[input], result_types=[result_type], properties=properties)

    @classmethod
    def infer_type(cls, input_type: Attribute) -> TensorType:
        return make_tensor(_shape(cls.name, "input", input_type))

    def verify_props(self) -> None:
        """Check the properties (overridden by ops that have some)."""

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        self.verify_props()
        _check_result(self.name, self.output.type, self.infer_type(self.input.type))


@irdl_op_definition
class ReluOp(_UnaryOp):
    """`max(x, 0)`."""

    name = "nn.relu"


class _SigmoidLike(_UnaryOp):
    """A layer built on the logistic function, with an optional `impl`.

    Absent, the logistic function is `1 / (1 + exp(-x))` (PyTorch's). `impl =
    "eigen"` is TensorFlow's CPU kernel for float32: Eigen's
    `scalar_logistic_op<float>` as the x86-64 TensorFlow wheel runs it (AVX
    packets of 8 floats, multiply and add rounded separately, a degree-5
    polynomial for exp(x/2) squared, denormal results flushed to zero); see
    `nn_to_loop.eigen_logistic`.
    """

    PROP_KINDS: ClassVar = {"impl": "string"}

    IMPLS: ClassVar = ("eigen",)

    impl = opt_prop_def(StringAttr)

    def __init__(
        self,
        input: Operand,
        impl: str | None = None,
        *,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            input,
            result_type=result_type,
            properties={"impl": None if impl is None else StringAttr(impl)},
        )

    @property
    def impl_value(self) -> str | None:
        """None (the exact formula) or one of `IMPLS`."""
        return None if self.impl is None else self.impl.data

    def verify_props(self) -> None:
        if self.impl is not None and self.impl_value not in self.IMPLS:
            raise _err(
                self.name,
                f"impl must be one of {list(self.IMPLS)} (or absent), got {self.impl_value!r}",
            )


@irdl_op_definition
class SigmoidOp(_SigmoidLike):
    """`1 / (1 + exp(-x))`, or TensorFlow's kernel with `impl = "eigen"`."""

    name = "nn.sigmoid"


@irdl_op_definition
class TanhOp(_UnaryOp):
    """`tanh(x)`."""

    name = "nn.tanh"


@irdl_op_definition
class SiluOp(_SigmoidLike):
    """`x / (1 + exp(-x))`, or `x * sigmoid(x)` with TensorFlow's sigmoid with
    `impl = "eigen"` (tf.nn.silu is a Sigmoid and a Mul)."""

    name = "nn.silu"


@irdl_op_definition
class HardswishOp(_UnaryOp):
    """`x * relu6(x + 3) / 6`."""

    name = "nn.hardswish"


@irdl_op_definition
class HardsigmoidOp(_UnaryOp):
    """`relu6(x + 3) / 6`."""

    name = "nn.hardsigmoid"


@irdl_op_definition
class GeluOp(_UnaryOp):
    """GELU; `approximate` is "none" (exact, erf form; the default) or "tanh"."""

    name = "nn.gelu"

    PROP_KINDS: ClassVar = {"approximate": "string"}

    APPROXIMATIONS: ClassVar = ("none", "tanh")

    approximate = prop_def(StringAttr)

    def __init__(
        self,
        input: Operand,
        approximate: str = "none",
        *,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            input,
            result_type=result_type,
            properties={"approximate": StringAttr(approximate)},
        )

    @property
    def approximate_value(self) -> str:
        return self.approximate.data

    def verify_props(self) -> None:
        if self.approximate_value not in self.APPROXIMATIONS:
            raise _err(
                self.name,
                f"approximate must be one of {list(self.APPROXIMATIONS)}, got "
                f"{self.approximate_value!r}",
            )


@irdl_op_definition
class ClampOp(_UnaryOp):
    """`min(max(x, min), max)`; either bound may be absent, not both.

    relu6 is `nn.clamp {min = 0.0, max = 6.0}`.
    """

    name = "nn.clamp"

    PROP_KINDS: ClassVar = {"min": "f64", "max": "f64"}

    min = opt_prop_def(FloatAttr)
    max = opt_prop_def(FloatAttr)

    def __init__(
        self,
        input: Operand,
        min: float | None = None,
        max: float | None = None,
        *,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            input,
            result_type=result_type,
            properties={
                "min": None if min is None else _f64(min),
                "max": None if max is None else _f64(max),
            },
        )

    @property
    def min_value(self) -> float | None:
        return None if self.min is None else self.min.value.data

    @property
    def max_value(self) -> float | None:
        return None if self.max is None else self.max.value.data

    def verify_props(self) -> None:
        lo, hi = self.min_value, self.max_value
        if lo is None and hi is None:
            raise _err(self.name, "needs at least one of min and max")
        for what, v in (("min", lo), ("max", hi)):
            if v is not None and math.isnan(v):
                raise _err(self.name, f"{what} must not be NaN")


@irdl_op_definition
class LeakyReluOp(_UnaryOp):
    """`x if x >= 0 else negative_slope * x`."""

    name = "nn.leaky_relu"

    PROP_KINDS: ClassVar = {"negative_slope": "f64"}

    negative_slope = prop_def(FloatAttr)

    def __init__(
        self,
        input: Operand,
        negative_slope: float = 0.01,
        *,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            input,
            result_type=result_type,
            properties={"negative_slope": _f64(negative_slope)},
        )

    @property
    def negative_slope_value(self) -> float:
        return self.negative_slope.value.data

    def verify_props(self) -> None:
        if not math.isfinite(self.negative_slope_value):
            raise _err(
                self.name,
                f"negative_slope must be finite, got {self.negative_slope_value}",
            )


@irdl_op_definition
class DropoutOp(_UnaryOp):
    """Dropout with probability `p` in [0, 1); the identity at inference."""

    name = "nn.dropout"

    PROP_KINDS: ClassVar = {"p": "f64"}

    p = prop_def(FloatAttr)

    traits = traits_def(Pure(), MemoryBound(), Elementwise(), Removable())

    def __init__(self, input: Operand, p: float = 0.5, *, result_type: Attribute | None = None):
        super().__init__(input, result_type=result_type, properties={"p": _f64(p)})

    @property
    def p_value(self) -> float:
        return self.p.value.data

    def verify_props(self) -> None:
        if not 0.0 <= self.p_value < 1.0:
            raise _err(self.name, f"p must be in [0, 1), got {self.p_value}")


@irdl_op_definition
class IdentityOp(_UnaryOp):
    """The identity."""

    name = "nn.identity"

    traits = traits_def(Pure(), MemoryBound(), Elementwise(), Removable())


# ---------------------------------------------------------------------------
# Elementwise binary layers
# ---------------------------------------------------------------------------


class _BinaryOp(IRDLOperation):
    """Base of add and mul: numpy-style broadcasting of `lhs` and `rhs`."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"
    traits = traits_def(Pure(), MemoryBound(), Elementwise())

    def __init__(self, lhs: Operand, rhs: Operand, *, result_type: Attribute | None = None):
        if result_type is None:
            result_type = self.infer_type(_type_of(lhs), _type_of(rhs))
        super().__init__(operands=[lhs, rhs], result_types=[result_type])

    @classmethod
    def infer_type(cls, lhs_type: Attribute, rhs_type: Attribute) -> TensorType:
        lhs = _shape(cls.name, "lhs", lhs_type)
        rhs = _shape(cls.name, "rhs", rhs_type)
        return make_tensor(broadcast_shapes(lhs, rhs, cls.name))

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(self.lhs.type, self.rhs.type)
        _check_result(self.name, self.output.type, inferred)


@irdl_op_definition
class AddOp(_BinaryOp):
    """`lhs + rhs` with broadcasting."""

    name = "nn.add"


@irdl_op_definition
class MulOp(_BinaryOp):
    """`lhs * rhs` with broadcasting."""

    name = "nn.mul"


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------


def _check_pool_padding(
    op_name: str, kernel: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> None:
    for i, pad in enumerate(padding):
        axis = i % 2
        effective = dilation[axis] * (kernel[axis] - 1) + 1
        if pad > effective // 2:
            raise _err(
                op_name,
                f"padding {list(padding)} exceeds half the effective kernel: "
                f"{'HW'[axis]} padding {pad} > {effective} // 2",
            )


@irdl_op_definition
class MaxPool2dOp(IRDLOperation):
    """2-D max pooling, as `torch.nn.functional.max_pool2d`.

    `padding` is (top, left, bottom, right); padded elements never win.
    """

    name = "nn.max_pool2d"

    PROP_KINDS: ClassVar = {
        "kernel": "i64 array",
        "strides": "i64 array",
        "padding": "i64 array",
        "dilation": "i64 array",
        "ceil_mode": "bool",
        "layout": "string",
    }

    input = operand_def(TensorType)
    output = result_def(TensorType)

    kernel = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    dilation = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)
    layout = prop_def(StringAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        input: Operand,
        kernel: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = (0, 0, 0, 0),
        dilation: int | Sequence[int] = (1, 1),
        ceil_mode: bool = False,
        layout: str = "NCHW",
        *,
        result_type: Attribute | None = None,
    ):
        kernel = _pair(kernel)
        strides = kernel if strides is None else _pair(strides)
        padding, dilation = _quad(padding), _pair(dilation)
        if result_type is None:
            result_type = self.infer_type(
                _type_of(input),
                kernel=kernel,
                strides=strides,
                padding=padding,
                dilation=dilation,
                ceil_mode=ceil_mode,
                layout=layout,
            )
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={
                "kernel": _i64_array(kernel),
                "strides": _i64_array(strides),
                "padding": _i64_array(padding),
                "dilation": _i64_array(dilation),
                "ceil_mode": BoolAttr.from_bool(ceil_mode),
                "layout": StringAttr(layout),
            },
        )

    @property
    def kernel_values(self) -> tuple[int, ...]:
        return self.kernel.get_values()

    @property
    def strides_values(self) -> tuple[int, ...]:
        return self.strides.get_values()

    @property
    def padding_values(self) -> tuple[int, ...]:
        return self.padding.get_values()

    @property
    def dilation_values(self) -> tuple[int, ...]:
        return self.dilation.get_values()

    @property
    def ceil_mode_value(self) -> bool:
        return bool(self.ceil_mode.value.data)

    @property
    def layout_value(self) -> str:
        return self.layout.data

    @classmethod
    def infer_type(
        cls,
        input_type: Attribute,
        *,
        kernel: Sequence[int],
        strides: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int] = (1, 1),
        ceil_mode: bool = False,
        layout: str,
    ) -> TensorType:
        n = cls.name
        x = _ranked(n, "input", input_type, (4,))
        kernel = _ints(n, "kernel", kernel, 2, 1)
        strides = _ints(n, "strides", strides, 2, 1)
        padding = _ints(n, "padding", padding, 4, 0)
        dilation = _ints(n, "dilation", dilation, 2, 1)
        layout = _layout(n, layout)
        _check_pool_padding(n, kernel, padding, dilation)
        out = list(x)
        for i, axis in enumerate(spatial_axes(layout)):
            out[axis] = _pool_extent(
                n,
                "HW"[i],
                x[axis],
                kernel[i],
                strides[i],
                padding[i],
                padding[i + 2],
                dilation[i],
                ceil_mode,
            )
        return make_tensor(out)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type,
            kernel=self.kernel_values,
            strides=self.strides_values,
            padding=self.padding_values,
            dilation=self.dilation_values,
            ceil_mode=self.ceil_mode_value,
            layout=self.layout_value,
        )
        _check_result(self.name, self.output.type, inferred)


@irdl_op_definition
class AvgPool2dOp(IRDLOperation):
    """2-D average pooling, as `torch.nn.functional.avg_pool2d`.

    `padding` is (top, left, bottom, right). `count_include_pad` (default true)
    counts padded elements in the divisor; `divisor_override`, when present,
    replaces the divisor.
    """

    name = "nn.avg_pool2d"

    PROP_KINDS: ClassVar = {
        "kernel": "i64 array",
        "strides": "i64 array",
        "padding": "i64 array",
        "ceil_mode": "bool",
        "count_include_pad": "bool",
        "divisor_override": "i64",
        "layout": "string",
    }

    input = operand_def(TensorType)
    output = result_def(TensorType)

    kernel = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)
    count_include_pad = prop_def(IntegerAttr)
    divisor_override = opt_prop_def(IntegerAttr)
    layout = prop_def(StringAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        input: Operand,
        kernel: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = (0, 0, 0, 0),
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        layout: str = "NCHW",
        *,
        result_type: Attribute | None = None,
    ):
        kernel = _pair(kernel)
        strides = kernel if strides is None else _pair(strides)
        padding = _quad(padding)
        if result_type is None:
            result_type = self.infer_type(
                _type_of(input),
                kernel=kernel,
                strides=strides,
                padding=padding,
                ceil_mode=ceil_mode,
                divisor_override=divisor_override,
                layout=layout,
            )
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={
                "kernel": _i64_array(kernel),
                "strides": _i64_array(strides),
                "padding": _i64_array(padding),
                "ceil_mode": BoolAttr.from_bool(ceil_mode),
                "count_include_pad": BoolAttr.from_bool(count_include_pad),
                "divisor_override": (None if divisor_override is None else _i64(divisor_override)),
                "layout": StringAttr(layout),
            },
        )

    @property
    def kernel_values(self) -> tuple[int, ...]:
        return self.kernel.get_values()

    @property
    def strides_values(self) -> tuple[int, ...]:
        return self.strides.get_values()

    @property
    def padding_values(self) -> tuple[int, ...]:
        return self.padding.get_values()

    @property
    def ceil_mode_value(self) -> bool:
        return bool(self.ceil_mode.value.data)

    @property
    def count_include_pad_value(self) -> bool:
        return bool(self.count_include_pad.value.data)

    @property
    def divisor_override_value(self) -> int | None:
        d = self.divisor_override
        return None if d is None else d.value.data

    @property
    def layout_value(self) -> str:
        return self.layout.data

    @classmethod
    def infer_type(
        cls,
        input_type: Attribute,
        *,
        kernel: Sequence[int],
        strides: Sequence[int],
        padding: Sequence[int],
        ceil_mode: bool = False,
        divisor_override: int | None = None,
        layout: str,
    ) -> TensorType:
        n = cls.name
        x = _ranked(n, "input", input_type, (4,))
        kernel = _ints(n, "kernel", kernel, 2, 1)
        strides = _ints(n, "strides", strides, 2, 1)
        padding = _ints(n, "padding", padding, 4, 0)
        layout = _layout(n, layout)
        _check_pool_padding(n, kernel, padding, (1, 1))
        if divisor_override is not None and divisor_override < 1:
            raise _err(n, f"divisor_override must be >= 1, got {divisor_override}")
        out = list(x)
        for i, axis in enumerate(spatial_axes(layout)):
            out[axis] = _pool_extent(
                n,
                "HW"[i],
                x[axis],
                kernel[i],
                strides[i],
                padding[i],
                padding[i + 2],
                1,
                ceil_mode,
            )
        return make_tensor(out)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type,
            kernel=self.kernel_values,
            strides=self.strides_values,
            padding=self.padding_values,
            ceil_mode=self.ceil_mode_value,
            divisor_override=self.divisor_override_value,
            layout=self.layout_value,
        )
        _check_result(self.name, self.output.type, inferred)


@irdl_op_definition
class AdaptiveAvgPool2dOp(IRDLOperation):
    """Adaptive 2-D average pooling to a fixed `output_size` (H, W)."""

    name = "nn.adaptive_avg_pool2d"

    PROP_KINDS: ClassVar = {"output_size": "i64 array", "layout": "string"}

    input = operand_def(TensorType)
    output = result_def(TensorType)

    output_size = prop_def(DenseArrayBase)
    layout = prop_def(StringAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        input: Operand,
        output_size: int | Sequence[int],
        layout: str = "NCHW",
        *,
        result_type: Attribute | None = None,
    ):
        output_size = _pair(output_size)
        if result_type is None:
            result_type = self.infer_type(_type_of(input), output_size=output_size, layout=layout)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={
                "output_size": _i64_array(output_size),
                "layout": StringAttr(layout),
            },
        )

    @property
    def output_size_values(self) -> tuple[int, ...]:
        return self.output_size.get_values()

    @property
    def layout_value(self) -> str:
        return self.layout.data

    @classmethod
    def infer_type(
        cls, input_type: Attribute, *, output_size: Sequence[int], layout: str
    ) -> TensorType:
        n = cls.name
        x = _ranked(n, "input", input_type, (4,))
        output_size = _ints(n, "output_size", output_size, 2, 1)
        out = list(x)
        for i, axis in enumerate(spatial_axes(_layout(n, layout))):
            if x[axis] == 0:
                raise _err(n, "input has an empty spatial extent")
            out[axis] = output_size[i]
        return make_tensor(out)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type,
            output_size=self.output_size_values,
            layout=self.layout_value,
        )
        _check_result(self.name, self.output.type, inferred)


# ---------------------------------------------------------------------------
# Shape manipulation and reductions
# ---------------------------------------------------------------------------


def _normalize_axis(op_name: str, what: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise _err(op_name, f"{what} {axis} is out of range for rank {rank} [-{rank}, {rank})")
    return axis + rank if axis < 0 else axis


def _check_axis(op_name: str, what: str, axis: int, rank: int) -> int:
    """A stored axis: must already be normalised (0 <= axis < rank)."""
    if not 0 <= axis < rank:
        raise _err(op_name, f"{what} must be in [0, {rank}), got {axis}")
    return axis


@irdl_op_definition
class CatOp(IRDLOperation):
    """Concatenation of `inputs` along `axis` (stored non-negative)."""

    name = "nn.cat"

    PROP_KINDS: ClassVar = {"axis": "i64"}

    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)

    axis = prop_def(IntegerAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inputs attr-dict `:` functional-type($inputs, $output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        inputs: Sequence[Operand],
        axis: int,
        *,
        result_type: Attribute | None = None,
    ):
        types = [_type_of(v) for v in inputs]
        if types:
            rank = len(_shape(self.name, "inputs[0]", types[0]))
            axis = _normalize_axis(self.name, "axis", axis, rank)
        if result_type is None:
            result_type = self.infer_type(types, axis=axis)
        super().__init__(
            operands=[list(inputs)],
            result_types=[result_type],
            properties={"axis": _i64(axis)},
        )

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    @classmethod
    def infer_type(cls, input_types: Sequence[Attribute], *, axis: int) -> TensorType:
        n = cls.name
        if not input_types:
            raise _err(n, "needs at least one input")
        shapes = [_shape(n, f"inputs[{i}]", t) for i, t in enumerate(input_types)]
        rank = len(shapes[0])
        axis = _check_axis(n, "axis", axis, rank)
        out = list(shapes[0])
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != rank:
                raise _err(n, f"inputs[{i}] has rank {len(s)}, inputs[0] has rank {rank}")
            for d in range(rank):
                if d == axis:
                    out[d] = DYN if out[d] < 0 or s[d] < 0 else out[d] + s[d]
                else:
                    out[d] = _meet(
                        n,
                        f"inputs[{i}] has extent {_fmt(s[d])} on axis {d}, expected {_fmt(out[d])}",
                        out[d],
                        s[d],
                    )
        return make_tensor(out)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type([v.type for v in self.inputs], axis=self.axis_value)
        _check_result(self.name, self.output.type, inferred)


@irdl_op_definition
class FlattenOp(IRDLOperation):
    """Merges axes `start_dim..end_dim` (inclusive; negative counts from the end)."""

    name = "nn.flatten"

    PROP_KINDS: ClassVar = {"start_dim": "i64", "end_dim": "i64"}

    input = operand_def(TensorType)
    output = result_def(TensorType)

    start_dim = prop_def(IntegerAttr)
    end_dim = prop_def(IntegerAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        input: Operand,
        start_dim: int = 0,
        end_dim: int = -1,
        *,
        result_type: Attribute | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(_type_of(input), start_dim=start_dim, end_dim=end_dim)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={"start_dim": _i64(start_dim), "end_dim": _i64(end_dim)},
        )

    @property
    def start_dim_value(self) -> int:
        """`start_dim` as stored (may be negative)."""
        return self.start_dim.value.data

    @property
    def end_dim_value(self) -> int:
        """`end_dim` as stored (may be negative)."""
        return self.end_dim.value.data

    @property
    def normalized_dims(self) -> tuple[int, int]:
        """(start_dim, end_dim) made non-negative against the input rank."""
        rank = len(_shape(self.name, "input", self.input.type))
        return (
            _normalize_axis(self.name, "start_dim", self.start_dim_value, rank),
            _normalize_axis(self.name, "end_dim", self.end_dim_value, rank),
        )

    @classmethod
    def infer_type(cls, input_type: Attribute, *, start_dim: int, end_dim: int) -> TensorType:
        n = cls.name
        x = _shape(n, "input", input_type)
        if not x:
            raise _err(n, "input must have rank >= 1, got rank 0")
        start = _normalize_axis(n, "start_dim", start_dim, len(x))
        end = _normalize_axis(n, "end_dim", end_dim, len(x))
        if start > end:
            raise _err(n, f"start_dim {start_dim} comes after end_dim {end_dim} (rank {len(x)})")
        merged = x[start : end + 1]
        extent = DYN if any(d < 0 for d in merged) else math.prod(merged)
        return make_tensor((*x[:start], extent, *x[end + 1 :]))

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type, start_dim=self.start_dim_value, end_dim=self.end_dim_value
        )
        _check_result(self.name, self.output.type, inferred)


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """Row-major reshape; the result type gives the new shape."""

    name = "nn.reshape"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(self, input: Operand, result: Attribute | Sequence[int]):
        """`result` is the result type, or a shape as for `infer_type`."""
        if not isinstance(result, Attribute):
            result = self.infer_type(_type_of(input), result)
        super().__init__(operands=[input], result_types=[result])

    @classmethod
    def infer_type(cls, input_type: Attribute, shape: Sequence[int]) -> TensorType:
        """The result type for `shape`.

        Extents are >= 0, `DYN` (stays `?`) or -1 (at most one; inferred from
        the element count as in `torch.reshape`, `?` when that is unknown).
        """
        n = cls.name
        x = _shape(n, "input", input_type)
        shape = [int(d) for d in shape]
        if any(d < 0 and d not in (-1, DYN) for d in shape):
            raise _err(n, f"invalid extent in shape {shape}")
        holes = [i for i, d in enumerate(shape) if d == -1]
        if len(holes) > 1:
            raise _err(n, f"shape {shape} has more than one -1")
        if holes:
            (hole,) = holes
            shape[hole] = DYN
            known = _known_count(x, shape, hole)
            if known is not None:
                numel, rest = known
                if rest == 0 or numel % rest:
                    raise _err(n, f"cannot reshape {_fmt_shape(x)} to {_fmt_shape(shape)}")
                shape[hole] = numel // rest
        result = make_tensor(shape)
        cls._check_counts(x, tuple(shape))
        return result

    @classmethod
    def _check_counts(cls, x: Shape, y: Shape) -> None:
        known = _known_count(x, y)
        if known is not None and known[0] != known[1]:
            raise _err(
                cls.name,
                f"input {_fmt_shape(x)} and result {_fmt_shape(y)} have different element counts",
            )

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        x = _shape(self.name, "input", self.input.type)
        y = _shape(self.name, "result", self.output.type)
        self._check_counts(x, y)


def _known_count(
    x: Sequence[int], y: Sequence[int], skip: int | None = None
) -> tuple[int, int] | None:
    """Comparable static element counts of `x` and `y`, or None.

    Both fully static: their element counts. A `?` in dim 0 of both (the
    batch), all else static: the products of the remaining extents. Otherwise
    the counts cannot be compared. Axis `skip` of `y` is left out.
    """
    ys = [d for i, d in enumerate(y) if i != skip]
    if all(d >= 0 for d in x) and all(d >= 0 for d in ys):
        return math.prod(x), math.prod(ys)
    if (
        x
        and y
        and skip != 0
        and x[0] < 0
        and y[0] < 0
        and all(d >= 0 for d in x[1:])
        and all(d >= 0 for d in ys[1:])
    ):
        return math.prod(x[1:]), math.prod(ys[1:])
    return None


@irdl_op_definition
class MeanOp(IRDLOperation):
    """Mean over `dims` (stored non-negative, unique), keeping them if `keepdim`.

    The sum runs over the reduced points in row-major order. `impl = "eigen"`
    is TensorFlow's CPU order for a mean that keeps the innermost dim (Eigen's
    `InnerMostDimPreserver` on packets of 8 outputs): over 16 or more points,
    an output in a whole packet sums four interleaved partial sums (points
    j = 4q + r), adds them as ((s0 + s1) + s2) + s3, then the last j % 4 points
    in order; other outputs sum in order. See `nn_to_loop.lower_mean`."""

    name = "nn.mean"

    PROP_KINDS: ClassVar = {"dims": "i64 array", "keepdim": "bool", "impl": "string"}

    IMPLS: ClassVar = ("eigen",)

    input = operand_def(TensorType)
    output = result_def(TensorType)

    dims = prop_def(DenseArrayBase)
    keepdim = prop_def(IntegerAttr)
    impl = opt_prop_def(StringAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(
        self,
        input: Operand,
        dims: Sequence[int],
        keepdim: bool = False,
        *,
        impl: str | None = None,
        result_type: Attribute | None = None,
    ):
        rank = len(_shape(self.name, "input", _type_of(input)))
        dims = [_normalize_axis(self.name, "dims", d, rank) for d in dims]
        if result_type is None:
            result_type = self.infer_type(_type_of(input), dims=dims, keepdim=keepdim)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={
                "dims": _i64_array(dims),
                "keepdim": BoolAttr.from_bool(keepdim),
                "impl": None if impl is None else StringAttr(impl),
            },
        )

    @property
    def impl_value(self) -> str | None:
        """None (the sum in order) or one of `IMPLS`."""
        return None if self.impl is None else self.impl.data

    @property
    def dims_values(self) -> tuple[int, ...]:
        return self.dims.get_values()

    @property
    def keepdim_value(self) -> bool:
        return bool(self.keepdim.value.data)

    @classmethod
    def infer_type(
        cls, input_type: Attribute, *, dims: Sequence[int], keepdim: bool = False
    ) -> TensorType:
        n = cls.name
        x = _shape(n, "input", input_type)
        if not dims:
            raise _err(n, "dims must not be empty")
        for d in dims:
            _check_axis(n, "dims", d, len(x))
        if len(set(dims)) != len(dims):
            raise _err(n, f"dims {list(dims)} has duplicates")
        if keepdim:
            return make_tensor(1 if i in dims else d for i, d in enumerate(x))
        return make_tensor(d for i, d in enumerate(x) if i not in dims)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(
            self.input.type, dims=self.dims_values, keepdim=self.keepdim_value
        )
        _check_result(self.name, self.output.type, inferred)
        if self.impl is not None:
            if self.impl_value not in self.IMPLS:
                raise _err(self.name, f"impl must be one of {list(self.IMPLS)} (or absent), "
                                      f"got {self.impl_value!r}")
            rank = len(_shape(self.name, "input", self.input.type))
            if rank - 1 in self.dims_values:
                raise _err(self.name, 'impl "eigen" keeps the innermost dim, which dims reduce')


@irdl_op_definition
class SoftmaxOp(IRDLOperation):
    """Softmax along `axis` (stored non-negative)."""

    name = "nn.softmax"

    PROP_KINDS: ClassVar = {"axis": "i64"}

    input = operand_def(TensorType)
    output = result_def(TensorType)

    axis = prop_def(IntegerAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(self, input: Operand, axis: int, *, result_type: Attribute | None = None):
        rank = len(_shape(self.name, "input", _type_of(input)))
        axis = _normalize_axis(self.name, "axis", axis, rank)
        if result_type is None:
            result_type = self.infer_type(_type_of(input), axis=axis)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={"axis": _i64(axis)},
        )

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    @classmethod
    def infer_type(cls, input_type: Attribute, *, axis: int) -> TensorType:
        x = _shape(cls.name, "input", input_type)
        _check_axis(cls.name, "axis", axis, len(x))
        return make_tensor(x)

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        inferred = self.infer_type(self.input.type, axis=self.axis_value)
        _check_result(self.name, self.output.type, inferred)


# ---------------------------------------------------------------------------
# Stacks
# ---------------------------------------------------------------------------


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminator of `nn.stack`: the stack's results."""

    name = "nn.yield"

    values = var_operand_def(TensorType)

    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = lazy_traits_def(lambda: (IsTerminator(), HasParent(StackOp), Pure()))

    def __init__(self, *values: Operand):
        super().__init__(operands=[list(values)])


@irdl_op_definition
class LibraryOp(IRDLOperation):
    """A layer BrainSlug does not optimize: the framework runs it (`callee` names
    it, e.g. `torch.transpose`). Stack formation sees it as a barrier."""

    name = "nn.library"
    callee = prop_def(StringAttr)
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$callee `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs)"

    def __init__(
        self, callee: str, inputs: Sequence[Operand], result_types: Sequence[Attribute]
    ):
        super().__init__(
            operands=[list(inputs)],
            result_types=[list(result_types)],
            properties={"callee": StringAttr(callee)},
        )


@irdl_op_definition
class StackOp(IRDLOperation):
    """A BrainSlug stack: a group of memory-bound layers with explicit inputs
    and outputs.

    The single block of `body` takes arguments of the types of `inputs` and
    ends with `nn.yield` of values of the result types. The body only uses its
    block arguments (IsolatedFromAbove).
    """

    name = "nn.stack"

    PROP_KINDS: ClassVar = {"stack_name": "string"}

    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    stack_name = prop_def(StringAttr)
    body = region_def("single_block")

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$stack_name ` ` `(` $inputs `)` attr-dict-with-keyword `:` "
        "functional-type($inputs, $outputs) $body"
    )
    traits = traits_def(IsolatedFromAbove(), RecursiveMemoryEffect())

    def __init__(
        self,
        name: str | StringAttr,
        inputs: Sequence[Operand],
        result_types: Sequence[Attribute],
        body: Region,
    ):
        if isinstance(name, str):
            name = StringAttr(name)
        super().__init__(
            operands=[list(inputs)],
            result_types=[list(result_types)],
            properties={"stack_name": name},
            regions=[body],
        )

    @property
    def stack_name_value(self) -> str:
        return self.stack_name.data

    @property
    def yield_op(self) -> YieldOp:
        last = self.body.block.last_op
        if not isinstance(last, YieldOp):
            raise _err(self.name, "body must end with nn.yield")
        return last

    def verify_(self) -> None:
        _verify_prop_kinds(self)
        n = f"{self.name} {self.stack_name}"
        block = self.body.block
        arg_types = [a.type for a in block.args]
        in_types = [v.type for v in self.inputs]
        if arg_types != in_types:
            raise _err(
                n,
                f"body block arguments have types ({_types(arg_types)}), "
                f"inputs have types ({_types(in_types)})",
            )
        last = block.last_op
        if not isinstance(last, YieldOp):
            found = "nothing" if last is None else last.name
            raise _err(n, f"body must end with nn.yield, found {found}")
        yield_types = [v.type for v in last.values]
        out_types = [r.type for r in self.outputs]
        if yield_types != out_types:
            raise _err(
                n,
                f"nn.yield has types ({_types(yield_types)}), results have "
                f"types ({_types(out_types)})",
            )


def _types(types: Sequence[Attribute]) -> str:
    return ", ".join(str(t) for t in types)


NN = Dialect(
    "nn",
    [
        Conv2dOp,
        LinearOp,
        BatchNormOp,
        ReluOp,
        SigmoidOp,
        TanhOp,
        SiluOp,
        HardswishOp,
        HardsigmoidOp,
        GeluOp,
        ClampOp,
        LeakyReluOp,
        DropoutOp,
        IdentityOp,
        AddOp,
        MulOp,
        MaxPool2dOp,
        AvgPool2dOp,
        AdaptiveAvgPool2dOp,
        CatOp,
        FlattenOp,
        ReshapeOp,
        MeanOp,
        SoftmaxOp,
        LibraryOp,
        StackOp,
        YieldOp,
    ],
    [],
)

"""The compute-bound layers: `nn.conv2d` and `nn.linear`."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.ir import Attribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from brainslug.dialects.nn.base import (
    Operand,
    PropertyAccessors,
    channel_axis,
    check_result_type,
    i64_array_attr,
    i64_attr,
    int_values,
    make_tensor,
    meet,
    pair,
    quad,
    ranked_shape,
    spatial_axes,
    tensor_shape,
    type_of,
    verify_error,
    window_extent,
)
from brainslug.dialects.nn.properties import (
    ConstrainedProperties,
    I64ArrayProperty,
    I64Property,
    Layout,
    StrEnumProperty,
    enum_member,
)


@irdl_op_definition
class Conv2dOp(PropertyAccessors, IRDLOperation):
    """2-D convolution (cross-correlation), as `torch.nn.functional.conv2d`.

    The weight is OIHW `[O, I/groups, KH, KW]` in layout NCHW and HWIO
    `[KH, KW, I/groups, O]` in layout NHWC. A compiled NHWC convolution may
    take it blocked by output channels, `[ceil(O/B), KH, KW, I/groups, B]`
    (block `ob` holds channels `ob*B ..`, zero past O): each block's weights are
    contiguous in the order a register block reads them. O then comes from the
    result type. `padding` is (top, left, bottom, right).
    """

    name = "nn.conv2d"

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    strides = prop_def(I64ArrayProperty())
    padding = prop_def(I64ArrayProperty())
    dilation = prop_def(I64ArrayProperty())
    groups = prop_def(I64Property())
    layout = prop_def(StrEnumProperty(Layout))

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"
    )
    traits = traits_def(Pure(), ConstrainedProperties())

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
        layout: str = Layout.NCHW,
        result_type: Attribute | None = None,
    ):
        strides, padding, dilation = pair(strides), quad(padding), pair(dilation)
        if result_type is None:
            result_type = self.infer_type(
                type_of(input),
                type_of(weight),
                None if bias is None else type_of(bias),
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
                "strides": i64_array_attr(strides),
                "padding": i64_array_attr(padding),
                "dilation": i64_array_attr(dilation),
                "groups": i64_attr(groups),
                "layout": StringAttr(str(layout)),
            },
        )

    @property
    def groups_value(self) -> int:
        return self.groups.value.data

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
        out_channels: int | None = None,
    ) -> TensorType:
        """The result type; a blocked weight needs `out_channels` (from the
        declared result) or a bias to say how many of its channels are real."""
        n = cls.name
        x = ranked_shape(n, "input", input_type, (4,))
        w = ranked_shape(n, "weight", weight_type, (4, 5))
        strides = int_values(n, "strides", strides, 2, 1)
        padding = int_values(n, "padding", padding, 4, 0)
        dilation = int_values(n, "dilation", dilation, 2, 1)
        layout = enum_member(n, "layout", Layout, layout)
        if groups < 1:
            raise verify_error(n, f"groups must be >= 1, got {groups}")
        if len(w) == 5:
            if layout == Layout.NCHW:
                raise verify_error(n, "a blocked (rank-5) weight needs layout NHWC")
            blocks, kh, kw, in_per_group, block = w
            if bias_type is not None:
                out_channels = ranked_shape(n, "bias", bias_type, (1,))[0]
            if out_channels is None:
                raise verify_error(n, "a blocked weight needs the result type or a bias")
            out_ch = out_channels
            if out_ch >= 0 and blocks >= 0 and block >= 0 and not (
                    (blocks - 1) * block < out_ch <= blocks * block):
                raise verify_error(
                    n, f"{out_ch} output channels do not fill {blocks} blocks of {block}")
        elif layout == Layout.NCHW:
            out_ch, in_per_group, kh, kw = w
        else:
            kh, kw, in_per_group, out_ch = w
        c_axis = channel_axis(layout, 4)
        h_axis, w_axis = spatial_axes(layout)
        in_ch = x[c_axis]
        if in_ch >= 0 and in_per_group >= 0 and in_ch != in_per_group * groups:
            raise verify_error(
                n,
                f"input has {in_ch} channels, weight expects "
                f"{in_per_group * groups} (I={in_per_group} x groups={groups})",
            )
        if out_ch >= 0 and out_ch % groups != 0:
            raise verify_error(
                n,
                f"weight has {out_ch} output channels, not divisible by groups={groups}",
            )
        if bias_type is not None:
            b = ranked_shape(n, "bias", bias_type, (1,))
            msg = f"bias has length {b[0]}, weight has {out_ch} output channels"
            meet(n, msg, b[0], out_ch)
        out_h = window_extent(
            n, "H", x[h_axis], kh, strides[0], padding[0], padding[2], dilation[0], False
        )
        out_w = window_extent(
            n, "W", x[w_axis], kw, strides[1], padding[1], padding[3], dilation[1], False
        )
        out = [x[0], 0, 0, 0]
        out[c_axis], out[h_axis], out[w_axis] = out_ch, out_h, out_w
        return make_tensor(out)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type,
            self.weight.type,
            None if self.bias is None else self.bias.type,
            strides=self.strides_values,
            padding=self.padding_values,
            dilation=self.dilation_values,
            groups=self.groups_value,
            layout=self.layout_value,
            out_channels=self.output_channels,
        )
        check_result_type(self.name, self.output.type, inferred)

    @property
    def output_channels(self) -> int | None:
        """The declared result's channel count (None if it is not a rank-4 tensor)."""
        t = self.output.type
        if not isinstance(t, TensorType) or len(t.get_shape()) != 4:
            return None
        return t.get_shape()[1 if self.layout_value == Layout.NCHW else 3]


@irdl_op_definition
class LinearOp(IRDLOperation):
    """`y = x W^T + b`: input `[..., K]`, weight `[O, K]`, bias `[O]`.

    A linear layer that BrainSlug computes takes its weight packed as a 1×1
    convolution's: `[1, 1, K, O]`, or blocked by output channels `[ceil(O/B),
    1, 1, K, B]` (zeros past O; O then comes from the result type), so that
    bs-register-tile blocks it as it does a pointwise convolution."""

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
                type_of(input),
                type_of(weight),
                None if bias is None else type_of(bias),
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
        out_features: int | None = None,
    ) -> TensorType:
        """The result type; a blocked weight needs `out_features` (from the
        declared result) or a bias."""
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        if not x:
            raise verify_error(n, "input must have rank >= 1, got rank 0")
        w = ranked_shape(n, "weight", weight_type, (2, 4, 5))
        if len(w) == 2:  # PyTorch's [O, K]
            o, k = w
        else:  # packed: [1, 1, K, O], or [O/B, 1, 1, K, B] (O from the result or bias)
            taps = w[:2] if len(w) == 4 else w[1:3]
            if tuple(taps) != (1, 1):
                raise verify_error(n, f"a packed weight is [1, 1, K, O] or [O/B, 1, 1, K, B], "
                                      f"got {list(w)}")
            k, o = w[-2], w[-1] if len(w) == 4 else out_features
        if x[-1] >= 0 and k >= 0 and x[-1] != k:
            of = "[O, K]" if len(w) == 2 else "a packed [.., K, O]"
            raise verify_error(n, f"input has {x[-1]} features, weight expects {k} (K of {of})")
        if bias_type is not None:
            b = ranked_shape(n, "bias", bias_type, (1,))
            if o is None:
                o = b[0]
            msg = f"bias has length {b[0]}, weight has {o} output features"
            meet(n, msg, b[0], o)
        if o is None:
            raise verify_error(n, "a blocked weight needs the result type or a bias")
        if len(w) == 5 and o >= 0 and w[0] >= 0 and not (
                (w[0] - 1) * w[4] < o <= w[0] * w[4]):
            raise verify_error(n, f"{o} output features do not fill {w[0]} blocks of {w[4]}")
        return make_tensor((*x[:-1], o))

    def verify_(self) -> None:
        t = self.output.type
        declared = t.get_shape()[-1] if isinstance(t, TensorType) and t.get_shape() else None
        inferred = self.infer_type(
            self.input.type,
            self.weight.type,
            None if self.bias is None else self.bias.type,
            declared,
        )
        check_result_type(self.name, self.output.type, inferred)

    @property
    def packed(self) -> bool:
        """The weight is packed as a 1×1 convolution's (BrainSlug computes it)."""
        return len(self.weight.type.get_shape()) > 2  # type: ignore[attr-defined]

"""The pooling layers: `nn.max_pool2d`, `nn.avg_pool2d` and
`nn.adaptive_avg_pool2d`."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import BoolAttr, StringAttr, TensorType
from xdsl.ir import Attribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.str_enum import StrEnum

from brainslug.dialects.nn.base import (
    MemoryBound,
    Operand,
    PropertyAccessors,
    check_result_type,
    i64_array_attr,
    i64_attr,
    int_values,
    make_tensor,
    pair,
    quad,
    ranked_shape,
    spatial_axes,
    type_of,
    verify_error,
    window_extent,
)
from brainslug.dialects.nn.properties import (
    BoolProperty,
    ConstrainedProperties,
    I64ArrayProperty,
    I64Property,
    Layout,
    StrEnumProperty,
    enum_member,
)


class MaxPoolNaN(StrEnum):
    """How `nn.max_pool2d` treats NaN (its `nan` property; absent means
    `propagate`). Both modes scan a window in row-major (kh, kw) order, leave
    padded elements out, and keep the first of equal values (of -0.0 and +0.0,
    whichever comes first)."""

    PROPAGATE = "propagate"
    """PyTorch's max_pool2d: `acc = -inf; acc = (v > acc || isnan(v)) ? v : acc`.
    A NaN anywhere in the window is the result; a window of -inf gives -inf."""

    SKIP = "skip"
    """TensorFlow's MaxPool: `acc = -FLT_MAX; acc = v > acc ? v : acc`. A value
    replaces the running max only if it compares greater, so NaN never does.
    Measured on TensorFlow 2.21 (CPU, with oneDNN custom ops on, the default, and
    off; eager, tf.function and Keras MaxPooling2D alike, C = 1, 8 and 37, bit
    for bit against that loop on random windows of NaN, +-inf, +-0, +-FLT_MAX):

    - a NaN at the first, a middle or the last window position is skipped
      (`[nan, 1, 2]`, `[1, nan, 2]`, `[1, 2, nan]` all give 2);
    - a window of NaN only gives -FLT_MAX (-3.4028235e38), not NaN;
    - -inf never compares greater than -FLT_MAX: a window of -inf, or of -inf
      and NaN, gives -FLT_MAX, not -inf; +inf wins over everything;
    - 'SAME' padding is not part of the window: a window whose elements inside
      the input are all NaN gives -FLT_MAX;
    - `[-0.0, 0.0]` gives -0.0 and `[0.0, -0.0]` gives 0.0.

    One difference remains: TensorFlow runs its kernels with denormals as zero,
    so it compares a denormal as 0 (`[0.0, 1e-45]` gives 0.0); the compiled
    kernel compares it as itself (1e-45).

    (TensorFlow's reduce_max, the kernel of GlobalMaxPooling2D, is not this: it
    propagates NaN and a window of -inf gives -inf, as `propagate` does.)
    """


def _check_padding(
    op_name: str, kernel: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> None:
    """Each side's padding is at most half the effective kernel (PyTorch's rule)."""
    for i, pad in enumerate(padding):
        axis = i % 2
        effective = dilation[axis] * (kernel[axis] - 1) + 1
        if pad > effective // 2:
            raise verify_error(
                op_name,
                f"padding {list(padding)} exceeds half the effective kernel: "
                f"{'HW'[axis]} padding {pad} > {effective} // 2",
            )


def _pooled_shape(
    op_name: str,
    x: Sequence[int],
    layout: Layout,
    kernel: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> TensorType:
    out = list(x)
    for i, axis in enumerate(spatial_axes(layout)):
        out[axis] = window_extent(
            op_name,
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


@irdl_op_definition
class MaxPool2dOp(PropertyAccessors, IRDLOperation):
    """2-D max pooling, as `torch.nn.functional.max_pool2d`.

    `padding` is (top, left, bottom, right); padded elements never win. `nan`
    (a `MaxPoolNaN`; absent means "propagate", PyTorch's rule) says what a NaN
    in the window does: "propagate" makes it the result, "skip" (TensorFlow's
    MaxPool) ignores it, and a window without a number then gives -FLT_MAX.
    """

    name = "nn.max_pool2d"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    kernel = prop_def(I64ArrayProperty())
    strides = prop_def(I64ArrayProperty())
    padding = prop_def(I64ArrayProperty())
    dilation = prop_def(I64ArrayProperty())
    ceil_mode = prop_def(BoolProperty())
    layout = prop_def(StrEnumProperty(Layout))
    nan = opt_prop_def(StrEnumProperty(MaxPoolNaN))

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        kernel: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = (0, 0, 0, 0),
        dilation: int | Sequence[int] = (1, 1),
        ceil_mode: bool = False,
        layout: str = Layout.NCHW,
        *,
        nan: str = MaxPoolNaN.PROPAGATE,
        result_type: Attribute | None = None,
    ):
        """`nan = "propagate"` (the default) leaves the property out, so the op
        prints as it did before the property existed."""
        nan = enum_member(self.name, "nan", MaxPoolNaN, str(nan))
        kernel = pair(kernel)
        strides = kernel if strides is None else pair(strides)
        padding, dilation = quad(padding), pair(dilation)
        if result_type is None:
            result_type = self.infer_type(
                type_of(input),
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
                "kernel": i64_array_attr(kernel),
                "strides": i64_array_attr(strides),
                "padding": i64_array_attr(padding),
                "dilation": i64_array_attr(dilation),
                "ceil_mode": BoolAttr.from_bool(ceil_mode),
                "layout": StringAttr(str(layout)),
                "nan": None if nan == MaxPoolNaN.PROPAGATE else StringAttr(str(nan)),
            },
        )

    @property
    def nan_value(self) -> MaxPoolNaN:
        """What a NaN in the window does; "propagate" when `nan` is absent."""
        return MaxPoolNaN.PROPAGATE if self.nan is None else MaxPoolNaN(self.nan.data)

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
        x = ranked_shape(n, "input", input_type, (4,))
        kernel = int_values(n, "kernel", kernel, 2, 1)
        strides = int_values(n, "strides", strides, 2, 1)
        padding = int_values(n, "padding", padding, 4, 0)
        dilation = int_values(n, "dilation", dilation, 2, 1)
        layout = enum_member(n, "layout", Layout, layout)
        _check_padding(n, kernel, padding, dilation)
        return _pooled_shape(n, x, layout, kernel, strides, padding, dilation, ceil_mode)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type,
            kernel=self.kernel_values,
            strides=self.strides_values,
            padding=self.padding_values,
            dilation=self.dilation_values,
            ceil_mode=self.ceil_mode_value,
            layout=self.layout_value,
        )
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class AvgPool2dOp(PropertyAccessors, IRDLOperation):
    """2-D average pooling, as `torch.nn.functional.avg_pool2d`.

    `padding` is (top, left, bottom, right). `count_include_pad` (default true)
    counts padded elements in the divisor; `divisor_override`, when present,
    replaces the divisor.
    """

    name = "nn.avg_pool2d"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    kernel = prop_def(I64ArrayProperty())
    strides = prop_def(I64ArrayProperty())
    padding = prop_def(I64ArrayProperty())
    ceil_mode = prop_def(BoolProperty())
    count_include_pad = prop_def(BoolProperty())
    divisor_override = opt_prop_def(I64Property())
    layout = prop_def(StrEnumProperty(Layout))

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        kernel: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = (0, 0, 0, 0),
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        layout: str = Layout.NCHW,
        *,
        result_type: Attribute | None = None,
    ):
        kernel = pair(kernel)
        strides = kernel if strides is None else pair(strides)
        padding = quad(padding)
        if result_type is None:
            result_type = self.infer_type(
                type_of(input),
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
                "kernel": i64_array_attr(kernel),
                "strides": i64_array_attr(strides),
                "padding": i64_array_attr(padding),
                "ceil_mode": BoolAttr.from_bool(ceil_mode),
                "count_include_pad": BoolAttr.from_bool(count_include_pad),
                "divisor_override": (
                    None if divisor_override is None else i64_attr(divisor_override)
                ),
                "layout": StringAttr(str(layout)),
            },
        )

    @property
    def count_include_pad_value(self) -> bool:
        return bool(self.count_include_pad.value.data)

    @property
    def divisor_override_value(self) -> int | None:
        d = self.divisor_override
        return None if d is None else d.value.data

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
        x = ranked_shape(n, "input", input_type, (4,))
        kernel = int_values(n, "kernel", kernel, 2, 1)
        strides = int_values(n, "strides", strides, 2, 1)
        padding = int_values(n, "padding", padding, 4, 0)
        layout = enum_member(n, "layout", Layout, layout)
        _check_padding(n, kernel, padding, (1, 1))
        if divisor_override is not None and divisor_override < 1:
            raise verify_error(n, f"divisor_override must be >= 1, got {divisor_override}")
        return _pooled_shape(n, x, layout, kernel, strides, padding, (1, 1), ceil_mode)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type,
            kernel=self.kernel_values,
            strides=self.strides_values,
            padding=self.padding_values,
            ceil_mode=self.ceil_mode_value,
            divisor_override=self.divisor_override_value,
            layout=self.layout_value,
        )
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class AdaptiveAvgPool2dOp(PropertyAccessors, IRDLOperation):
    """Adaptive 2-D average pooling to a fixed `output_size` (H, W)."""

    name = "nn.adaptive_avg_pool2d"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    output_size = prop_def(I64ArrayProperty())
    layout = prop_def(StrEnumProperty(Layout))

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        output_size: int | Sequence[int],
        layout: str = Layout.NCHW,
        *,
        result_type: Attribute | None = None,
    ):
        output_size = pair(output_size)
        if result_type is None:
            result_type = self.infer_type(type_of(input), output_size=output_size, layout=layout)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={
                "output_size": i64_array_attr(output_size),
                "layout": StringAttr(str(layout)),
            },
        )

    @property
    def output_size_values(self) -> tuple[int, ...]:
        return self.output_size.get_values()

    @classmethod
    def infer_type(
        cls, input_type: Attribute, *, output_size: Sequence[int], layout: str
    ) -> TensorType:
        n = cls.name
        x = ranked_shape(n, "input", input_type, (4,))
        output_size = int_values(n, "output_size", output_size, 2, 1)
        out = list(x)
        for i, axis in enumerate(spatial_axes(enum_member(n, "layout", Layout, layout))):
            if x[axis] == 0:
                raise verify_error(n, "input has an empty spatial extent")
            out[axis] = output_size[i]
        return make_tensor(out)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type,
            output_size=self.output_size_values,
            layout=self.layout_value,
        )
        check_result_type(self.name, self.output.type, inferred)

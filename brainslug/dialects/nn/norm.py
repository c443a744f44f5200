"""Normalisation: `nn.layer_norm` over the innermost dim, `nn.group_norm` over
groups of channels, `nn.l2_normalize` along any dim."""

from __future__ import annotations

from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from brainslug.dialects.nn.base import (
    MemoryBound,
    Operand,
    check_axis,
    check_eps,
    check_result_type,
    f64_attr,
    i64_attr,
    make_tensor,
    normalize_axis,
    tensor_shape,
    type_of,
    verify_error,
)
from brainslug.dialects.nn.properties import (
    ConstrainedProperties,
    F64Property,
    I64Property,
    Impl,
    StrEnumProperty,
    WithImpl,
    impl_attr,
)


@irdl_op_definition
class LayerNormOp(IRDLOperation, WithImpl):
    """Layer normalisation over the innermost dim of each row:
    `y = (x - mean) * rstd * weight + bias`, with `mean` and the biased
    variance `var` over the row and `rstd = 1 / sqrt(var + eps)`; `weight` and
    `bias` (of the row's length) are optional. The row is the last dim of a
    row-major tensor, or C of a channels-last one (ConvNeXt's LayerNorm2d).

    Absent `impl`, the result is `(x * rstd + (-mean * rstd)) * weight + bias`
    (PyTorch's order); `impl = "eigen"` computes Keras's on TensorFlow:
    `inv = rstd * weight`, then `x * inv + (-mean * inv + bias)`.
    """

    name = "nn.layer_norm"

    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    eps = prop_def(F64Property())
    impl = opt_prop_def(StrEnumProperty(Impl))

    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input (`weight` $weight^ `:` type($weight))? (`bias` $bias^ `:` type($bias))? "
        "attr-dict `:` type($input) `->` type($output)"
    )
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        weight: Operand | None = None,
        bias: Operand | None = None,
        *,
        eps: float = 1e-5,
        impl: str | None = None,
        result_type: Attribute | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(
                type_of(input),
                None if weight is None else type_of(weight),
                None if bias is None else type_of(bias),
                eps=eps,
            )
        super().__init__(
            operands=[input, [] if weight is None else [weight], [] if bias is None else [bias]],
            result_types=[result_type],
            properties={"eps": f64_attr(eps),
                        "impl": impl_attr(impl)},
        )

    @property
    def eps_value(self) -> float:
        return self.eps.value.data


    @classmethod
    def infer_type(
        cls,
        input_type: Attribute,
        weight_type: Attribute | None,
        bias_type: Attribute | None,
        *,
        eps: float,
    ) -> TensorType:
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        if not x:
            raise verify_error(n, "input must have at least one dim")
        row = x[-1]
        if row < 0:
            raise verify_error(n, "the normalised (innermost) dim must be static")
        check_eps(n, eps)
        for what, ty in (("weight", weight_type), ("bias", bias_type)):
            if ty is None:
                continue
            shape = tensor_shape(n, what, ty)
            if list(shape) != [row]:
                raise verify_error(n, f"{what} must have shape [{row}] (the innermost dim), "
                                      f"got {list(shape)}")
        return make_tensor(x)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type,
            None if self.weight is None else self.weight.type,
            None if self.bias is None else self.bias.type,
            eps=self.eps_value,
        )
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class GroupNormOp(IRDLOperation):
    """Group normalisation: the channels (dim `axis`, stored non-negative) in
    `groups` equal groups; for each batch item and group, `mean` and the biased
    variance `var` over its channels and every other non-batch dim, `rstd =
    1 / sqrt(var + eps)`. Per channel c, `scale = rstd * weight[c]` and
    `shift = -scale * mean + bias[c]`, and `y = x * scale + shift` (PyTorch's
    order; `weight` and `bias`, of C elements, are optional)."""

    name = "nn.group_norm"

    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    groups = prop_def(I64Property())
    axis = prop_def(I64Property())
    eps = prop_def(F64Property())

    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input (`weight` $weight^ `:` type($weight))? (`bias` $bias^ `:` type($bias))? "
        "attr-dict `:` type($input) `->` type($output)"
    )
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, groups: int, axis: int, weight: Operand | None = None,
                 bias: Operand | None = None, *, eps: float = 1e-5,
                 result_type: Attribute | None = None):
        if result_type is None:
            result_type = self.infer_type(
                type_of(input), None if weight is None else type_of(weight),
                None if bias is None else type_of(bias), groups=groups, axis=axis, eps=eps)
        super().__init__(
            operands=[input, [] if weight is None else [weight], [] if bias is None else [bias]],
            result_types=[result_type],
            properties={"groups": i64_attr(groups), "axis": i64_attr(axis),
                        "eps": f64_attr(eps)},
        )

    @property
    def groups_value(self) -> int:
        return self.groups.value.data

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    @property
    def eps_value(self) -> float:
        return self.eps.value.data

    @classmethod
    def infer_type(cls, input_type: Attribute, weight_type: Attribute | None,
                   bias_type: Attribute | None, *, groups: int, axis: int,
                   eps: float) -> TensorType:
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        if len(x) < 2:
            raise verify_error(n, f"input must have a batch and a channel dim, got rank {len(x)}")
        axis = check_axis(n, "axis", axis, len(x))
        if axis == 0:
            raise verify_error(n, "axis 0 is the batch, not the channels")
        c = x[axis]
        if any(e < 0 for e in x[1:]):
            raise verify_error(n, "only the batch dim may be dynamic")
        if groups < 1 or c % groups:
            raise verify_error(n, f"{c} channels don't split into {groups} groups")
        check_eps(n, eps)
        for what, ty in (("weight", weight_type), ("bias", bias_type)):
            if ty is not None and list(tensor_shape(n, what, ty)) != [c]:
                raise verify_error(n, f"{what} must have shape [{c}] (the channels), "
                                      f"got {list(tensor_shape(n, what, ty))}")
        return make_tensor(x)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type, None if self.weight is None else self.weight.type,
            None if self.bias is None else self.bias.type, groups=self.groups_value,
            axis=self.axis_value, eps=self.eps_value)
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class L2NormalizeOp(IRDLOperation):
    """`x / max(sqrt(sum(x * x along axis)), eps)`: PyTorch's `F.normalize` with
    p = 2. The sum of squares runs in BrainSlug's order (along a dim that isn't
    innermost, PyTorch's: in order); NaN in a row makes the row NaN."""

    name = "nn.l2_normalize"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    axis = prop_def(I64Property())
    eps = prop_def(F64Property())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, axis: int, eps: float, *,
                 result_type: Attribute | None = None):
        rank = len(tensor_shape(self.name, "input", type_of(input)))
        axis = normalize_axis(self.name, "axis", axis, rank)
        if result_type is None:
            result_type = self.infer_type(type_of(input), axis=axis, eps=eps)
        super().__init__(operands=[input], result_types=[result_type],
                         properties={"axis": i64_attr(axis), "eps": f64_attr(eps)})

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    @property
    def eps_value(self) -> float:
        return self.eps.value.data

    @classmethod
    def infer_type(cls, input_type: Attribute, *, axis: int, eps: float) -> TensorType:
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        axis = check_axis(n, "axis", axis, len(x))
        if x[axis] < 0:
            raise verify_error(n, f"axis {axis} is dynamic")
        check_eps(n, eps)
        return make_tensor(x)

    def verify_(self) -> None:
        inferred = self.infer_type(self.input.type, axis=self.axis_value, eps=self.eps_value)
        check_result_type(self.name, self.output.type, inferred)

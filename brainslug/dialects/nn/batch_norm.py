"""Inference batch normalisation: `nn.batch_norm`."""

from __future__ import annotations

from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.ir import Attribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser, UnresolvedOperand
from xdsl.printer import Printer
from xdsl.traits import Pure

from brainslug.dialects.nn.base import (
    MemoryBound,
    Operand,
    PropertyAccessors,
    channel_axis,
    check_eps,
    check_result_type,
    f64_attr,
    make_tensor,
    ranked_shape,
    type_of,
    verify_error,
)
from brainslug.dialects.nn.properties import (
    ConstrainedProperties,
    F64Property,
    Impl,
    Layout,
    StrEnumProperty,
    WithImpl,
    enum_member,
    impl_attr,
)


@irdl_op_definition
class BatchNormOp(PropertyAccessors, IRDLOperation, WithImpl):
    """Inference batch normalisation.

    `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`, per
    channel; `weight` and `bias` are optional. Input rank 2 (`[N, C]`) or 4.
    Computed as `x * alpha + beta` with `alpha = weight * (1 / sqrt(var + eps))`
    and `beta = bias - mean * alpha`: absent `impl`, both sums rounded once (fused
    multiply-adds), as PyTorch's CPU kernel computes them; `impl = "eigen"`,
    each product and sum rounded (TensorFlow's operations).

    Custom format (operands named by keyword, absent ones left out):
    `nn.batch_norm %x weight %w bias %b mean %m var %v {eps = ..., layout = ..}
    : (types of the operands present, in this order) -> type`. It is not a
    declarative one: the types of the optional operands sit in one functional
    type, whose groups a declarative format could not tell apart.
    """

    name = "nn.batch_norm"

    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    running_mean = operand_def(TensorType)
    running_var = operand_def(TensorType)
    output = result_def(TensorType)

    eps = prop_def(F64Property())
    layout = prop_def(StrEnumProperty(Layout))
    impl = opt_prop_def(StrEnumProperty(Impl))

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        weight: Operand | None,
        bias: Operand | None,
        running_mean: Operand,
        running_var: Operand,
        *,
        eps: float = 1e-5,
        layout: str = Layout.NCHW,
        impl: str | None = None,
        result_type: Attribute | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(
                type_of(input),
                None if weight is None else type_of(weight),
                None if bias is None else type_of(bias),
                type_of(running_mean),
                type_of(running_var),
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
            properties={"eps": f64_attr(eps), "layout": StringAttr(str(layout)),
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
        mean_type: Attribute,
        var_type: Attribute,
        *,
        eps: float,
        layout: str,
    ) -> TensorType:
        n = cls.name
        x = ranked_shape(n, "input", input_type, (2, 4))
        layout = enum_member(n, "layout", Layout, layout)
        check_eps(n, eps)
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
            (length,) = ranked_shape(n, what, ty, (1,))
            if length >= 0 and channels >= 0 and length != channels:
                raise verify_error(n, f"{what} has length {length}, input has {channels} channels")
        return make_tensor(x)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type,
            None if self.weight is None else self.weight.type,
            None if self.bias is None else self.bias.type,
            self.running_mean.type,
            self.running_var.type,
            eps=self.eps_value,
            layout=self.layout_value,
        )
        check_result_type(self.name, self.output.type, inferred)

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

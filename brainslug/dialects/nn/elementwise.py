"""The elementwise layers: activations, dropout and identity (unary), add and
mul (binary, with broadcasting), addcmul (ternary, with broadcasting)."""

from __future__ import annotations

import math

from xdsl.dialects.builtin import StringAttr, TensorType
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

from brainslug.dialects.nn.base import (
    Elementwise,
    MemoryBound,
    Operand,
    Removable,
    broadcast_shapes,
    check_result_type,
    f64_attr,
    make_tensor,
    tensor_shape,
    type_of,
    verify_error,
)
from brainslug.dialects.nn.properties import (
    ConstrainedProperties,
    F64Property,
    GeluApproximation,
    Impl,
    StrEnumProperty,
    WithImpl,
    impl_attr,
)


class _UnaryOp(IRDLOperation):
    """Base of the elementwise unary layers: `output` has the type of `input`."""

    input = operand_def(TensorType)
    output = result_def(TensorType)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), Elementwise(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        *,
        result_type: Attribute | None = None,
        properties: dict[str, Attribute | None] | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(type_of(input))
        super().__init__(operands=[input], result_types=[result_type], properties=properties)

    @classmethod
    def infer_type(cls, input_type: Attribute) -> TensorType:
        return make_tensor(tensor_shape(cls.name, "input", input_type))

    def verify_props(self) -> None:
        """Check the property values (overridden by ops that have some)."""

    def verify_(self) -> None:
        self.verify_props()
        check_result_type(self.name, self.output.type, self.infer_type(self.input.type))


class _WithImpl(_UnaryOp, WithImpl):
    """A unary layer with an optional `impl`: absent, PyTorch's kernel;
    `"eigen"`, TensorFlow's CPU kernel."""

    impl = opt_prop_def(StrEnumProperty(Impl))

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
            properties={"impl": impl_attr(impl)},
        )



@irdl_op_definition
class ReluOp(_WithImpl):
    """`max(x, 0)`. PyTorch's keeps -0 and NaN (`x < 0 ? 0 : x`); with `impl =
    "eigen"`, TensorFlow's Relu (Eigen's `cwiseMax(0)`, `maxps`) gives +0 for
    ±0 and keeps NaN (`x <= 0 ? 0 : x`)."""

    name = "nn.relu"


class _SigmoidLike(_WithImpl):
    """A layer built on the logistic function, with an optional `impl`.

    Absent, the logistic function is `1 / (1 + exp(-x))` (PyTorch's). `impl =
    "eigen"` is TensorFlow's CPU kernel for float32: Eigen's
    `scalar_logistic_op<float>` as the x86-64 TensorFlow wheel runs it (AVX
    packets of 8 floats, multiply and add rounded separately, a degree-5
    polynomial for exp(x/2) squared, denormal results flushed to zero); see
    `nn_to_loop.eigen_logistic`.
    """


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
class GeluOp(_UnaryOp, WithImpl):
    """GELU; `approximate` is "none" (exact, erf form; the default) or "tanh".
    The exact form is PyTorch's `(x * (1 + erf(x / sqrt 2))) * 0.5` (infinite
    at 3.4e38, NaN at +inf), or with `impl = "eigen"` TensorFlow's
    `0.5 * x * erfc(-x / sqrt 2)` (finite at 3.4e38, +inf at +inf)."""

    name = "nn.gelu"

    approximate = prop_def(StrEnumProperty(GeluApproximation))
    impl = opt_prop_def(StrEnumProperty(Impl))

    def __init__(
        self,
        input: Operand,
        approximate: str = GeluApproximation.NONE,
        *,
        impl: str | None = None,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            input,
            result_type=result_type,
            properties={"approximate": StringAttr(str(approximate)),
                        "impl": impl_attr(impl)},
        )


    @property
    def approximate_value(self) -> GeluApproximation:
        return GeluApproximation(self.approximate.data)


@irdl_op_definition
class ClampOp(_UnaryOp, WithImpl):
    """`min(max(x, min), max)`; either bound may be absent, not both.

    relu6 is `nn.clamp {min = 0.0, max = 6.0}`. With `impl = "eigen"` the lower
    bound is TensorFlow's `cwiseMax` (`x <= min ? min : x`: +0 for -0 at min
    0, as its Relu6), else PyTorch's (`x < min ? min : x`).
    """

    name = "nn.clamp"

    min = opt_prop_def(F64Property())
    max = opt_prop_def(F64Property())
    impl = opt_prop_def(StrEnumProperty(Impl))

    def __init__(
        self,
        input: Operand,
        min: float | None = None,
        max: float | None = None,
        *,
        impl: str | None = None,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            input,
            result_type=result_type,
            properties={
                "min": None if min is None else f64_attr(min),
                "max": None if max is None else f64_attr(max),
                "impl": impl_attr(impl),
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
            raise verify_error(self.name, "needs at least one of min and max")
        for what, v in (("min", lo), ("max", hi)):
            if v is not None and math.isnan(v):
                raise verify_error(self.name, f"{what} must not be NaN")


POW_EXPONENTS = (-2.0, -1.0, -0.5, 0.5, 2.0, 3.0)
"""The exponents `nn.pow` takes: those PyTorch computes without `powf`."""


@irdl_op_definition
class PowOp(_UnaryOp):
    """`x ** exponent` for an exponent in `POW_EXPONENTS`, computed as PyTorch
    computes those: `x * x`, `x * x * x`, `sqrt(x)`, `1 / sqrt(x)`, `1 / x` and
    `1 / (x * x)`, each rounded as written (other exponents need `powf`). The
    square root is IEEE's, correctly rounded; PyTorch's vector sqrt on CPU is
    MKL's `vsSqrt`, which may differ from it by 1 ULP."""

    name = "nn.pow"

    exponent = prop_def(F64Property())

    def __init__(self, input: Operand, exponent: float, *, result_type: Attribute | None = None):
        super().__init__(input, result_type=result_type,
                         properties={"exponent": f64_attr(exponent)})

    @property
    def exponent_value(self) -> float:
        return self.exponent.value.data

    def verify_props(self) -> None:
        if self.exponent_value not in POW_EXPONENTS:
            raise verify_error(self.name, f"exponent must be one of {list(POW_EXPONENTS)}, "
                                          f"got {self.exponent_value}")


@irdl_op_definition
class LeakyReluOp(_UnaryOp):
    """`x if x >= 0 else negative_slope * x`."""

    name = "nn.leaky_relu"

    negative_slope = prop_def(F64Property())

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
            properties={"negative_slope": f64_attr(negative_slope)},
        )

    @property
    def negative_slope_value(self) -> float:
        return self.negative_slope.value.data

    def verify_props(self) -> None:
        if not math.isfinite(self.negative_slope_value):
            raise verify_error(
                self.name,
                f"negative_slope must be finite, got {self.negative_slope_value}",
            )


@irdl_op_definition
class DropoutOp(_UnaryOp):
    """Dropout with probability `p` in [0, 1); the identity at inference."""

    name = "nn.dropout"

    p = prop_def(F64Property())

    traits = traits_def(Pure(), MemoryBound(), Elementwise(), Removable())

    def __init__(self, input: Operand, p: float = 0.5, *, result_type: Attribute | None = None):
        super().__init__(input, result_type=result_type, properties={"p": f64_attr(p)})

    @property
    def p_value(self) -> float:
        return self.p.value.data

    def verify_props(self) -> None:
        if not 0.0 <= self.p_value < 1.0:
            raise verify_error(self.name, f"p must be in [0, 1), got {self.p_value}")


@irdl_op_definition
class IdentityOp(_UnaryOp):
    """The identity."""

    name = "nn.identity"

    traits = traits_def(Pure(), MemoryBound(), Elementwise(), Removable())


class _BinaryOp(IRDLOperation):
    """Base of add, sub, mul and div: numpy-style broadcasting of `lhs` and `rhs`."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"
    traits = traits_def(Pure(), MemoryBound(), Elementwise())

    def __init__(self, lhs: Operand, rhs: Operand, *, result_type: Attribute | None = None):
        if result_type is None:
            result_type = self.infer_type(type_of(lhs), type_of(rhs))
        super().__init__(operands=[lhs, rhs], result_types=[result_type])

    @classmethod
    def infer_type(cls, lhs_type: Attribute, rhs_type: Attribute) -> TensorType:
        lhs = tensor_shape(cls.name, "lhs", lhs_type)
        rhs = tensor_shape(cls.name, "rhs", rhs_type)
        return make_tensor(broadcast_shapes(lhs, rhs, cls.name))

    def verify_(self) -> None:
        inferred = self.infer_type(self.lhs.type, self.rhs.type)
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class AddOp(_BinaryOp):
    """`lhs + rhs` with broadcasting."""

    name = "nn.add"


@irdl_op_definition
class MulOp(_BinaryOp):
    """`lhs * rhs` with broadcasting."""

    name = "nn.mul"


@irdl_op_definition
class SubOp(_BinaryOp):
    """`lhs - rhs` with broadcasting."""

    name = "nn.sub"


@irdl_op_definition
class DivOp(_BinaryOp):
    """`lhs / rhs` with broadcasting (IEEE division, not a reciprocal)."""

    name = "nn.div"


@irdl_op_definition
class AddcmulOp(IRDLOperation):
    """`input + tensor1 * tensor2` rounded once (a fused multiply-add), with
    broadcasting of all three: PyTorch's `addcmul` with value 1, whose vector
    and scalar CPU kernels the compiler contracts to FMAs."""

    name = "nn.addcmul"

    input = operand_def(TensorType)
    tensor1 = operand_def(TensorType)
    tensor2 = operand_def(TensorType)
    output = result_def(TensorType)

    assembly_format = ("$input `,` $tensor1 `,` $tensor2 attr-dict `:` "
                       "functional-type(operands, results)")
    traits = traits_def(Pure(), MemoryBound(), Elementwise())

    def __init__(self, input: Operand, tensor1: Operand, tensor2: Operand, *,
                 result_type: Attribute | None = None):
        if result_type is None:
            result_type = self.infer_type(type_of(input), type_of(tensor1), type_of(tensor2))
        super().__init__(operands=[input, tensor1, tensor2], result_types=[result_type])

    @classmethod
    def infer_type(cls, *types: Attribute) -> TensorType:
        shapes = [tensor_shape(cls.name, what, t)
                  for what, t in zip(("input", "tensor1", "tensor2"), types, strict=True)]
        product = broadcast_shapes(shapes[1], shapes[2], cls.name, ("tensor1", "tensor2"))
        return make_tensor(broadcast_shapes(shapes[0], product, cls.name,
                                            ("input", "tensor1 * tensor2")))

    def verify_(self) -> None:
        inferred = self.infer_type(self.input.type, self.tensor1.type, self.tensor2.type)
        check_result_type(self.name, self.output.type, inferred)

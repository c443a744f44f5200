"""Property constraints of the `nn` ops, and the enums of their string properties.

A property's kind is a `PropertyConstraint` on its `prop_def`. IRDL checks the
base attribute when the op is parsed and when it is verified, with its own
message (`1 : i64 should be of base attribute string`). The element type or
value is checked when the op is verified, by its `ConstrainedProperties` trait,
with a message that names the op and the property (`nn.conv2d: property strides
must be an array<i64: ...>, got array<i32: 1, 1>`, `nn.conv2d: layout must be
one of ['NCHW', 'NHWC'], got 'NWHC'`): text with a wrong element type or value
parses, and the verifier reports it.

String properties stay `StringAttr`s (`layout = "NCHW"`); their enums are
`StrEnum`s, whose members compare equal to their strings.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, AttributeCovT, Operation
from xdsl.irdl import (
    AttrConstraint,
    BaseAttr,
    IntConstraint,
    IRDLOperation,
    OptPropertyDef,
    VerificationContext,
)
from xdsl.traits import OpTrait
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum


class Layout(StrEnum):
    """Where the channel axis is: NCHW (axis 1, spatial axes 2, 3) or NHWC
    (axis 3, spatial axes 1, 2)."""

    NCHW = "NCHW"
    NHWC = "NHWC"


class Impl(StrEnum):
    """A framework kernel whose numerics an op reproduces (`impl`; absent means
    the exact formula or the sum in order)."""

    EIGEN = "eigen"
    """TensorFlow's CPU kernels, built on Eigen."""


def impl_attr(impl: str | None) -> StringAttr | None:
    """The `impl` property of an op built with `impl` (None: absent)."""
    return None if impl is None else StringAttr(str(impl))


class WithImpl:
    """Mixin of the ops with an optional `impl` property
    (`opt_prop_def(StrEnumProperty(Impl))`): absent, PyTorch's kernel or the
    exact formula; else the framework kernel named."""

    @property
    def impl_value(self) -> Impl | None:
        impl = self.impl
        return None if impl is None else Impl(impl.data)


class GeluApproximation(StrEnum):
    """`nn.gelu`'s `approximate`: the exact erf form or the tanh approximation."""

    NONE = "none"
    TANH = "tanh"


StrEnumT = TypeVar("StrEnumT", bound=StrEnum)


def enum_member(
    op_name: str, prop_name: str, enum: type[StrEnumT], value: str, *, optional: bool = False
) -> StrEnumT:
    """`value` as a member of `enum`; a `VerifyException` naming the op, the
    property and the allowed values if it is none (`optional`: the property may
    also be absent, which the message says)."""
    allowed = [member.value for member in enum]
    if value not in allowed:
        absent = " (or absent)" if optional else ""
        raise VerifyException(
            f"{op_name}: {prop_name} must be one of {allowed}{absent}, got {value!r}"
        )
    return enum(value)


@dataclass(frozen=True)
class PropertyConstraint(AttrConstraint[AttributeCovT], Generic[AttributeCovT]):
    """A property of base attribute `base`, whose value `verify_value` checks."""

    base: ClassVar[type[Attribute]]

    def verify(self, attr: Attribute, constraint_context: VerificationContext) -> None:
        BaseAttr(self.base).verify(attr, constraint_context)

    @abstractmethod
    def verify_value(self, attr: Attribute, op_name: str, prop_name: str, optional: bool) -> None:
        """Check the value of `attr`, an instance of `base`: property `prop_name` of
        an `op_name` (`optional`: it may be absent)."""

    def get_bases(self) -> set[type[Attribute]]:
        return {self.base}

    def mapping_type_vars(
        self, type_var_mapping: Mapping[TypeVar, AttrConstraint | IntConstraint]
    ) -> PropertyConstraint[AttributeCovT]:
        return self


class ConstrainedProperties(OpTrait):
    """The op's properties with a `PropertyConstraint` have their values checked
    when it is verified."""

    def verify(self, op: Operation) -> None:
        assert isinstance(op, IRDLOperation)
        for prop_name, prop_def in op.get_irdl_definition().properties.items():
            attr = op.properties.get(prop_name)
            if attr is not None and isinstance(prop_def.constr, PropertyConstraint):
                optional = isinstance(prop_def, OptPropertyDef)
                prop_def.constr.verify_value(attr, op.name, prop_name, optional)


@dataclass(frozen=True)
class StrEnumProperty(PropertyConstraint[StringAttr]):
    """A `StringAttr` property whose value is a member of `enum`."""

    enum: type[StrEnum]

    base = StringAttr

    def verify_value(self, attr: Attribute, op_name: str, prop_name: str, optional: bool) -> None:
        assert isinstance(attr, StringAttr)
        enum_member(op_name, prop_name, self.enum, attr.data, optional=optional)


@dataclass(frozen=True)
class TypedProperty(PropertyConstraint[AttributeCovT], Generic[AttributeCovT]):
    """A property whose element type is `element_type`."""

    element_type: ClassVar[Attribute]
    expected: ClassVar[str]
    """The kind of property, as the message says it (`an f64 float`)."""

    def element_type_of(self, attr: Attribute) -> Attribute:
        assert isinstance(attr, IntegerAttr | FloatAttr)
        return attr.type

    def verify_value(self, attr: Attribute, op_name: str, prop_name: str, optional: bool) -> None:
        if self.element_type_of(attr) != self.element_type:
            raise VerifyException(
                f"{op_name}: property {prop_name} must be {self.expected}, got {attr}"
            )


class I64ArrayProperty(TypedProperty[DenseArrayBase]):
    """An integer list: `strides = array<i64: 1, 1>`."""

    base = DenseArrayBase
    element_type = i64
    expected = "an array<i64: ...>"

    def element_type_of(self, attr: Attribute) -> Attribute:
        assert isinstance(attr, DenseArrayBase)
        return attr.elt_type


class I64Property(TypedProperty[IntegerAttr]):
    """An integer: `groups = 1 : i64`."""

    base = IntegerAttr
    element_type = i64
    expected = "an i64 integer"


class F64Property(TypedProperty[FloatAttr]):
    """A float: `eps = 1.000000e-05 : f64`."""

    base = FloatAttr
    element_type = f64
    expected = "an f64 float"


class BoolProperty(TypedProperty[IntegerAttr]):
    """A bool (an i1 `IntegerAttr`): `ceil_mode = false`."""

    base = IntegerAttr
    element_type = i1
    expected = "a bool (true or false)"

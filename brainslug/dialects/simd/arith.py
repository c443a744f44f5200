"""The `simd` dialect's lane-wise operations: arithmetic, fused multiply-add, negation, math
functions, compares, select, int-to-float conversion and the lane reduction."""

from __future__ import annotations

from enum import auto
from typing import ClassVar

from xdsl.dialects.builtin import (
    IndexType,
    IntegerType,
    StringAttr,
    f32,
    i1,
)
from xdsl.ir import (
    Attribute,
    SSAValue,
)
from xdsl.irdl import (
    IRDLOperation,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import (
    Pure,
)
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from brainslug.dialects import loop
from brainslug.dialects.simd.base import VecType, lane_type, vec
from brainslug.dialects.str_enum_constraint import StrEnumConstraint


class _ElementwiseOp(IRDLOperation):
    """Lane-wise op: all operands and the result are `!simd.vec` of one element type."""

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_list(self.operands, printer.print_ssa_value)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser):
        ops = parser.parse_comma_separated_list(
            Parser.Delimiter.NONE, parser.parse_unresolved_operand
        )
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        t = parser.parse_type()
        op = cls(*[parser.resolve_operand(o, t) for o in ops])
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        for o in self.operands:
            if o.type != self.result.type:
                raise VerifyException(
                    f"{self.name}: operand type {o.type} differs from result type {self.result.type}"
                )


def _is_float_vec(t: Attribute) -> bool:
    return isinstance(t, VecType) and t.element_type == f32


def _is_int_vec(t: Attribute) -> bool:
    return isinstance(t, VecType) and isinstance(t.element_type, IndexType | IntegerType)


def _binary(op_name: str, cls_name: str, is_float: bool, doc: str) -> type[IRDLOperation]:
    class _Bin(_ElementwiseOp):
        name = op_name
        lhs = operand_def(VecType)
        rhs = operand_def(VecType)
        result = result_def(VecType)
        traits = traits_def(Pure())

        def __init__(self, lhs: SSAValue, rhs: SSAValue):
            super().__init__(operands=[lhs, rhs], result_types=[lhs.type])

        def verify_(self) -> None:
            super().verify_()
            ok = _is_float_vec if is_float else _is_int_vec
            if not ok(self.result.type):
                kind = "f32" if is_float else "integer/index"
                raise VerifyException(f"{self.name}: expects vectors of {kind}")

    _Bin.__name__ = _Bin.__qualname__ = cls_name
    _Bin.__doc__ = doc
    return irdl_op_definition(_Bin)


AddfOp = _binary("simd.addf", "AddfOp", True, "Lane-wise float addition.")
SubfOp = _binary("simd.subf", "SubfOp", True, "Lane-wise float subtraction.")
MulfOp = _binary("simd.mulf", "MulfOp", True, "Lane-wise float multiplication.")
DivfOp = _binary("simd.divf", "DivfOp", True, "Lane-wise float division.")
AddiOp = _binary("simd.addi", "AddiOp", False, "Lane-wise integer addition.")
SubiOp = _binary("simd.subi", "SubiOp", False, "Lane-wise integer subtraction.")
MuliOp = _binary("simd.muli", "MuliOp", False, "Lane-wise integer multiplication.")
DivsiOp = _binary("simd.divsi", "DivsiOp", False, "Lane-wise signed division (toward 0).")
FloordivsiOp = _binary("simd.floordivsi", "FloordivsiOp", False, "Lane-wise floor division.")
RemsiOp = _binary("simd.remsi", "RemsiOp", False, "Lane-wise signed remainder.")
MinsiOp = _binary("simd.minsi", "MinsiOp", False, "Lane-wise signed minimum.")
MaxsiOp = _binary("simd.maxsi", "MaxsiOp", False, "Lane-wise signed maximum.")
AndiOp = _binary("simd.andi", "AndiOp", False, "Lane-wise and (masks are vectors of i1).")
OriOp = _binary("simd.ori", "OriOp", False, "Lane-wise or.")


class _FloatOp(_ElementwiseOp):
    """A lane-wise op on vectors of f32 only."""

    def verify_(self) -> None:
        super().verify_()
        if not _is_float_vec(self.result.type):
            raise VerifyException(f"{self.name}: expects vectors of f32, got {self.result.type}")


@irdl_op_definition
class NegfOp(_FloatOp):
    """Lane-wise float negation."""

    name = "simd.negf"
    input = operand_def(VecType)
    result = result_def(VecType)
    traits = traits_def(Pure())

    def __init__(self, value: SSAValue):
        super().__init__(operands=[value], result_types=[value.type])


@irdl_op_definition
class FmaOp(_FloatOp):
    """Lane-wise fused multiply-add `a * b + c`, rounded once."""

    name = "simd.fma"
    a = operand_def(VecType)
    b = operand_def(VecType)
    c = operand_def(VecType)
    result = result_def(VecType)
    traits = traits_def(Pure())

    def __init__(self, a: SSAValue, b: SSAValue, c: SSAValue):
        super().__init__(operands=[a, b, c], result_types=[a.type])


class MathFunction(StrEnum):
    """The elementary functions of `simd.math`."""

    EXP = auto()
    LOG = auto()
    TANH = auto()
    ERF = auto()
    SQRT = auto()


@irdl_op_definition
class MathOp(IRDLOperation):
    """Lane-wise elementary function (`exp`, `log`, `tanh`, `erf`, `sqrt`)."""

    name = "simd.math"
    T: ClassVar = VarConstraint("T", base(VecType))
    fn = prop_def(StrEnumConstraint(MathFunction, "simd.math: unknown function '{value}'"))
    input = operand_def(T)
    result = result_def(T)
    traits = traits_def(Pure())
    assembly_format = "$fn $input attr-dict `:` type($result)"

    def __init__(self, fn: MathFunction | str, value: SSAValue):
        super().__init__(
            operands=[value], result_types=[value.type], properties={"fn": StringAttr(str(fn))}
        )

    @property
    def fn_name(self) -> MathFunction:
        return MathFunction(self.fn.data)

    def verify_(self) -> None:
        if not _is_float_vec(self.result.type):
            raise VerifyException("simd.math: expects vectors of f32")


class CmpfPredicate(StrEnum):
    """`simd.cmpf`'s predicates: those of `arith.cmpf`."""

    FALSE = auto()
    OEQ = auto()
    OGT = auto()
    OGE = auto()
    OLT = auto()
    OLE = auto()
    ONE = auto()
    ORD = auto()
    UEQ = auto()
    UGT = auto()
    UGE = auto()
    ULT = auto()
    ULE = auto()
    UNE = auto()
    UNO = auto()
    TRUE = auto()


class CmpiPredicate(StrEnum):
    """`simd.cmpi`'s predicates: those of `arith.cmpi`."""

    EQ = auto()
    NE = auto()
    SLT = auto()
    SLE = auto()
    SGT = auto()
    SGE = auto()
    ULT = auto()
    ULE = auto()
    UGT = auto()
    UGE = auto()


class _CmpOp(IRDLOperation):
    """Lane-wise comparison of two vectors of one type giving a mask."""

    lhs = operand_def(VecType)
    rhs = operand_def(VecType)
    result = result_def(VecType)
    traits = traits_def(Pure())

    def __init__(self, predicate: CmpfPredicate | CmpiPredicate | str, lhs: SSAValue, rhs: SSAValue):
        super().__init__(
            operands=[lhs, rhs],
            result_types=[vec(i1)],
            properties={"predicate": StringAttr(str(predicate))},
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(f' "{self.predicate.data}" ')
        printer.print_list((self.lhs, self.rhs), printer.print_ssa_value)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.lhs.type)

    @classmethod
    def parse(cls, parser: Parser):
        pred = parser.parse_str_literal()
        a = parser.parse_unresolved_operand()
        parser.parse_punctuation(",")
        b = parser.parse_unresolved_operand()
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        t = parser.parse_type()
        op = cls(pred, parser.resolve_operand(a, t), parser.resolve_operand(b, t))
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        if self.lhs.type != self.rhs.type:
            raise VerifyException(f"{self.name}: operands differ in type")


@irdl_op_definition
class CmpfOp(_CmpOp):
    """Lane-wise float comparison (arith.cmpf predicates) giving a mask."""

    name = "simd.cmpf"
    predicate = prop_def(
        StrEnumConstraint(CmpfPredicate, "simd.cmpf: unknown predicate '{value}'")
    )

    @property
    def predicate_name(self) -> CmpfPredicate:
        return CmpfPredicate(self.predicate.data)


@irdl_op_definition
class CmpiOp(_CmpOp):
    """Lane-wise integer comparison (arith.cmpi predicates) giving a mask."""

    name = "simd.cmpi"
    predicate = prop_def(
        StrEnumConstraint(CmpiPredicate, "simd.cmpi: unknown predicate '{value}'")
    )

    @property
    def predicate_name(self) -> CmpiPredicate:
        return CmpiPredicate(self.predicate.data)


@irdl_op_definition
class SelectOp(IRDLOperation):
    """Lane-wise `cond ? lhs : rhs`."""

    name = "simd.select"
    cond = operand_def(VecType)
    lhs = operand_def(VecType)
    rhs = operand_def(VecType)
    result = result_def(VecType)
    traits = traits_def(Pure())

    def __init__(self, cond: SSAValue, lhs: SSAValue, rhs: SSAValue):
        super().__init__(operands=[cond, lhs, rhs], result_types=[lhs.type])

    print = _ElementwiseOp.print

    @classmethod
    def parse(cls, parser: Parser) -> SelectOp:
        c = parser.parse_unresolved_operand()
        parser.parse_punctuation(",")
        a = parser.parse_unresolved_operand()
        parser.parse_punctuation(",")
        b = parser.parse_unresolved_operand()
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        t = parser.parse_type()
        op = cls(
            parser.resolve_operand(c, vec(i1)),
            parser.resolve_operand(a, t),
            parser.resolve_operand(b, t),
        )
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        if self.cond.type != vec(i1):
            raise VerifyException("simd.select: condition must be !simd.vec<i1>")
        if self.lhs.type != self.rhs.type or self.lhs.type != self.result.type:
            raise VerifyException("simd.select: both values must have the result type")


@irdl_op_definition
class SIToFPOp(IRDLOperation):
    """Lane-wise signed integer (or index) to f32."""

    name = "simd.sitofp"
    input = operand_def(VecType)
    result = result_def(VecType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, value: SSAValue):
        super().__init__(operands=[value], result_types=[vec(f32)])

    def verify_(self) -> None:
        if not _is_int_vec(self.input.type):
            raise VerifyException(
                f"simd.sitofp: converts integer or index lanes, got {self.input.type}"
            )
        if not _is_float_vec(self.result.type):
            raise VerifyException("simd.sitofp: the result is !simd.vec<f32>")


@irdl_op_definition
class ReduceOp(IRDLOperation):
    """Combines the active lanes of a vector into one scalar (`add` or `max`)."""

    name = "simd.reduce"
    kind = prop_def(StrEnumConstraint(loop.ReduceKind, "simd.reduce: unknown kind '{value}'"))
    input = operand_def(VecType)
    result = result_def()
    traits = traits_def(Pure())

    def __init__(self, kind: loop.ReduceKind | str, value: SSAValue):
        super().__init__(
            operands=[value],
            result_types=[lane_type(value.type)],
            properties={"kind": StringAttr(str(kind))},
        )

    @property
    def kind_name(self) -> loop.ReduceKind:
        return loop.ReduceKind(self.kind.data)

    def print(self, printer: Printer) -> None:
        printer.print_string(f' "{self.kind.data}" ')
        printer.print_ssa_value(self.input)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.input.type)

    @classmethod
    def parse(cls, parser: Parser) -> ReduceOp:
        kind = parser.parse_str_literal()
        v = parser.parse_unresolved_operand()
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        t = parser.parse_type()
        op = cls(kind, parser.resolve_operand(v, t))
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        if self.result.type != lane_type(self.input.type):
            raise VerifyException(
                f"simd.reduce: result must be the lane type {lane_type(self.input.type)}"
            )


BINARY_FLOAT = {"addf": AddfOp, "subf": SubfOp, "mulf": MulfOp, "divf": DivfOp}
BINARY_INT = {
    "addi": AddiOp,
    "subi": SubiOp,
    "muli": MuliOp,
    "divsi": DivsiOp,
    "floordivsi": FloordivsiOp,
    "remsi": RemsiOp,
    "minsi": MinsiOp,
    "maxsi": MaxsiOp,
    "andi": AndiOp,
    "ori": OriOp,
}

"""The `simd` dialect: a generic SIMD processor with W lanes.

W is not part of the IR: it is a target parameter bound by the backend
(16 or 8 lanes of AVX-512/AVX2 on x86, the threads of a block on CUDA).
`simd.loop` runs its body over a range in chunks of W lanes; the last chunk is
masked. Inside it, `!simd.vec<T>` values hold one element per lane, and every
memory access of lane l sees the loop's induction variable as `iv + l`.
Uniform (lane-invariant) values stay scalar and are broadcast by `simd.splat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import auto
from typing import ClassVar

from xdsl.dialects.builtin import (
    AffineMapAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    StringAttr,
    f32,
    i1,
    i64,
)
from xdsl.ir import (
    Attribute,
    Block,
    Dialect,
    Operation,
    ParametrizedAttribute,
    Region,
    SSAValue,
    TypeAttribute,
)
from xdsl.ir.affine import AffineMap
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    VarConstraint,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import (
    MemoryReadEffect,
    MemoryWriteEffect,
    Pure,
    RecursiveMemoryEffect,
    SingleBlockImplicitTerminator,
)
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from brainslug.dialects import loop
from brainslug.dialects.str_enum_constraint import StrEnumConstraint


@irdl_attr_definition
class VecType(ParametrizedAttribute, TypeAttribute):
    """`!simd.vec<T>`: one T per lane."""

    name = "simd.vec"
    element_type: Attribute

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_attribute(self.element_type)

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> tuple[Attribute]:
        with parser.in_angle_brackets():
            return (parser.parse_type(),)


def vec(t: Attribute) -> VecType:
    return VecType(t)


def lane_type(t: Attribute) -> Attribute:
    """Element type of a vector, or the type itself for a scalar."""
    return t.element_type if isinstance(t, VecType) else t


# --------------------------------------------------------------------------- the lane loop


class _LaneLoop(loop._DomainOp):
    """What the lane loops share: one dimension, W lanes at a time."""

    dyn_lower = var_operand_def(IndexType)
    dyn_upper = var_operand_def(IndexType)
    vectors = opt_prop_def(IntegerAttr)
    body = region_def("single_block")
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(
        SingleBlockImplicitTerminator(loop.YieldOp), loop.AcceptsLoopYield(), RecursiveMemoryEffect()
    )

    @property
    def iv(self) -> SSAValue:
        return self.body.block.args[0]

    @property
    def num_vectors(self) -> int:
        """Machine vectors per lane value (1 unless register-blocked)."""
        return 1 if self.vectors is None else self.vectors.value.data

    def verify_(self) -> None:
        super().verify_()
        if len(self.ivs) != 1:
            raise VerifyException(
                f"{self.name}: has exactly one induction variable, got {len(self.ivs)}"
            )
        if self.num_vectors < 1:
            raise VerifyException(f"{self.name}: vectors must be positive, got {self.num_vectors}")


@irdl_op_definition
class LoopOp(_LaneLoop):
    """Runs the body for every value of one dimension, W lanes at a time.

    With `vectors` V, a chunk is V*W lanes: every lane value of the body spans
    V machine vectors (a register block of V vectors, bound by the backend).
    """

    name = "simd.loop"

    def __init__(
        self,
        lower: loop.Bound,
        upper: loop.Bound,
        body: Region | None = None,
        vectors: int | None = None,
    ):
        ls, ld = loop.split_bounds([lower])
        us, ud = loop.split_bounds([upper])
        if body is None:
            body = Region(Block(arg_types=[IndexType()]))
        props: dict[str, Attribute] = {"lower": ls, "upper": us}
        if vectors is not None:
            props["vectors"] = IntegerAttr(vectors, i64)
        super().__init__(operands=[ld, ud], regions=[body], properties=props)

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        loop.print_domain(printer, self.ivs, self.lower_bounds(), self.upper_bounds())
        if self.vectors is not None:
            printer.print_string(f" vectors {self.num_vectors}")
        self.print_body(printer)

    @classmethod
    def parse(cls, parser: Parser) -> LoopOp:
        ivs, lower, upper = loop.parse_domain(parser)
        if len(ivs) != 1:
            parser.raise_error("simd.loop has exactly one induction variable")
        vectors = None
        if parser.parse_optional_keyword("vectors") is not None:
            vectors = parser.parse_integer(allow_boolean=False)
        attrs, body = cls.parse_body(parser, ivs)
        return cls(lower[0], upper[0], body, vectors).with_attributes(attrs)


@irdl_op_definition
class ReduceLoopOp(_LaneLoop):
    """A lane loop that reduces: over one dimension, W lanes at a time, it
    combines the vectors its body yields into one vector accumulator (lanes
    past the end keep theirs), then the accumulator's lanes into one scalar
    (`add` or `max`, as `loop.reduce`). A row reduction along a contiguous dim
    (layer norm, softmax) reads whole vectors instead of one element a step.
    """

    name = "simd.reduce_loop"
    kind = prop_def(StrEnumConstraint(loop.ReduceKind, "simd.reduce_loop: unknown kind '{value}'"))
    init = prop_def(FloatAttr)
    result = result_def()

    def __init__(self, kind: loop.ReduceKind | str, init: float, lower: loop.Bound,
                 upper: loop.Bound, body: Region | None = None):
        ls, ld = loop.split_bounds([lower])
        us, ud = loop.split_bounds([upper])
        if body is None:
            body = Region(Block(arg_types=[IndexType()]))
        IRDLOperation.__init__(
            self, operands=[ld, ud], regions=[body], result_types=[f32],
            properties={"lower": ls, "upper": us, "kind": StringAttr(str(kind)),
                        "init": FloatAttr(init, f32)})

    @property
    def kind_name(self) -> loop.ReduceKind:
        return loop.ReduceKind(self.kind.data)

    @property
    def init_value(self) -> float:
        return self.init.value.data

    def verify_(self) -> None:
        super().verify_()
        term = self.body.block.last_op
        if not isinstance(term, loop.YieldOp) or len(term.values) != 1 \
                or not isinstance(term.values[0].type, VecType):
            raise VerifyException("simd.reduce_loop: the body yields one !simd.vec value")

    def print(self, printer: Printer) -> None:
        printer.print_string(f" {self.kind.data} ")
        loop.print_domain(printer, self.ivs, self.lower_bounds(), self.upper_bounds())
        printer.print_string(" init ")
        printer.print_attribute(self.init)
        printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=False)  # the yield has a value

    @classmethod
    def parse(cls, parser: Parser) -> ReduceLoopOp:
        kind = parser.parse_identifier()
        ivs, lower, upper = loop.parse_domain(parser)
        if len(ivs) != 1:
            parser.raise_error("simd.reduce_loop has exactly one induction variable")
        parser.parse_keyword("init")
        init = parser.parse_attribute()
        if not isinstance(init, FloatAttr):
            parser.raise_error("expected a float attribute after 'init'")
        attrs, body = cls.parse_body(parser, ivs)
        return cls(kind, init.value.data, lower[0], upper[0], body).with_attributes(attrs)


LANE_LOOPS = (LoopOp, ReduceLoopOp)
"""The ops whose body runs W lanes at a time."""


def enclosing_loop(op: Operation) -> LoopOp | ReduceLoopOp | None:
    p = op.parent_op()
    while p is not None and not isinstance(p, LANE_LOOPS):
        p = p.parent_op()
    return p


# --------------------------------------------------------------------------- memory


def _verify_in_lane_loop(op: Operation) -> LoopOp | ReduceLoopOp:
    lp = enclosing_loop(op)
    if lp is None:
        raise VerifyException(f"{op.name} must be inside a simd.loop")
    return lp


@irdl_op_definition
class LoadOp(IRDLOperation):
    """Lane l loads `buffer[map(indices)]` with the lane loop's iv replaced by iv + l.

    Lanes past the loop's upper bound are inactive. With `pad`, out-of-bounds
    lanes yield `pad`.
    """

    name = "simd.load"
    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    map = prop_def(AffineMapAttr)
    pad = opt_prop_def(FloatAttr)
    result = result_def(VecType)
    traits = traits_def(MemoryReadEffect())

    def __init__(
        self,
        buffer: SSAValue,
        indices: Sequence[SSAValue],
        amap: AffineMap | None = None,
        pad: float | None = None,
    ):
        props: dict[str, Attribute] = {"map": loop.default_map(amap, len(indices))}
        if pad is not None:
            props["pad"] = FloatAttr(pad, f32)
        elem = buffer.type.element_type  # type: ignore[attr-defined]
        super().__init__(operands=[buffer, indices], result_types=[vec(elem)], properties=props)

    pad_value = loop.LoadOp.pad_value
    print = loop.LoadOp.print
    parse = classmethod(loop.LoadOp.parse.__func__)  # type: ignore[attr-defined]

    def verify_(self) -> None:
        _verify_in_lane_loop(self)
        loop.verify_access(self, self.buffer.type.get_num_dims(), self.indices, self.map.data)
        if self.result.type != vec(self.buffer.type.element_type):
            raise VerifyException(
                f"simd.load: result {self.result.type} does not hold the buffer's "
                f"{self.buffer.type.element_type} elements"
            )


def _uses_lane(op: IRDLOperation, lane: SSAValue) -> bool:
    used = op.map.data.used_dims()
    return any(k in used for k, i in enumerate(op.indices) if i is lane)


@irdl_op_definition
class StoreOp(IRDLOperation):
    """Lane l stores its element to `buffer[map(indices)]` with iv replaced by iv + l."""

    name = "simd.store"
    value = operand_def(VecType)
    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    map = prop_def(AffineMapAttr)
    traits = traits_def(MemoryWriteEffect())

    def __init__(
        self,
        value: SSAValue,
        buffer: SSAValue,
        indices: Sequence[SSAValue],
        amap: AffineMap | None = None,
    ):
        super().__init__(
            operands=[value, buffer, indices],
            properties={"map": loop.default_map(amap, len(indices))},
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_ssa_value(self.value)
        printer.print_string(", ")
        loop.print_access(printer, self.buffer, self.indices, self.map.data)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.buffer.type)

    @classmethod
    def parse(cls, parser: Parser) -> StoreOp:
        val = parser.parse_unresolved_operand()
        parser.parse_punctuation(",")
        base, idx, amap = loop.parse_access(parser)
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        bt = parser.parse_type()
        elem = bt.element_type if isinstance(bt, MemRefType) else f32
        op = cls(parser.resolve_operand(val, vec(elem)), parser.resolve_operand(base, bt), idx, amap)
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        lp = _verify_in_lane_loop(self)
        loop.verify_access(self, self.buffer.type.get_num_dims(), self.indices, self.map.data)
        if not _uses_lane(self, lp.iv):
            raise VerifyException(
                "simd.store: the map must use the lane loop's iv (lanes would collide)"
            )
        if self.value.type != vec(self.buffer.type.element_type):
            raise VerifyException(
                f"simd.store: value {self.value.type} does not hold the buffer's "
                f"{self.buffer.type.element_type} elements"
            )


@irdl_op_definition
class InBoundsOp(IRDLOperation):
    """Per-lane `loop.in_bounds`: lane l checks the point with iv replaced by iv + l."""

    name = "simd.in_bounds"
    dyn_extents = var_operand_def(IndexType)
    indices = var_operand_def(IndexType)
    extents = prop_def(loop.DenseArrayBase)
    map = prop_def(AffineMapAttr)
    result = result_def(VecType)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure())

    def __init__(self, extents: Sequence[loop.Bound], indices: Sequence[SSAValue], amap: AffineMap):
        es, ed = loop.split_bounds(extents)
        super().__init__(
            operands=[ed, indices],
            result_types=[vec(i1)],
            properties={"extents": es, "map": AffineMapAttr(amap)},
        )

    def extent_bounds(self) -> list[loop.Bound]:
        return loop.merge_bounds(self.extents, self.dyn_extents)

    print = loop.InBoundsOp.print
    parse = classmethod(loop.InBoundsOp.parse.__func__)  # type: ignore[attr-defined]

    def verify_(self) -> None:
        _verify_in_lane_loop(self)
        loop.verify_access(self, len(self.extents.get_values()), self.indices, self.map.data)


# --------------------------------------------------------------------------- lane values


@irdl_op_definition
class SplatOp(IRDLOperation):
    """Broadcasts a scalar to every lane."""

    name = "simd.splat"
    input = operand_def()
    result = result_def(VecType)
    traits = traits_def(Pure())

    def __init__(self, value: SSAValue):
        super().__init__(operands=[value], result_types=[vec(value.type)])

    @classmethod
    def parse(cls, parser: Parser) -> SplatOp:
        v = parser.parse_unresolved_operand()
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        t = parser.parse_type()
        op = cls(parser.resolve_operand(v, t))
        op.attributes |= attrs
        return op

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_ssa_value(self.input)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.input.type)

    def verify_(self) -> None:
        if isinstance(self.input.type, VecType):
            raise VerifyException("simd.splat: broadcasts a scalar, got a vector")
        if self.result.type != vec(self.input.type):
            raise VerifyException(f"simd.splat: result must be {vec(self.input.type)}")


@irdl_op_definition
class IotaOp(IRDLOperation):
    """Lane l holds `base + l` (the per-lane value of the lane loop's iv)."""

    name = "simd.iota"
    base = operand_def(IndexType)
    result = result_def(VecType)
    assembly_format = "$base attr-dict `:` type($result)"
    traits = traits_def(Pure())

    def __init__(self, base: SSAValue):
        super().__init__(operands=[base], result_types=[vec(IndexType())])

    def verify_(self) -> None:
        if self.result.type != vec(IndexType()):
            raise VerifyException("simd.iota: lanes are index values, the result is !simd.vec<index>")


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


@irdl_op_definition
class NegfOp(_ElementwiseOp):
    """Lane-wise float negation."""

    name = "simd.negf"
    input = operand_def(VecType)
    result = result_def(VecType)
    traits = traits_def(Pure())

    def __init__(self, value: SSAValue):
        super().__init__(operands=[value], result_types=[value.type])

    def verify_(self) -> None:
        super().verify_()
        if not _is_float_vec(self.result.type):
            raise VerifyException(f"simd.negf: expects vectors of f32, got {self.result.type}")


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

SIMD = Dialect(
    "simd",
    [
        LoopOp,
        ReduceLoopOp,
        LoadOp,
        StoreOp,
        InBoundsOp,
        SplatOp,
        IotaOp,
        NegfOp,
        MathOp,
        CmpfOp,
        CmpiOp,
        SelectOp,
        SIToFPOp,
        ReduceOp,
        *BINARY_FLOAT.values(),
        *BINARY_INT.values(),
    ],
    [VecType],
)

"""The `simd` dialect's vector type, lane loops, memory accesses, `simd.splat`
and `simd.iota`."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import arith
from xdsl.dialects.builtin import (
    AffineMapAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    StringAttr,
    f32,
    i1,
    i64,
)
from xdsl.ir import (
    Attribute,
    Block,
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
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
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
    """Lane l stores its element to `buffer[map(indices)]` with iv replaced by iv + l.

    With `guard` (an i1), nothing is stored where it is false: a register
    block's column clamped to the last point recomputes that point, and must
    not write it again (its output may share a buffer with an input that the
    first write has consumed: an in-place residual add).
    """

    name = "simd.store"
    value = operand_def(VecType)
    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    guard = opt_operand_def(i1)
    map = prop_def(AffineMapAttr)
    traits = traits_def(MemoryWriteEffect())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def __init__(
        self,
        value: SSAValue,
        buffer: SSAValue,
        indices: Sequence[SSAValue],
        amap: AffineMap | None = None,
        guard: SSAValue | None = None,
    ):
        super().__init__(
            operands=[value, buffer, indices, [] if guard is None else [guard]],
            properties={"map": loop.default_map(amap, len(indices))},
        )

    def guarded_by(self, guard: SSAValue) -> tuple[list[Operation], StoreOp]:
        """This store where `guard` also holds: the ops to insert in its place
        (an `arith.andi` with its own guard, if it has one) and the new store."""
        ops: list[Operation] = []
        if self.guard is not None:
            both = arith.AndIOp(self.guard, guard)
            ops.append(both)
            guard = both.result
        new = StoreOp(self.value, self.buffer, self.indices, self.map.data, guard)
        new.attributes |= self.attributes
        return ops, new

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_ssa_value(self.value)
        printer.print_string(", ")
        loop.print_access(printer, self.buffer, self.indices, self.map.data)
        if self.guard is not None:
            printer.print_string(" if ")
            printer.print_ssa_value(self.guard)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.buffer.type)

    @classmethod
    def parse(cls, parser: Parser) -> StoreOp:
        val = parser.parse_unresolved_operand()
        parser.parse_punctuation(",")
        base, idx, amap = loop.parse_access(parser)
        guard = None
        if parser.parse_optional_keyword("if"):
            guard = parser.resolve_operand(parser.parse_unresolved_operand(), i1)
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        bt = parser.parse_type()
        elem = bt.element_type if isinstance(bt, MemRefType) else f32
        op = cls(parser.resolve_operand(val, vec(elem)), parser.resolve_operand(base, bt), idx,
                 amap, guard)
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
class PrefetchOp(IRDLOperation):
    """A hint: the cache lines that a `simd.load` of `buffer[map(indices)]`
    would read are fetched towards the core (`locality` 3: L1, 2: L2, 1: L3,
    as LLVM's `llvm.prefetch`). It reads nothing into the program and never
    faults, so its point may lie past the buffer's end."""

    name = "simd.prefetch"
    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    map = prop_def(AffineMapAttr)
    locality = prop_def(IntegerAttr)
    traits = traits_def(MemoryReadEffect())

    def __init__(self, buffer: SSAValue, indices: Sequence[SSAValue],
                 amap: AffineMap | None = None, locality: int = 2):
        super().__init__(operands=[buffer, indices], properties={
            "map": loop.default_map(amap, len(indices)),
            "locality": IntegerAttr(locality, i64)})

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        loop.print_access(printer, self.buffer, self.indices, self.map.data)
        printer.print_string(f" locality {self.locality.value.data}")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.buffer.type)

    @classmethod
    def parse(cls, parser: Parser) -> PrefetchOp:
        base, idx, amap = loop.parse_access(parser)
        parser.parse_keyword("locality")
        locality = parser.parse_integer()
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        bt = parser.parse_type()
        op = cls(parser.resolve_operand(base, bt), idx, amap, locality)
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        _verify_in_lane_loop(self)
        loop.verify_access(self, self.buffer.type.get_num_dims(), self.indices, self.map.data)
        if not 0 <= self.locality.value.data <= 3:
            raise VerifyException(
                f"simd.prefetch: locality {self.locality.value.data} is not 0 to 3")


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

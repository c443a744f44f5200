"""The `loop` dialect: buffers and loop nests with affine index maps.

A `loop.nest` is the output domain of one or more stores. Its body computes the
value of one point of the domain: scalar `arith`/`math` ops, `loop.load`s through
affine maps of the induction variables, `loop.reduce` regions for windows and
reductions, and `loop.store`s. Every nest dimension is parallel; windows and
reductions live in `loop.reduce`.

Bounds are a mix of static integers and `index` SSA values (dynamic extents such
as the batch). Kernels are `func.func`s with memref arguments marked `bs.kernel`
(`loop_kernels`); the graph function calls them through `loop.launch` on tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import auto
from typing import Self

from xdsl.dialects.builtin import (
    AffineMapAttr,
    DenseArrayBase,
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    f32,
    i1,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.ir.affine import AffineMap
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import (
    IsTerminator,
    MemoryReadEffect,
    MemoryWriteEffect,
    OpTrait,
    Pure,
    RecursiveMemoryEffect,
    SingleBlockImplicitTerminator,
    ensure_terminator,
)
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from brainslug.dialects.loop_kernels import GpuLaunchAttr, KernelInfoOp, PiecesOp
from brainslug.dialects.loop_syntax import (  # noqa: F401 (also used as loop.*)
    DYNAMIC,
    Bound,
    merge_bounds,
    parse_access,
    parse_bound,
    parse_domain,
    print_access,
    print_bound,
    print_domain,
    resolve_bounds,
    split_bounds,
    verify_access,
)
from brainslug.dialects.str_enum_constraint import StrEnumConstraint

# --------------------------------------------------------------------------- helpers


def _verify_domain(op: Operation, ivs, lower, upper) -> None:
    if not (len(ivs) == len(lower) == len(upper)):
        raise VerifyException(f"{op.name}: {len(ivs)} ivs but {len(lower)}/{len(upper)} bounds")
    for a in ivs:
        if not isinstance(a.type, IndexType):
            raise VerifyException(f"{op.name}: induction variables must be index")
    for lb, ub in zip(lower, upper, strict=True):
        if isinstance(lb, int) and isinstance(ub, int) and lb > ub:
            raise VerifyException(f"{op.name}: empty or negative range {lb} to {ub}")


# --------------------------------------------------------------------------- traits


class AcceptsLoopYield(OpTrait):
    """The op's body ends in `loop.yield`, which accepts it as parent.

    Ops of other dialects (`simd.loop`) carry it, so `loop` need not know them.
    """


def _loop_yield_parents(cls: type[Operation] = IRDLOperation) -> Iterator[type[Operation]]:
    """The defined ops (subclasses of `cls`) that carry `AcceptsLoopYield`."""
    for sub in cls.__subclasses__():
        if "name" in vars(sub) and sub.has_trait(AcceptsLoopYield):
            yield sub
        yield from _loop_yield_parents(sub)


class HasLoopYieldParent(OpTrait):
    """`loop.yield`'s parent check: the parent op carries `AcceptsLoopYield`."""

    def verify(self, op: Operation) -> None:
        parent = op.parent_op()
        if parent is None or parent.has_trait(AcceptsLoopYield):
            return
        names = ", ".join(f"'{p.name}'" for p in _loop_yield_parents())
        raise VerifyException(f"'{op.name}' expects parent op to be one of {names}")


# --------------------------------------------------------------------------- ops


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminator of `loop.nest`, `loop.tile` (no values) and `loop.reduce` (one value)."""

    name = "loop.yield"
    values = var_operand_def()
    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = traits_def(IsTerminator(), Pure(), HasLoopYieldParent())

    def __init__(self, *values: SSAValue | Operation):
        super().__init__(operands=[values])


class _DomainOp(IRDLOperation):
    """Shared accessors, syntax and checks of ops with an iteration domain."""

    lower = prop_def(DenseArrayBase)
    upper = prop_def(DenseArrayBase)

    @property
    def ivs(self) -> tuple[SSAValue, ...]:
        return tuple(self.body.block.args)

    def lower_bounds(self) -> list[Bound]:
        return merge_bounds(self.lower, self.dyn_lower)

    def upper_bounds(self) -> list[Bound]:
        return merge_bounds(self.upper, self.dyn_upper)

    def print_body(self, printer: Printer) -> None:
        """` attributes {...} {...}`; an implicit terminator is not printed."""
        printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(
            self.body,
            print_entry_block_args=False,
            print_block_terminators=not self.has_trait(SingleBlockImplicitTerminator),
        )

    @staticmethod
    def parse_body(parser: Parser, ivs: Sequence[Parser.Argument]) -> tuple[dict, Region]:
        """The attributes and the body that `print_body` prints."""
        attrs = parser.parse_optional_attr_dict_with_keyword()
        return ({} if attrs is None else attrs.data), parser.parse_region(ivs)

    def with_attributes(self, attrs: dict[str, Attribute]) -> Self:
        """Adds `attrs` and, where it is implicit, the terminator."""
        self.attributes |= attrs
        for t in self.get_traits_of_type(SingleBlockImplicitTerminator):
            ensure_terminator(self, t)
        return self

    def verify_(self) -> None:
        _verify_domain(self, self.ivs, self.lower_bounds(), self.upper_bounds())


class _LoopOp(_DomainOp):
    """Shared parts of `loop.nest` and `loop.tile`: a body that yields nothing
    and `parallel`, the number of outer dimensions split across threads (x86)
    or the grid (CUDA), set by bs-parallelize."""

    dyn_lower = var_operand_def(IndexType)
    dyn_upper = var_operand_def(IndexType)
    parallel = opt_prop_def(IntegerAttr)
    body = region_def("single_block")
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(
        SingleBlockImplicitTerminator(YieldOp), AcceptsLoopYield(), RecursiveMemoryEffect()
    )

    @property
    def num_parallel(self) -> int:
        return 0 if self.parallel is None else self.parallel.value.data

    def print_domain(self, printer: Printer) -> None:
        """` parallel N (%i, %j) = (0, 0) to (%n, 13)`"""
        if self.num_parallel:
            printer.print_string(f" parallel {self.num_parallel}")
        printer.print_string(" ")
        print_domain(printer, self.ivs, self.lower_bounds(), self.upper_bounds())

    @staticmethod
    def parse_domain(parser: Parser):
        """`parallel` (None when absent), then what `parse_domain` returns."""
        parallel = None
        if parser.parse_optional_keyword("parallel"):
            parallel = parser.parse_integer(allow_boolean=False)
        return parallel, *parse_domain(parser)

    def verify_loop(self) -> None:
        if self.num_parallel < 0 or self.num_parallel > len(self.ivs):
            raise VerifyException(
                f"{self.name}: parallel {self.num_parallel} out of range for {len(self.ivs)} dims"
            )
        term = self.body.block.last_op
        if isinstance(term, YieldOp) and term.values:
            raise VerifyException(f"{self.name}: its loop.yield takes no values")


def _domain_props(lower: Sequence[Bound], upper: Sequence[Bound], parallel: int | None):
    """The `lower`/`upper` (and `parallel`) properties and the dynamic bounds."""
    ls, ld = split_bounds(lower)
    us, ud = split_bounds(upper)
    props: dict[str, Attribute] = {"lower": ls, "upper": us}
    if parallel is not None:
        props["parallel"] = IntegerAttr(parallel, i64)
    return props, [ld, ud]


def _new_body(rank: int, body: Region | None) -> Region:
    return body if body is not None else Region(Block(arg_types=[IndexType()] * rank))


@irdl_op_definition
class NestOp(_LoopOp):
    """A perfect nest of parallel loops over a box domain."""

    name = "loop.nest"

    def __init__(
        self,
        lower: Sequence[Bound],
        upper: Sequence[Bound],
        body: Region | None = None,
        parallel: int | None = None,
    ):
        props, operands = _domain_props(lower, upper, parallel)
        super().__init__(
            operands=operands, regions=[_new_body(len(lower), body)], properties=props
        )

    def print(self, printer: Printer) -> None:
        self.print_domain(printer)
        self.print_body(printer)

    @classmethod
    def parse(cls, parser: Parser) -> NestOp:
        parallel, ivs, lower, upper = cls.parse_domain(parser)
        attrs, body = cls.parse_body(parser, ivs)
        return cls(lower, upper, body, parallel).with_attributes(attrs)

    def verify_(self) -> None:
        super().verify_()
        self.verify_loop()


class ItemCount(StrEnum):
    """When a `loop.tile` with `items` runs: its first dim (the batch) has
    fewer points than the threads that run it (`few`), or at least as many
    (`many`)."""

    FEW = auto()
    MANY = auto()


@irdl_op_definition
class TileOp(_LoopOp):
    """Depth-first tile loop: each tile runs every op of the body on its block.

    `step` gives the tile size per dimension; the body's nests are bounded by the
    tile ivs. Scratch buffers for intermediate results are `memref.alloca`s in
    the body, sized for one tile. With `items few` (`many`) the tile loop runs
    only when its first dim has fewer points than threads run it (at least as
    many), and does nothing otherwise: two tilings of one chain, one cutting a
    batch item into tiles so that the threads share it, one taking items whole
    (no halo recomputed), of which each call runs one.
    """

    name = "loop.tile"
    step = prop_def(DenseArrayBase)
    items = opt_prop_def(
        StrEnumConstraint(ItemCount, "loop.tile: unknown items '{value}', expected one of {members}")
    )

    def __init__(
        self,
        lower: Sequence[Bound],
        upper: Sequence[Bound],
        step: Sequence[int],
        body: Region | None = None,
        parallel: int | None = None,
        items: ItemCount | str | None = None,
    ):
        props, operands = _domain_props(lower, upper, None)
        props["step"] = DenseArrayBase.from_list(i64, list(step))
        if parallel is not None:
            props["parallel"] = IntegerAttr(parallel, i64)
        if items is not None:
            props["items"] = StringAttr(str(items))
        super().__init__(
            operands=operands, regions=[_new_body(len(lower), body)], properties=props
        )

    @property
    def steps(self) -> tuple[int, ...]:
        return self.step.get_values()

    @property
    def item_count(self) -> ItemCount | None:
        return None if self.items is None else ItemCount(self.items.data)

    def print(self, printer: Printer) -> None:
        self.print_domain(printer)
        printer.print_string(" step (")
        printer.print_list(self.steps, lambda s: printer.print_string(str(s)))
        printer.print_string(")")
        if self.items is not None:
            printer.print_string(f" items {self.items.data}")
        self.print_body(printer)

    @classmethod
    def parse(cls, parser: Parser) -> TileOp:
        parallel, ivs, lower, upper = cls.parse_domain(parser)
        parser.parse_keyword("step")
        step = parser.parse_comma_separated_list(
            Parser.Delimiter.PAREN, lambda: parser.parse_integer(allow_boolean=False)
        )
        items = parser.parse_identifier() if parser.parse_optional_keyword("items") else None
        attrs, body = cls.parse_body(parser, ivs)
        return cls(lower, upper, step, body, parallel, items).with_attributes(attrs)

    def verify_(self) -> None:
        super().verify_()
        if len(self.steps) != len(self.ivs) or any(s < 1 for s in self.steps):
            raise VerifyException("loop.tile: needs one positive step per dimension")
        if self.items is not None and not self.ivs:
            raise VerifyException("loop.tile: items needs a first dim to count")
        self.verify_loop()


LANE_ORDER = "bs.lane_order"
"""Attribute of a `loop.reduce` (kept by the `simd.reduce_loop` it vectorizes
into) saying how a vector accumulator's lanes combine into one value: in lane
order without it; with `HALVES`, lane i with lane i + W/2, then i + W/4, ...,
as PyTorch's `vec_reduce_all` does (its softmax sums a row so). A row shorter
than W sums in lane order either way, as PyTorch's does."""

HALVES = "halves"


class ReduceKind(StrEnum):
    """How `loop.reduce` and `simd.reduce` combine values."""

    ADD = auto()
    MAX = auto()


MAX_UNROLLED_STEPS = 64
"""Most steps a `loop.reduce` unrolls (`unroll`)."""


@irdl_op_definition
class ReduceOp(_DomainOp):
    """Combines the values its body yields over a box of window/reduction ivs.

    `max` follows the frameworks' NaN rule: a NaN anywhere in the window wins.
    Each result is f32, or a `!simd.vec<f32>` after vectorization. Several
    results are independent accumulators over one domain (a register tile);
    the body yields one value per result. `contract` lets an `add` whose
    yielded value is a product accumulate it with one fused multiply-add (one
    rounding instead of two, as the libraries' convolutions do). `unroll k`
    asks the lowering for straight-line code over the dims from `k` on (a
    window's taps along a row: neighbouring columns then share their loads);
    the order of the steps is unchanged.
    """

    name = "loop.reduce"
    dyn_lower = var_operand_def(IndexType)
    dyn_upper = var_operand_def(IndexType)
    kind = prop_def(
        StrEnumConstraint(
            ReduceKind, "loop.reduce: unknown kind '{value}', expected one of {members}"
        )
    )
    init = prop_def(FloatAttr)
    contract = opt_prop_def(UnitAttr)
    unroll = opt_prop_def(IntegerAttr[IndexType])
    accumulators = var_result_def()
    body = region_def("single_block")
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(AcceptsLoopYield(), RecursiveMemoryEffect())

    def __init__(
        self,
        kind: ReduceKind | str,
        init: float,
        lower: Sequence[Bound],
        upper: Sequence[Bound],
        body: Region | None = None,
        result_type: Attribute | Sequence[Attribute] = f32,
        contract: bool = False,
        unroll: int | None = None,
    ):
        props, operands = _domain_props(lower, upper, None)
        props["kind"] = StringAttr(str(kind))
        props["init"] = FloatAttr(init, f32)
        if contract:
            props["contract"] = UnitAttr()
        if unroll is not None:
            props["unroll"] = IntegerAttr(unroll, IndexType())
        types = [result_type] if isinstance(result_type, Attribute) else list(result_type)
        super().__init__(
            operands=operands,
            regions=[_new_body(len(lower), body)],
            result_types=[types],
            properties=props,
        )

    @property
    def result(self) -> SSAValue:
        """The accumulator of a single-result reduce."""
        if len(self.accumulators) != 1:
            raise ValueError(f"loop.reduce has {len(self.accumulators)} results, not one")
        return self.accumulators[0]

    @property
    def kind_name(self) -> ReduceKind:
        return ReduceKind(self.kind.data)

    @property
    def init_value(self) -> float:
        return self.init.value.data

    @property
    def contracts(self) -> bool:
        return self.contract is not None

    @property
    def unrolled_from(self) -> int | None:
        """The first of the dims the lowering unrolls, if any."""
        return None if self.unroll is None else self.unroll.value.data

    def print(self, printer: Printer) -> None:
        printer.print_string(f" {self.kind.data} ")
        if self.contracts:
            printer.print_string("contract ")
        if self.unroll is not None:
            printer.print_string(f"unroll {self.unroll.value.data} ")
        print_domain(printer, self.ivs, self.lower_bounds(), self.upper_bounds())
        printer.print_string(" init ")
        printer.print_attribute(self.init)
        printer.print_string(" -> ")
        printer.print_list(self.accumulators, lambda r: printer.print_attribute(r.type))
        self.print_body(printer)

    @classmethod
    def parse(cls, parser: Parser) -> ReduceOp:
        kind = parser.parse_identifier()
        contract = parser.parse_optional_keyword("contract") is not None
        unroll = None
        if parser.parse_optional_keyword("unroll") is not None:
            unroll = parser.parse_integer(allow_boolean=False, allow_negative=False)
        ivs, lower, upper = parse_domain(parser)
        parser.parse_keyword("init")
        init = parser.parse_attribute()
        if not isinstance(init, FloatAttr):
            parser.raise_error("expected a float attribute after 'init'")
        parser.parse_punctuation("->")
        types = [parser.parse_type()]
        while parser.parse_optional_punctuation(",") is not None:
            types.append(parser.parse_type())
        attrs, body = cls.parse_body(parser, ivs)
        op = cls(kind, init.value.data, lower, upper, body, types, contract, unroll)
        return op.with_attributes(attrs)

    def verify_(self) -> None:
        super().verify_()
        if not self.accumulators:
            raise VerifyException("loop.reduce: needs at least one result")
        for r in self.accumulators:
            elem = getattr(r.type, "element_type", r.type)
            if elem != f32:
                raise VerifyException(f"loop.reduce: reduces f32 values, got {r.type}")
        if self.contracts and self.kind_name != ReduceKind.ADD:
            raise VerifyException("loop.reduce: only an add reduction contracts")
        if (first := self.unrolled_from) is not None:
            lower, upper = self.lower_bounds(), self.upper_bounds()
            if first >= len(lower):
                raise VerifyException(
                    f"loop.reduce: unroll {first} names no dim of its {len(lower)}")
            steps = 1
            for lb, ub in zip(lower[first:], upper[first:], strict=True):
                if not isinstance(lb, int) or not isinstance(ub, int):
                    raise VerifyException(
                        "loop.reduce: the dims it unrolls need static bounds")
                steps *= max(0, ub - lb)
            if steps > MAX_UNROLLED_STEPS:
                raise VerifyException(
                    f"loop.reduce: unrolls {steps} steps, at most {MAX_UNROLLED_STEPS}")
        term = self.body.block.last_op
        n = len(self.accumulators)
        if not isinstance(term, YieldOp) or len(term.values) != n:
            raise VerifyException(
                "loop.reduce: body must end in loop.yield of "
                + ("one value" if n == 1 else f"{n} values")
            )
        for v, r in zip(term.values, self.accumulators, strict=True):
            if v.type != r.type:
                raise VerifyException(
                    f"loop.reduce: body yields {v.type} but the result is {r.type}"
                )


class _AccessOp(IRDLOperation):
    """Shared verification of buffer accesses through an affine map."""

    def verify_(self) -> None:
        bt: MemRefType = self.buffer.type  # type: ignore[attr-defined]
        verify_access(self, bt.get_num_dims(), self.indices, self.map.data)
        value = self.result if isinstance(self, LoadOp) else self.value  # type: ignore[attr-defined]
        if value.type != bt.element_type:
            what = "result" if isinstance(self, LoadOp) else "value"
            raise VerifyException(
                f"{self.name}: {what} type {value.type} differs from the buffer's "
                f"{bt.element_type}"
            )


def default_map(amap: AffineMap | None, n: int) -> AffineMapAttr:
    """`amap`, or the identity map of `n` dims when it is None."""
    return AffineMapAttr(amap if amap is not None else AffineMap.identity(n))


@irdl_op_definition
class LoadOp(_AccessOp):
    """`buffer[map(indices)]`; with `pad`, an out-of-bounds access yields `pad`."""

    name = "loop.load"
    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    map = prop_def(AffineMapAttr)
    pad = opt_prop_def(FloatAttr)
    result = result_def()
    traits = traits_def(MemoryReadEffect())

    def __init__(
        self,
        buffer: SSAValue,
        indices: Sequence[SSAValue],
        amap: AffineMap | None = None,
        pad: float | None = None,
    ):
        props: dict[str, Attribute] = {"map": default_map(amap, len(indices))}
        if pad is not None:
            props["pad"] = FloatAttr(pad, f32)
        elem = buffer.type.element_type  # type: ignore[attr-defined]
        super().__init__(operands=[buffer, indices], result_types=[elem], properties=props)

    @property
    def pad_value(self) -> float | None:
        return None if self.pad is None else self.pad.value.data

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        print_access(printer, self.buffer, self.indices, self.map.data)
        if self.pad is not None:
            printer.print_string(" pad ")
            printer.print_attribute(self.pad)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.buffer.type)

    @classmethod
    def parse(cls, parser: Parser) -> LoadOp:
        base, idx, amap = parse_access(parser)
        pad = None
        if parser.parse_optional_keyword("pad"):
            pa = parser.parse_attribute()
            if not isinstance(pa, FloatAttr):
                parser.raise_error("expected a float attribute after 'pad'")
            pad = pa.value.data
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        bt = parser.parse_type()
        op = cls(parser.resolve_operand(base, bt), idx, amap, pad)
        op.attributes |= attrs
        return op


@irdl_op_definition
class StoreOp(_AccessOp):
    """`buffer[map(indices)] = value`."""

    name = "loop.store"
    value = operand_def()
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
            properties={"map": default_map(amap, len(indices))},
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_ssa_value(self.value)
        printer.print_string(", ")
        print_access(printer, self.buffer, self.indices, self.map.data)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.value.type)
        printer.print_string(", ")
        printer.print_attribute(self.buffer.type)

    @classmethod
    def parse(cls, parser: Parser) -> StoreOp:
        val = parser.parse_unresolved_operand()
        parser.parse_punctuation(",")
        base, idx, amap = parse_access(parser)
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        vt = parser.parse_type()
        parser.parse_punctuation(",")
        bt = parser.parse_type()
        op = cls(parser.resolve_operand(val, vt), parser.resolve_operand(base, bt), idx, amap)
        op.attributes |= attrs
        return op


@irdl_op_definition
class InBoundsOp(IRDLOperation):
    """True when `map(indices)` lies inside a box of the given extents.

    It keeps the padding rule of a windowed load after its producer was inlined
    (the intermediate buffer is gone, its extents remain).
    """

    name = "loop.in_bounds"
    dyn_extents = var_operand_def(IndexType)
    indices = var_operand_def(IndexType)
    extents = prop_def(DenseArrayBase)
    map = prop_def(AffineMapAttr)
    result = result_def(i1)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure())

    def __init__(self, extents: Sequence[Bound], indices: Sequence[SSAValue], amap: AffineMap):
        es, ed = split_bounds(extents)
        super().__init__(
            operands=[ed, indices],
            result_types=[i1],
            properties={"extents": es, "map": AffineMapAttr(amap)},
        )

    def extent_bounds(self) -> list[Bound]:
        return merge_bounds(self.extents, self.dyn_extents)

    def print(self, printer: Printer) -> None:
        printer.print_string(" [")
        printer.print_list(self.indices, printer.print_ssa_value)
        printer.print_string("] map ")
        printer.print_attribute(self.map)
        printer.print_string(" within (")
        printer.print_list(self.extent_bounds(), lambda b: print_bound(printer, b))
        printer.print_string(")")
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> InBoundsOp:
        idx = parser.parse_comma_separated_list(
            Parser.Delimiter.SQUARE, parser.parse_unresolved_operand
        )
        parser.parse_keyword("map")
        amap = parser.parse_attribute()
        if not isinstance(amap, AffineMapAttr):
            parser.raise_error("expected an affine_map")
        parser.parse_keyword("within")
        ext = parser.parse_comma_separated_list(Parser.Delimiter.PAREN, lambda: parse_bound(parser))
        attrs = parser.parse_optional_attr_dict()
        op = cls(
            resolve_bounds(parser, ext),
            [parser.resolve_operand(i, IndexType()) for i in idx],
            amap.data,
        )
        op.attributes |= attrs
        return op

    def verify_(self) -> None:
        verify_access(self, len(self.extents.get_values()), self.indices, self.map.data)


@irdl_op_definition
class LaunchOp(IRDLOperation):
    """Runs kernel `callee` on tensors: its memref arguments are the operands
    followed by one fresh buffer per result (destination passing)."""

    name = "loop.launch"
    callee = prop_def(SymbolRefAttr)
    args = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$callee `(` $args `)` attr-dict `:` functional-type($args, $outputs)"

    def __init__(
        self,
        callee: str,
        args: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        attributes: dict[str, Attribute] | None = None,
    ):
        super().__init__(
            operands=[args],
            result_types=[result_types],
            properties={"callee": SymbolRefAttr(callee)},
            attributes=attributes or {},
        )

    @property
    def callee_name(self) -> str:
        return self.callee.root_reference.data


Loop = Dialect(
    "loop",
    [NestOp, TileOp, ReduceOp, LoadOp, StoreOp, InBoundsOp, YieldOp, LaunchOp, KernelInfoOp,
     PiecesOp],
    [GpuLaunchAttr],
)

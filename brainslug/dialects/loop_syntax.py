"""The `loop` dialect's custom syntax and access checks: bounds (static or SSA),
domains `(%i) = (0) to (%n)`, and buffer accesses `%buf[%i] map ...`; shared
with the `simd` dialect's ops."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import AffineMapAttr, DenseArrayBase, IndexType, i64
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap
from xdsl.parser import Parser, UnresolvedOperand
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

DYNAMIC = -(2**63)
"""Marks a bound that is given by an SSA operand instead of a constant."""

Bound = int | SSAValue


def split_bounds(bounds: Sequence[Bound]) -> tuple[DenseArrayBase, list[SSAValue]]:
    """Static array (DYNAMIC where an SSA value is given) and the SSA values."""
    static = [b if isinstance(b, int) else DYNAMIC for b in bounds]
    dynamic = [b for b in bounds if not isinstance(b, int)]
    return DenseArrayBase.from_list(i64, static), dynamic


def merge_bounds(static: DenseArrayBase, dynamic: Sequence[SSAValue]) -> list[Bound]:
    it = iter(dynamic)
    return [next(it) if s == DYNAMIC else s for s in static.get_values()]


def print_bound(printer: Printer, b: Bound) -> None:
    if isinstance(b, int):
        printer.print_string(str(b))
    else:
        printer.print_ssa_value(b)


def parse_bound(parser: Parser) -> int | UnresolvedOperand:
    if (v := parser.parse_optional_integer(allow_boolean=False)) is not None:
        return v
    return parser.parse_unresolved_operand()


def resolve_bounds(parser: Parser, raw: Sequence[int | UnresolvedOperand]) -> list[Bound]:
    return [b if isinstance(b, int) else parser.resolve_operand(b, IndexType()) for b in raw]


def print_domain(printer: Printer, ivs: Sequence[SSAValue], lower, upper) -> None:
    """`(%i, %j) = (0, 0) to (%n, 13)`"""
    printer.print_string("(")
    printer.print_list(ivs, printer.print_ssa_value)
    printer.print_string(") = (")
    printer.print_list(lower, lambda b: print_bound(printer, b))
    printer.print_string(") to (")
    printer.print_list(upper, lambda b: print_bound(printer, b))
    printer.print_string(")")


def parse_domain(parser: Parser):
    """Parse `(%i, %j) = (lb, lb) to (ub, ub)`; returns unresolved ivs and bounds."""
    args = parser.parse_comma_separated_list(
        Parser.Delimiter.PAREN, lambda: parser.parse_argument(expect_type=False)
    )
    parser.parse_punctuation("=")
    lower = parser.parse_comma_separated_list(Parser.Delimiter.PAREN, lambda: parse_bound(parser))
    parser.parse_keyword("to")
    upper = parser.parse_comma_separated_list(Parser.Delimiter.PAREN, lambda: parse_bound(parser))
    if not len(args) == len(lower) == len(upper):
        parser.raise_error("domain needs as many lower and upper bounds as induction variables")
    ivs = [a.resolve(IndexType()) for a in args]
    return ivs, resolve_bounds(parser, lower), resolve_bounds(parser, upper)


def print_access(printer: Printer, base: SSAValue, indices, amap: AffineMap | None) -> None:
    """`%buf[%i, %j]` and, when the map is not the identity, `map affine_map<...>`."""
    printer.print_ssa_value(base)
    printer.print_string("[")
    printer.print_list(indices, printer.print_ssa_value)
    printer.print_string("]")
    if amap is not None and amap != AffineMap.identity(len(indices)):
        printer.print_string(" map ")
        printer.print_attribute(AffineMapAttr(amap))


def parse_access(parser: Parser):
    base = parser.parse_unresolved_operand()
    idx = parser.parse_comma_separated_list(
        Parser.Delimiter.SQUARE, parser.parse_unresolved_operand
    )
    amap = None
    if parser.parse_optional_keyword("map"):
        attr = parser.parse_attribute()
        if not isinstance(attr, AffineMapAttr):
            parser.raise_error("expected an affine_map after 'map'")
        amap = attr.data
    return base, [parser.resolve_operand(i, IndexType()) for i in idx], amap


def verify_access(op: Operation, shape_rank: int, indices, amap: AffineMap) -> None:
    if amap.num_dims != len(indices):
        raise VerifyException(
            f"{op.name}: map has {amap.num_dims} dims but {len(indices)} indices are given"
        )
    if amap.num_symbols != 0:
        raise VerifyException(f"{op.name}: maps may not have symbols")
    if len(amap.results) != shape_rank:
        raise VerifyException(
            f"{op.name}: map has {len(amap.results)} results but the buffer has rank {shape_rank}"
        )

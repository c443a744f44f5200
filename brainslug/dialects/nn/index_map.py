"""Data movement by an index map per dim: `nn.roll` (a cyclic shift, as Swin's
shifted windows), `nn.resize_nearest` (nearest-neighbour up- and
downsampling) and `nn.resize_bilinear`.

Each output point reads one input point, `out[i] = x[f(i)]`, with each input
index an affine function of the same output dim. After `bs-fuse` the reader
loads the input through that map, with no copy between. Bilinear resampling
reads four points, through maps that are affine on runs of the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from brainslug.dialects.nn.base import (
    DYN,
    MemoryBound,
    Operand,
    check_result_type,
    format_shape,
    i64_array_attr,
    make_tensor,
    tensor_shape,
    type_of,
    verify_error,
)
from brainslug.dialects.nn.properties import ConstrainedProperties, I64ArrayProperty


@irdl_op_definition
class RollOp(IRDLOperation):
    """A cyclic shift: `out[i] = x[(i - shifts[k]) mod extent]` along each dim k,
    as `torch.roll` with one shift per dim (0 leaves a dim alone). Shifts are
    stored in `[0, extent)`; a dynamic dim can't be shifted."""

    name = "nn.roll"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    shifts = prop_def(I64ArrayProperty())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, shifts: Sequence[int], *,
                 result_type: Attribute | None = None):
        x = tensor_shape(self.name, "input", type_of(input))
        if len(shifts) == len(x):  # any integer shift, as torch.roll takes it
            shifts = [s % e if e not in (DYN, 0) else s for s, e in zip(shifts, x, strict=True)]
        if result_type is None:
            result_type = self.infer_type(type_of(input), shifts=shifts)
        super().__init__(operands=[input], result_types=[result_type],
                         properties={"shifts": i64_array_attr(shifts)})

    @property
    def shifts_values(self) -> tuple[int, ...]:
        return tuple(self.shifts.get_values())

    @classmethod
    def infer_type(cls, input_type: Attribute, *, shifts: Sequence[int]) -> TensorType:
        x = tensor_shape(cls.name, "input", input_type)
        if len(shifts) != len(x):
            raise verify_error(cls.name, f"needs one shift per dim ({len(x)}), got {len(shifts)}")
        for k, (s, e) in enumerate(zip(shifts, x, strict=True)):
            if e == DYN and s:
                raise verify_error(cls.name, f"dim {k} is dynamic and can't be shifted")
            if e != DYN and not 0 <= s < e:
                raise verify_error(cls.name, f"shift {s} of dim {k} must be in [0, {e})")
        return make_tensor(x)

    def verify_(self) -> None:
        inferred = self.infer_type(self.input.type, shifts=self.shifts_values)
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class ResizeNearestOp(IRDLOperation):
    """Nearest-neighbour resampling: along each dim k the output point i reads
    the input point `(scale[k] * i + offset[k]) floordiv divisor[k]`.

    Upsampling by an integer factor s is `scale = 1, divisor = s`; taking every
    s-th point is `scale = s, divisor = 1`. The frontend finds the map from the
    framework's own index computation. The result type gives the output
    extents; a dynamic dim has the identity map."""

    name = "nn.resize_nearest"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    scale = prop_def(I64ArrayProperty())
    offset = prop_def(I64ArrayProperty())
    divisor = prop_def(I64ArrayProperty())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, shape: Sequence[int], scale: Sequence[int],
                 offset: Sequence[int], divisor: Sequence[int]):
        super().__init__(operands=[input], result_types=[make_tensor(shape)],
                         properties={"scale": i64_array_attr(scale),
                                     "offset": i64_array_attr(offset),
                                     "divisor": i64_array_attr(divisor)})

    @property
    def maps(self) -> tuple[tuple[int, int, int], ...]:
        """(scale, offset, divisor) of each dim."""
        return tuple(zip(self.scale.get_values(), self.offset.get_values(),
                         self.divisor.get_values(), strict=True))

    def verify_(self) -> None:
        x = tensor_shape(self.name, "input", self.input.type)
        out = tensor_shape(self.name, "output", self.output.type)
        n = self.name
        if len(out) != len(x):
            raise verify_error(n, f"output rank {len(out)} differs from input rank {len(x)}")
        if {len(self.scale), len(self.offset), len(self.divisor)} != {len(x)}:
            raise verify_error(n, f"scale, offset and divisor need one value per dim ({len(x)})")
        for k, ((s, o, q), e, m) in enumerate(zip(self.maps, x, out, strict=True)):
            if (e == DYN) != (m == DYN) or (e == DYN and (s, o, q) != (1, 0, 1)):
                raise verify_error(n, f"dim {k}: a dynamic dim keeps its extent and the "
                                      f"identity map, got {format_shape((e,))} -> "
                                      f"{format_shape((m,))}, ({s}*i + {o}) floordiv {q}")
            if m != DYN and m < 1:
                raise verify_error(n, f"dim {k}: output extent {m} (needs at least 1)")
            if s < 0 or o < 0 or q < 1:
                raise verify_error(n, f"dim {k}: needs scale >= 0, offset >= 0 and "
                                      f"divisor >= 1, got {s}, {o}, {q}")
            if e != DYN and (s * (m - 1) + o) // q >= e:
                raise verify_error(n, f"dim {k}: output point {m - 1} reads input point "
                                      f"{(s * (m - 1) + o) // q}, past extent {e}")


Piece = tuple[int, int, tuple[int, int, int], tuple[int, int, int]]
"""A run of output points `[start, end)` of one resampled dim, and the maps
`(scale, offset, divisor)` from a point's place `i` in the run to its two
input points, `(scale * i + offset) floordiv divisor`."""


def linear_pieces(first: Sequence[int], second: Sequence[int], n_in: int) -> list[Piece]:
    """The fewest runs (greedy) in which both index tables of a linear
    resampling are affine in the output point: the interior of a ratio m/n
    reads `(2n*i + n - m) floordiv 2m` (half-pixel centres) or
    `(n-1)*i floordiv (m-1)` (corners aligned); its clamped ends read a fixed
    point."""
    m = len(first)
    bases = [(2 * n_in, n_in - m, 2 * m), (n_in - 1, 0, max(m - 1, 1)), (n_in, 0, m), (1, 0, 1)]
    pieces: list[Piece] = []
    p = 0
    while p < m:
        best: Piece | None = None
        cands = [(0, first[p], 1)] + [(s, s * p + o, q) for s, o, q in bases]
        for s, o, q in cands:
            for step in (0, q, -q):  # the second point: the next one, the same, or the one before
                end = p
                while end < m and (s * (end - p) + o) // q == first[end] \
                        and (s * (end - p) + o + step) // q == second[end]:
                    end += 1
                if end > p and (best is None or end > best[1]):
                    best = (p, end, (s, o, q), (s, o + step, q))
        if best is None:  # an index out of the maps' reach (verified elsewhere)
            raise ValueError(f"no affine map reads input point {first[p]} at {p}")
        pieces.append(best)
        p = best[1]
    return [(a, b, _reduced(m0), _reduced(m1)) for a, b, m0, m1 in pieces]


def _reduced(m: tuple[int, int, int]) -> tuple[int, int, int]:
    s, o, q = m
    g = math.gcd(s, o, q)
    return (s // g, o // g, q // g) if s else (0, o // q, 1)


@irdl_op_definition
class ResizeBilinearOp(IRDLOperation):
    """Bilinear resampling along two dims `dims = [h, w]` (ascending, static),
    as PyTorch's `upsample_bilinear2d` computes it:

        t_r = x[.., r(i), .., c0(j), ..] * cw[0, j] + x[.., r(i), .., c1(j), ..] * cw[1, j]
        out[.., i, .., j, ..] = t_r0 * rw[0, i] + t_r1 * rw[1, i]

    for the rows `r0, r1` = `rows[i]`, `rows[m + i]` of an output extent m
    along h (`cols` likewise along w), and the weights `rw` (2 x m) and `cw`
    operands. The frontend computes the tables and weights as the framework
    does, at optimize()."""

    name = "nn.resize_bilinear"

    input = operand_def(TensorType)
    row_weights = operand_def(TensorType)
    col_weights = operand_def(TensorType)
    output = result_def(TensorType)

    dims = prop_def(I64ArrayProperty())
    rows = prop_def(I64ArrayProperty())
    cols = prop_def(I64ArrayProperty())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = ("$input `,` $row_weights `,` $col_weights attr-dict `:` type($input) "
                       "`,` type($row_weights) `,` type($col_weights) `->` type($output)")
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, row_weights: Operand, col_weights: Operand,
                 dims: Sequence[int], rows: Sequence[int], cols: Sequence[int]):
        x = list(tensor_shape(self.name, "input", type_of(input)))
        for k, table in zip(dims, (rows, cols), strict=True):
            x[k] = len(table) // 2
        super().__init__(operands=[input, row_weights, col_weights],
                         result_types=[make_tensor(x)],
                         properties={"dims": i64_array_attr(dims), "rows": i64_array_attr(rows),
                                     "cols": i64_array_attr(cols)})

    @property
    def tables(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """(first, second) input point of each output point, along h and along w."""
        out = []
        for t in (self.rows.get_values(), self.cols.get_values()):
            half = len(t) // 2
            out.append((tuple(t[:half]), tuple(t[half:])))
        return tuple(out)

    def verify_(self) -> None:
        n = self.name
        x = tensor_shape(n, "input", self.input.type)
        out = tensor_shape(n, "output", self.output.type)
        dims = tuple(self.dims.get_values())
        if len(dims) != 2 or not 0 < dims[0] < dims[1] < len(x):
            raise verify_error(n, f"dims must be two ascending dims after the first of a "
                                  f"rank-{len(x)} input, got {list(dims)}")
        if len(out) != len(x):
            raise verify_error(n, f"output rank {len(out)} differs from input rank {len(x)}")
        for k, (e, o) in enumerate(zip(x, out, strict=True)):
            if k not in dims and e != o:
                raise verify_error(n, f"dim {k} is not resampled but changes extent: "
                                      f"{format_shape((e,))} -> {format_shape((o,))}")
        for what, k, table, w in (("rows", dims[0], self.rows.get_values(), self.row_weights),
                                  ("cols", dims[1], self.cols.get_values(), self.col_weights)):
            if DYN in (x[k], out[k]):
                raise verify_error(n, f"resampled dim {k} must be static")
            if len(table) != 2 * out[k]:
                raise verify_error(n, f"{what} needs two input points per output point "
                                      f"({2 * out[k]} values), got {len(table)}")
            if any(not 0 <= v < x[k] for v in table):
                raise verify_error(n, f"{what} reads a point outside [0, {x[k]})")
            ws = tensor_shape(n, f"{what} weights", w.type)
            if tuple(ws) != (2, out[k]):
                raise verify_error(n, f"{what} weights must be 2x{out[k]}, got "
                                      f"{format_shape(ws)}")

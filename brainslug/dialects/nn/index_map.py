"""Data movement by an index map per dim: `nn.roll` (a cyclic shift, as Swin's
shifted windows) and `nn.resize_nearest` (nearest-neighbour up- and
downsampling).

Each output point reads one input point, `out[i] = x[f(i)]`, with each input
index an affine function of the same output dim. After `bs-fuse` the reader
loads the input through that map, with no copy between.
"""

from __future__ import annotations

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

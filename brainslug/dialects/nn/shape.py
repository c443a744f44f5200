"""Shape manipulation and reductions: `nn.cat`, `nn.flatten`, `nn.reshape`,
`nn.permute`, `nn.pad`, `nn.mean` and `nn.softmax`.

Axes are stored non-negative; builders also take negative ones (counted from
the end), except `nn.flatten`'s, which are stored as given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import BoolAttr, TensorType
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
    var_operand_def,
)
from xdsl.traits import Pure

from brainslug.dialects.nn.base import (
    DYN,
    MemoryBound,
    Operand,
    Shape,
    check_axis,
    check_result_type,
    f64_attr,
    format_extent,
    format_shape,
    i64_array_attr,
    i64_attr,
    make_tensor,
    meet,
    normalize_axis,
    tensor_shape,
    type_of,
    verify_error,
)
from brainslug.dialects.nn.properties import (
    BoolProperty,
    ConstrainedProperties,
    F64Property,
    I64ArrayProperty,
    I64Property,
    Impl,
    StrEnumProperty,
    WithImpl,
    impl_attr,
)


@irdl_op_definition
class CatOp(IRDLOperation):
    """Concatenation of `inputs` along `axis` (stored non-negative)."""

    name = "nn.cat"

    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)

    axis = prop_def(I64Property())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inputs attr-dict `:` functional-type($inputs, $output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        inputs: Sequence[Operand],
        axis: int,
        *,
        result_type: Attribute | None = None,
    ):
        types = [type_of(v) for v in inputs]
        if types:
            rank = len(tensor_shape(self.name, "inputs[0]", types[0]))
            axis = normalize_axis(self.name, "axis", axis, rank)
        if result_type is None:
            result_type = self.infer_type(types, axis=axis)
        super().__init__(
            operands=[list(inputs)],
            result_types=[result_type],
            properties={"axis": i64_attr(axis)},
        )

    @property
    def axis_value(self) -> int:
        return self.axis.value.data

    @classmethod
    def infer_type(cls, input_types: Sequence[Attribute], *, axis: int) -> TensorType:
        n = cls.name
        if not input_types:
            raise verify_error(n, "needs at least one input")
        shapes = [tensor_shape(n, f"inputs[{i}]", t) for i, t in enumerate(input_types)]
        rank = len(shapes[0])
        axis = check_axis(n, "axis", axis, rank)
        out = list(shapes[0])
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != rank:
                raise verify_error(n, f"inputs[{i}] has rank {len(s)}, inputs[0] has rank {rank}")
            for d in range(rank):
                if d == axis:
                    out[d] = DYN if out[d] < 0 or s[d] < 0 else out[d] + s[d]
                else:
                    out[d] = meet(
                        n,
                        f"inputs[{i}] has extent {format_extent(s[d])} on axis {d}, "
                        f"expected {format_extent(out[d])}",
                        out[d],
                        s[d],
                    )
        return make_tensor(out)

    def verify_(self) -> None:
        inferred = self.infer_type([v.type for v in self.inputs], axis=self.axis_value)
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class FlattenOp(IRDLOperation):
    """Merges axes `start_dim..end_dim` (inclusive; negative counts from the end)."""

    name = "nn.flatten"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    start_dim = prop_def(I64Property())
    end_dim = prop_def(I64Property())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        start_dim: int = 0,
        end_dim: int = -1,
        *,
        result_type: Attribute | None = None,
    ):
        if result_type is None:
            result_type = self.infer_type(type_of(input), start_dim=start_dim, end_dim=end_dim)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={"start_dim": i64_attr(start_dim), "end_dim": i64_attr(end_dim)},
        )

    @property
    def start_dim_value(self) -> int:
        """`start_dim` as stored (may be negative)."""
        return self.start_dim.value.data

    @property
    def end_dim_value(self) -> int:
        """`end_dim` as stored (may be negative)."""
        return self.end_dim.value.data

    @property
    def normalized_dims(self) -> tuple[int, int]:
        """(start_dim, end_dim) made non-negative against the input rank."""
        rank = len(tensor_shape(self.name, "input", self.input.type))
        return (
            normalize_axis(self.name, "start_dim", self.start_dim_value, rank),
            normalize_axis(self.name, "end_dim", self.end_dim_value, rank),
        )

    @classmethod
    def infer_type(cls, input_type: Attribute, *, start_dim: int, end_dim: int) -> TensorType:
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        if not x:
            raise verify_error(n, "input must have rank >= 1, got rank 0")
        start = normalize_axis(n, "start_dim", start_dim, len(x))
        end = normalize_axis(n, "end_dim", end_dim, len(x))
        if start > end:
            raise verify_error(
                n, f"start_dim {start_dim} comes after end_dim {end_dim} (rank {len(x)})"
            )
        merged = x[start : end + 1]
        extent = DYN if any(d < 0 for d in merged) else math.prod(merged)
        return make_tensor((*x[:start], extent, *x[end + 1 :]))

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type, start_dim=self.start_dim_value, end_dim=self.end_dim_value
        )
        check_result_type(self.name, self.output.type, inferred)


def _known_count(
    x: Sequence[int], y: Sequence[int], skip: int | None = None
) -> tuple[int, int] | None:
    """Comparable static element counts of `x` and `y`, or None.

    Both fully static: their element counts. A `?` in dim 0 of both (the
    batch), all else static: the products of the remaining extents. Otherwise
    the counts cannot be compared. Axis `skip` of `y` is left out.
    """
    ys = [d for i, d in enumerate(y) if i != skip]
    if all(d >= 0 for d in x) and all(d >= 0 for d in ys):
        return math.prod(x), math.prod(ys)
    if (
        x
        and y
        and skip != 0
        and x[0] < 0
        and y[0] < 0
        and all(d >= 0 for d in x[1:])
        and all(d >= 0 for d in ys[1:])
    ):
        return math.prod(x[1:]), math.prod(ys[1:])
    return None


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """Row-major reshape; the result type gives the new shape."""

    name = "nn.reshape"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound())

    def __init__(self, input: Operand, result: Attribute | Sequence[int]):
        """`result` is the result type, or a shape as for `infer_type`."""
        if not isinstance(result, Attribute):
            result = self.infer_type(type_of(input), result)
        super().__init__(operands=[input], result_types=[result])

    @classmethod
    def infer_type(cls, input_type: Attribute, shape: Sequence[int]) -> TensorType:
        """The result type for `shape`.

        Extents are >= 0, `DYN` (stays `?`) or -1 (at most one; inferred from
        the element count as in `torch.reshape`, `?` when that is unknown).
        """
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        shape = [int(d) for d in shape]
        if any(d < 0 and d not in (-1, DYN) for d in shape):
            raise verify_error(n, f"invalid extent in shape {shape}")
        holes = [i for i, d in enumerate(shape) if d == -1]
        if len(holes) > 1:
            raise verify_error(n, f"shape {shape} has more than one -1")
        if holes:
            (hole,) = holes
            shape[hole] = DYN
            known = _known_count(x, shape, hole)
            if known is not None:
                numel, rest = known
                if rest == 0 or numel % rest:
                    raise verify_error(
                        n, f"cannot reshape {format_shape(x)} to {format_shape(shape)}"
                    )
                shape[hole] = numel // rest
        result = make_tensor(shape)
        cls._check_counts(x, tuple(shape))
        return result

    @classmethod
    def _check_counts(cls, x: Shape, y: Shape) -> None:
        known = _known_count(x, y)
        if known is not None and known[0] != known[1]:
            raise verify_error(
                cls.name,
                f"input {format_shape(x)} and result {format_shape(y)} have different "
                "element counts",
            )

    def verify_(self) -> None:
        x = tensor_shape(self.name, "input", self.input.type)
        y = tensor_shape(self.name, "result", self.output.type)
        self._check_counts(x, y)


@irdl_op_definition
class PermuteOp(IRDLOperation):
    """The input with its dims reordered: result dim i is input dim `dims[i]`.
    It moves data into another memory order; after `bs-fuse` its reader loads
    the input through the permuted map, with no copy between."""

    name = "nn.permute"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    dims = prop_def(I64ArrayProperty())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, dims: Sequence[int], *,
                 result_type: Attribute | None = None):
        if result_type is None:
            result_type = self.infer_type(type_of(input), dims=dims)
        super().__init__(operands=[input], result_types=[result_type],
                         properties={"dims": i64_array_attr(dims)})

    @property
    def dims_values(self) -> tuple[int, ...]:
        return tuple(self.dims.get_values())

    @classmethod
    def infer_type(cls, input_type: Attribute, *, dims: Sequence[int]) -> TensorType:
        x = tensor_shape(cls.name, "input", input_type)
        if sorted(dims) != list(range(len(x))):
            raise verify_error(cls.name, f"dims must be a permutation of 0..{len(x) - 1}, "
                                         f"got {list(dims)}")
        return make_tensor([x[d] for d in dims])

    def verify_(self) -> None:
        inferred = self.infer_type(self.input.type, dims=self.dims_values)
        check_result_type(self.name, self.output.type, inferred)


@irdl_op_definition
class PadOp(IRDLOperation):
    """Constant padding: `low[k]` points of `value` before dim k and `high[k]`
    after it. A negative count crops that many points instead (as PyTorch's
    `F.pad` does), so `nn.pad` is also Keras's Cropping2D. Result dim k has
    extent `in[k] + low[k] + high[k]`; a dynamic dim is neither padded nor
    cropped. After `bs-fuse` its reader loads the input through a shifted map
    that yields `value` out of bounds, with no copy between."""

    name = "nn.pad"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    low = prop_def(I64ArrayProperty())
    high = prop_def(I64ArrayProperty())
    value = prop_def(F64Property())

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, low: Sequence[int], high: Sequence[int],
                 value: float = 0.0, *, result_type: Attribute | None = None):
        if result_type is None:
            result_type = self.infer_type(type_of(input), low=low, high=high)
        super().__init__(operands=[input], result_types=[result_type],
                         properties={"low": i64_array_attr(low), "high": i64_array_attr(high),
                                     "value": f64_attr(value)})

    @property
    def low_values(self) -> tuple[int, ...]:
        return tuple(self.low.get_values())

    @property
    def high_values(self) -> tuple[int, ...]:
        return tuple(self.high.get_values())

    @property
    def value_value(self) -> float:
        return self.value.value.data

    @classmethod
    def infer_type(cls, input_type: Attribute, *, low: Sequence[int],
                   high: Sequence[int]) -> TensorType:
        x = tensor_shape(cls.name, "input", input_type)
        if len(low) != len(x) or len(high) != len(x):
            raise verify_error(cls.name, f"low and high need one count per dim ({len(x)}), "
                                         f"got {len(low)} and {len(high)}")
        out = []
        for k, (e, lo, hi) in enumerate(zip(x, low, high, strict=True)):
            if e == DYN:
                if lo or hi:
                    raise verify_error(cls.name, f"dim {k} is dynamic and can't be padded")
                out.append(e)
                continue
            if e + lo + hi < 1:
                raise verify_error(cls.name, f"dim {k} of extent {e} cropped to "
                                             f"{e + lo + hi} (needs at least 1)")
            out.append(e + lo + hi)
        return make_tensor(out)

    def verify_(self) -> None:
        inferred = self.infer_type(self.input.type, low=self.low_values, high=self.high_values)
        check_result_type(self.name, self.output.type, inferred)


class _ReduceDimsOp(IRDLOperation, WithImpl):
    """Base of mean and sum over `dims` (stored non-negative, unique), keeping
    them if `keepdim`."""

    input = operand_def(TensorType)
    output = result_def(TensorType)

    dims = prop_def(I64ArrayProperty())
    keepdim = prop_def(BoolProperty())
    impl = opt_prop_def(StrEnumProperty(Impl))

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(
        self,
        input: Operand,
        dims: Sequence[int],
        keepdim: bool = False,
        *,
        impl: str | None = None,
        result_type: Attribute | None = None,
    ):
        rank = len(tensor_shape(self.name, "input", type_of(input)))
        dims = [normalize_axis(self.name, "dims", d, rank) for d in dims]
        if result_type is None:
            result_type = self.infer_type(type_of(input), dims=dims, keepdim=keepdim)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={
                "dims": i64_array_attr(dims),
                "keepdim": BoolAttr.from_bool(keepdim),
                "impl": impl_attr(impl),
            },
        )


    @property
    def dims_values(self) -> tuple[int, ...]:
        return self.dims.get_values()

    @property
    def keepdim_value(self) -> bool:
        return bool(self.keepdim.value.data)

    @classmethod
    def infer_type(
        cls, input_type: Attribute, *, dims: Sequence[int], keepdim: bool = False
    ) -> TensorType:
        n = cls.name
        x = tensor_shape(n, "input", input_type)
        if not dims:
            raise verify_error(n, "dims must not be empty")
        for d in dims:
            check_axis(n, "dims", d, len(x))
        if len(set(dims)) != len(dims):
            raise verify_error(n, f"dims {list(dims)} has duplicates")
        if keepdim:
            return make_tensor(1 if i in dims else d for i, d in enumerate(x))
        return make_tensor(d for i, d in enumerate(x) if i not in dims)

    def verify_(self) -> None:
        inferred = self.infer_type(
            self.input.type, dims=self.dims_values, keepdim=self.keepdim_value
        )
        check_result_type(self.name, self.output.type, inferred)
        rank = len(tensor_shape(self.name, "input", self.input.type))
        if self.impl_value == Impl.EIGEN and rank - 1 in self.dims_values:
            raise verify_error(self.name, 'impl "eigen" keeps the innermost dim, which dims reduce')


@irdl_op_definition
class MeanOp(_ReduceDimsOp):
    """Mean over `dims` (stored non-negative, unique), keeping them if `keepdim`.

    The sum runs over the reduced points in row-major order. `impl = "eigen"`
    is TensorFlow's CPU order for a mean that keeps the innermost dim (Eigen's
    `InnerMostDimPreserver` on packets of 8 outputs): over 16 or more points,
    an output in a whole packet sums four interleaved partial sums (points
    j = 4q + r), adds them as ((s0 + s1) + s2) + s3, then the last j % 4 points
    in order; other outputs sum in order. See `nn_to_loop.lower_reduce_dims`."""

    name = "nn.mean"


@irdl_op_definition
class SumOp(_ReduceDimsOp):
    """Sum over `dims` (stored non-negative, unique), keeping them if
    `keepdim`: `nn.mean`'s sum, in its order, not divided."""

    name = "nn.sum"

@irdl_op_definition
class SoftmaxOp(IRDLOperation, WithImpl):
    """Softmax along `axis` (stored non-negative). A row with NaN, or where
    `x - max` is NaN (+inf in it), is NaN throughout in PyTorch's; with `impl
    = "eigen"` it follows TensorFlow's CPU kernel (oneDNN's): the max skips
    NaN, and the outputs are NaN where `x - max` is and 0 elsewhere."""

    name = "nn.softmax"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    axis = prop_def(I64Property())
    impl = opt_prop_def(StrEnumProperty(Impl))

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure(), MemoryBound(), ConstrainedProperties())

    def __init__(self, input: Operand, axis: int, *, impl: str | None = None,
                 result_type: Attribute | None = None):
        rank = len(tensor_shape(self.name, "input", type_of(input)))
        axis = normalize_axis(self.name, "axis", axis, rank)
        if result_type is None:
            result_type = self.infer_type(type_of(input), axis=axis)
        super().__init__(
            operands=[input],
            result_types=[result_type],
            properties={"axis": i64_attr(axis),
                        "impl": impl_attr(impl)},
        )

    @property
    def axis_value(self) -> int:
        return self.axis.value.data


    @classmethod
    def infer_type(cls, input_type: Attribute, *, axis: int) -> TensorType:
        x = tensor_shape(cls.name, "input", input_type)
        check_axis(cls.name, "axis", axis, len(x))
        return make_tensor(x)

    def verify_(self) -> None:
        inferred = self.infer_type(self.input.type, axis=self.axis_value)
        check_result_type(self.name, self.output.type, inferred)

"""What the `nn` ops share: marker traits, layout axes, and the shape helpers
their `infer_type`s are written with.

Shapes are tuples of extents, `DYN` for `?`. The helpers raise
`VerifyException`s that start with the op's name (`nn.conv2d: ...`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    TensorType,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.traits import OpTrait
from xdsl.utils.exceptions import VerifyException

from brainslug.dialects.nn.properties import Layout

DYN = DYNAMIC_INDEX
"""The extent of a dynamic (`?`) tensor dimension."""

Shape = tuple[int, ...]
Operand = SSAValue | Operation

# ---------------------------------------------------------------------------
# Layout axes
# ---------------------------------------------------------------------------


def channel_axis(layout: str, rank: int) -> int:
    """The channel axis of a rank-`rank` tensor in `layout`.

    Rank-2 tensors (`[N, C]`) have their channels on axis 1 in either layout.
    """
    layout = Layout(layout)
    if rank < 2:
        raise ValueError(f"a tensor of rank {rank} has no channel axis")
    if rank == 2 or layout == Layout.NCHW:
        return 1
    return rank - 1


def spatial_axes(layout: str) -> tuple[int, int]:
    """The (H, W) axes of a rank-4 tensor in `layout`."""
    return (2, 3) if Layout(layout) == Layout.NCHW else (1, 2)


# ---------------------------------------------------------------------------
# Marker traits
# ---------------------------------------------------------------------------


class PropertyAccessors:
    """The Python values of the properties that several ops share (an op uses
    the ones it defines)."""

    @property
    def kernel_values(self) -> tuple[int, ...]:
        return self.kernel.get_values()  # type: ignore[attr-defined]

    @property
    def strides_values(self) -> tuple[int, ...]:
        return self.strides.get_values()  # type: ignore[attr-defined]

    @property
    def padding_values(self) -> tuple[int, ...]:
        return self.padding.get_values()  # type: ignore[attr-defined]

    @property
    def dilation_values(self) -> tuple[int, ...]:
        return self.dilation.get_values()  # type: ignore[attr-defined]

    @property
    def ceil_mode_value(self) -> bool:
        return bool(self.ceil_mode.value.data)  # type: ignore[attr-defined]

    @property
    def layout_value(self) -> Layout:
        return Layout(self.layout.data)  # type: ignore[attr-defined]


class MemoryBound(OpTrait):
    """A memory-bound layer that BrainSlug may group into a stack."""


class Elementwise(OpTrait):
    """Each output element depends only on the input elements at its index."""


class Removable(OpTrait):
    """The layer is the identity at inference time and can be removed."""


def is_optimizable(op: Operation) -> bool:
    """Whether `op` is a memory-bound layer (may join an `nn.stack`)."""
    return op.has_trait(MemoryBound)


def is_elementwise(op: Operation) -> bool:
    """Whether `op` is an elementwise layer (unary ops, add, mul)."""
    return op.has_trait(Elementwise)


def is_removable(op: Operation) -> bool:
    """Whether `op` is the identity at inference time (dropout, identity)."""
    return op.has_trait(Removable)


# ---------------------------------------------------------------------------
# Shapes and types
# ---------------------------------------------------------------------------


def make_tensor(shape: Iterable[int]) -> TensorType:
    """A `tensor<...xf32>`; negative extents become `?`."""
    return TensorType(f32, [DYN if d < 0 else d for d in shape])


def format_extent(extent: int) -> str:
    return "?" if extent < 0 else str(extent)


def format_shape(shape: Sequence[int]) -> str:
    """`[?, 37, 13, 13]`."""
    return "[" + ", ".join(format_extent(d) for d in shape) + "]"


def verify_error(op_name: str, msg: str) -> VerifyException:
    """`op_name: msg`, the form of every `nn` verifier message."""
    return VerifyException(f"{op_name}: {msg}")


def type_of(value: Operand) -> Attribute:
    return SSAValue.get(value).type


F32_BYTES = 4
MAX_TENSOR_BYTES = 2**63 - 1
"""The largest tensor an `nn` op takes: its byte size must fit an int64, the
type of every size and offset the lowering computes."""


def check_extents(op_name: str, what: str, shape: Sequence[int]) -> Shape:
    """Extents an `nn` op can take: none is 0 (a zero-size tensor's kernels
    would have nothing to do, and the tiling and vectorizing passes divide by
    extents), and the static ones multiply to at most `MAX_TENSOR_BYTES` bytes
    of f32 (a `?` extent counts as 1 here)."""
    shape = tuple(shape)
    for axis, extent in enumerate(shape):
        if extent == 0:
            raise verify_error(
                op_name,
                f"{what} {format_shape(shape)} has extent 0 on axis {axis}: "
                "zero-size tensors are not supported",
            )
    count = math.prod(d for d in shape if d > 0)
    if count * F32_BYTES > MAX_TENSOR_BYTES:
        raise verify_error(
            op_name,
            f"{what} {format_shape(shape)} is too large: its {count} elements take "
            f"{count * F32_BYTES} bytes, more than an int64 holds ({MAX_TENSOR_BYTES})",
        )
    return shape


def tensor_shape(op_name: str, what: str, ty: Attribute) -> Shape:
    """The shape of a `tensor<...xf32>` operand type, `?` mapped to `DYN`;
    its extents must pass `check_extents`."""
    if not isinstance(ty, TensorType):
        raise verify_error(op_name, f"{what} must be a ranked tensor, got {ty}")
    if not isinstance(ty.element_type, Float32Type):
        raise verify_error(op_name, f"{what} must have element type f32, got {ty.element_type}")
    return check_extents(op_name, what, (DYN if d < 0 else d for d in ty.get_shape()))


def ranked_shape(op_name: str, what: str, ty: Attribute, ranks: Sequence[int]) -> Shape:
    """`tensor_shape`, whose rank must be one of `ranks`."""
    shape = tensor_shape(op_name, what, ty)
    if len(shape) not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise verify_error(op_name, f"{what} must have rank {expected}, got rank {len(shape)}")
    return shape


def check_result_type(op_name: str, declared: Attribute, inferred: TensorType) -> None:
    if declared != inferred:
        raise verify_error(
            op_name, f"result type {declared} does not match inferred type {inferred}"
        )
    check_extents(op_name, "result", (DYN if d < 0 else d for d in inferred.get_shape()))


def meet(op_name: str, msg: str, a: int, b: int) -> int:
    """Two extents that must be equal (`?` matches anything); raise `msg` if not."""
    if a < 0:
        return b
    if b < 0 or a == b:
        return a
    raise verify_error(op_name, msg)


def broadcast_shapes(lhs: Sequence[int], rhs: Sequence[int], op_name: str = "broadcast",
                     names: tuple[str, str] = ("lhs", "rhs")) -> Shape:
    """Numpy-style broadcast of two shapes (right-aligned); `names` name them
    in the diagnostic.

    Extents must be equal or one of them 1. A static 1 against `?` gives `?`;
    a static extent other than 1 against `?` gives that extent.
    """
    rank = max(len(lhs), len(rhs))
    a = (1,) * (rank - len(lhs)) + tuple(lhs)
    b = (1,) * (rank - len(rhs)) + tuple(rhs)
    out: list[int] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x < 0:
            out.append(y)
        elif y < 0 or x == y:
            out.append(x)
        else:
            raise verify_error(
                op_name,
                f"operands {names[0]} {format_shape(lhs)} and {names[1]} {format_shape(rhs)} do not "
                f"broadcast: extents {x} and {y} on result axis {i}",
            )
    return tuple(out)


def window_extent(
    op_name: str,
    axis: str,
    size: int,
    kernel: int,
    stride: int,
    pad_lo: int,
    pad_hi: int,
    dilation: int,
    ceil_mode: bool,
) -> int:
    """Output extent of a convolution or pooling window (PyTorch's rule)."""
    if size < 0 or kernel < 0:
        return DYN
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        # The last window must start inside the input or the low padding.
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
    else:
        out = span // stride + 1
    if out < 1:
        raise verify_error(
            op_name,
            f"output {axis} extent would be {out} (input {size}, kernel {kernel}, "
            f"stride {stride}, padding {pad_lo}+{pad_hi}, dilation {dilation})",
        )
    return out


# ---------------------------------------------------------------------------
# Axes and property values
# ---------------------------------------------------------------------------


def normalize_axis(op_name: str, what: str, axis: int, rank: int) -> int:
    """An axis as a builder takes it (negative counts from the end), made non-negative."""
    if not -rank <= axis < rank:
        raise verify_error(
            op_name, f"{what} {axis} is out of range for rank {rank} [-{rank}, {rank})"
        )
    return axis + rank if axis < 0 else axis


def check_eps(op_name: str, eps: float) -> None:
    """A normalisation's epsilon: finite and >= 0."""
    if not eps >= 0.0 or math.isinf(eps):
        raise verify_error(op_name, f"eps must be finite and >= 0, got {eps}")


def check_axis(op_name: str, what: str, axis: int, rank: int) -> int:
    """A stored axis: must already be normalised (0 <= axis < rank)."""
    if not 0 <= axis < rank:
        raise verify_error(op_name, f"{what} must be in [0, {rank}), got {axis}")
    return axis


def int_values(
    op_name: str, what: str, values: Sequence[int], n: int, minimum: int
) -> tuple[int, ...]:
    """`n` integers, each >= `minimum`."""
    values = tuple(int(v) for v in values)
    if len(values) != n:
        raise verify_error(op_name, f"{what} must have {n} values, got {len(values)}")
    if any(v < minimum for v in values):
        raise verify_error(op_name, f"{what} values must be >= {minimum}, got {list(values)}")
    return values


def pair(value: int | Sequence[int]) -> tuple[int, ...]:
    """`k` -> `(k, k)`; sequences pass through."""
    return (value, value) if isinstance(value, int) else tuple(value)


def quad(value: int | Sequence[int]) -> tuple[int, ...]:
    """Padding `p`, `(ph, pw)` or `(top, left, bottom, right)` -> 4 values."""
    if isinstance(value, int):
        return (value,) * 4
    value = tuple(value)
    return value * 2 if len(value) == 2 else value


def i64_array_attr(values: Iterable[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


def i64_attr(value: int) -> IntegerAttr:
    return IntegerAttr(value, i64)


def f64_attr(value: float) -> FloatAttr:
    return FloatAttr(float(value), f64)

"""Tests of the nn dialect: shape inference (against torch), verifiers, printing."""

from __future__ import annotations

import itertools
from io import StringIO
from pathlib import Path

import pytest
from xdsl.builder import ImplicitBuilder
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    Builtin,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f16,
    f32,
    i64,
)
from xdsl.ir import Block, Region
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from brainslug.dialects.nn import (
    DYN,
    NN,
    AdaptiveAvgPool2dOp,
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    CatOp,
    ClampOp,
    Conv2dOp,
    DropoutOp,
    FlattenOp,
    GeluOp,
    HardsigmoidOp,
    HardswishOp,
    IdentityOp,
    LeakyReluOp,
    LinearOp,
    MaxPool2dOp,
    MeanOp,
    MulOp,
    ReluOp,
    ReshapeOp,
    SigmoidOp,
    SiluOp,
    SoftmaxOp,
    StackOp,
    SumOp,
    TanhOp,
    YieldOp,
    broadcast_shapes,
    channel_axis,
    is_elementwise,
    is_optimizable,
    is_removable,
    make_tensor,
    spatial_axes,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROUNDTRIP = Path(__file__).resolve().parent.parent / "filecheck_tests" / "nn" / "roundtrip.mlir"

N, C, H, W = DYN, 37, 13, 13


def t(*shape: int) -> TensorType:
    return make_tensor(shape)


def arg(*shape: int) -> Block:
    """A block whose single argument has the given tensor shape."""
    return Block(arg_types=[t(*shape)])


def value(*shape: int):
    return arg(*shape).args[0]


def shape_of(ty) -> tuple[int, ...]:
    return tuple(ty.get_shape())


def nchw_to_nhwc(shape) -> tuple[int, ...]:
    n, c, h, w = shape
    return (n, h, w, c)


def make_context() -> Context:
    ctx = Context()
    for dialect in (Builtin, func.Func, NN):
        ctx.load_dialect(dialect)
    return ctx


def print_op(op, generic: bool = False) -> str:
    buf = StringIO()
    Printer(stream=buf, print_generic_format=generic).print_op(op)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Layout helpers and traits
# ---------------------------------------------------------------------------


def test_layout_helpers():
    assert channel_axis("NCHW", 4) == 1
    assert channel_axis("NHWC", 4) == 3
    assert channel_axis("NCHW", 2) == 1
    assert channel_axis("NHWC", 2) == 1
    assert spatial_axes("NCHW") == (2, 3)
    assert spatial_axes("NHWC") == (1, 2)
    with pytest.raises(ValueError):
        channel_axis("NWHC", 4)
    with pytest.raises(ValueError):
        spatial_axes("CHW")


def test_make_tensor_dynamic():
    assert str(make_tensor([-1, 3])) == "tensor<?x3xf32>"
    assert str(make_tensor([DYN, 3])) == "tensor<?x3xf32>"


UNARY = [ReluOp, SigmoidOp, TanhOp, SiluOp, HardswishOp, HardsigmoidOp, IdentityOp]


def test_traits():
    x = value(N, C, H, W)
    p = value(C)
    for op in [cls(x) for cls in UNARY] + [
        GeluOp(x),
        ClampOp(x, 0.0, 6.0),
        LeakyReluOp(x, 0.2),
        DropoutOp(x, 0.1),
        AddOp(x, x),
        MulOp(x, x),
    ]:
        assert is_elementwise(op) and is_optimizable(op), op.name
    assert is_removable(DropoutOp(x)) and is_removable(IdentityOp(x))
    assert not is_removable(ReluOp(x))
    others = [
        BatchNormOp(x, p, p, p, p),
        MaxPool2dOp(x, 3, 2, 1),
        AvgPool2dOp(x, 3, 2, 1),
        AdaptiveAvgPool2dOp(x, 1),
        CatOp([x, x], 1),
        FlattenOp(x, 1, -1),
        ReshapeOp(x, [N, -1]),
        MeanOp(x, [2, 3]),
        SoftmaxOp(x, 1),
    ]
    for op in others:
        assert is_optimizable(op) and not is_elementwise(op), op.name
    w = value(8, C, 3, 3)
    for op in (Conv2dOp(x, w), LinearOp(value(N, C), value(8, C))):
        assert not is_optimizable(op) and not is_elementwise(op)


# ---------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", UNARY)
def test_unary_inference(cls):
    op = cls(value(N, C, H, W))
    assert op.output.type == t(N, C, H, W)
    op.verify()


def test_unary_properties():
    x = value(N, C)
    assert GeluOp(x).approximate_value == "none"
    assert GeluOp(x, "tanh").approximate_value == "tanh"
    relu6 = ClampOp(x, 0.0, 6.0)
    assert (relu6.min_value, relu6.max_value) == (0.0, 6.0)
    assert ClampOp(x, max=1.5).min_value is None
    assert LeakyReluOp(x, 0.125).negative_slope_value == 0.125
    assert DropoutOp(x, 0.25).p_value == 0.25
    for op in (GeluOp(x), relu6, ClampOp(x, min=-1.0), LeakyReluOp(x), DropoutOp(x)):
        op.verify()


@pytest.mark.parametrize("cls", [SigmoidOp, SiluOp])
def test_sigmoid_impl(cls):
    """`impl` is absent (the exact formula) or "eigen" (TensorFlow's kernel)."""
    x = value(N, C)
    exact, eigen = cls(x), cls(x, "eigen")
    assert exact.impl_value is None and "impl" not in print_op(exact)
    assert eigen.impl_value == "eigen" and 'impl = "eigen"' in print_op(eigen)
    exact.verify()
    eigen.verify()
    with pytest.raises(VerifyException, match=rf"{cls.name}: impl must be one of \['eigen'\]"):
        cls(x, "exact").verify()
    text = f"""
    func.func @f(%x: tensor<?x{C}xf32>) {{
      %0 = {cls.name} %x {{impl = "eigen"}} : tensor<?x{C}xf32> -> tensor<?x{C}xf32>
      func.return
    }}
    """
    module = Parser(make_context(), text).parse_module()
    module.verify()
    parsed = next(op for op in module.walk() if isinstance(op, cls))
    assert parsed.impl_value == "eigen"
    assert parsed.properties == eigen.properties and not parsed.attributes


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (lambda x: ClampOp(x), "nn.clamp: needs at least one of min and max"),
        (lambda x: DropoutOp(x, 1.0), r"nn.dropout: p must be in \[0, 1\), got 1.0"),
        (lambda x: DropoutOp(x, -0.1), "nn.dropout: p must be in"),
        (lambda x: GeluOp(x, "fast"), "nn.gelu: approximate must be one of"),
        (lambda x: ReluOp(x, result_type=t(N, C + 1)), "nn.relu: result type"),
    ],
)
def test_unary_verify_errors(op, message):
    with pytest.raises(VerifyException, match=message):
        op(value(N, C)).verify()


def test_element_type_must_be_f32():
    x = Block(arg_types=[TensorType(f16, [2, 3])]).args[0]
    with pytest.raises(VerifyException, match="nn.relu: input must have element type f32"):
        ReluOp(x)
    with pytest.raises(VerifyException, match="nn.relu: input must have element type f32"):
        ReluOp(x, result_type=TensorType(f16, [2, 3])).verify()


@pytest.mark.parametrize(
    ("lhs", "rhs"),
    [
        ((2, 37, 13, 13), (37, 1, 1)),
        ((2, 37, 13, 13), (1, 37, 1, 1)),
        ((1, 37, 1, 13), (5, 1, 13, 1)),
        ((13,), (2, 37, 13, 13)),
        ((), (3, 4)),
        ((7, 1), (1, 5)),
    ],
)
def test_broadcast_matches_torch(lhs, rhs):
    expected = tuple(torch.broadcast_shapes(lhs, rhs))
    for cls in (AddOp, MulOp):
        op = cls(value(*lhs), value(*rhs))
        assert shape_of(op.output.type) == expected
        op.verify()


def test_broadcast_dynamic():
    assert broadcast_shapes((N, C, H, W), (1, C, 1, 1)) == (N, C, H, W)
    # A static 1 against `?` stays `?`; a static extent other than 1 wins.
    assert broadcast_shapes((1, C, H, W), (N, C, H, W)) == (N, C, H, W)
    assert broadcast_shapes((N, C), (5, C)) == (5, C)
    assert broadcast_shapes((N, C), (N, 1)) == (N, C)
    op = AddOp(value(N, C, H, W), value(C, 1, 1))
    assert op.output.type == t(N, C, H, W)


def test_broadcast_errors():
    with pytest.raises(VerifyException, match="nn.add: operands lhs .* do not broadcast"):
        AddOp(value(N, C, H, W), value(C))
    op = MulOp(value(N, C), value(1, C), result_type=t(1, C))
    with pytest.raises(VerifyException, match="nn.mul: result type tensor<1x37xf32>"):
        op.verify()


# ---------------------------------------------------------------------------
# Convolution and linear
# ---------------------------------------------------------------------------

CONV_CASES = [
    # (in_ch, out_ch, kernel, stride, padding (t, l, b, r), dilation, groups)
    (37, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (37, 16, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    (37, 37, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 37),
    (36, 12, (5, 3), (2, 3), (2, 1, 2, 1), (1, 2), 3),
    (37, 8, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    (37, 4, (7, 7), (3, 3), (3, 3, 3, 3), (1, 1), 1),
    (37, 5, (4, 2), (1, 1), (0, 0, 0, 0), (3, 1), 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_matches_torch(case, bias):
    cin, cout, k, s, p, d, g = case
    x = torch.empty(2, cin, H, W)
    wt = torch.empty(cout, cin // g, *k)
    xp = F.pad(x, (p[1], p[3], p[0], p[2]))
    expected = tuple(F.conv2d(xp, wt, stride=s, dilation=d, groups=g).shape)

    b = value(cout) if bias else None
    op = Conv2dOp(
        value(N, cin, H, W),
        value(cout, cin // g, *k),
        b,
        strides=s,
        padding=p,
        dilation=d,
        groups=g,
        layout="NCHW",
    )
    assert shape_of(op.output.type) == (N, *expected[1:])
    op.verify()
    assert op.strides_values == s and op.padding_values == p
    assert op.dilation_values == d and op.groups_value == g and op.layout_value == "NCHW"
    assert (op.bias is not None) == bias

    # The same convolution in NHWC, with an HWIO weight.
    op = Conv2dOp(
        value(N, H, W, cin),
        value(*k, cin // g, cout),
        b,
        strides=s,
        padding=p,
        dilation=d,
        groups=g,
        layout="NHWC",
    )
    assert shape_of(op.output.type) == nchw_to_nhwc((N, *expected[1:]))
    op.verify()


def test_conv2d_symmetric_padding_shorthand():
    x, w = value(N, C, H, W), value(8, C, 3, 3)
    assert Conv2dOp(x, w, padding=(1, 2)).padding_values == (1, 2, 1, 2)
    assert Conv2dOp(x, w, padding=1, strides=2).strides_values == (2, 2)


@pytest.mark.parametrize(
    ("x", "w", "b", "kwargs", "message"),
    [
        (
            (N, 16, H, W),
            (8, 8, 3, 3),
            None,
            {},
            r"input has 16 channels, weight expects 8 \(I=8 x groups=1\)",
        ),
        (
            (N, 16, H, W),
            (8, 8, 3, 3),
            None,
            {"groups": 3},
            r"input has 16 channels, weight expects 24 \(I=8 x groups=3\)",
        ),
        (
            (N, 16, H, W),
            (5, 8, 3, 3),
            None,
            {"groups": 2},
            "weight has 5 output channels, not divisible by groups=2",
        ),
        ((N, 16, H, W), (8, 16, 3, 3), (7,), {}, "bias has length 7, weight has 8 output channels"),
        ((N, 16, H, W), (8, 16, 3), None, {}, "weight must have rank 4 or 5, got rank 3"),
        ((N, 16, H), (8, 16, 3, 3), None, {}, "input must have rank 4, got rank 3"),
        (
            (N, 16, H, W),
            (8, 16, 3, 3),
            None,
            {"strides": (1, 1, 1)},
            "strides must have 2 values, got 3",
        ),
        ((N, 16, H, W), (8, 16, 3, 3), None, {"strides": (0, 1)}, "strides values must be >= 1"),
        ((N, 16, H, W), (8, 16, 3, 3), None, {"dilation": (0, 1)}, "dilation values must be >= 1"),
        (
            (N, 16, H, W),
            (8, 16, 3, 3),
            None,
            {"padding": (0, -1, 0, 0)},
            "padding values must be >= 0",
        ),
        ((N, 16, H, W), (8, 16, 3, 3), None, {"groups": 0}, "groups must be >= 1"),
        ((N, 16, H, W), (8, 16, 3, 3), None, {"layout": "NWHC"}, "layout must be one of"),
        ((N, 16, 2, 2), (8, 16, 3, 3), None, {}, "output H extent would be 0"),
    ],
)
def test_conv2d_errors(x, w, b, kwargs, message):
    args = (value(*x), value(*w), None if b is None else value(*b))
    with pytest.raises(VerifyException, match="nn.conv2d: " + message):
        Conv2dOp(*args, **kwargs)
    # The verifier reports the same problem on an op built with a result type.
    op = Conv2dOp(*args, **kwargs, result_type=t(N, 8, H, W))
    with pytest.raises(VerifyException, match="nn.conv2d: " + message):
        op.verify()


def test_conv2d_blocked_weight():
    """A channels-last weight blocked by output channels: O from the result or bias."""
    x, w = value(N, H, W, 16), value(2, 3, 3, 16, 64)
    op = Conv2dOp(x, w, padding=1, layout="NHWC", result_type=t(N, H, W, 100))
    op.verify()
    assert Conv2dOp(x, w, value(100), padding=1, layout="NHWC").output.type == t(N, H, W, 100)
    with pytest.raises(VerifyException, match="needs the result type or a bias"):
        Conv2dOp(x, w, layout="NHWC")
    with pytest.raises(VerifyException, match="150 output channels do not fill 2 blocks of 64"):
        Conv2dOp(x, w, value(150), padding=1, layout="NHWC")
    with pytest.raises(VerifyException, match="64 output channels do not fill 2 blocks"):
        Conv2dOp(x, w, padding=1, layout="NHWC", result_type=t(N, H, W, 64)).verify()
    with pytest.raises(VerifyException, match="blocked .rank-5. weight needs layout NHWC"):
        Conv2dOp(value(N, 16, H, W), w, value(100))


def test_conv2d_result_mismatch():
    op = Conv2dOp(value(N, C, H, W), value(8, C, 3, 3), strides=2, result_type=t(N, 8, 7, 7))
    with pytest.raises(
        VerifyException,
        match=r"nn.conv2d: result type tensor<\?x8x7x7xf32> does not match "
        r"inferred type tensor<\?x8x6x6xf32>",
    ):
        op.verify()


def test_linear():
    for shape in [(2, C), (2, 5, C), (C,)]:
        expected = tuple(F.linear(torch.empty(*shape), torch.empty(10, C)).shape)
        op = LinearOp(value(*shape), value(10, C), value(10))
        assert shape_of(op.output.type) == expected
        op.verify()
    op = LinearOp(value(N, C), value(10, C))
    assert op.output.type == t(N, 10) and op.bias is None
    with pytest.raises(
        VerifyException, match="nn.linear: input has 37 features, weight expects 36"
    ):
        LinearOp(value(N, C), value(10, 36))
    with pytest.raises(VerifyException, match="nn.linear: bias has length 9, weight has 10"):
        LinearOp(value(N, C), value(10, C), value(9))


def test_linear_with_a_packed_weight():
    """[1, 1, K, O] (a 1x1 convolution's HWIO), or blocked by output features
    [ceil(O/B), 1, 1, K, B]: O then comes from the result type or the bias."""
    op = LinearOp(value(N, 5, C), value(1, 1, C, 53))
    assert op.output.type == t(N, 5, 53) and op.packed
    op.verify()
    op = LinearOp(value(N, 5, C), value(4, 1, 1, C, 16), result_type=t(N, 5, 53))
    op.verify()
    assert LinearOp(value(N, 5, C), value(4, 1, 1, C, 16), value(53)).output.type == \
        t(N, 5, 53)
    with pytest.raises(VerifyException, match="53 output features do not fill 3 blocks of 16"):
        LinearOp(value(N, 5, C), value(3, 1, 1, C, 16), result_type=t(N, 5, 53)).verify()
    with pytest.raises(VerifyException, match="needs the result type or a bias"):
        LinearOp(value(N, 5, C), value(4, 1, 1, C, 16))
    with pytest.raises(VerifyException, match=r"a packed weight is \[1, 1, K, O\]"):
        LinearOp(value(N, 5, C), value(3, 3, C, 53))
    with pytest.raises(VerifyException, match="input has 37 features, weight expects 36"):
        LinearOp(value(N, 5, C), value(1, 1, 36, 53))


# ---------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------


def test_batch_norm():
    p = value(C)
    for shape, layout in [
        ((N, C, H, W), "NCHW"),
        ((N, H, W, C), "NHWC"),
        ((N, C), "NCHW"),
        ((N, C), "NHWC"),
    ]:
        op = BatchNormOp(value(*shape), p, p, p, p, eps=1e-3, layout=layout)
        assert op.output.type == t(*shape)
        assert op.eps_value == 1e-3 and op.layout_value == layout
        op.verify()
    op = BatchNormOp(value(N, C, H, W), None, None, p, p)
    assert op.weight is None and op.bias is None
    assert op.running_mean is p and op.running_var is p
    op.verify()
    op = BatchNormOp(value(N, C, H, W), None, p, p, p)
    assert op.weight is None and op.bias is p


@pytest.mark.parametrize(
    ("x", "params", "kwargs", "message"),
    [
        ((N, C, H, W), (C, C, 36, C), {}, "running_mean has length 36, input has 37 channels"),
        ((N, C, H, W), (36, C, C, C), {}, "weight has length 36, input has 37 channels"),
        ((N, H, W, C), (C, C, C, C), {}, "weight has length 37, input has 13 channels"),
        ((N, C, H), (C, C, C, C), {}, "input must have rank 2 or 4, got rank 3"),
        ((N, C), (C, C, C, C), {"eps": -1.0}, "eps must be finite and >= 0"),
        ((N, C), (C, C, C, C), {"layout": "CN"}, "layout must be one of"),
    ],
)
def test_batch_norm_errors(x, params, kwargs, message):
    args = [value(*x)] + [value(n) for n in params]
    with pytest.raises(VerifyException, match="nn.batch_norm: " + message):
        BatchNormOp(*args, **kwargs)
    op = BatchNormOp(*args, **kwargs, result_type=t(*x))
    with pytest.raises(VerifyException, match="nn.batch_norm: " + message):
        op.verify()


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------


def pool_cases(with_dilation: bool):
    for size, k, s, ceil in itertools.product(
        (13, 8, 5), (1, 2, 3, 4, 5), (1, 2, 3), (False, True)
    ):
        for pad in range(k // 2 + 1):
            for d in (1, 2) if with_dilation else (1,):
                if d * (k - 1) + 1 > size + 2 * pad:
                    continue
                yield size, k, s, pad, d, ceil


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool2d_matches_torch(layout):
    count = 0
    for size, k, s, pad, d, ceil in pool_cases(with_dilation=True):
        expected = F.max_pool2d(torch.empty(1, C, size, size), k, s, pad, d, ceil_mode=ceil).shape
        expected = (N, *tuple(expected)[1:])
        shape = (N, C, size, size)
        if layout == "NHWC":
            expected, shape = nchw_to_nhwc(expected), nchw_to_nhwc(shape)
        op = MaxPool2dOp(value(*shape), k, s, pad, d, ceil, layout)
        assert shape_of(op.output.type) == expected, (size, k, s, pad, d, ceil)
        op.verify()
        count += 1
    assert count > 300


def test_avg_pool2d_matches_torch():
    for size, k, s, pad, _, ceil in pool_cases(with_dilation=False):
        expected = F.avg_pool2d(torch.empty(1, C, size, size), k, s, pad, ceil_mode=ceil).shape
        op = AvgPool2dOp(value(N, C, size, size), k, s, pad, ceil)
        assert shape_of(op.output.type) == (N, *tuple(expected)[1:]), (size, k, s, pad, ceil)
        op.verify()


def test_pool_examples_from_torch():
    # The example of the design: kernel 3, stride 2, padding 1, ceil_mode on 13x13.
    expected = tuple(F.max_pool2d(torch.empty(1, 37, 13, 13), 3, 2, 1, ceil_mode=True).shape)
    op = MaxPool2dOp(
        value(N, C, H, W),
        kernel=(3, 3),
        strides=(2, 2),
        padding=(1, 1, 1, 1),
        dilation=(1, 1),
        ceil_mode=True,
        layout="NCHW",
    )
    assert shape_of(op.output.type) == (N, *expected[1:])
    # ceil_mode adds a window that starts inside the input ...
    assert MaxPool2dOp(value(N, C, H, W), 2, 2, 0, 1, True).output.type == t(N, C, 7, 7)
    assert MaxPool2dOp(value(N, C, H, W), 2, 2, 0, 1, False).output.type == t(N, C, 6, 6)
    # ... but not one that would start in the padding: 5 with kernel 2, stride 2 and
    # padding 1 gives ceil(5 / 2) + 1 = 4 windows, of which the last starts at 6 >= 5 + 1.
    expected = tuple(F.max_pool2d(torch.empty(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape)
    assert expected[2] == 3
    assert MaxPool2dOp(value(N, 1, 5, 5), 2, 2, 1, ceil_mode=True).output.type == t(N, 1, 3, 3)
    expected = tuple(F.avg_pool2d(torch.empty(1, 1, 5, 5), 3, 2, 1, ceil_mode=True).shape)
    op = AvgPool2dOp(value(N, 1, 5, 5), 3, 2, 1, ceil_mode=True)
    assert shape_of(op.output.type) == (N, *expected[1:])


def test_pool_asymmetric_padding():
    # TF "SAME" pooling of 13 with kernel 2, stride 2: pad 0 on top/left, 1 on bottom/right.
    op = MaxPool2dOp(value(N, H, W, C), 2, 2, (0, 0, 1, 1), layout="NHWC")
    assert op.output.type == t(N, 7, 7, C)
    assert op.padding_values == (0, 0, 1, 1)
    # Different extents on H and W.
    op = AvgPool2dOp(value(N, C, 12, 13), (3, 2), (2, 1), (1, 0, 1, 1))
    assert op.output.type == t(N, C, 6, 13)


def test_pool_properties():
    op = MaxPool2dOp(value(N, C, H, W), 3)
    assert op.kernel_values == (3, 3) and op.strides_values == (3, 3)
    assert op.padding_values == (0, 0, 0, 0) and op.dilation_values == (1, 1)
    assert op.ceil_mode_value is False and op.layout_value == "NCHW"
    op = AvgPool2dOp(value(N, C, H, W), 3, 1, 1, count_include_pad=False, divisor_override=4)
    assert op.count_include_pad_value is False and op.divisor_override_value == 4
    assert AvgPool2dOp(value(N, C, H, W), 3).count_include_pad_value is True
    assert AvgPool2dOp(value(N, C, H, W), 3).divisor_override_value is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda x: MaxPool2dOp(x, 3, 2, 2), r"nn.max_pool2d: padding \[2, 2, 2, 2\] exceeds half"),
        (lambda x: MaxPool2dOp(x, 3, 2, (0, 0, 0, 2)), "W padding 2 > 3 // 2"),
        (lambda x: MaxPool2dOp(x, (0, 3), 2), "nn.max_pool2d: kernel values must be >= 1"),
        (lambda x: MaxPool2dOp(x, 3, (2, 0)), "nn.max_pool2d: strides values must be >= 1"),
        (lambda x: MaxPool2dOp(x, 3, 2, 0, (1, 0)), "nn.max_pool2d: dilation values must be >= 1"),
        (lambda x: MaxPool2dOp(x, (3, 3, 3)), "nn.max_pool2d: kernel must have 2 values, got 3"),
        (lambda x: MaxPool2dOp(x, 15, 1), "nn.max_pool2d: output H extent would be -1"),
        (lambda x: MaxPool2dOp(x, 3, layout="HWCN"), "nn.max_pool2d: layout must be one of"),
        (lambda x: AvgPool2dOp(x, 3, 2, 2), r"nn.avg_pool2d: padding \[2, 2, 2, 2\] exceeds half"),
        (lambda x: AvgPool2dOp(x, 3, 2, divisor_override=0), "divisor_override must be >= 1"),
        (
            lambda x: AvgPool2dOp(x, 3, padding=(1, 1, 1)),
            "nn.avg_pool2d: padding must have 4 values",
        ),
        (lambda x: AdaptiveAvgPool2dOp(x, (1,)), "output_size must have 2 values, got 1"),
        (lambda x: AdaptiveAvgPool2dOp(x, (0, 1)), "output_size values must be >= 1"),
    ],
)
def test_pool_errors(build, message):
    with pytest.raises(VerifyException, match=message):
        build(value(N, C, H, W))


def test_pool_dilated_padding_uses_effective_kernel():
    # Effective kernel 2 * (3 - 1) + 1 = 5 allows padding 2.
    op = MaxPool2dOp(value(N, C, H, W), 3, 1, 2, 2)
    assert op.output.type == t(N, C, H, W)
    with pytest.raises(VerifyException, match="exceeds half the effective kernel"):
        MaxPool2dOp(value(N, C, H, W), 3, 1, 3, 2)


def test_pool_result_mismatch():
    op = MaxPool2dOp(value(N, C, H, W), 2, 2, ceil_mode=True, result_type=t(N, C, 6, 6))
    with pytest.raises(VerifyException, match=r"inferred type tensor<\?x37x7x7xf32>"):
        op.verify()


def test_adaptive_avg_pool2d():
    for out in [(1, 1), (5, 7), (13, 13), (20, 3)]:
        expected = tuple(F.adaptive_avg_pool2d(torch.empty(1, C, H, W), out).shape)
        op = AdaptiveAvgPool2dOp(value(N, C, H, W), out)
        assert shape_of(op.output.type) == (N, *expected[1:])
        assert op.output_size_values == out
        op.verify()
        op = AdaptiveAvgPool2dOp(value(N, H, W, C), out, "NHWC")
        assert shape_of(op.output.type) == nchw_to_nhwc((N, *expected[1:]))


# ---------------------------------------------------------------------------
# Shape manipulation and reductions
# ---------------------------------------------------------------------------


def test_cat():
    a, b = value(N, C, H, W), value(N, 16, H, W)
    op = CatOp([a, b, a], axis=1)
    assert op.output.type == t(N, 90, H, W) and op.axis_value == 1
    op.verify()
    op = CatOp([a, a], axis=-1)
    assert op.axis_value == 3 and op.output.type == t(N, C, H, 26)
    assert CatOp([a, a], 0).output.type == t(N, C, H, W)
    assert CatOp([value(2, C), value(3, C)], 0).output.type == t(5, C)
    # `?` matches a static extent, which the result keeps.
    assert CatOp([value(N, C), value(4, 5)], 1).output.type == t(4, C + 5)
    assert CatOp([a], 1).output.type == t(N, C, H, W)
    expected = tuple(torch.cat([torch.empty(2, C, H, W), torch.empty(2, 16, H, W)], 1).shape)
    assert shape_of(CatOp([value(2, C, H, W), value(2, 16, H, W)], 1).output.type) == expected


def test_cat_errors():
    a = value(N, C, H, W)
    with pytest.raises(
        VerifyException, match="nn.cat: inputs\\[1\\] has extent 12 on axis 2, expected 13"
    ):
        CatOp([a, value(N, 16, 12, W)], 1)
    with pytest.raises(
        VerifyException, match="nn.cat: inputs\\[1\\] has rank 3, inputs\\[0\\] has rank 4"
    ):
        CatOp([a, value(N, 16, H)], 1)
    with pytest.raises(VerifyException, match="nn.cat: axis 4 is out of range for rank 4"):
        CatOp([a, a], 4)
    with pytest.raises(VerifyException, match="nn.cat: needs at least one input"):
        CatOp.infer_type([], axis=0)
    op = CatOp([a, a], 1, result_type=t(N, 2 * C, H, W))
    op.axis = IntegerAttr(-3, i64)
    with pytest.raises(VerifyException, match=r"nn.cat: axis must be in \[0, 4\), got -3"):
        op.verify()


@pytest.mark.parametrize(
    ("shape", "start", "end"),
    [
        ((2, C, 1, 1), 1, -1),
        ((2, C, H, W), 0, 1),
        ((2, C, H, W), 0, -1),
        ((2, C, H, W), -2, 3),
        ((C,), 0, 0),
    ],
)
def test_flatten_matches_torch(shape, start, end):
    expected = tuple(torch.flatten(torch.empty(*shape), start, end).shape)
    op = FlattenOp(value(*shape), start, end)
    assert shape_of(op.output.type) == expected
    assert (op.start_dim_value, op.end_dim_value) == (start, end)
    op.verify()


def test_flatten_dynamic_and_errors():
    op = FlattenOp(value(N, C, 1, 1), 1, -1)
    assert op.output.type == t(N, C) and op.normalized_dims == (1, 3)
    assert FlattenOp(value(N, C, H), 0, 1).output.type == t(N, H)
    with pytest.raises(VerifyException, match="nn.flatten: start_dim 2 comes after end_dim 1"):
        FlattenOp(value(N, C, H, W), 2, 1)
    with pytest.raises(VerifyException, match=r"nn.flatten: end_dim 4 is out of range for rank 4"):
        FlattenOp(value(N, C, H, W), 1, 4)


def test_reshape():
    x = value(N, C, 1, 1)
    op = ReshapeOp(x, t(N, C))
    assert op.output.type == t(N, C)
    op.verify()
    assert ReshapeOp(x, [N, -1]).output.type == t(N, C)
    assert ReshapeOp(value(N, 4, 6), [N, 3, -1]).output.type == t(N, 3, 8)
    assert ReshapeOp(value(2, 4, 6), [-1, 12]).output.type == t(4, 12)
    assert ReshapeOp(value(2, 4, 6), [-1]).output.type == t(48)
    # Counts that cannot be compared are accepted.
    ReshapeOp(value(N, C, H), t(H, N)).verify()
    with pytest.raises(VerifyException, match="nn.reshape: input .* have different element counts"):
        ReshapeOp(value(N, C, H, W), t(N, C, H)).verify()
    with pytest.raises(VerifyException, match="different element counts"):
        ReshapeOp(value(2, C), t(C, 3)).verify()
    with pytest.raises(VerifyException, match="nn.reshape: cannot reshape"):
        ReshapeOp(value(N, C), [N, 2, -1])
    with pytest.raises(VerifyException, match="more than one -1"):
        ReshapeOp(value(N, C), [-1, -1])


@pytest.mark.parametrize(
    ("dims", "keepdim"),
    [((2, 3), True), ((2, 3), False), ((1,), False), ((-1,), True), ((3, 0), False)],
)
def test_mean_matches_torch(dims, keepdim):
    expected = tuple(torch.mean(torch.empty(2, C, H, W), dims, keepdim).shape)
    op = MeanOp(value(2, C, H, W), dims, keepdim)
    assert shape_of(op.output.type) == expected
    assert op.keepdim_value is keepdim and all(d >= 0 for d in op.dims_values)
    op.verify()


def test_sum_infers_like_mean():
    assert SumOp(value(N, C, H, W), [1]).output.type == t(N, H, W)
    with pytest.raises(VerifyException, match="nn.sum: dims must not be empty"):
        SumOp(value(N, C, H, W), [])


def test_mean_dynamic_and_errors():
    assert MeanOp(value(N, C, H, W), [2, 3], True).output.type == t(N, C, 1, 1)
    assert MeanOp(value(N, C, H, W), [2, 3]).output.type == t(N, C)
    with pytest.raises(VerifyException, match=r"nn.mean: dims \[2, 2\] has duplicates"):
        MeanOp(value(N, C, H, W), [2, -2])
    with pytest.raises(VerifyException, match="nn.mean: dims 4 is out of range"):
        MeanOp(value(N, C, H, W), [4])
    with pytest.raises(VerifyException, match="nn.mean: dims must not be empty"):
        MeanOp(value(N, C, H, W), [])


def test_softmax():
    op = SoftmaxOp(value(N, 10), -1)
    assert op.axis_value == 1 and op.output.type == t(N, 10)
    op.verify()
    with pytest.raises(VerifyException, match="nn.softmax: axis 2 is out of range"):
        SoftmaxOp(value(N, 10), 2)


# ---------------------------------------------------------------------------
# Stacks
# ---------------------------------------------------------------------------


def build_stack_module() -> ModuleOp:
    x_t, p_t = t(N, C, H, W), t(C)
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        f = func.FuncOp("net", ((x_t, p_t), (t(N, C, 7, 7),)))
        with ImplicitBuilder(f.body) as (x, p):
            body = Block(arg_types=[x_t, p_t])
            with ImplicitBuilder(body) as (a, m):
                bn = BatchNormOp(a, m, m, m, m)
                r = ReluOp(bn)
                mp = MaxPool2dOp(r, 3, 2, 1)
                YieldOp(mp)
            stack = StackOp("stack0", [x, p], [mp.output.type], Region(body))
            func.ReturnOp(stack.outputs[0])
    return module


def test_stack_build_verify_print_parse():
    module = build_stack_module()
    module.verify()
    stack = next(op for op in module.walk() if isinstance(op, StackOp))
    assert stack.stack_name_value == "stack0"
    assert isinstance(stack.yield_op, YieldOp)
    assert not is_optimizable(stack)
    text = print_op(module)
    assert 'nn.stack "stack0" (%' in text
    reparsed = Parser(make_context(), text).parse_module()
    reparsed.verify()
    assert reparsed.is_structurally_equivalent(module)
    assert print_op(reparsed) == text


def test_stack_errors():
    x_t = t(N, C)
    outer = Block(arg_types=[x_t])
    x = outer.args[0]

    body = Block(arg_types=[t(N, C + 1)])
    with ImplicitBuilder(body) as (a,):
        YieldOp(a)
    stack = StackOp("s", [x], [x_t], Region(body))
    outer.add_op(stack)
    with pytest.raises(VerifyException, match=r'nn.stack "s": body block arguments have types'):
        stack.verify()

    body = Block(arg_types=[x_t])
    with ImplicitBuilder(body) as (a,):
        YieldOp(MeanOp(a, [1], True))
    stack = StackOp("s", [x], [x_t], Region(body))
    with pytest.raises(
        VerifyException, match=r'nn.stack "s": nn.yield has types \(tensor<\?x1xf32>\)'
    ):
        stack.verify()

    body = Block(arg_types=[x_t])
    with ImplicitBuilder(body):
        YieldOp(ReluOp(x))  # uses a value from outside the stack
    stack = StackOp("s", [x], [x_t], Region(body))
    with pytest.raises(VerifyException, match="IsolatedFromAbove"):
        stack.verify()


# ---------------------------------------------------------------------------
# Text round trip and property encodings
# ---------------------------------------------------------------------------


def test_roundtrip_file():
    ctx = make_context()
    text = ROUNDTRIP.read_text()
    module = Parser(ctx, text).parse_module()
    module.verify()
    printed = print_op(module)
    again = Parser(ctx, printed).parse_module()
    again.verify()
    assert print_op(again) == printed
    assert again.is_structurally_equivalent(module)
    generic = print_op(module, generic=True)
    from_generic = Parser(ctx, generic).parse_module()
    assert print_op(from_generic) == printed
    names = {op.name for op in module.walk()}
    assert {op.name for op in NN.operations} <= names


def test_property_encodings():
    x = value(N, C, H, W)
    mp = MaxPool2dOp(x, 3, 2, 1, ceil_mode=True)
    assert str(mp.kernel) == "array<i64: 3, 3>"
    assert str(mp.ceil_mode) == "true"
    conv = Conv2dOp(x, value(8, C, 3, 3))
    assert str(conv.groups) == "1 : i64" and conv.layout == StringAttr("NCHW")
    bn = BatchNormOp(x, None, None, value(C), value(C), eps=1e-5)
    assert str(bn.eps) == "1.000000e-05 : f64"
    # Every property is printed, defaults included.
    assert "ceil_mode = false" in print_op(MaxPool2dOp(x, 3, 2, 1))
    assert "ceil_mode = true" in print_op(mp)
    assert "count_include_pad = true" in print_op(AvgPool2dOp(x, 3, 2, 1))
    assert "keepdim = false" in print_op(MeanOp(x, [2, 3]))
    assert 'approximate = "none"' in print_op(GeluOp(x))
    assert "divisor_override" not in print_op(AvgPool2dOp(x, 3, 2, 1))
    assert "max" not in print_op(ClampOp(x, min=0.0))


def test_property_kind_errors():
    ctx = make_context()
    text = """
    func.func @f(%x: tensor<?x37x13x13xf32>) {
      %0 = nn.max_pool2d %x {kernel = array<i32: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
      func.return
    }
    """
    module = Parser(ctx, text).parse_module()
    with pytest.raises(
        VerifyException, match="nn.max_pool2d: property kernel must be an array<i64: ...>"
    ):
        module.verify()
    text = text.replace("array<i32: 3, 3>", "array<i64: 3, 3>")
    text = text.replace("ceil_mode = false", "ceil_mode = 1 : i64")
    module = Parser(ctx, text).parse_module()
    with pytest.raises(VerifyException, match="property ceil_mode must be a bool"):
        module.verify()


def test_parsed_values_are_f32_tensors():
    ctx = make_context()
    module = Parser(ctx, ROUNDTRIP.read_text()).parse_module()
    for op in module.walk():
        if op.dialect_name() == "nn":
            for r in op.results:
                assert isinstance(r.type, TensorType) and r.type.element_type == f32

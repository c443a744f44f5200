"""The Keras layers that map to `nn` ops, one mapper per layer kind.

`map_node` gives the value of one Keras node: the mapper of its layer emits `nn`
ops into the builder as pieces, each with the TensorFlow computation of the same
value, or raises `Unmapped` (the layer then runs in Keras). The ops are NHWC and
repeat TensorFlow's operations in TensorFlow's order (sigmoid, swish, mean and
batch norm use TensorFlow's own numerics).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
from xdsl.ir import SSAValue

from brainslug.dialects import nn
from brainslug.dialects.nn.base import pair, quad
from brainslug.dialects.nn.pooling import MaxPoolNaN
from brainslug.pipeline.target import block_weights, conv_weight_block

if TYPE_CHECKING:
    from brainslug.frontend_tf.capture import _Builder

LAYOUT = "NHWC"
"""The layout of every captured 4-D value (Keras' channels_last)."""


class Unmapped(Exception):
    """The layer runs in TensorFlow; the message says why."""


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _snapshot(v: Any) -> np.ndarray:
    a = np.array(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32, copy=True)
    return np.ascontiguousarray(a)


def same_padding(size: int, k: int, s: int, dil: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) of one spatial axis: the
    extra element, if any, goes after."""
    eff = (k - 1) * dil + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


class KerasNode:
    """A Keras node seen by the mappers: its layer, operands and result."""

    def __init__(self, b: _Builder, node: Any, ins: list[str]):
        self.b = b
        self.node = node
        self.op = node.operation
        self.ins = ins
        self.name = self.op.name

    def x(self, k: int = 0) -> SSAValue:
        return self.b.values[self.ins[k]]


def _activation(nd: KerasNode, x: str, fn: Any, name: str) -> str:
    """Emit a Keras activation function applied to value `x`."""
    b = nd.b
    v = b.values[x]
    key = getattr(fn, "__name__", str(fn))
    if key == "linear":
        return x
    if key in ("relu",):
        return b.emit(name, nn.ReluOp(v, "eigen"), [x], tf.nn.relu)
    if key == "leaky_relu":
        slope = float(_default_arg(fn, "negative_slope", 0.2))
        return _leaky(b, name, x, slope)
    if key == "relu6":
        return b.emit(name, nn.ClampOp(v, 0.0, 6.0, impl="eigen"), [x], tf.nn.relu6)
    if key == "sigmoid":
        # TensorFlow's CPU kernel (Eigen's logistic), not 1 / (1 + exp(-x))
        return b.emit(name, nn.SigmoidOp(v, "eigen"), [x], tf.nn.sigmoid)
    if key == "tanh":
        return b.emit(name, nn.TanhOp(v), [x], tf.math.tanh)
    if key in ("silu", "swish"):
        # TensorFlow: x * sigmoid(x), its Sigmoid kernel then a Mul
        s = b.emit(f"{name}.sigmoid", nn.SigmoidOp(v, "eigen"), [x], tf.nn.sigmoid)
        return b.emit(name, nn.MulOp(v, b.values[s]), [x, s], tf.multiply)
    if key == "hard_sigmoid":
        # Keras 3 on TensorFlow: relu6(x + 3) / 6
        return b.emit(name, nn.HardsigmoidOp(v), [x], keras.activations.hard_sigmoid)
    if key in ("hard_silu", "hard_swish"):
        # Keras 3 on TensorFlow: x * (relu6(x + 3) / 6)
        s = b.emit(f"{name}.hard_sigmoid", nn.HardsigmoidOp(v), [x],
                   keras.activations.hard_sigmoid)
        return b.emit(name, nn.MulOp(v, b.values[s]), [x, s], tf.multiply)
    if key == "gelu":
        approx = _default_arg(fn, "approximate", False)
        return b.emit(name, nn.GeluOp(v, "tanh" if approx else "none", impl="eigen"), [x],
                      lambda t: tf.nn.gelu(t, approximate=approx))
    if key == "softmax":
        axis = _default_arg(fn, "axis", -1)
        rank = len(v.type.get_shape())
        return b.emit(name, nn.SoftmaxOp(v, axis % rank, impl="eigen"), [x],
                      lambda t: tf.nn.softmax(t, axis=axis))
    types = [v.type]
    return b.library(name, [x], types, fn, f"keras.activations.{key}",
                     f"activation {key} has no exact nn op")[0]


def _leaky(b: _Builder, name: str, x: str, slope: float) -> str:
    """TensorFlow's leaky_relu is max(x, slope * x) for slope <= 1."""
    if not 0.0 <= slope <= 1.0:
        raise Unmapped(f"leaky relu with slope {slope}")
    return b.emit(name, nn.LeakyReluOp(b.values[x], slope), [x],
                  lambda t: tf.nn.leaky_relu(t, alpha=slope))


def _default_arg(fn: Any, arg: str, default: Any) -> Any:
    try:
        p = inspect.signature(fn).parameters.get(arg)
    except (TypeError, ValueError):
        return default
    return default if p is None or p.default is inspect.Parameter.empty else p.default


def _check_channels_last(op: Any) -> None:
    if getattr(op, "data_format", "channels_last") != "channels_last":
        raise Unmapped(f"data_format {op.data_format}")


def _tf_padding(op: Any, in_hw: Sequence[int], k: Sequence[int], s: Sequence[int],
                dil: Sequence[int] = (1, 1)) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a Keras 'valid'/'same' padding."""
    if op.padding == "valid":
        return (0, 0, 0, 0)
    if op.padding != "same":
        raise Unmapped(f"padding {op.padding!r}")
    if any(d is None for d in in_hw):
        raise Unmapped("'same' padding of an unknown spatial size")
    t, bo = same_padding(in_hw[0], k[0], s[0], dil[0])
    le, r = same_padding(in_hw[1], k[1], s[1], dil[1])
    return (t, le, bo, r)


def _blocked(hwio: np.ndarray, lanes4: int) -> np.ndarray | None:
    """An HWIO kernel blocked by output channels, `[O/B, KH, KW, I, B]` (zeros
    past O; B from `conv_weight_block` for register blocks of up to `lanes4`
    lanes), when it has more than one block of them; else None."""
    block = conv_weight_block(hwio.shape[3], lanes4 // 4,
                              three=hwio.shape[:2] == (1, 1)) if lanes4 else 0
    return block_weights(hwio, block) if block else None


def _conv_like(nd: KerasNode) -> str:
    """Conv2D / DepthwiseConv2D / SeparableConv2D: the convolutions run in
    TensorFlow; the bias and the activation are `nn` ops that can join stacks."""
    b, op = nd.b, nd.op
    _check_channels_last(op)
    x = nd.ins[0]
    x, extra = b.deferred.get(x, (x, None))
    xv = b.values[x]
    in_shape = xv.type.get_shape()
    if len(in_shape) != 4:
        raise Unmapped(f"a rank-{len(in_shape)} input")
    cin = in_shape[3]
    k, s, dil = _pair(op.kernel_size), _pair(op.strides), _pair(op.dilation_rate)
    pad = _tf_padding(op, in_shape[1:3], k, s, dil)
    cls = type(op).__name__
    padding: Any = op.padding.upper()
    explicit: list[int] = []
    if extra is not None:  # a folded ZeroPadding2D (the conv's own padding is 'valid')
        pad = extra
        padding, explicit = "EXPLICIT", [0, 0, extra[0], extra[2], extra[1], extra[3], 0, 0]
    if cls == "Conv2D":
        w = op.kernel
        groups = int(getattr(op, "groups", 1))
        packed = _blocked(_snapshot(w), b.conv_block) if groups == 1 else None
        weight = _snapshot(w) if packed is None else packed
        out_type = nn.Conv2dOp.infer_type(
            xv.type, nn.make_tensor(tuple(w.shape)), None, strides=pair(s), padding=quad(pad),
            dilation=pair(dil), groups=groups, layout=LAYOUT)
        conv = nn.Conv2dOp(xv, b.arg(nn.make_tensor(weight.shape), weight, f"{op.name}.kernel"),
                           None, strides=s, padding=pad, dilation=dil, groups=groups,
                           layout=LAYOUT, result_type=out_type)
        if groups == 1:
            kern = tf.convert_to_tensor(_snapshot(w))
            run = lambda t: tf.raw_ops.Conv2D(  # noqa: E731
                input=t, filter=kern, strides=[1, *s, 1], padding=padding,
                explicit_paddings=explicit, dilations=[1, *dil, 1], data_format="NHWC")
        elif groups == cin and dil == (1, 1) and w.shape[2] == 1:
            # Keras runs grouped convolutions through XLA; one group per input
            # channel is TensorFlow's depthwise convolution
            dkern = tf.reshape(tf.convert_to_tensor(_snapshot(w)), [k[0], k[1], cin, -1])
            run = lambda t: tf.raw_ops.DepthwiseConv2dNative(  # noqa: E731
                input=t, filter=dkern, strides=[1, *s, 1], padding=padding,
                explicit_paddings=explicit, data_format="NHWC")
        elif extra is None:
            run = lambda t: op.convolution_op(t, op.kernel)  # noqa: E731
        else:
            run = lambda t: op.convolution_op(zero_pad(t, extra), op.kernel)  # noqa: E731
        y = b.emit(f"{op.name}.conv", conv, [x], run)
        filters = op.filters
    elif cls in ("DepthwiseConv2D", "SeparableConv2D"):
        dw = op.depthwise_kernel if cls == "SeparableConv2D" else op.kernel
        mult = int(op.depth_multiplier)
        shape_dw = (k[0], k[1], 1, cin * mult)
        # (KH, KW, C, M) and (KH, KW, 1, C*M) order their elements alike
        conv = nn.Conv2dOp(xv, b.arg(nn.make_tensor(shape_dw), _snapshot(dw).reshape(shape_dw),
                                     f"{op.name}.depthwise_kernel"), None, strides=s,
                           padding=pad, dilation=dil, groups=cin, layout=LAYOUT)
        dkern = tf.convert_to_tensor(_snapshot(dw))
        if dil == (1, 1):
            run = lambda t: tf.raw_ops.DepthwiseConv2dNative(  # noqa: E731
                input=t, filter=dkern, strides=[1, *s, 1], padding=padding,
                explicit_paddings=explicit, data_format="NHWC")
        else:
            run = lambda t: tf.nn.depthwise_conv2d(  # noqa: E731
                t if extra is None else zero_pad(t, extra), dkern, [1, *s, 1],
                "VALID" if extra is not None else padding, dilations=dil, data_format="NHWC")
        y = b.emit(f"{op.name}.depthwise", conv, [x], run)
        filters = cin * mult
        if cls == "SeparableConv2D":
            pw = op.pointwise_kernel
            pconv = nn.Conv2dOp(b.values[y], b.arg(nn.make_tensor(tuple(pw.shape)),
                                                   _snapshot(pw), f"{op.name}.pointwise_kernel"),
                                None, layout=LAYOUT)
            pkern = tf.convert_to_tensor(_snapshot(pw))
            y = b.emit(f"{op.name}.pointwise", pconv, [y], lambda t: tf.raw_ops.Conv2D(
                input=t, filter=pkern, strides=[1, 1, 1, 1], padding="VALID",
                data_format="NHWC"))
            filters = op.filters
    else:
        raise Unmapped(f"layer {cls}")
    if op.use_bias:
        bias = _snapshot(op.bias).reshape(filters)
        bt = tf.convert_to_tensor(bias)
        y = b.emit(f"{op.name}.bias", nn.AddOp(b.values[y], b.param(bias, f"{op.name}.bias")),
                   [y], lambda t: tf.add(t, bt))
    return _activation(nd, y, op.activation, f"{op.name}.act") if op.activation else y


def _dense(nd: KerasNode) -> str:
    b, op = nd.b, nd.op
    x = nd.ins[0]
    xv = b.values[x]
    kernel = _snapshot(op.kernel)
    w = b.arg(nn.make_tensor(kernel.shape[::-1]), kernel, f"{op.name}.kernel")
    kt = tf.convert_to_tensor(kernel)
    # Keras: ops.matmul (a tensordot over the last axis when the input has rank > 2)
    matmul = tf.matmul if len(xv.type.get_shape()) == 2 else keras.ops.matmul
    if op.use_bias:
        bias = _snapshot(op.bias)
        bt = tf.convert_to_tensor(bias)
        bv = b.arg(nn.make_tensor(bias.shape), bias, f"{op.name}.bias")
        run = lambda t: tf.add(matmul(t, kt), bt)  # noqa: E731
    else:
        bv, run = None, (lambda t: matmul(t, kt))
    y = b.emit(f"{op.name}.matmul", nn.LinearOp(xv, w, bv), [x], run)
    return _activation(nd, y, op.activation, f"{op.name}.act") if op.activation else y


def _batch_norm(nd: KerasNode) -> str:
    b, op = nd.b, nd.op
    xv = nd.x()
    rank = len(xv.type.get_shape())
    axis = op.axis if isinstance(op.axis, int) else None
    if axis is None or axis % rank != rank - 1 or rank not in (2, 4):
        raise Unmapped(f"batch norm over axis {op.axis} of a rank-{rank} tensor")
    if getattr(op, "renorm", False):
        raise Unmapped("batch renormalization")
    n = op.name
    inv, offset, mean = _tf_batch_norm_factors(op)
    # nn.batch_norm computes alpha = weight * (1 / sqrt(var + eps)) = inv exactly
    # (var 1, eps 0), beta = bias - mean * alpha and x * alpha + beta: TensorFlow's
    # operations on TensorFlow's per-channel factors
    bn = nn.BatchNormOp(xv, b.param(inv, f"{n}.inv"), b.param(offset, f"{n}.offset"),
                        b.param(mean, f"{n}.moving_mean"),
                        b.param(np.ones_like(inv), f"{n}.one"), eps=0.0, layout=LAYOUT,
                        impl="eigen")
    return b.emit(n, bn, nd.ins, lambda t: op(t, training=False))


def _layer_norm(nd: KerasNode) -> str:
    """LayerNormalization over the last axis, as Keras computes it on TensorFlow
    (`nn.layer_norm {impl = "eigen"}`)."""
    b, op = nd.b, nd.op
    xv = nd.x()
    rank = len(xv.type.get_shape())
    axes = [op.axis] if isinstance(op.axis, int) else list(op.axis)
    if [a % rank for a in axes] != [rank - 1]:
        raise Unmapped(f"layer normalization over axes {op.axis} of a rank-{rank} tensor")
    if getattr(op, "rms_scaling", False):
        raise Unmapped("layer normalization with RMS scaling")
    n = op.name
    weight = b.param(_snapshot(op.gamma), f"{n}.gamma") if op.scale else None
    bias = b.param(_snapshot(op.beta), f"{n}.beta") if op.center else None
    ln = nn.LayerNormOp(xv, weight, bias, eps=float(op.epsilon), impl="eigen")
    return b.emit(n, ln, nd.ins, lambda t: op(t))


def _normalization(nd: KerasNode) -> str:
    """The input Normalization layer: `(x - mean) / max(sqrt(variance), eps)`,
    the denominator from TensorFlow's own ops (as the layer computes it on
    every call), the subtraction and division as IEEE operations: bit for bit."""
    b, op = nd.b, nd.op
    if getattr(op, "invert", False):
        raise Unmapped("inverted Normalization")
    mean = np.ascontiguousarray(np.asarray(op.mean, dtype=np.float32))
    var = tf.convert_to_tensor(np.asarray(op.variance, dtype=np.float32))
    denom = np.ascontiguousarray(
        tf.maximum(tf.sqrt(var), keras.backend.epsilon()).numpy(), dtype=np.float32)
    rank = len(nd.x().type.get_shape())
    if mean.ndim != rank or denom.ndim != rank:
        raise Unmapped(f"Normalization statistics of rank {mean.ndim} on a rank-{rank} tensor")
    x = nd.ins[0]
    mt, dt = tf.convert_to_tensor(mean), tf.convert_to_tensor(denom)
    centred = b.emit(f"{op.name}.sub", nn.SubOp(b.values[x], b.param(mean, f"{op.name}.mean")),
                     [x], lambda t: t - mt)
    return b.emit(op.name, nn.DivOp(b.values[centred], b.param(denom, f"{op.name}.denom")),
                  [centred], lambda t: t / dt)


def _tf_batch_norm_factors(op: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inv, offset, mean) of a Keras BatchNormalization at inference.

    Keras 3 on TensorFlow calls tf.nn.batch_normalization: inv = rsqrt(variance +
    epsilon) (times gamma), y = x * inv + (beta - mean * inv), or + (-mean * inv)
    without beta. TensorFlow's Rsqrt kernel is not 1 / sqrt: Eigen's AVX prsqrt
    is the CPU's rsqrtps estimate refined by one Newton step (EIGEN_FAST_MATH), ~1
    ulp off on about half the channels. So inv comes from TensorFlow's own kernels,
    computed here as the layer computes it on every call; without beta the offset is
    -0.0, so that offset - mean * inv is -(mean * inv) down to the sign of zero."""
    var = tf.convert_to_tensor(_snapshot(op.moving_variance))
    inv = tf.math.rsqrt(var + op.epsilon)
    if op.scale:
        inv = inv * tf.convert_to_tensor(_snapshot(op.gamma))
    inv_a = np.ascontiguousarray(inv.numpy(), dtype=np.float32)
    offset = _snapshot(op.beta) if op.center else np.full_like(inv_a, -0.0)
    return inv_a, offset, _snapshot(op.moving_mean)


def _pool(nd: KerasNode, kind: str) -> str:
    b, op = nd.b, nd.op
    _check_channels_last(op)
    x, extra = b.deferred.get(nd.ins[0], (nd.ins[0], None))
    xv = b.values[x]
    shape = xv.type.get_shape()
    if len(shape) != 4:
        raise Unmapped(f"a rank-{len(shape)} input")
    k = _pair(op.pool_size)
    s = _pair(op.strides) if op.strides is not None else k
    pad = extra if extra is not None else _tf_padding(op, shape[1:3], k, s)
    mode = op.padding.upper()
    if kind == "max":
        # TensorFlow's MaxPool skips NaN (see MaxPoolNaN.SKIP)
        pool = nn.MaxPool2dOp(xv, k, s, pad, layout=LAYOUT, nan=MaxPoolNaN.SKIP)
        tf_run = lambda t: tf.nn.max_pool2d(  # noqa: E731
            t if extra is None else zero_pad(t, extra), k, s, mode)
    else:
        # Keras 'same' average pooling leaves the padding out of the count; padded
        # zeros of a folded ZeroPadding2D are counted
        pool = nn.AvgPool2dOp(xv, k, s, pad, count_include_pad=extra is not None,
                              layout=LAYOUT)
        tf_run = lambda t: tf.nn.avg_pool2d(  # noqa: E731
            t if extra is None else zero_pad(t, extra), k, s, mode)
    return b.emit(op.name, pool, [x], tf_run)


def zero_pad(t: Any, p: tuple[int, int, int, int]) -> Any:
    """NHWC tensor `t` padded with zeros by (top, left, bottom, right) `p`."""
    return tf.pad(t, [[0, 0], [p[0], p[2]], [p[1], p[3]], [0, 0]])


def _zero_padding(nd: KerasNode) -> str:
    """ZeroPadding2D folded into the padding of every layer that reads it: valid
    convolutions and valid average pools (counting the zeros); elsewhere (a max
    pool among its readers, see `_fold_blocker`) an `nn.pad`."""
    b, op = nd.b, nd.op
    _check_channels_last(op)
    (t, bo), (le, r) = (tuple(int(v) for v in p) for p in op.padding)
    pads = (t, le, bo, r)
    out = nd.node.outputs[0]
    users = b.consumers.get(id(out), [])
    folds = bool(users) and id(out) not in b.model_outputs and not any(
        _fold_blocker(u, pads) for u in users)
    if not folds:
        return b.emit(op.name, nn.PadOp(nd.x(), [0, t, le, 0], [0, bo, r, 0]), nd.ins,
                      lambda x: op(x))
    name = b.fresh(op.name)
    b.deferred[name] = (nd.ins[0], pads)
    return name


def _cropping(nd: KerasNode) -> str:
    """Cropping2D: an `nn.pad` by negative counts."""
    b, op = nd.b, nd.op
    _check_channels_last(op)
    (t, bo), (le, r) = (tuple(int(v) for v in p) for p in op.cropping)
    return b.emit(op.name, nn.PadOp(nd.x(), [0, -t, -le, 0], [0, -bo, -r, 0]), nd.ins,
                  lambda x: op(x))


def _upsampling(nd: KerasNode) -> str:
    """UpSampling2D with nearest interpolation: Keras repeats each row and column
    (`ops.repeat`), an `nn.resize_nearest` reading point `i floordiv factor`."""
    b, op = nd.b, nd.op
    _check_channels_last(op)
    if op.interpolation != "nearest":
        raise Unmapped(f"UpSampling2D with {op.interpolation!r} interpolation")
    fh, fw = (int(v) for v in op.size)
    x = nd.x()
    n, h, w, c = x.type.get_shape()
    return b.emit(op.name, nn.ResizeNearestOp(x, [n, h * fh, w * fw, c], [1] * 4, [0] * 4,
                                              [1, fh, fw, 1]), nd.ins, lambda t: op(t))


def _fold_blocker(node: Any, pads: tuple[int, int, int, int]) -> str | None:
    """None if the padding can move into the layer of `node`, else why not."""
    u = node.operation
    cls = type(u).__name__
    if len(node.arguments.keras_tensors) != 1:
        return f"{cls} reads several tensors"
    if getattr(u, "data_format", "channels_last") != "channels_last":
        return "channels_first"
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        return None if u.padding == "valid" else f"{u.name} has padding {u.padding!r}"
    if cls == "MaxPooling2D":
        # TensorFlow's max pool skips NaN, but not the padded zeros: a window
        # whose values are all NaN gives 0 where it reaches into the padding and
        # -FLT_MAX elsewhere, which no padding of the pool itself repeats
        return f"{u.name} is a max pool (a padded zero beats a window of NaN)"
    if cls == "AveragePooling2D":
        if u.padding != "valid":
            return f"{u.name} has padding {u.padding!r}"
        k = _pair(u.pool_size)
        if any(p > k[i % 2] // 2 for i, p in enumerate(pads)):
            return f"padding {pads} exceeds half the pool window of {u.name}"
        return None
    return f"{u.name} is a {cls}"


def _global_pool(nd: KerasNode, kind: str) -> str:
    b, op = nd.b, nd.op
    _check_channels_last(op)
    xv = nd.x()
    shape = xv.type.get_shape()
    if len(shape) != 4:
        raise Unmapped(f"a rank-{len(shape)} input")
    keep = bool(op.keepdims)
    if kind == "avg":
        return b.emit(op.name, tf_mean(xv, [1, 2], keep), nd.ins,
                      lambda t: tf.reduce_mean(t, axis=[1, 2], keepdims=keep))
    if shape[1] < 0 or shape[2] < 0:
        raise Unmapped("global max pool of an unknown spatial size")
    # TensorFlow's reduce_max, unlike its MaxPool, propagates NaN (and a window
    # of -inf gives -inf): the default nan = "propagate"
    run = lambda t: tf.reduce_max(t, axis=[1, 2], keepdims=keep)  # noqa: E731
    hw = (shape[1], shape[2])
    if keep:
        return b.emit(op.name, nn.MaxPool2dOp(xv, hw, hw, layout=LAYOUT), nd.ins, run)
    p = b.emit(f"{op.name}.pool", nn.MaxPool2dOp(xv, hw, hw, layout=LAYOUT), nd.ins,
               lambda t: tf.reduce_max(t, axis=[1, 2], keepdims=True))
    return b.emit(op.name, nn.ReshapeOp(b.values[p], [nn.DYN, shape[3]]), [p], run)


MEAN_LIMIT = 1024
"""The most elements a mean that reduces the innermost dim may sum: BrainSlug
sums those in order, and over more elements its rounding drifts from
TensorFlow's tree reduction."""


def tf_mean(x: SSAValue, dims: list[int], keep: bool) -> nn.MeanOp:
    """TensorFlow's mean: in TensorFlow's summation order (bit for bit) when the
    innermost dim is kept (global pooling, squeeze-and-excite), else in order,
    over at most MEAN_LIMIT elements."""
    shape = x.type.get_shape()
    rank = len(shape)
    if rank - 1 not in [a % rank for a in dims]:
        if any(shape[a] < 0 for a in dims):
            raise Unmapped("a mean over an unknown number of elements")
        return nn.MeanOp(x, dims, keep, impl="eigen")
    n = int(np.prod([shape[a] for a in dims])) if all(shape[a] >= 0 for a in dims) else -1
    if n < 0 or n > MEAN_LIMIT:
        raise Unmapped(f"a mean over {n if n >= 0 else 'an unknown number of'} elements "
                       f"of the innermost dim (BrainSlug sums in order; over more than "
                       f"{MEAN_LIMIT} that rounds worse than TensorFlow's tree reduction)")
    return nn.MeanOp(x, dims, keep)


def _merge(nd: KerasNode, ctor: type, tf_fn: Callable) -> str:
    b = nd.b
    if len(nd.ins) < 2:
        raise Unmapped("fewer than two inputs")
    y = nd.ins[0]
    for k, other in enumerate(nd.ins[1:], 1):
        name = nd.name if k == len(nd.ins) - 1 else f"{nd.name}.{k}"
        y = b.emit(name, ctor(b.values[y], b.values[other]), [y, other], tf_fn)
    return y


def _relu_layer(nd: KerasNode) -> str:
    b, op = nd.b, nd.op
    slope = float(op.negative_slope)
    thr = float(op.threshold)
    mx = None if op.max_value is None else float(op.max_value)
    if thr != 0.0 or slope != 0.0:
        raise Unmapped("ReLU with a threshold or a negative slope")
    xv = nd.x()
    if mx is None:
        return b.emit(op.name, nn.ReluOp(xv, "eigen"), nd.ins, tf.nn.relu)
    if mx == 6.0:
        return b.emit(op.name, nn.ClampOp(xv, 0.0, 6.0, impl="eigen"), nd.ins, tf.nn.relu6)
    return b.emit(op.name, nn.ClampOp(xv, 0.0, mx, impl="eigen"), nd.ins,
                  lambda t: tf.clip_by_value(tf.nn.relu(t), 0.0, mx))


def _constant_operand(b: _Builder, value: Any, name: str) -> tuple[SSAValue, Any]:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    arr = np.ascontiguousarray(arr)
    return b.param(arr, name), tf.convert_to_tensor(arr)


def _rescaling(nd: KerasNode) -> str:
    b, op = nd.b, nd.op
    x = nd.ins[0]
    sv, st = _constant_operand(b, op.scale, f"{op.name}.scale")
    ov, ot = _constant_operand(b, op.offset, f"{op.name}.offset")
    y = b.emit(f"{op.name}.scale", nn.MulOp(b.values[x], sv), [x], lambda t: t * st)
    return b.emit(op.name, nn.AddOp(b.values[y], ov), [y], lambda t: t + ot)


def _application_layer(nd: KerasNode, cls: str) -> str:
    """The small custom layers of keras.applications, by their `call`."""
    b, op = nd.b, nd.op
    if cls == "CustomScaleLayer" and len(nd.ins) == 2:  # inputs[0] + inputs[1] * scale
        x0, x1 = nd.ins
        sv, st = _constant_operand(b, float(op.scale), f"{op.name}.scale")
        y = b.emit(f"{op.name}.mul", nn.MulOp(b.values[x1], sv), [x1], lambda t: t * st)
        return b.emit(op.name, nn.AddOp(b.values[x0], b.values[y]), [x0, y], tf.add)
    if cls == "LayerScale" and len(nd.ins) == 1:  # x * gamma
        gamma = _snapshot(op.gamma)
        gt = tf.convert_to_tensor(gamma)
        return b.emit(op.name, nn.MulOp(nd.x(), b.param(gamma, f"{op.name}.gamma")), nd.ins,
                      lambda t: t * gt)
    raise Unmapped(f"layer {cls}")


def _numpy_binary(nd: KerasNode, ctor: type, tf_fn: Callable) -> str:
    """keras.ops add/multiply (e.g. `x + 3.0` in a functional model)."""
    b = nd.b
    args = list(nd.node.arguments.args)
    if len(args) != 2 or nd.node.arguments.kwargs:
        raise Unmapped("extra arguments")
    vals, ins = [], []
    for k, a in enumerate(args):
        if isinstance(a, keras.KerasTensor):
            name = nd.ins[[id(t) for t in nd.node.arguments.keras_tensors].index(id(a))]
            vals.append(b.values[name])
            ins.append(name)
        elif isinstance(a, int | float) and not isinstance(a, bool):
            v, _ = _constant_operand(b, a, f"{nd.name}.const{k}")
            vals.append(v)
        else:
            raise Unmapped(f"operand of type {type(a).__name__}")

    def run(*ts: Any) -> Any:
        it = iter(ts)
        xs = [next(it) if isinstance(a, keras.KerasTensor) else tf.constant(a, tf.float32)
              for a in args]
        return tf_fn(*xs)

    return b.emit(nd.name, ctor(*vals), ins, run)


def map_node(nd: KerasNode) -> str:
    """The value of a mapped Keras node, or Unmapped."""
    b, op = nd.b, nd.op
    cls = type(op).__name__
    if isinstance(op, keras.Model):
        raise Unmapped("nested model (runs as a whole in Keras)")
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        return _conv_like(nd)
    if cls == "Dense":
        return _dense(nd)
    if cls == "BatchNormalization":
        return _batch_norm(nd)
    if cls == "LayerNormalization":
        return _layer_norm(nd)
    if cls == "Activation":
        return _activation(nd, nd.ins[0], op.activation, op.name)
    if cls == "ReLU":
        return _relu_layer(nd)
    if cls == "LeakyReLU":
        return _leaky(b, op.name, nd.ins[0], float(op.negative_slope))
    if cls == "Softmax":
        xv = nd.x()
        axis = op.axis if isinstance(op.axis, int) else None
        if axis is None:
            raise Unmapped(f"softmax over axes {op.axis}")
        rank = len(xv.type.get_shape())
        return b.emit(op.name, nn.SoftmaxOp(xv, axis % rank, impl="eigen"), nd.ins,
                      lambda t: tf.nn.softmax(t, axis=axis))
    if cls == "MaxPooling2D":
        return _pool(nd, "max")
    if cls == "AveragePooling2D":
        return _pool(nd, "avg")
    if cls == "GlobalAveragePooling2D":
        return _global_pool(nd, "avg")
    if cls == "GlobalMaxPooling2D":
        return _global_pool(nd, "max")
    if cls == "Add":
        return _merge(nd, nn.AddOp, tf.add) if isinstance(op, keras.layers.Layer) \
            else _numpy_binary(nd, nn.AddOp, tf.add)
    if cls == "Multiply":
        return _merge(nd, nn.MulOp, tf.multiply) if isinstance(op, keras.layers.Layer) \
            else _numpy_binary(nd, nn.MulOp, tf.multiply)
    if cls == "Concatenate":
        vals = [b.values[i] for i in nd.ins]
        rank = len(vals[0].type.get_shape())
        axis = op.axis % rank
        return b.emit(op.name, nn.CatOp(vals, axis), nd.ins,
                      lambda *ts: tf.concat(list(ts), axis))
    if cls == "Flatten":
        _check_channels_last(op)
        return b.emit(op.name, nn.FlattenOp(nd.x(), 1, -1), nd.ins,
                      lambda t: tf.reshape(t, [tf.shape(t)[0], -1]))
    if cls == "Reshape":
        target = [nn.DYN, *[int(d) for d in op.target_shape]]
        shape = [-1, *[int(d) for d in op.target_shape]]
        return b.emit(op.name, nn.ReshapeOp(nd.x(), target), nd.ins,
                      lambda t: tf.reshape(t, [tf.shape(t)[0], *shape[1:]]))
    if cls in ("Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise",
               "AlphaDropout", "SpatialDropout1D", "SpatialDropout3D"):
        rate = float(getattr(op, "rate", 0.0) or 0.0)
        return b.emit(op.name, nn.DropoutOp(nd.x(), min(rate, 0.99)), nd.ins, lambda t: t)
    if cls == "Identity":
        return b.emit(op.name, nn.IdentityOp(nd.x()), nd.ins, lambda t: t)
    if cls == "Rescaling":
        return _rescaling(nd)
    if cls == "Normalization":
        return _normalization(nd)
    if cls == "ZeroPadding2D":
        return _zero_padding(nd)
    if cls == "Cropping2D":
        return _cropping(nd)
    if cls == "UpSampling2D":
        return _upsampling(nd)
    if type(op).__module__.startswith("keras.src.applications."):
        return _application_layer(nd, cls)
    raise Unmapped(f"layer {cls}")

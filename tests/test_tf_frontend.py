"""TensorFlow frontend: Keras layers mapped to NHWC stacks, checked against
`model(x, training=False)` at batch 1 and 3 on random inputs."""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import brainslug.tensorflow as brainslug  # noqa: E402

H, W, C = 13, 11, 19
LAYER_TOL = 1e-5
NET_TOL = 1e-4


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random batch-norm statistics and affine parameters (never zeros or ones)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for v, lo, hi in ((layer.moving_mean, -0.5, 0.5), (layer.moving_variance, 0.5, 2.0),
                              (layer.gamma, 0.5, 1.5), (layer.beta, -0.3, 0.3)):
                if v is not None:
                    v.assign(rng.uniform(lo, hi, v.shape).astype("float32"))
        elif getattr(layer, "bias", None) is not None and getattr(layer, "use_bias", False):
            layer.bias.assign(rng.uniform(-0.3, 0.3, layer.bias.shape).astype("float32"))
    return model


def check(model: keras.Model, shape: list[int], tol: float = LAYER_TOL,
          batches: tuple[int, ...] = (1, 3), conv: str = "library"):
    """The plan against the model; conv="library" by default: these tests check
    the stacks between TensorFlow's convolutions (test_compiled_convolutions_*
    check BrainSlug's own)."""
    opt = brainslug.optimize(model, shape, conv=conv)
    for n in batches:
        x = tf.random.normal([n, *shape[1:]], seed=n)
        ref = model(x, training=False)
        out = opt(x)
        assert isinstance(out, tf.Tensor)
        ref, got = np.asarray(ref), out.numpy()
        assert got.shape == ref.shape
        err = float(np.abs(got - ref).max())
        assert err <= tol * max(1.0, float(np.abs(ref).max())), (n, err)
    return opt


def functional(*layers_fn, shape=(H, W, C)) -> keras.Model:
    inp = keras.Input(shape=shape)
    x = inp
    for f in layers_fn:
        x = f(x)
    return randomize(keras.Model(inp, x))


def compiled(opt) -> int:
    return sum(1 for s in opt.info.stacks if s.compiled)


def fallback_nodes(opt) -> list[str]:
    return [n for n, _ in opt.info.fallbacks]


L = keras.layers


@pytest.mark.parametrize("padding,strides", [("same", 1), ("same", 2), ("valid", 2)])
def test_conv_bn_relu(padding, strides):
    model = functional(L.Conv2D(23, 3, strides=strides, padding=padding),
                       L.BatchNormalization(epsilon=1.001e-5), L.ReLU())
    opt = check(model, [0, H, W, C])
    assert compiled(opt) == 1 and not opt.info.fallbacks
    (stack,) = opt.info.stacks
    assert stack.layout == "NHWC"
    assert [s.split(": ")[1] for s in stack.layers] == ["nn.add", "nn.batch_norm", "nn.relu"]


@pytest.mark.parametrize("act", ["relu", "relu6", "swish", "silu", "sigmoid", "hard_sigmoid",
                                 "hard_swish", "hard_silu", "tanh", "gelu", "linear",
                                 "leaky_relu"])
def test_activations(act):
    model = functional(L.BatchNormalization(), L.Activation(act))
    opt = check(model, [0, H, W, C])
    assert not opt.info.fallbacks, opt.info.fallbacks


def _logistic_inputs(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random values over [-110, 30] and N(0, 4); first the edge cases of TensorFlow's
    sigmoid (its -104 cut-off, its 16.6355324 clamp, results below FLT_MIN near
    -87.3 that it flushes, +-0, +-inf, NaN, +-FLT_MAX), last values where Eigen's
    packet and scalar formulas round differently (its scalar path runs the last
    numel % 8 elements): sigmoid(1) is 0.73105854 in packets, 0.7310586 alone."""
    rng = np.random.default_rng(seed)
    size = n * int(np.prod(shape))
    x = np.where(rng.random(size) < 0.5, rng.uniform(-110, 30, size), rng.normal(0, 4, size))
    x = x.astype(np.float32)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -104.0, -104.00001, -103.99999,
                     16.6355324, 16.63553, 16.7, -87.0, -87.5, -88.7, -95.0, 3.4e38, -3.4e38,
                     0.1, -1.5, 7.25], np.float32)
    k = min(len(edge), size)
    x[:k] = edge[:k]
    x[-8:] = [-8.0, -5.0, -1.5, 1.5, -3.0, -2.0, -1.0, 1.0]
    return x.reshape(n, *shape)


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    same = (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))
    return a.shape == b.shape and bool(same.all())


@pytest.mark.parametrize("shape", [(5, 7, 3), (4, 4, 16), (13,)])
def test_sigmoid_and_swish_bit_for_bit(shape):
    """TensorFlow's CPU sigmoid is Eigen's logistic (a polynomial for exp(x/2),
    squared), not 1 / (1 + exp(-x)); the frontend emits nn.sigmoid {impl = "eigen"},
    which computes it the same way, so sigmoid and swish (x * sigmoid(x)) match
    model(x) bit for bit: in Eigen's 8-float packets and in its scalar tail (105 and
    13 floats a sample leave tails of 1-7 elements; 256 none). TensorFlow's kernels
    flush denormal results to zero, BrainSlug's nn.mul does not: x * sigmoid(x) is
    never denormal here because the sigmoid already flushes and no |x| is tiny."""
    inp = keras.Input(shape)
    s = L.Activation("sigmoid")(inp)
    w = L.Activation("swish")(inp)
    model = keras.Model(inp, L.Concatenate()([s, w]))
    opt = brainslug.optimize(model, [0, *shape])
    assert compiled(opt) == 1 and not opt.info.fallbacks, opt.info.fallbacks
    for n in (1, 2, 3):
        x = _logistic_inputs(n, shape, seed=n)
        ref = np.asarray(model(x, training=False))
        assert _same_bits(opt(x).numpy(), ref), n
        with np.errstate(over="ignore"):
            exact = 1.0 / (1.0 + np.exp(-x))
        assert not _same_bits(exact, tf.math.sigmoid(x))  # the inputs tell the formulas apart


def test_reference_evaluator_eigen_sigmoid():
    """bs-opt inputs and fallen-back stacks run nn.sigmoid/nn.silu {impl = "eigen"}
    through the reference evaluator, which computes TensorFlow's kernel too."""
    torch = pytest.importorskip("torch")
    from xdsl.ir import Block

    from brainslug.dialects import nn
    from brainslug.testing.reference import eval_layer

    x_ir = Block(arg_types=[nn.make_tensor([-1, 5, 3])]).args[0]
    for n in (1, 3):
        x = _logistic_inputs(n, (5, 3), seed=n)
        s = eval_layer(nn.SigmoidOp(x_ir, "eigen"), [torch.from_numpy(x)]).numpy()
        w = eval_layer(nn.SiluOp(x_ir, "eigen"), [torch.from_numpy(x)]).numpy()
        assert _same_bits(s, tf.math.sigmoid(x)) and _same_bits(w, tf.nn.silu(x)), n


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_batch_norm_bit_for_bit(center, scale):
    """Keras' batch norm is x * inv + (beta - mean * inv), inv = rsqrt(var + eps) *
    gamma, and TensorFlow's Rsqrt kernel is an rsqrtps estimate plus a Newton step
    (~1 ulp from 1 / sqrt on many channels); the frontend takes inv from TensorFlow,
    so the layer matches bit for bit (32 channels: Eigen's packets; 19: and its tail)."""
    for c in (32, 19):
        model = functional(L.BatchNormalization(center=center, scale=scale), shape=(H, W, c))
        opt = brainslug.optimize(model, [0, H, W, c])
        assert compiled(opt) == 1 and not opt.info.fallbacks
        for n in (1, 3):
            x = tf.random.normal([n, H, W, c], seed=n)
            assert _same_bits(opt(x).numpy(), model(x, training=False)), (c, n)


def test_leaky_relu_layer():
    opt = check(functional(L.BatchNormalization(), L.LeakyReLU(0.1)), [0, H, W, C])
    assert compiled(opt) == 1 and not opt.info.fallbacks


def test_conv_with_activation_and_unmapped_activation():
    model = functional(L.Conv2D(8, 3, padding="same", activation="relu"),
                       L.Conv2D(8, 1, activation="elu"), L.BatchNormalization())
    opt = check(model, [0, H, W, C])
    (node,) = fallback_nodes(opt)
    assert node.endswith(".act")  # only the elu runs in Keras; the conv's bias is fused


def test_depthwise_separable():
    model = functional(L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
                       L.BatchNormalization(), L.ReLU(6.0),
                       L.SeparableConv2D(17, 3, padding="same", activation="swish"),
                       L.BatchNormalization(), L.Activation("relu"))
    opt = check(model, [0, H, W, C])
    assert not opt.info.fallbacks


@pytest.mark.parametrize("pool", [
    lambda: L.MaxPooling2D(3, strides=2, padding="same"),
    lambda: L.MaxPooling2D(2),
    lambda: L.AveragePooling2D(3, strides=2, padding="same"),
    lambda: L.AveragePooling2D(2, padding="same"),
    lambda: L.AveragePooling2D(3, strides=1, padding="valid"),
])
def test_pooling(pool):
    opt = check(functional(L.BatchNormalization(), L.ReLU(), pool()), [0, H, W, C])
    assert compiled(opt) == 1 and not opt.info.fallbacks


@pytest.mark.parametrize("keep", [False, True])
def test_global_pooling_dense_softmax(keep):
    inp = keras.Input((H, W, C))
    x = L.BatchNormalization()(inp)
    a = L.GlobalAveragePooling2D(keepdims=keep)(x)
    m = L.GlobalMaxPooling2D(keepdims=keep)(x)
    y = L.Concatenate()([a, m])
    y = L.Flatten()(y) if keep else y
    y = L.Dropout(0.3)(y)
    y = L.Dense(7, activation="relu")(y)
    y = L.Dense(5)(y)
    y = L.Softmax()(y)
    opt = check(randomize(keras.Model(inp, y)), [0, H, W, C])
    assert not opt.info.fallbacks, opt.info.fallbacks


def test_add_multiply_concat_broadcast():
    inp = keras.Input((H, W, C))
    a = L.BatchNormalization()(inp)
    b = L.ReLU()(L.BatchNormalization()(inp))
    s = L.GlobalAveragePooling2D(keepdims=True)(b)
    s = L.Conv2D(C, 1, activation="sigmoid")(s)
    y = L.Multiply()([b, s])
    y = L.Add()([a, y, inp])
    y = L.Concatenate(axis=-1)([y, a])
    y = L.Reshape((H * W, 2 * C))(y)
    opt = check(randomize(keras.Model(inp, y)), [0, H, W, C])
    assert not opt.info.fallbacks


def test_keras_ops_scalars_hard_sigmoid_like_mobilenetv3():
    inp = keras.Input((H, W, C))
    x = L.BatchNormalization()(inp)
    h = L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    y = L.Multiply()([x, h])
    opt = check(randomize(keras.Model(inp, y)), [0, H, W, C])
    assert not opt.info.fallbacks
    assert compiled(opt) == 1


def test_rescaling_normalization_zero_padding():
    """Rescaling, Normalization, and a ZeroPadding2D read by a batch norm (not
    foldable: an `nn.pad`) compile bit for bit, NaN and Inf included."""
    norm = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.5, 0.7, 2.0])
    inp = keras.Input((H, W, 3))
    x = L.Rescaling(1.0 / 255.0, offset=-0.5)(inp)
    x = norm(x)
    x = L.ZeroPadding2D(((1, 2), (0, 1)))(x)
    x = L.BatchNormalization()(x)
    model = randomize(keras.Model(inp, x))
    opt = check(model, [0, H, W, 3])
    assert not opt.info.fallbacks, opt.info.fallbacks
    for n in (1, 3):
        x = tf.random.normal([n, H, W, 3], seed=n).numpy()
        x[0, 0, :2] = [[np.nan, np.inf, -np.inf], [1e30, -1e30, 0.0]]
        assert _same_bits(opt(x).numpy(), model(x, training=False)), n


def test_padding_and_cropping():
    """ZeroPadding2D where it can't fold (before a max pool of signed values,
    and as the model's output) and Cropping2D: `nn.pad`, bit for bit (NaN and
    Inf where no max pool sees them: TensorFlow's skips NaN, see issue 13)."""
    inp = keras.Input((H, W, C))
    x = L.BatchNormalization()(inp)
    x = L.ZeroPadding2D(((2, 1), (0, 3)))(x)
    x = L.MaxPooling2D(3, 2)(x)
    x = L.Cropping2D(((1, 0), (2, 1)))(L.ReLU()(x))
    x = L.ZeroPadding2D(1)(L.BatchNormalization()(x))
    pooled = randomize(keras.Model(inp, x))
    x = L.Cropping2D(((2, 3), (1, 0)))(L.BatchNormalization()(inp))
    x = L.ZeroPadding2D(((0, 2), (1, 1)))(L.ReLU()(x))
    plain = randomize(keras.Model(inp, x))
    for model, nan in ((pooled, False), (plain, True)):
        opt = check(model, [0, H, W, C])
        assert not opt.info.fallbacks and compiled(opt) >= 1, opt.info.fallbacks
        assert "nn.pad" in brainslug.report(opt)
        for n in (1, 3):
            x = tf.random.normal([n, H, W, C], seed=n).numpy()
            if nan:
                x[0, 3, 4, :3] = [np.nan, np.inf, -np.inf]
            assert _same_bits(opt(x).numpy(), model(x, training=False)), (n, nan)


def test_nearest_upsampling():
    """UpSampling2D (nearest) is `nn.resize_nearest`, bit for bit with NaN and
    Inf; bilinear stays in TensorFlow with its reason."""
    inp = keras.Input((H, W, C))
    x = L.UpSampling2D((2, 3))(L.ReLU()(L.BatchNormalization()(inp)))
    y = L.Activation("sigmoid")(L.UpSampling2D(2)(L.BatchNormalization()(x)))
    model = randomize(keras.Model(inp, y))
    opt = check(model, [0, H, W, C])
    assert not opt.info.fallbacks and "nn.resize_nearest" in brainslug.report(opt)
    for n in (1, 3):
        x = tf.random.normal([n, H, W, C], seed=n).numpy()
        x[0, 3, 4, :3] = [np.nan, np.inf, -np.inf]
        assert _same_bits(opt(x).numpy(), model(x, training=False)), n
    bilinear = functional(L.UpSampling2D(2, interpolation="bilinear"), L.ReLU(), shape=(H, W, C))
    rep = brainslug.report(brainslug.optimize(bilinear, [0, H, W, C]))
    assert "UpSampling2D with 'bilinear' interpolation" in rep, rep


def test_normalization_bit_for_bit():
    """The input Normalization, (x - mean) / max(sqrt(variance), eps), compiled
    bit for bit, a zero variance included (the division by eps)."""
    norm = L.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.0, 2.0])
    model = functional(norm, L.Activation("relu"), shape=(H, W, 3))
    opt = brainslug.optimize(model, [0, H, W, 3])
    assert compiled(opt) == 1 and not opt.info.fallbacks, opt.info.fallbacks
    for n in (1, 3):
        x = tf.random.normal([n, H, W, 3], seed=n).numpy()
        x[0, 0, 0] = [np.nan, np.inf, -np.inf]
        assert _same_bits(opt(x).numpy(), model(x, training=False)), n


def test_sequential():
    model = keras.Sequential([keras.Input((H, W, C)), L.Conv2D(8, 3), L.BatchNormalization(),
                              L.ReLU(), L.MaxPooling2D(), L.Flatten(), L.Dense(4)])
    check(randomize(model), [0, H, W, C])


def test_numpy_input_and_fixed_batch():
    model = functional(L.BatchNormalization(), L.ReLU())
    opt = brainslug.optimize(model, [2, H, W, C])
    x = np.random.default_rng(1).standard_normal((2, H, W, C)).astype(np.float32)
    out = opt(x)
    assert isinstance(out, tf.Tensor)
    np.testing.assert_allclose(out.numpy(), np.asarray(model(x, training=False)), atol=1e-5)


def test_bad_inputs():
    model = functional(L.BatchNormalization(), L.ReLU())
    opt = brainslug.optimize(model, [0, H, W, C])
    bad = [tf.random.normal((2, H + 1, W, C)), tf.random.normal((2, H, W, C), dtype=tf.float64),
           tf.random.normal((H, W, C)), np.zeros((1, H, W, C), np.int32), [1.0, 2.0]]
    for x in bad:
        with pytest.raises(ValueError, match="expected"):
            opt(x)
    for shape in ([], None, [0, H, W], [0, H, W, "19"], [-1, H, W, C], [0, 0, W, C],
                  [0, H + 2, W, C], "0,13,11,19"):
        with pytest.raises(ValueError):
            brainslug.optimize(model, shape)
    with pytest.raises(ValueError):
        brainslug.optimize(object(), [0, H, W, C])
    for options in ({"unknown": 1}, {"threads": 0}, {"threads": "2"}, {"mode": "lazy"}):
        with pytest.raises(ValueError):
            brainslug.optimize(model, [0, H, W, C], **options)
    with pytest.raises(ValueError):
        brainslug.report(model)


def test_report():
    model = functional(L.Conv2D(8, 3), L.BatchNormalization(), L.ZeroPadding2D(1),
                       L.MaxPooling2D(3, 2, padding="same"))
    opt = brainslug.optimize(model, [0, H, W, C])
    rep = brainslug.report(opt)
    assert "stack0" in rep and "NHWC" in rep
    assert "transpose" not in rep.lower()
    assert "zero_padding2d" in rep and "nn.pad" in rep  # read by a 'same' pool: not folded
    assert "nn.conv2d" in rep


def test_zero_padding_folds():
    inp = keras.Input((H, W, C))
    x = L.ZeroPadding2D(((1, 2), (2, 1)))(inp)
    x = L.Conv2D(8, 3, strides=2)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.ZeroPadding2D(1)(x)
    x = L.MaxPooling2D(3, 2)(x)
    x = L.ZeroPadding2D(((0, 1), (1, 0)))(x)
    x = L.AveragePooling2D(2, 1)(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.DepthwiseConv2D(3, strides=2)(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.SeparableConv2D(5, 3)(x)
    opt = check(randomize(keras.Model(inp, x)), [0, H, W, C])
    assert not opt.info.fallbacks, opt.info.fallbacks
    assert any("zero padding folded" in n for n in opt.info.notes)


def test_zero_padding_before_max_pool_of_signed_values_is_not_folded():
    opt = check(functional(L.BatchNormalization(), L.ZeroPadding2D(1), L.MaxPooling2D(3, 2)),
                [0, H, W, C])
    assert not opt.info.fallbacks
    assert re.search(r"zero_padding2d\w*: nn.pad", brainslug.report(opt))


def test_flexible_input_model():
    inp = keras.Input((None, None, C))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.AveragePooling2D(3, 2, padding="same")(L.ReLU()(x))
    opt = check(randomize(keras.Model(inp, x)), [0, H, W, C])
    assert compiled(opt) == 1


@pytest.mark.parametrize("name,hw", [("MobileNetV2", 96)])
def test_application_small(name, hw):
    model = randomize(getattr(keras.applications, name)(
        weights=None, input_shape=(hw, hw, 3), classifier_activation=None))
    opt = check(model, [0, hw, hw, 3], tol=NET_TOL)
    assert compiled(opt) > 30
    assert "transpose" not in brainslug.report(opt).lower()


def _applications() -> list[str]:
    return sorted(n for n in dir(keras.applications)
                  if n[0].isupper() and callable(getattr(keras.applications, n)))


@pytest.mark.slow
@pytest.mark.parametrize("name", _applications())
def test_every_keras_application(name):
    """Random batch-norm statistics, batch 1 and 3; within 1e-4·max(1, |ref|).
    Sigmoid, swish, batch norm and the global means compute TensorFlow's own
    operations in TensorFlow's order, so even the EfficientNets, whose random
    activations reach 1e10 and amplify every rounding difference, match (with
    TensorFlow's convolutions: BrainSlug's sum in their own order, see
    test_every_keras_application_compiled)."""
    keras.utils.set_random_seed(0)
    try:
        model = getattr(keras.applications, name)(weights=None, classifier_activation=None)
    except TypeError:
        model = getattr(keras.applications, name)(weights=None)
    randomize(model)
    shape = [0, *[224 if d is None else d for d in model.inputs[0].shape[1:]]]
    opt = brainslug.optimize(model, shape, conv="library")
    for n in (1, 3):
        x = tf.random.normal([n, *shape[1:]], seed=n)
        ref = np.asarray(model(x, training=False))
        err = float(np.abs(opt(x).numpy() - ref).max())
        assert err <= NET_TOL * max(1.0, float(np.abs(ref).max())), (n, err)


COMPILED_APPS = ("DenseNet121", "MobileNet", "MobileNetV2", "ResNet50", "ResNet50V2",
                 "VGG16", "Xception", "InceptionV3", "EfficientNetB0", "ConvNeXtTiny")


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPILED_APPS)
def test_every_keras_application_compiled(name):
    """The default plan, with the convolutions in BrainSlug's kernels (summing in
    their own order), within 1e-4·max(1, |ref|) of Keras at batch 1 and 3."""
    keras.utils.set_random_seed(0)
    try:
        model = getattr(keras.applications, name)(weights=None, classifier_activation=None)
    except TypeError:
        model = getattr(keras.applications, name)(weights=None)
    randomize(model)
    shape = [0, *[224 if d is None else d for d in model.inputs[0].shape[1:]]]
    opt = brainslug.optimize(model, shape)
    assert any("nn.conv2d" in x for s in opt.info.stacks if s.compiled for x in s.layers)
    for n in (1, 3):
        x = tf.random.normal([n, *shape[1:]], seed=n)
        ref = np.asarray(model(x, training=False))
        err = float(np.abs(opt(x).numpy() - ref).max())
        assert err <= NET_TOL * max(1.0, float(np.abs(ref).max())), (n, err)


@pytest.mark.parametrize("hw,c", [(7, 37), (40, 24), (3, 5)])
def test_global_mean_bit_for_bit(hw, c):
    """GlobalAveragePooling2D (keepdims, as in squeeze-and-excite, and not) sums
    in TensorFlow's order, so the result is TensorFlow's bit for bit; a 40x40
    map (1600 values) is no longer left to TensorFlow."""
    inp = keras.Input((hw, hw, c))
    x = L.BatchNormalization()(inp)
    a = L.GlobalAveragePooling2D(keepdims=True)(x)
    b = L.GlobalAveragePooling2D()(L.ReLU()(x))
    model = randomize(keras.Model(inp, [a, b]))
    opt = brainslug.optimize(model, [0, hw, hw, c])
    assert not opt.info.fallbacks
    for n in (1, 3, 6):
        x = np.random.default_rng(n).standard_normal((n, hw, hw, c)).astype(np.float32) * 3
        for got, ref in zip(opt(x), model(x, training=False), strict=True):
            assert np.array_equal(np.asarray(got), np.asarray(ref))


def test_nested_models_are_inlined():
    stem = keras.Sequential([L.Conv2D(8, 3, padding="same"), L.BatchNormalization()])
    sub_in = keras.Input((H, W, 8))
    sub = keras.Model(sub_in, L.Add()([sub_in, L.ReLU()(L.BatchNormalization()(sub_in))]))
    inp = keras.Input((H, W, C))
    x = stem(inp)
    x = L.ReLU()(x)
    x = sub(sub(x))
    model = keras.Model(inp, x)
    for m in (stem, sub, model):
        randomize(m)
    opt = check(model, [0, H, W, C])
    assert not opt.info.fallbacks
    assert compiled(opt) == 1  # bias, BN, ReLU and both calls of the sub-model fuse


def test_grouped_conv_and_dense_on_feature_maps():
    model = functional(L.Conv2D(C, 7, padding="same", groups=C), L.BatchNormalization(),
                       L.Dense(12, activation="gelu"), L.Dense(C))
    opt = check(model, [0, H, W, C])
    assert not opt.info.fallbacks


# ------------------------------------------------------------------ tf.function


def test_tf_function_of_a_keras_model():
    model = functional(L.ZeroPadding2D(1), L.Conv2D(12, 3, strides=2), L.BatchNormalization(),
                       L.ReLU(6.0), L.DepthwiseConv2D(3, padding="same"),
                       L.BatchNormalization(), L.Activation("swish"),
                       L.GlobalAveragePooling2D(), L.Dense(5), L.Softmax())
    f = tf.function(lambda x: model(x, training=False))
    opt = brainslug.optimize(f, [0, H, W, C])
    assert opt.info.capture.startswith("tf.function")
    assert not opt.info.fallbacks, opt.info.fallbacks
    for n in (1, 3):
        x = tf.random.normal([n, H, W, C], seed=n)
        np.testing.assert_allclose(opt(x).numpy(), f(x).numpy(), rtol=0, atol=LAYER_TOL)


def test_tf_function_of_raw_ops():
    rng = np.random.default_rng(3)
    w = tf.constant(rng.standard_normal((3, 3, C, 8)).astype(np.float32))
    stats = [tf.constant(rng.uniform(lo, hi, 8).astype(np.float32))
             for lo, hi in ((0.5, 1.5), (-0.3, 0.3), (-0.5, 0.5), (0.5, 2.0))]

    @tf.function
    def f(x):
        y = tf.nn.conv2d(x, w, 1, "SAME")
        y, *_ = tf.raw_ops.FusedBatchNormV3(x=y, scale=stats[0], offset=stats[1],
                                            mean=stats[2], variance=stats[3], epsilon=1e-3,
                                            is_training=False)
        y = tf.nn.relu(y)
        z = tf.nn.max_pool2d(y, 3, 2, "SAME")
        u = tf.math.erf(z)  # no nn op: runs as itself
        return tf.concat([tf.nn.avg_pool2d(y, 2, 2, "SAME"), u], axis=-1) * 0.5 - 1.0

    opt = brainslug.optimize(f, [0, H, W, C])
    assert [n for n, _ in opt.info.fallbacks] == ["Erf"]
    assert compiled(opt) >= 2
    for n in (1, 3):
        x = tf.random.normal([n, H, W, C], seed=n)
        np.testing.assert_allclose(opt(x).numpy(), f(x).numpy(), rtol=0, atol=LAYER_TOL * 10)


def test_large_mean_over_channels_stays_in_tensorflow():
    """A mean over the innermost dim sums in order in BrainSlug, not in
    TensorFlow's tree order: over more than 1024 values it runs in TensorFlow.
    (Global pooling keeps the innermost dim and is compiled at any size.)"""

    @tf.function
    def f(x):
        return tf.reduce_mean(tf.nn.relu(x), axis=-1), tf.reduce_mean(x, axis=[1, 2])

    c = 1320
    opt = brainslug.optimize(f, [0, 5, 3, c])
    ((node, why),) = opt.info.fallbacks
    assert node.startswith("Mean") and "1320 elements of the innermost dim" in why
    x = tf.random.normal([2, 5, 3, c], seed=2)
    for got, ref in zip(opt(x), f(x), strict=True):
        np.testing.assert_array_equal(got.numpy(), ref.numpy())


@pytest.mark.parametrize("options", [{"mode": "graph"}, {"threads": 2}, {"threads": None}])
def test_modes_and_threads(options):
    inp = keras.Input((H, W, C))
    a = L.ReLU()(L.BatchNormalization()(inp))
    x = L.Conv2D(C, 3, padding="same")(a)
    x = L.Add()([L.BatchNormalization()(x), a])
    model = randomize(keras.Model(inp, L.MaxPooling2D(3, 2, padding="same")(x)))
    opt = brainslug.optimize(model, [0, H, W, C], **options)
    for n in (1, 3, 1):
        x = tf.random.normal([n, H, W, C], seed=n)
        out = opt(x)
        assert isinstance(out, tf.Tensor)
        np.testing.assert_allclose(out.numpy(), np.asarray(model(x, training=False)),
                                   rtol=0, atol=LAYER_TOL * 4)


def test_outputs_outlive_later_calls():
    model = functional(L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(2),
                       L.BatchNormalization())
    opt = brainslug.optimize(model, [0, H, W, C])
    xs = [tf.random.normal([2, H, W, C], seed=k) for k in range(3)]
    outs = [opt(x) for x in xs]  # the last stack's output leaves the model: fresh buffers
    junk = [np.full(1 << 18, k, np.float32) for k in range(8)]
    del junk
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out.numpy(), np.asarray(model(x, training=False)),
                                   rtol=0, atol=LAYER_TOL)


def test_model_with_a_fixed_batch():
    inp = keras.Input(batch_shape=(2, H, W, C))
    model = randomize(keras.Model(inp, L.ReLU()(L.BatchNormalization()(inp))))
    opt = check(model, [2, H, W, C], batches=(2,))
    assert compiled(opt) == 1 and not opt.info.fallbacks


def test_bench_cli_tf(tmp_path):
    import json

    from brainslug.bench.__main__ import main

    out = tmp_path / "tf.json"
    rc = main(["--framework", "tf", "--models", "MobileNetV2", "--batch", "2", "--hw", "32",
               "--contenders", "tf_function,brainslug", "--repeats", "2", "--warmup", "0",
               "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["results"]
    assert {(r["contender"], r["batch"]) for r in rows} == {("tf_function", 2), ("brainslug", 2)}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows)
    assert all(r["ratio_vs_brainslug_median"] == 1.0 for r in rows if r["contender"] == "brainslug")


@pytest.mark.parametrize("kind", ["conv", "strided", "dilated", "depthwise", "separable",
                                  "wide", "grouped"])
def test_compiled_convolutions_match_tensorflow(kind):
    """conv="brainslug": each convolution kind in BrainSlug's kernels with its
    bias, batch norm and activation, on odd sizes, at batch 1 and 3."""
    conv = {
        "conv": lambda: L.Conv2D(23, 3, padding="same"),
        "strided": lambda: L.Conv2D(29, 5, strides=2, padding="valid"),
        "dilated": lambda: L.Conv2D(19, 3, dilation_rate=2, padding="same"),
        "depthwise": lambda: L.DepthwiseConv2D(3, padding="same"),
        "separable": lambda: L.SeparableConv2D(21, 3, padding="same"),
        "wide": lambda: L.Conv2D(150, 1),  # weights blocked by 64 output channels
        # 2 groups of 19 -> 32 channels (after a 1x1 to 38): blocks of 2 vectors
        # within a group, the input broadcast
        "grouped": lambda: lambda x: L.Conv2D(64, 3, padding="same", groups=2)(L.Conv2D(38, 1)(x)),
    }[kind]
    model = functional(conv(), L.BatchNormalization(), L.ReLU(6.0))
    opt = check(model, [0, H, W, C], conv="brainslug")
    assert any("nn.conv2d" in x for s in opt.info.stacks if s.compiled for x in s.layers)
    assert not opt.info.library, opt.info.library


def test_nested_concatenations_are_the_convolutions_prologue():
    """Keras's DenseNet concatenates the previous concatenation with each
    layer's new features: the concatenations flatten, and each BN -> ReLU ->
    1x1 convolution reads the layers' features in place (one stack each)."""
    inp = keras.Input(shape=(H, W, C))
    x = inp
    for _ in range(3):
        y = L.ReLU()(L.BatchNormalization()(x))
        y = L.Conv2D(24, 1, use_bias=False)(y)
        y = L.Conv2D(16, 3, padding="same", use_bias=False)(L.ReLU()(L.BatchNormalization()(y)))
        x = L.Concatenate()([x, y])
    model = randomize(keras.Model(inp, x))
    opt = check(model, [0, H, W, C], conv="brainslug")
    kinds = [[x.split(": ")[1] for x in s.layers] for s in opt.info.stacks if s.compiled]
    prologues = [k for k in kinds if k[:4] == ["nn.cat", "nn.batch_norm", "nn.relu", "nn.conv2d"]]
    assert len(prologues) == 2, kinds  # the second and third layers'


def test_conv_option_is_checked():
    with pytest.raises(ValueError, match="conv must be one of"):
        brainslug.optimize(functional(L.Conv2D(4, 3)), [0, H, W, C], conv="fast")


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_layer_normalization(center, scale):
    """LayerNormalization over the channels (ConvNeXt's), in Keras's order:
    inv = rsqrt(var + eps) * gamma, x * inv + (beta - mean * inv). The means
    sum in BrainSlug's order and rsqrt is 1 / sqrt (TensorFlow's is an estimate
    plus a Newton step), so within a few ulp, not bit for bit."""
    rng = np.random.default_rng(7)
    for c in (32, 19):
        ln = L.LayerNormalization(epsilon=1e-6, center=center, scale=scale)
        model = functional(ln, L.Activation("gelu"), shape=(H, W, c))
        if scale:
            ln.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
        if center:
            ln.beta.assign(rng.uniform(-0.5, 0.5, c).astype("float32"))
        opt = check(model, [0, H, W, c], tol=2e-6)
        assert compiled(opt) == 1 and not opt.info.fallbacks, opt.info.fallbacks


@pytest.mark.parametrize("conv", ["library", "auto"])
def test_save_and_load(conv, tmp_path):
    """brainslug.tensorflow.save/load: the Keras model rebuilt from its config,
    the saved kernels bound without compiling, outputs bit for bit; a damaged
    file and a PyTorch plan are clear errors."""
    model = randomize(keras.applications.MobileNetV2(
        input_shape=(40, 40, 3), weights=None, alpha=0.35))
    opt = brainslug.optimize(model, [0, 40, 40, 3], conv=conv)
    path = tmp_path / "m.bslug"
    brainslug.save(opt, path)
    back = brainslug.load(path)
    assert back.plan.kernels.kernels.stats["compiled"] == 0
    assert "compiled again" not in brainslug.report(back)
    for n in (1, 3):
        x = tf.random.normal([n, 40, 40, 3], seed=n).numpy()
        x[0, 0, 0, 0] = np.nan
        want, got = opt(x).numpy(), back(x).numpy()
        assert np.array_equal(want, got, equal_nan=True)
    data = path.read_bytes()
    (tmp_path / "cut.bslug").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.bslug"):
        brainslug.load(tmp_path / "cut.bslug")
    with pytest.raises(ValueError, match="not optimized"):
        brainslug.save(brainslug.optimize(functional(keras.layers.Dense(3)), [0, H, W, C]),
                       tmp_path / "none.bslug")

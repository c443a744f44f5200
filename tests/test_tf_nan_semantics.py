"""NaN and Inf through max pooling: TensorFlow's MaxPool skips NaN, PyTorch's
max_pool2d propagates it, and BrainSlug reproduces each bit for bit
(`nn.max_pool2d {nan = "skip"}` on the TensorFlow path, the default
`"propagate"` on the PyTorch path).

TensorFlow's MaxPool (CPU, oneDNN on or off) is `acc = -FLT_MAX; for v in the
window (row-major): if v > acc: acc = v`, padded elements left out: a NaN never
wins, a window with no number in it (all NaN, or NaN and -inf, or -inf only)
gives -FLT_MAX. `skip_max_pool` below is that loop; the tests check TensorFlow
against it too, so a TensorFlow that changed its rule would be noticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from xdsl.dialects.builtin import TensorType, f32
from xdsl.ir import Block
from xdsl.utils.exceptions import VerifyException

from brainslug.dialects import nn
from brainslug.dialects.nn.pooling import MaxPoolNaN
from brainslug.ir.context import parse_module
from brainslug.testing.executor import compile_graph

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import brainslug.tensorflow as bst  # noqa: E402

L = keras.layers
H, W, C = 13, 13, 37
LOWEST = np.float32(np.finfo(np.float32).min)


# ---------------------------------------------------------------------- helpers


def same_bits(a, b) -> bool:
    """Equal bit for bit, any NaN equal to any NaN (the sign of zero counts)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        return False
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | both_nan))


def n_differ(a, b) -> int:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return int(np.sum(~((a == b) | (np.isnan(a) & np.isnan(b)))))


def tf_same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def skip_max_pool(x: np.ndarray, k: int, s: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """TensorFlow's MaxPool of NHWC `x`, padding (top, left, bottom, right)."""
    n, h, w, c = x.shape
    t, le, b, r = pads
    oh, ow = (h + t + b - k) // s + 1, (w + le + r - k) // s + 1
    out = np.empty((n, oh, ow, c), np.float32)
    for i in range(oh):
        for j in range(ow):
            acc = np.full((n, c), LOWEST, np.float32)
            for a in range(k):
                for bb in range(k):
                    y, xx = i * s + a - t, j * s + bb - le
                    if 0 <= y < h and 0 <= xx < w:
                        v = x[:, y, xx, :]
                        acc = np.where(v > acc, v, acc)
            out[:, i, j, :] = acc
    return out


def nan_windows(batch: int, k: int, s: int, pads: tuple[int, int, int, int],
                seed: int = 0) -> np.ndarray:
    """An NHWC input whose channels put NaN and Inf where max pooling (kernel
    `k`, stride `s`, padding `pads`) meets them: channel a*k+b has a NaN at
    window position (a, b) of every other window, then come windows of NaN only,
    of -inf only, of NaN and -inf, NaN along the borders (windows that reach into
    'same' padding with nothing but NaN inside), +inf among NaN, signed zeros
    among NaN, -FLT_MAX among NaN and -inf; the other channels are random with
    5% NaN and a few infinities."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, H, W, C)).astype(np.float32)
    t, le = pads[0], pads[1]
    oh = (H + pads[0] + pads[2] - k) // s + 1
    ow = (W + pads[1] + pads[3] - k) // s + 1
    for a in range(k):
        for b in range(k):
            for i in range(0, oh, 2):
                for j in range(0, ow, 2):
                    y, xx = i * s + a - t, j * s + b - le
                    if 0 <= y < H and 0 <= xx < W:
                        x[:, y, xx, a * k + b] = np.nan
    ch = k * k
    x[:, 4:9, 4:9, ch] = np.nan
    x[:, 4:9, 4:9, ch + 1] = -np.inf
    blk = np.where((np.arange(5)[:, None] + np.arange(5)) % 2 == 0, np.nan, -np.inf)
    x[:, 4:9, 4:9, ch + 2] = blk
    for rows in (np.s_[0:2], np.s_[H - 2:H]):
        x[:, rows, :, ch + 3] = np.nan
    for cols in (np.s_[0:2], np.s_[W - 2:W]):
        x[:, :, cols, ch + 3] = np.nan
    x[:, 3:10, 3:10, ch + 4] = np.where(rng.random((7, 7)) < 0.5, np.nan, np.inf)
    zeros = np.where(rng.random((batch, H, W)) < 0.5, np.float32(0.0), np.float32(-0.0))
    x[..., ch + 5] = np.where(rng.random((batch, H, W)) < 0.3, np.nan, zeros)
    x[..., ch + 6] = rng.choice(np.array([LOWEST, np.nan, -np.inf], np.float32), (batch, H, W))
    rest = x[..., ch + 7:]
    rest[rng.random(rest.shape) < 0.05] = np.nan
    rest[rng.random(rest.shape) < 0.01] = np.inf
    rest[rng.random(rest.shape) < 0.01] = -np.inf
    return x


def compiled_stacks(opt) -> int:
    return sum(1 for s in opt.info.stacks if s.compiled)


# ------------------------------------------------------------- TensorFlow path


def test_bn_relu_two_max_pools_bit_for_bit():
    """The issue's model: BN, ReLU and two max pools, NaN and Inf in the input."""
    inp = keras.Input((13, 13, 37))
    y = L.BatchNormalization()(inp)
    y = L.ReLU()(y)
    y = L.MaxPooling2D(3, 2, padding="same")(y)
    y = L.MaxPooling2D(2, 1)(y)
    m = keras.Model(inp, y)
    x = np.random.default_rng(0).standard_normal((3, 13, 13, 37)).astype(np.float32)
    x[0, 2, 3, 4] = np.nan
    x[1, 5, 5, :] = np.nan
    x[2, 0, 0, 1] = np.inf
    x[2, 7, 8, 2] = -np.inf
    ref = m(x, training=False).numpy()
    opt = bst.optimize(m, [0, 13, 13, 37])
    assert not opt.info.fallbacks and compiled_stacks(opt) == 1
    out = np.asarray(opt(x))
    assert np.array_equal(out, ref, equal_nan=True), f"{n_differ(out, ref)} outputs differ"
    assert same_bits(out, ref)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [2, 3])
def test_max_pool_skips_nan_like_tensorflow(k: int, stride: int, padding: str):
    """MaxPooling2D alone: NaN at each window position, windows without a
    number, NaN next to 'same' padding, +-inf, +-0; batch 1 and 3."""
    if padding == "same":
        t, b = tf_same_padding(H, k, stride)
        le, r = tf_same_padding(W, k, stride)
        pads = (t, le, b, r)
    else:
        pads = (0, 0, 0, 0)
    inp = keras.Input((H, W, C))
    m = keras.Model(inp, L.MaxPooling2D(k, stride, padding=padding)(inp))
    opt = bst.optimize(m, [0, H, W, C])
    assert not opt.info.fallbacks and compiled_stacks(opt) == 1
    for batch in (1, 3):
        x = nan_windows(batch, k, stride, pads, seed=batch)
        ref = m(x, training=False).numpy()
        want = skip_max_pool(x, k, stride, pads)
        assert same_bits(ref, want), "TensorFlow's MaxPool no longer skips NaN as documented"
        assert not np.isnan(ref).any() and (ref == LOWEST).any()
        out = np.asarray(opt(x))
        assert np.array_equal(out, ref, equal_nan=True), (batch, n_differ(out, ref))
        assert same_bits(out, ref), batch


def test_global_max_pool_propagates_nan_like_tensorflow():
    """GlobalMaxPooling2D is TensorFlow's reduce_max, which propagates NaN (and
    gives -inf for -inf only): the default nan = "propagate"."""
    inp = keras.Input((H, W, C))
    m = keras.Model(inp, [L.GlobalMaxPooling2D()(inp), L.GlobalMaxPooling2D(keepdims=True)(inp)])
    opt = bst.optimize(m, [0, H, W, C])
    assert not opt.info.fallbacks
    x = nan_windows(3, 3, 2, (0, 0, 0, 0), seed=5)
    x[:, :, :, 36] = -np.inf
    refs = [r.numpy() for r in m(x, training=False)]
    assert np.isnan(refs[0]).any() and (refs[0][:, 36] == -np.inf).all()
    for out, ref in zip(opt(x), refs, strict=True):
        assert np.array_equal(np.asarray(out), ref, equal_nan=True)


def test_zero_padding_before_max_pool_stays_a_pad():
    """ZeroPadding2D -> MaxPooling2D of a ReLU: TensorFlow's padded zeros win over
    a window of NaN (0, where the pool's own padding would give -FLT_MAX), so the
    padding does not fold into the pool: an `nn.pad` that the pool reads."""
    inp = keras.Input((H, W, C))
    y = L.ZeroPadding2D(1)(L.ReLU()(inp))
    y = L.MaxPooling2D(3, 2)(y)
    m = keras.Model(inp, y)
    opt = bst.optimize(m, [0, H, W, C])
    assert not opt.info.fallbacks and compiled_stacks(opt) == 1
    assert "nn.pad" in bst.report(opt)
    border, zeros = 3 * 3 + 3, 3 * 3 + 5  # nan_windows' channels
    for batch in (1, 3):
        x = nan_windows(batch, 3, 2, (0, 0, 0, 0), seed=batch)
        ref = m(x, training=False).numpy()
        assert (ref[:, 0, :, border] == 0).all()  # padded zeros beside NaN only
        out = np.asarray(opt(x))
        assert np.array_equal(out, ref, equal_nan=True), (batch, n_differ(out, ref))
        # TensorFlow's relu makes -0.0 +0.0, nn.relu keeps it (PyTorch's): the
        # channel of signed zeros is equal in value only
        keep = [c for c in range(C) if c != zeros]
        assert same_bits(out[..., keep], ref[..., keep]), batch


def test_tf_function_max_pool_and_pad_bit_for_bit():
    """The GraphDef path: MaxPool ('SAME' and 'VALID'), and a zero Pad before a
    VALID MaxPool (not folded), NaN and Inf included."""

    @tf.function
    def f(x):
        y = tf.nn.relu(x)
        a = tf.nn.max_pool2d(y, 3, 2, "SAME")
        b = tf.nn.max_pool2d(tf.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
        return tf.nn.max_pool2d(x, 2, 1, "VALID"), a + b

    opt = bst.optimize(f, [0, H, W, C])
    assert not opt.info.fallbacks, opt.info.fallbacks
    keep = [c for c in range(C) if c != 3 * 3 + 5]  # relu(-0.0): see above
    for batch in (1, 3):
        x = nan_windows(batch, 3, 2, (1, 1, 1, 1), seed=batch)
        (out0, out1), (ref0, ref1) = opt(x), f(x)
        assert same_bits(np.asarray(out0), ref0.numpy()), batch
        out1, ref1 = np.asarray(out1), ref1.numpy()
        assert np.array_equal(out1, ref1, equal_nan=True), (batch, n_differ(out1, ref1))
        assert same_bits(out1[..., keep], ref1[..., keep]), batch


# -------------------------------------------------------- the op and the kernels


def test_max_pool_nan_property():
    arg = Block(arg_types=[TensorType(f32, [-1, H, W, C])]).args[0]
    plain = nn.MaxPool2dOp(arg, 3, 2, 1, layout="NHWC")
    assert plain.nan is None and plain.nan_value == MaxPoolNaN.PROPAGATE
    assert nn.MaxPool2dOp(arg, 3, 2, 1, layout="NHWC", nan="propagate").nan is None
    skip = nn.MaxPool2dOp(arg, 3, 2, 1, layout="NHWC", nan="skip")
    assert skip.nan_value == MaxPoolNaN.SKIP and skip.nan.data == "skip"
    skip.verify()
    with pytest.raises(VerifyException, match=r"nan must be one of \['propagate', 'skip'\]"):
        nn.MaxPool2dOp(arg, 3, 2, 1, layout="NHWC", nan="ignore")


def _pool_graph(layout: str, k: int, s: int, p: int, nan: str) -> str:
    def ty(shape):
        return "tensor<" + "x".join("?" if d < 0 else str(d) for d in shape) + "xf32>"

    o = (H + 2 * p - k) // s + 1
    xt = ty([-1, H, W, C] if layout == "NHWC" else [-1, C, H, W])
    yt = ty([-1, o, o, C] if layout == "NHWC" else [-1, C, o, o])
    return f"""func.func @f(%x: {xt}) -> {yt} {{
      %y = nn.max_pool2d %x {{kernel = array<i64: {k}, {k}>, strides = array<i64: {s}, {s}>, padding = array<i64: {p}, {p}, {p}, {p}>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "{layout}", nan = "{nan}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("cfg", [(3, 2, 1), (2, 1, 0), (3, 1, 1)])
def test_skip_kernel_and_reference_evaluator(layout: str, cfg):
    """The compiled kernel of nan = "skip" in both layouts (vectorized along C
    or W), and the reference evaluator's, against TensorFlow's loop."""
    from brainslug.testing.reference import eval_layer

    torch = pytest.importorskip("torch")
    k, s, p = cfg
    text = _pool_graph(layout, k, s, p, "skip")
    (op,) = [o for o in parse_module(text).walk() if isinstance(o, nn.MaxPool2dOp)]
    graph = compile_graph(parse_module(text))
    for batch in (1, 3):
        x = nan_windows(batch, k, s, (p, p, p, p), seed=10 + batch)
        want = skip_max_pool(x, k, s, (p, p, p, p))
        xin = x if layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        (out,) = graph(xin)
        out = np.asarray(out)
        if layout == "NCHW":
            out = out.transpose(0, 2, 3, 1)
        assert same_bits(out, want), (batch, n_differ(out, want))
        ref = eval_layer(op, [torch.from_numpy(xin)]).numpy()
        ref = ref if layout == "NHWC" else ref.transpose(0, 2, 3, 1)
        assert same_bits(ref, want), batch


# ------------------------------------------------------------------ PyTorch path


TORCH_CHECK = """
import numpy as np
import torch

import brainslug.pytorch as bsp

C, H, W = 37, 13, 13
torch.manual_seed(0)
bn_relu_pools = torch.nn.Sequential(
    torch.nn.BatchNorm2d(C), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1),
    torch.nn.MaxPool2d(2, 1)).eval()
with torch.no_grad():
    bn = bn_relu_pools[0]
    bn.running_mean.copy_(0.1 * torch.randn(C))
    bn.running_var.copy_(torch.rand(C) + 0.5)
    bn.weight.copy_(1 + 0.1 * torch.randn(C))
    bn.bias.copy_(0.1 * torch.randn(C))
pools = torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(2, 1)).eval()
for model, exact in ((bn_relu_pools, False), (pools, True)):
    for layout in ("NHWC", "NCHW"):
        opt = bsp.optimize(model, [0, C, H, W], layout=layout)
        assert any(s.compiled and any("max_pool" in la for la in s.layers)
                   for s in opt.info.stacks), opt.info.stacks
        for batch in (1, 3):
            x = torch.randn(batch, C, H, W)
            x[0, 4, 2, 3] = float("nan")
            x[-1, :, 5, 5] = float("nan")
            x[0, 1, 0, 0] = float("inf")
            x[-1, 2, 7, 8] = float("-inf")
            x[-1, 3, 4:9, 4:9] = float("-inf")
            with torch.no_grad():
                ref = model(x).numpy()
                out = opt(x).numpy()
            where = (exact, layout, batch)
            assert np.isnan(ref).sum() > 0 and np.array_equal(np.isnan(out), np.isnan(ref)), where
            if exact:  # max pooling alone: bit for bit
                assert np.array_equal(out, ref, equal_nan=True), where
            else:  # batch norm rounds as PyTorch's kernel may not: within 1e-5
                np.testing.assert_allclose(out, ref, rtol=0, equal_nan=True,
                                           atol=1e-5 * max(1.0, float(np.nanmax(np.abs(ref)))))
print("propagates")
"""


def test_torch_max_pool_still_propagates_nan():
    """PyTorch's max_pool2d propagates NaN; its plan keeps nan = "propagate":
    BN, ReLU and two max pools (the same NaN, values within 1e-5) and the two
    max pools alone (bit for bit), NaN and Inf in the input, both layouts.
    In a fresh process: PyTorch's compiler stack (triton) crashes when it is
    imported after TensorFlow."""
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", TORCH_CHECK], capture_output=True, text=True,
                       timeout=900, cwd=Path(__file__).parent)
    assert r.returncode == 0 and "propagates" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------- signed zeros and denormals

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 1e-45, 1.1754944e-38,
                    1.17e-38, 2.3e-38, -2.3e-38, 5.0, -5.0, 6.0, 7.5, -1e-3], np.float32)
"""Signed zeros, positive denormals, the smallest normals (whose halves are
denormal), NaN and Inf. (A negative denormal through TensorFlow's Relu gives
-0.0 while its Relu6 keeps it: kernels of their own, not followed here.)"""


@pytest.mark.parametrize("layer", ["relu", "relu6", "activation_relu", "leaky_relu", "swish",
                                   "hard_swish", "sigmoid", "add_relu", "mul_relu"])
def test_signed_zeros_and_denormals_like_tensorflow(layer: str):
    """TensorFlow's Relu and Relu6 give +0 for -0 (Eigen's max), and its kernels
    run with denormals flushed (FTZ and DAZ): the TensorFlow path's kernels
    do both, bit for bit (before, -0 stayed -0 and denormals went through)."""
    inp = keras.Input((H, W, C))
    y = {"relu": lambda t: L.ReLU()(t), "relu6": lambda t: L.ReLU(6.0)(t),
         "activation_relu": lambda t: L.Activation("relu")(t),
         "leaky_relu": lambda t: L.LeakyReLU(0.1)(t),
         "swish": lambda t: L.Activation("swish")(t),
         "hard_swish": lambda t: L.Activation("hard_swish")(t),
         "sigmoid": lambda t: L.Activation("sigmoid")(t),
         "add_relu": lambda t: L.Add()([t, L.ReLU()(t)]),
         "mul_relu": lambda t: L.Multiply()([t, L.ReLU()(t)])}[layer](inp)
    m = keras.Model(inp, L.Activation("linear")(y))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, H, W, C)).astype(np.float32)
    flat = x.reshape(-1)
    at = rng.choice(flat.size, 600, replace=False)
    flat[at] = np.resize(SPECIAL, 600)
    opt = bst.optimize(m, [0, H, W, C])
    assert "stacks: 0 compiled" not in bst.report(opt)
    for batch in (1, 3):
        ref = m(x[:batch], training=False).numpy()
        out = np.asarray(opt(x[:batch]))
        assert same_bits(out, ref), f"{layer} batch {batch}: {n_differ(out, ref)} differ"


def test_flushed_phases_set_and_restore_the_mode():
    """A backend that flushes denormals sets FTZ and DAZ in every phase and
    restores the caller's mode on return; its code is keyed apart."""
    from brainslug.ir.context import make_context
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.nn_to_loop.lower_nn_to_loop import LowerNNToLoopPass
    from brainslug.lowering.to_llvm import lower_kernels

    text = """
    func.func @f(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
      %r = nn.stack "k" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
      ^bb0(%a: tensor<?x5x3xf32>):
        %y = nn.relu %a {impl = "eigen"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
        nn.yield %y : tensor<?x5x3xf32>
      }
      func.return %r : tensor<?x5x3xf32>
    }"""
    texts = {}
    for flush in (False, True):
        module = parse_module(text)
        LowerNNToLoopPass().apply(make_context(), module)
        backend = X86Backend("host", flush)
        lower_kernels(module, backend.params())
        texts[flush] = str(backend.to_llvmlite(module))
        assert ("stmxcsr" in texts[flush]) == flush and ("ldmxcsr" in texts[flush]) == flush
    assert '"denormal-fp-math"="preserve-sign,preserve-sign"' in texts[True]
    assert X86Backend("host", True).fingerprint() != X86Backend("host").fingerprint()


def test_gelu_keeps_tensorflows_infinities():
    """Keras's exact GELU is TensorFlow's 0.5 * x * erfc(-x / sqrt 2): +inf at
    +inf and finite at 3.4e38, where PyTorch's formula (which the TensorFlow
    path used) gives NaN and inf; NaN where TensorFlow's is, values within
    1e-6 (erfc as 1 + erf, not TensorFlow's erfc)."""
    inp = keras.Input((H, W, C))
    m = keras.Model(inp, L.Activation("linear")(L.Activation("gelu")(inp)))
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, H, W, C)) * 4).astype(np.float32)
    flat = x.reshape(-1)
    at = rng.choice(flat.size, 300, replace=False)
    flat[at] = np.resize(np.array([np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e38, -1e38,
                                   -0.0, 0.0, 30.0, -30.0, -6.0], np.float32), 300)
    opt = bst.optimize(m, [0, H, W, C])
    assert "stacks: 0 compiled" not in bst.report(opt)
    for batch in (1, 3):
        ref = m(x[:batch], training=False).numpy()
        out = np.asarray(opt(x[:batch]))
        assert np.isposinf(ref).any() and np.array_equal(np.isposinf(out), np.isposinf(ref))
        assert np.array_equal(np.isnan(out), np.isnan(ref))
        assert np.array_equal(np.isneginf(out), np.isneginf(ref))
        finite = np.isfinite(ref)
        np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-6, atol=1e-6)


def test_softmax_rows_with_nan_and_inf_like_tensorflow():
    """TensorFlow's softmax (oneDNN's): a row with NaN or +inf is NaN where
    x - max is and 0 elsewhere (PyTorch's is NaN throughout, which the path
    computed); rows of -inf are NaN; other rows within 1e-6."""
    inp = keras.Input((H, W, C))
    m = keras.Model(inp, L.Activation("linear")(L.Softmax()(inp)))
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, H, W, C)) * 3).astype(np.float32)
    x[0, 0, 0, 3] = np.nan
    x[0, 0, 1, 5] = np.inf
    x[1, 2, 3, :4] = np.inf
    x[1, 4, 4, :] = -np.inf
    x[2, 5, 6, 7] = -np.inf
    x[2, 6, 2, [1, 9]] = [np.inf, np.nan]
    opt = bst.optimize(m, [0, H, W, C])
    assert "stacks: 0 compiled" not in bst.report(opt)
    for batch in (1, 3):
        ref = m(x[:batch], training=False).numpy()
        out = np.asarray(opt(x[:batch]))
        assert np.array_equal(np.isnan(out), np.isnan(ref)), n_differ(out, ref)
        assert (ref[0, 0, 0] == 0).sum() == C - 1 and (out[0, 0, 0] == 0).sum() == C - 1
        np.testing.assert_allclose(out[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=1e-6)

"""Buffers that kernels read with full-vector loads start on a cache line:
packed convolution weights, scratch, and the TensorFlow frontend's bound
arrays. NumPy aligns to 16 bytes only, so each of these was 16, 32 or 48
bytes into a line about three times in four (every AVX-512 load of it then
spanned two lines: resnet50 at batch 8 ran 7% slower)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.kernel_sequence import StackSequence
from brainslug.frontend_torch.weight_watch import PackedWeight
from brainslug.pipeline.target import block_weights
from brainslug.runtime.aligned import ALIGN, HUGE_PAGE, aligned_copy, aligned_empty


def _offset(a: np.ndarray) -> int:
    return a.ctypes.data % ALIGN


@pytest.mark.parametrize("shape", [(0,), (1,), (37,), (3, 5, 7), (13, 13, 37)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_aligned_empty(shape: tuple[int, ...], dtype: type) -> None:
    for _ in range(8):  # (NumPy's own allocation is aligned by chance one time in four)
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert _offset(a) == 0
        a[...] = 3  # the whole array is writable memory of its own
        assert np.all(a == 3)


def _thp_eligible(address: int) -> bool | None:
    """The `THPeligible` flag of the mapping that holds `address` (None where
    the kernel does not report it)."""
    try:
        text = open("/proc/self/smaps").read()
    except OSError:
        return None
    inside = False
    for line in text.splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    return None


def test_large_buffers_start_on_a_huge_page_and_are_advised_to_use_them() -> None:
    a = aligned_empty((3, HUGE_PAGE // 4 + 5))  # 3 huge pages and a bit
    assert a.ctypes.data % HUGE_PAGE == 0 and a.flags.c_contiguous and a.flags.writeable
    a[...] = 2.5
    assert float(a.sum()) == 2.5 * a.size
    small = aligned_empty((HUGE_PAGE // 8,))  # half a huge page: the heap
    assert small.ctypes.data % ALIGN == 0
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        pytest.skip("no transparent huge pages on this system")
    if "[never]" in mode:
        pytest.skip("transparent huge pages are off on this system")
    eligible = _thp_eligible(a.ctypes.data)
    if eligible is None:
        pytest.skip("/proc/self/smaps reports no THPeligible")
    assert eligible


def test_aligned_copy_keeps_values_and_copies_only_when_needed() -> None:
    rng = np.random.default_rng(0)
    src = rng.standard_normal((5, 37)).astype(np.float32)
    strided = src[:, 1::2]  # neither contiguous nor (in general) aligned
    for a in (src, strided, src[1:]):
        out = aligned_copy(a)
        assert _offset(out) == 0 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, a)
    done = aligned_empty((4, 9))
    assert aligned_copy(done) is done


@pytest.mark.parametrize("shape", [(3, 3, 37, 70), (1, 1, 19, 64), (5, 5, 3, 33)])
def test_blocked_weights_are_aligned(shape: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(1)
    for _ in range(8):
        hwio = rng.standard_normal(shape).astype(np.float32)
        packed = block_weights(hwio, 16)
        assert _offset(packed) == 0
        kh, kw, i, o = shape
        assert packed.shape == (-(-o // 16), kh, kw, i, 16)
        # block b holds output channels 16b .. 16b + 15, zeros past O
        full = np.concatenate([packed[b] for b in range(packed.shape[0])], axis=-1)
        np.testing.assert_array_equal(full[..., :o], hwio)
        assert not full[..., o:].any()


def test_packed_convolution_weights_are_aligned() -> None:
    for cout in (37, 64, 70):
        conv = nn.Conv2d(13, cout, 3)
        for _ in range(4):
            packed = PackedWeight(conv.weight, block=64)
            assert packed.current().data_ptr() % ALIGN == 0


def test_scratch_buffers_are_aligned() -> None:
    torch.manual_seed(0)
    # expand, depthwise (a depth-first chain: the expanded tile is scratch), project
    model = nn.Sequential(
        nn.Conv2d(19, 71, 1, bias=False), nn.BatchNorm2d(71), nn.ReLU6(),
        nn.Conv2d(71, 71, 3, padding=1, groups=71, bias=False), nn.BatchNorm2d(71), nn.ReLU6(),
        nn.Conv2d(71, 23, 1, bias=False), nn.BatchNorm2d(23)).eval()
    opt = brainslug.optimize(model, [0, 19, 29, 29], conv="brainslug")
    x = torch.randn(3, 19, 29, 29)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4)
    scratch = [a for run in opt.modules() if isinstance(run, StackSequence)
               for k in run.kernels for bufs in k.runner._scratch.values() for a in bufs]
    assert scratch, "the chain should have kept its expanded tile in scratch"
    assert all(_offset(a) == 0 for a in scratch)


def test_tensorflow_bound_arrays_are_aligned() -> None:
    keras = pytest.importorskip("keras")
    from brainslug.frontend_tf.capture import capture

    inp = keras.Input((11, 11, 5))
    y = keras.layers.Conv2D(37, 3, padding="same", use_bias=True)(inp)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(keras.layers.ReLU()(y))
    model = keras.Model(inp, y)
    cap = capture(model, [0, 11, 11, 5], conv_block=64)
    arrays = [a for a in cap.arg_sources if isinstance(a, np.ndarray)]
    assert len(arrays) >= 6  # kernel, bias, BN factors, depthwise kernel and bias
    assert all(_offset(a) == 0 for a in arrays)

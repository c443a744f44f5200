"""PackedConv2d (oneDNN-prepacked library convolution) against eager nn.Conv2d."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.fx as fx
from torch import nn

from brainslug.frontend_torch import library_conv
from brainslug.frontend_torch.library_conv import (
    PackedConv2d,
    pack_convolutions,
    pack_graph_convolutions,
)
from brainslug.frontend_torch.weight_watch import FINGERPRINT_SAMPLES

HAVE_MKLDNN = library_conv._detect_support()[0]
CL = torch.channels_last


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out - ref).abs().max().item() / max(1e-30, ref.abs().max().item())


def make_conv(cin: int, cout: int, k: int | tuple[int, int], seed: int = 0,
              **kw: object) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, **kw).eval()  # type: ignore[arg-type]
    return conv


# cin, cout, kernel, kwargs, (h, w)
CONFIGS = [
    (5, 7, 3, dict(padding=1), (9, 11)),                       # odd sizes
    (16, 16, 3, dict(padding=1, groups=16, bias=False), (13, 10)),  # depthwise, no bias
    (8, 12, 3, dict(padding=2, dilation=2), (15, 14)),         # dilation
    (3, 8, 7, dict(stride=2, padding=3), (23, 21)),            # stem-like stride 2
    (12, 6, 1, dict(bias=False), (7, 7)),                      # 1x1
    (8, 8, (3, 5), dict(padding=(1, 2), groups=2), (10, 12)),  # rectangular, grouped
    (6, 4, 3, dict(padding="same", dilation=3), (11, 9)),      # 'same'
    (6, 4, 3, dict(stride=(2, 1), padding="valid"), (11, 9)),  # 'valid', mixed stride
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_matches_eager(cfg: tuple, batch: int, layout: str) -> None:
    cin, cout, k, kw, (h, w) = cfg
    conv = make_conv(cin, cout, k, **kw)
    m = PackedConv2d(conv)
    assert m.packed == HAVE_MKLDNN, m.reason
    x = torch.randn(batch, cin, h, w)
    if layout == "channels_last":
        x = x.to(memory_format=CL)
    with torch.no_grad():
        ref = conv(x)
        out = m(x)
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= 1e-5
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=CL)


def test_keep_format_and_strided_input() -> None:
    conv = make_conv(6, 10, 3, padding=1)
    m = PackedConv2d(conv, keep_format=True)
    x = torch.randn(2, 6, 12, 14)
    with torch.no_grad():
        out = m(x)
        assert out.is_contiguous()
        assert rel_err(out, conv(x)) <= 1e-5
        xs = torch.randn(2, 6, 24, 14)[:, :, ::2]  # neither layout
        assert rel_err(m(xs), conv(xs)) <= 1e-5
        xcl = x.to(memory_format=CL)
        assert m(xcl).is_contiguous(memory_format=CL)


def test_folded_weight_and_bias() -> None:
    conv = make_conv(4, 6, 3, padding=1)
    w2, b2 = conv.weight.detach() * 3, torch.randn(6)
    m = PackedConv2d(conv, w2, b2)
    x = torch.randn(2, 4, 8, 8).to(memory_format=CL)
    with torch.no_grad():
        ref = nn.functional.conv2d(x, w2, b2, 1, 1)
        assert rel_err(m(x), ref) <= 1e-5
    assert m.weight.data_ptr() != conv.weight.data_ptr()
    with pytest.raises(ValueError):
        PackedConv2d(conv, torch.randn(6, 4, 1, 1))


@pytest.mark.skipif(not HAVE_MKLDNN, reason="no oneDNN")
def test_weight_updates_repack() -> None:
    conv = make_conv(8, 8, 3, padding=1)
    m = PackedConv2d(conv)
    x = torch.randn(3, 8, 10, 10).to(memory_format=CL)
    with torch.no_grad():
        y0 = m(x)
        assert len(m._packs) == 1
        first_pack = m._packs[x.shape]
        assert m(x) is not y0 and m._packs[x.shape] is first_pack  # cached, not repacked

        conv.weight.data.mul_(2)  # bypasses _version: the fingerprint sees it
        assert conv.weight._version == m._watch._seen.version
        assert rel_err(m(x), conv(x)) <= 1e-5
        assert rel_err(m(x), 2 * (y0 - conv.bias[:, None, None]) + conv.bias[:, None, None]) \
            <= 1e-5

        conv.weight.add_(1.0)  # bumps _version
        assert rel_err(m(x), conv(x)) <= 1e-5

        conv.load_state_dict({"weight": torch.randn(8, 8, 3, 3), "bias": torch.randn(8)})
        assert rel_err(m(x), conv(x)) <= 1e-5

        conv.bias.zero_()  # bias is not packed
        assert rel_err(m(x), conv(x)) <= 1e-5

        m.weight = nn.Parameter(torch.randn(8, 8, 3, 3))  # a new tensor object
        ref = nn.functional.conv2d(x, m.weight, conv.bias, 1, 1)
        assert rel_err(m(x), ref) <= 1e-5

        # an edit that no sample sees is missed until repack()
        w = m.weight
        assert w.is_contiguous()  # sampled: a strided slice of the flat weight
        sampled = set(np.arange(w.numel())[m._watch._seen.sel].tolist())
        assert 32 <= len(sampled) <= FINGERPRINT_SAMPLES
        hidden = next(i for i in range(w.numel()) if i not in sampled)
        w.data.view(-1)[hidden] += 100.0
        ref = nn.functional.conv2d(x, w, conv.bias, 1, 1)
        assert rel_err(m(x), ref) > 1e-3
        m.repack()
        assert rel_err(m(x), ref) <= 1e-5


@pytest.mark.skipif(not HAVE_MKLDNN, reason="no oneDNN")
def test_one_pack_per_input_shape() -> None:
    conv = make_conv(4, 5, 3, padding=1)
    m = PackedConv2d(conv)
    with torch.inference_mode():
        for b in (1, 3, 1):
            x = torch.randn(b, 4, 9, 7).to(memory_format=CL)
            assert rel_err(m(x), conv(x)) <= 1e-5
    assert len(m._packs) == 2
    with torch.no_grad():  # packs made in inference mode work outside it
        x = torch.randn(3, 4, 9, 7)
        assert rel_err(m(x), conv(x)) <= 1e-5
    for b in range(2, 8):
        with torch.no_grad():
            m(torch.randn(b, 4, 5, 5))
    assert len(m._packs) <= library_conv._MAX_SHAPES


def test_grad_and_other_dtypes_use_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = make_conv(4, 5, 3, padding=1)
    m = PackedConv2d(conv)

    def boom() -> None:
        raise AssertionError("packed op used")

    monkeypatch.setattr(library_conv, "_mkldnn_ops", boom)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    out = m(x)  # grad enabled and needed: F.conv2d
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    with torch.no_grad():
        xd = torch.randn(2, 4, 6, 6, dtype=torch.float64)
        ref = nn.functional.conv2d(xd, conv.weight.double(), conv.bias.double(), 1, 1)
        md = PackedConv2d(copy.deepcopy(conv).double())
        assert not md.packed and "float64" in md.reason
        assert rel_err(md(xd), ref) <= 1e-12


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kw, why", [
    (dict(padding=1, padding_mode="reflect"), "padding_mode"),
    (dict(padding="same"), "asymmetric"),  # even kernel: uneven 'same' padding
])
def test_unpackable_configs_fall_back(kw: dict, why: str) -> None:
    k = 4 if kw.get("padding") == "same" else 3
    conv = make_conv(3, 5, k, **kw)
    m = PackedConv2d(conv)
    assert not m.packed and why in m.reason
    x = torch.randn(2, 3, 9, 8).to(memory_format=CL)
    with torch.no_grad():
        assert rel_err(m(x), conv(x)) <= 1e-6


def test_fallback_when_detection_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library_conv, "_detect_support",
                        lambda: (False, "oneDNN (mkldnn) is not available (test)"))

    def boom() -> None:
        raise AssertionError("packed op used")

    monkeypatch.setattr(library_conv, "_mkldnn_ops", boom)
    for cin, cout, k, kw, (h, w) in CONFIGS:
        conv = make_conv(cin, cout, k, **kw)
        m = PackedConv2d(conv)
        assert not m.packed and "not available" in m.reason
        for x in (torch.randn(3, cin, h, w), torch.randn(1, cin, h, w).to(memory_format=CL)):
            with torch.no_grad():
                ref = conv(x)
                out = m(x)
            assert rel_err(out, ref) <= 1e-6
            assert out.stride() == ref.stride()


def test_detection_trial_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("no such op")

    monkeypatch.setattr(library_conv, "_mkldnn_ops", broken)
    library_conv._detect_support.cache_clear()
    try:
        ok, why = library_conv._detect_support()
        if torch.backends.mkldnn.is_available():
            assert not ok and "trial" in why and "no such op" in why
    finally:
        library_conv._detect_support.cache_clear()
        monkeypatch.undo()
    assert library_conv._detect_support()[0] == HAVE_MKLDNN


def test_deepcopy_state_dict_and_pack_convolutions() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 4, 1)), nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 10, 10).to(memory_format=CL)
    with torch.no_grad():
        ref = model(x)
    keys = list(model.state_dict())
    names = pack_convolutions(model)
    assert names == ["0", "2.0"]
    assert all(isinstance(model.get_submodule(n), PackedConv2d) for n in names)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert rel_err(model(x), ref) <= 1e-5
        clone = copy.deepcopy(model)
        assert rel_err(clone(x), ref) <= 1e-5
        clone[0].weight.mul_(0)
        assert rel_err(model(x), ref) <= 1e-5  # the copy has its own weight


@pytest.mark.skipif(not HAVE_MKLDNN, reason="no oneDNN")
def test_channels_last_and_strided_weights_repack() -> None:
    conv = make_conv(6, 8, 3, padding=1)
    m = PackedConv2d(conv)
    x = torch.randn(2, 6, 9, 9).to(memory_format=CL)
    with torch.no_grad():
        m(x)
        conv.to(memory_format=CL)  # new weight memory: data_ptr changes
        assert conv.weight.is_contiguous(memory_format=CL)
        assert rel_err(m(x), conv(x)) <= 1e-5
        conv.weight.data.mul_(-0.5)
        assert rel_err(m(x), conv(x)) <= 1e-5
        # a weight that is neither NCHW nor NHWC dense: fancy-indexed fingerprint
        w = torch.randn(8, 6, 3, 6)[..., ::2]
        ms = PackedConv2d(conv, w, None)
        assert not ms.weight.is_contiguous()
        ref = nn.functional.conv2d(x, w, None, 1, 1)
        assert rel_err(ms(x), ref) <= 1e-5
        ms.weight.data.mul_(3)
        assert rel_err(ms(x), 3 * ref) <= 1e-5


@pytest.mark.skipif(not HAVE_MKLDNN, reason="no oneDNN")
def test_bitwise_equal_to_eager_channels_last() -> None:
    """Same oneDNN kernel as eager's channels-last convolution, minus the per-call
    weight reorder: the results are identical, so packing keeps exact mode exact."""
    conv = make_conv(16, 24, 3, padding=1)
    m = PackedConv2d(conv)
    x = torch.randn(2, 16, 12, 12).to(memory_format=CL)
    with torch.no_grad():
        assert torch.equal(m(x), conv(x))


def test_pack_graph_convolutions_leaves_user_model_alone() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))).eval()

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.body[0](x)[:, :3])  # the first conv is called twice

    top = Twice().eval()
    gm = fx.symbolic_trace(top)
    x = torch.randn(2, 3, 9, 9).to(memory_format=CL)
    with torch.no_grad():
        ref = top(x)
    names = pack_graph_convolutions(gm)
    assert names == ["body.0", "body.2.0"]
    assert type(model[0]) is nn.Conv2d and type(model[2][0]) is nn.Conv2d  # untouched
    assert isinstance(gm.bs_packed_body_0, PackedConv2d)
    assert gm.bs_packed_body_0.weight is model[0].weight
    calls = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    assert calls.count("bs_packed_body_0") == 2
    with torch.no_grad():
        assert rel_err(gm(x), ref) <= 1e-5
        model[0].weight.data.mul_(2)  # the user's edit reaches the packed plan
        assert rel_err(gm(x), top(x)) <= 1e-5


@pytest.mark.parametrize("cfg", CONFIGS[:5], ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_activation_post_op_is_the_separate_activation(cfg: tuple, act: str) -> None:
    """ReLU/ReLU6 as a oneDNN post-op of the packed convolution: bit for bit the
    packed convolution followed by the activation (inputs scaled so that both
    clamps of ReLU6 are hit)."""
    cin, cout, k, kw, (h, w) = cfg
    conv = make_conv(cin, cout, k, **kw)
    plain, fused = PackedConv2d(conv), PackedConv2d(conv, act=act)
    x = (torch.randn(3, cin, h, w) * 4).to(memory_format=CL)
    with torch.no_grad():
        ref = library_conv.activation(plain(x), act)
        out = fused(x)
    assert torch.equal(out, ref)
    assert (ref == 0).any() and (act != "relu6" or (ref == 6).any())


def test_fuse_conv_activations_patterns() -> None:
    """conv → ReLU module, F.relu6, .relu_() and F.hardtanh(0, 6) fuse; a conv
    with a second user, or hardtanh with other bounds, does not."""
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), \
                nn.Conv2d(8, 8, 3, padding=1)
            self.c4, self.c5, self.c6 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1), \
                nn.Conv2d(8, 8, 1)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.relu(self.c1(x))
            b = F.relu6(self.c2(a))
            c = self.c3(b).relu_()
            d = F.hardtanh(self.c4(c), 0.0, 6.0)
            e = self.c5(d)
            f = F.relu(e) + e  # e has two users: not fused
            return F.hardtanh(self.c6(f), -1.0, 1.0)  # not a ReLU6

    torch.manual_seed(5)
    net = Net().eval()
    gm = fx.symbolic_trace(net)
    x = (torch.randn(2, 3, 11, 9) * 3).to(memory_format=CL)
    with torch.no_grad():
        ref = net(x)
    assert library_conv.fuse_conv_activations(gm) == ["c1", "c2", "c3", "c4"]
    kinds = [m.act for m in gm.modules() if isinstance(m, library_conv.ConvAct)]
    assert kinds == ["relu", "relu6", "relu", "relu6"]
    pack_graph_convolutions(gm)
    with torch.no_grad():
        out = gm(x)
    assert rel_err(out, ref) <= 1e-5


def test_exact_mode_keeps_nan_through_conv_relu() -> None:
    """oneDNN's activation post-ops turn NaN into 0, PyTorch's ReLU keeps it: in
    exact mode a conv → ReLU (VGG-like) network keeps its ReLUs out of the
    convolution and equals eager channels-last bit for bit, NaN and Inf
    included; with `fold_batchnorm=True` they become post-ops (the report says
    NaN becomes 0)."""
    import brainslug.pytorch as brainslug

    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
                          nn.MaxPool2d(3, 2, 1), nn.Conv2d(16, 8, 3, padding=1),
                          nn.ReLU6()).eval()
    opt = brainslug.optimize(model, [0, 3, 21, 19], conv="library")
    assert not any("ReLU" in n and "post-ops" in n for n in opt.info.notes), opt.info.notes
    x = torch.randn(3, 3, 21, 19)
    x[0, :, 5, 7] = float("nan")
    x[1, 0, 2, 2] = float("inf")
    cl = model.to(memory_format=CL)
    with torch.no_grad():
        out, ref = opt(x), cl(x.to(memory_format=CL))
    assert ref.isnan().any()
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())
    folded = brainslug.optimize(model, [0, 3, 21, 19], conv="library", fold_batchnorm=True)
    if HAVE_MKLDNN:
        assert any("NaN becomes 0" in n for n in folded.info.notes), folded.info.notes
    x = torch.randn(3, 3, 21, 19)
    with torch.no_grad():
        assert torch.equal(folded(x), cl(x.to(memory_format=CL)))


@pytest.mark.parametrize("act", [None, "relu"])
def test_residual_add_post_op_bit_for_bit(monkeypatch: pytest.MonkeyPatch, act) -> None:
    """`act(conv(x) + other)` as one oneDNN call (binary post-op) equals the
    packed convolution, the add and the ReLU done one after the other."""
    conv = make_conv(16, 24, 3, padding=1)
    plain, fused = PackedConv2d(conv), PackedConv2d(conv, act=act, add=True)
    x = (torch.randn(3, 16, 13, 11) * 3).to(memory_format=CL)
    other = (torch.randn(3, 24, 13, 11) * 5).to(memory_format=CL)
    with torch.no_grad():
        ref = library_conv.activation(plain(x) + other, act)
        if HAVE_MKLDNN:  # the post-op path, not the fallback
            monkeypatch.setattr(PackedConv2d, "_fallback", lambda *a: pytest.fail("fallback"))
        out = fused(x, other)
        monkeypatch.undo()
        assert torch.equal(out, ref)
        # an NCHW `other` takes the fallback, with the same result
        assert torch.equal(fused(x, other.contiguous()), ref)


def test_fuse_conv_add_patterns() -> None:
    """conv + identity (+=, and other + conv) with and without the ReLU after it;
    a conv with another user, or an add of two non-convs, is left alone."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.c3, self.c4, self.c5 = (
                nn.Conv2d(8, 8, 3, padding=1) for _ in range(5))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.c1(x)
            out += x
            y = self.relu(out)       # c1: add and ReLU fused
            z = y + self.c2(y)       # c2: add fused, no ReLU
            w = self.c3(z)
            v = self.c4(w) + self.c5(w)  # c4 fuses, taking c5's output as `other`
            return w + v + w         # c3 has three users: not fused

    torch.manual_seed(9)
    net = Block().eval()
    gm = fx.symbolic_trace(net)
    x = (torch.randn(2, 8, 9, 7) * 2).to(memory_format=CL)
    with torch.no_grad():
        ref = net(x)
    assert library_conv.fuse_conv_add(gm) == ["c1", "c2", "c4"]
    assert [m.act for m in gm.modules() if isinstance(m, library_conv.ConvAdd)] == [
        "relu", None, None]
    pack_graph_convolutions(gm)
    with torch.no_grad():
        assert rel_err(gm(x), ref) <= 1e-5

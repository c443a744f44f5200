"""Transformer layers in vector code: GELU's tanh form (PyTorch's, bit for bit)
and softmax (the vector exp), as accurate as PyTorch against float64, with its
NaN and Inf."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import brainslug.pytorch as brainslug


class GeluTanh(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class Softmax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x * 1.5, dim=-1)


class SoftmaxMethod(torch.nn.Module):
    """The method form, as timm's EfficientFormer and many attention layers write it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 1.5).softmax(dim=-1)


def _gelu_tanh_f64(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("batch", [1, 3])
def test_gelu_tanh_as_accurate_as_pytorch(batch: int) -> None:
    opt = brainslug.optimize(GeluTanh().eval(), [0, 7, 1001])
    assert "Fallbacks: none" in brainslug.report(opt)
    torch.manual_seed(batch)
    x = torch.randn(batch, 7, 1001) * 4
    x[0, 0, :7] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0,
                                -12.0, 1e-30])
    with torch.no_grad():
        ref, out = F.gelu(x, approximate="tanh"), opt(x)
    assert torch.equal(ref.isnan(), out.isnan())
    special = [1, 3, 4]  # inf, 0, -0 exactly (-inf gives NaN, as in PyTorch)
    assert torch.equal(out[0, 0, special], ref[0, 0, special])
    assert torch.equal(out[0, 0, special].signbit(), ref[0, 0, special].signbit())
    exact = _gelu_tanh_f64(x)
    ok = exact.isfinite()
    scale = exact[ok].abs().clamp_min(1.0)
    ours = ((out[ok].double() - exact[ok]).abs() / scale).max().item()
    theirs = ((ref[ok].double() - exact[ok]).abs() / scale).max().item()
    assert ours <= max(theirs, 2.5e-7), (ours, theirs)
    # PyTorch's own formula and tanh (Sleef's, libm's on the tail): the same bits
    # as PyTorch on one thread (with T threads, each thread's last numel / T % 32
    # elements are a scalar tail of their own: PyTorch's result depends on T)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = F.gelu(x, approximate="tanh")
    finally:
        torch.set_num_threads(threads)
    same = (out == one) | (out.isnan() & one.isnan())
    assert same.all(), f"{(~same).sum().item()} differ"


@pytest.mark.parametrize("d, form", [(37, Softmax), (197, Softmax), (768, Softmax),
                                     (197, SoftmaxMethod)])
def test_softmax_within_bounds_of_eager_and_float64(d: int, form: type[torch.nn.Module]) -> None:
    opt = brainslug.optimize(form().eval(), [0, 13, d])
    assert "Fallbacks: none" in brainslug.report(opt) and "nn.softmax" in brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, 13, d) * 3
        x[0, 0, 0] = float("nan")
        x[-1, 1, 2] = float("inf")
        with torch.no_grad():
            ref, out = form()(x), opt(x)
        assert torch.equal(ref.isnan(), out.isnan())
        ok = ~ref.isnan()
        assert (out[ok] - ref[ok]).abs().max().item() <= 1e-6
        exact = torch.softmax(x.double() * 1.5, dim=-1)
        assert (out[ok].double() - exact[ok]).abs().max().item() <= 1e-6


class GroupNormNet(torch.nn.Module):
    """A convolution, group norm (optionally without affine) and an activation."""

    def __init__(self, channels: int, groups: int, affine: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(5, channels, 3, padding=1)
        self.gn = torch.nn.GroupNorm(groups, channels, affine=affine)
        if affine:
            with torch.no_grad():
                self.gn.weight.uniform_(0.5, 1.5)
                self.gn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.gn(self.conv(x)) * 1.5)


@pytest.mark.parametrize(("channels", "groups", "affine"),
                         [(12, 3, True), (12, 1, True), (36, 36, False)])
def test_group_norm_as_accurate_as_pytorch(channels: int, groups: int, affine: bool) -> None:
    """nn.group_norm in a channels-last plan: within 1e-5 of eager, and as
    close to float64 as PyTorch (2x, with 1e-7 of the magnitude as slack)."""
    torch.manual_seed(channels + groups)
    m = GroupNormNet(channels, groups, affine).eval()
    opt = brainslug.optimize(m, [0, 5, 9, 11], conv="library")
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep and "nn.group_norm" in rep, rep
    m64 = GroupNormNet(channels, groups, affine).double().eval()
    m64.load_state_dict(m.state_dict())
    for batch in (1, 3):
        x = torch.randn(batch, 5, 9, 11) * 3 + 1
        with torch.no_grad():
            ref, out, r64 = m(x), opt(x), m64(x.double())
        scale = max(1.0, r64.abs().max().item())
        assert (out - ref).abs().max().item() <= 1e-5 * scale
        e_bs = (out.double() - r64).abs().max().item()
        e_pt = (ref.double() - r64).abs().max().item()
        assert e_bs <= 2 * e_pt + 1e-7 * scale, (e_bs, e_pt)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_group_norm_of_a_large_group_as_accurate_as_pytorch(layout: str) -> None:
    """PoolFormer's GroupNorm(1, C): a group of C·H·W = 123,120 points whose mean
    is far from 0. The sums run dim by dim (a sum of sums of rows); one running
    sum over the whole group was 50 times further from float64 than PyTorch."""
    torch.manual_seed(5)
    m = GroupNormNet(48, 1).eval()
    opt = brainslug.optimize(m, [0, 5, 57, 45], conv="library", layout=layout)
    assert "nn.group_norm" in brainslug.report(opt)
    m64 = GroupNormNet(48, 1).double().eval()
    m64.load_state_dict(m.state_dict())
    for batch in (1, 2):
        x = torch.randn(batch, 5, 57, 45) * 3 + 4
        with torch.no_grad():
            ref, out, r64 = m(x), opt(x), m64(x.double())
        scale = max(1.0, r64.abs().max().item())
        assert (out - ref).abs().max().item() <= 1e-5 * scale
        e_bs = (out.double() - r64).abs().max().item()
        e_pt = (ref.double() - r64).abs().max().item()
        assert e_bs <= 2 * e_pt + 1e-7 * scale, (e_bs, e_pt)


def test_group_norm_of_a_sequence() -> None:
    """Group norm of a rank-3 [N, C, L] tensor, after a scalar multiply."""
    class Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gn = torch.nn.GroupNorm(3, 12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gn(x * 2.0)

    m = Seq().eval()
    opt = brainslug.optimize(m, [0, 12, 37])
    assert "Fallbacks: none" in brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, 12, 37) * 4 - 1
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_reference_group_norm() -> None:
    """The reference evaluator's nn.group_norm (channels innermost)."""
    from xdsl.ir import Block

    from brainslug.dialects import nn as bsnn
    from brainslug.testing.reference import eval_layer

    x = torch.randn(2, 3, 4, 12)
    blk = Block(arg_types=[bsnn.make_tensor([bsnn.DYN, 3, 4, 12]), bsnn.make_tensor([12])])
    op = bsnn.GroupNormOp(blk.args[0], 4, 3, blk.args[1], eps=1e-5)
    w = torch.rand(12) + 0.5
    got = eval_layer(op, [x, w])
    want = F.group_norm(x.permute(0, 3, 1, 2), 4, w, None, 1e-5).permute(0, 2, 3, 1)
    assert torch.allclose(got, want, atol=1e-6)


class ExportedAttention(torch.nn.Module):
    """Attention that torch.fx can't trace (control flow on the input's rank),
    so torch.export captures it: its ATen matrix ops stay library calls."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(24)
        self.qkv = torch.nn.Linear(24, 72)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm(x)).reshape(x.shape[0], -1, 3, 2, 12).permute(
            2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        s = (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return x + (a + s).transpose(1, 2).reshape(x.shape[0], -1, 24)


def test_exported_matrix_work_is_library_calls_not_fallbacks() -> None:
    torch.manual_seed(3)
    m = ExportedAttention().eval()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.uniform_(-0.2, 0.2)
    opt = brainslug.optimize(m, [0, 24, 5, 7])
    rep = brainslug.report(opt)
    assert opt.info.capture == "torch.export", rep
    assert "Fallbacks: none" in rep, rep
    assert "scaled_dot_product_attention" in rep and "matmul" in rep, rep
    for batch in (1, 3):
        x = torch.randn(batch, 24, 5, 7)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())

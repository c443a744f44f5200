"""Roll, nearest resampling (`nn.roll`, `nn.resize_nearest`) and the powers
PyTorch computes without `powf` (`nn.pow`) compile bit for bit, NaN and Inf
included, in either memory order; other forms run in PyTorch with a reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from xdsl.ir import Block

import brainslug.pytorch as brainslug
from brainslug.dialects import nn as bsnn
from brainslug.frontend_torch.resample_specs import nearest_map
from brainslug.testing.library_reference import with_plan_libraries
from brainslug.testing.reference import eval_layer


class ShiftAndResample(nn.Module):
    """Swin-style rolls and FPN-style nearest upsampling around a convolution
    (so the plan is channels-last), with powers in between."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 7, 3)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.roll(torch.relu(x), shifts=(-3, 2), dims=(2, 3))
        y = self.conv(y.square() - 1.0)
        y = self.up(torch.sigmoid(y)) + 0.5
        z = F.interpolate(y, size=(17, 13), mode="nearest")       # 22x18 -> 17x13
        w = F.interpolate(y, scale_factor=0.5, mode="nearest-exact")  # every other point
        return torch.rsqrt(z.roll(5, 3)) * 2.0, w ** 3 + w.reciprocal()


class Sequence(nn.Module):
    """Rolls and powers of a rank-3 (token) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.roll(shifts=4, dims=1) ** 2 + torch.pow(x, -2)
        return y.roll((1, -7), (2, 1)) * x.pow(-1) + x.pow(-0.5) * torch.pow(x, 1)


class GatedByShape(nn.Module):
    """GhostNetV2's gate: a pooled branch resampled back to the size that the
    other branch's shape gives (`size` of fx nodes, not numbers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 7, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        g = torch.sigmoid(F.avg_pool2d(y, kernel_size=2, stride=2))
        return y * F.interpolate(g, size=(y.shape[-2], y.shape[-1]), mode="nearest")


def _special(x: torch.Tensor) -> torch.Tensor:
    x.view(-1)[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -2.0])
    return x


def _same(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return out.shape == ref.shape and torch.equal(out.isnan(), ref.isnan()) and torch.equal(
        out.nan_to_num(), ref.nan_to_num())


@pytest.mark.parametrize(("model", "shape", "layout"), [
    (ShiftAndResample, [5, 13, 11], "NHWC"), (ShiftAndResample, [5, 13, 11], "NCHW"),
    (Sequence, [9, 19], "auto"), (GatedByShape, [5, 14, 10], "NHWC")])
def test_roll_resample_and_powers_bit_for_bit(model: type[nn.Module], shape: list[int],
                                              layout: str) -> None:
    torch.manual_seed(0)
    m = model().eval()
    opt = brainslug.optimize(m, [0, *shape], conv="library", layout=layout)
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    if model is not GatedByShape:
        assert "nn.roll" in rep and "nn.pow" in rep
    if model is not Sequence:
        assert "nn.resize_nearest" in rep
    for batch in (1, 3):
        x = _special(torch.randn(batch, *shape) * 3)
        with torch.no_grad():
            # the library convolution of an input in the plan's layout
            xs = x.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else x
            ref = with_plan_libraries(m, opt)(xs)
            out = opt(x)
        for o, r in zip(out if isinstance(out, tuple) else (out,),
                        ref if isinstance(ref, tuple) else (ref,), strict=True):
            assert _same(o, r), batch


@pytest.mark.parametrize(("layer", "reason"), [
    (lambda x: x ** 2.5, "pow with exponent 2.5"),
    (lambda x: torch.roll(x, 3), "roll of the flattened tensor"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), "interpolation mode 'bicubic'"),
])
def test_unmapped_forms_run_in_pytorch_with_their_reason(layer, reason: str) -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return layer(torch.relu(x)) * 2.0

    m = M().eval()
    opt = brainslug.optimize(m, [0, 3, 5, 6])
    assert reason in brainslug.report(opt)
    x = torch.rand(2, 3, 5, 6) + 0.1
    with torch.no_grad():
        assert torch.equal(opt(x), m(x))


def test_square_root_is_correctly_rounded() -> None:
    """sqrt (`nn.pow` by 0.5) is IEEE's correctly rounded square root. PyTorch's
    vector sqrt on CPU is MKL's `vsSqrt`, which here is not: its results are at
    most 1 ULP from BrainSlug's, and BrainSlug's are the nearer to float64."""

    class Root(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(torch.relu(x)) + x.pow(0.5)

    torch.manual_seed(0)
    m = Root().eval()
    opt = brainslug.optimize(m, [0, 37, 101])
    assert "Fallbacks: none" in brainslug.report(opt)
    for batch in (1, 3):
        x = _special(torch.rand(batch, 37, 101) * 1e3)
        with torch.no_grad():
            out, ref = opt(x), m(x)
        exact = torch.sqrt(torch.relu(x.double())) + x.double().pow(0.5)
        ulp = torch.from_numpy(__import__("numpy").spacing(ref.abs().numpy())).double()
        fin = ref.isfinite()
        assert _same(out[~fin], ref[~fin])
        assert ((out.double() - ref.double()).abs()[fin] <= 2 * ulp[fin]).all()
        ours = (out.double() - exact).abs()[fin]
        theirs = (ref.double() - exact).abs()[fin]
        assert ours.sum() <= theirs.sum()


def test_nearest_map_fits_pytorch_index_tables() -> None:
    """The maps found from PyTorch's tables: upsampling by a factor, taking every
    s-th point with an offset, and a rational ratio; none for an aperiodic table."""
    assert nearest_map([0, 0, 0, 1, 1, 1], 2) == (1, 0, 3)
    assert nearest_map([1, 3, 5], 6) == (2, 1, 1)
    assert nearest_map([0, 1, 3, 4], 6) == (3, 0, 2)
    assert nearest_map([0, 0, 2], 3) is None


def test_reference_evaluator_matches_pytorch() -> None:
    x = torch.randn(2, 4, 6)
    v = Block(arg_types=[bsnn.make_tensor([bsnn.DYN, 4, 6])]).args[0]
    assert torch.equal(eval_layer(bsnn.RollOp(v, [0, -1, 8]), [x]), torch.roll(x, (-1, 2), (1, 2)))
    up = bsnn.ResizeNearestOp(v, [bsnn.DYN, 8, 3], [1, 1, 2], [0, 0, 1], [1, 2, 1])
    assert torch.equal(eval_layer(up, [x]), x.repeat_interleave(2, 1)[:, :, 1::2])
    assert torch.equal(eval_layer(bsnn.PowOp(v, -2.0), [x]), x.pow(-2))


class Normalized(nn.Module):
    """F.normalize along the channels of a convolution's output (innermost in a
    channels-last plan) and along the last dim of its flattened tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 37, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.normalize(torch.tanh(self.conv(x)) - 0.25, dim=1)
        t = y.flatten(2).transpose(1, 2)  # (N, HW, C) tokens
        return F.normalize(t * 3.0 + 1.0, dim=-1, eps=1e-6) + F.normalize(t, p=2.0, dim=1)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_l2_normalize_within_bounds_of_eager_and_float64(layout: str) -> None:
    """`nn.l2_normalize` sums its squares in its own order: within 1e-5 of eager,
    and no further from float64 than PyTorch (twice its error, plus 1e-7). A
    row of zeros stays zeros (0 / eps) and a NaN makes its row NaN."""
    torch.manual_seed(0)
    m = Normalized().eval()
    opt = brainslug.optimize(m, [0, 5, 11, 9], conv="library", layout=layout)
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep and "nn.l2_normalize" in rep, rep
    for batch in (1, 3):
        x = torch.randn(batch, 5, 11, 9) * 2
        x[-1, :, 4, 4] = float("nan") if batch > 1 else 0.0  # NaN rows in the last item
        with torch.no_grad():
            xs = x.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else x
            ref, out = m(xs), opt(x)
            conv = m.conv(xs).double()
            y = torch.tanh(conv) - 0.25
            y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
            t = y.flatten(2).transpose(1, 2)
            u = t * 3.0 + 1.0
            exact = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-6) + t / t.norm(
                dim=1, keepdim=True).clamp_min(1e-12)
        assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any() == (batch > 1)
        fin = ref.isfinite()
        err = (out - ref).abs()[fin].max().item()
        assert err <= 1e-5, err
        ours = (out.double() - exact).abs()[fin].max().item()
        theirs = (ref.double() - exact).abs()[fin].max().item()
        assert ours <= 2 * theirs + 1e-7, (ours, theirs)


class Affines(nn.Module):
    """`torch.addcmul` as ResMLP's affine layers use it (parameters beta +
    alpha * x over tokens), and of three tensors after a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 7, 3)
        self.alpha = nn.Parameter(torch.rand(7) + 0.5)
        self.beta = nn.Parameter(torch.randn(7))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        gated = torch.addcmul(y, torch.sigmoid(y), y - 1.0)
        tokens = y.flatten(2).transpose(1, 2)
        return gated, torch.addcmul(self.beta, self.alpha, tokens.sigmoid()).addcmul(tokens, tokens)


def test_addcmul_is_one_fused_multiply_add_bit_for_bit() -> None:
    """PyTorch's addcmul is `fma(t1, t2, input)` (its kernels are compiled with
    contraction), and so is `nn.addcmul`: bit for bit, NaN and Inf included."""
    torch.manual_seed(1)
    m = Affines().eval()
    opt = brainslug.optimize(m, [0, 5, 13, 11], conv="library")
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep and rep.count("nn.addcmul") == 3, rep
    for batch in (1, 3):
        x = _special(torch.randn(batch, 5, 13, 11) * 3)
        with torch.no_grad():
            ref = with_plan_libraries(m, opt)(x.contiguous(memory_format=torch.channels_last))
            out = opt(x)
        for o, r in zip(out, ref, strict=True):
            assert _same(o, r), (o - r).abs().nan_to_num().max()


class Sums(nn.Module):
    """SKNet's and ResNeSt's sums over their branches (a radix dim), a spatial
    sum with keepdim, and `torch.sum` over channels, around a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 14, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.relu(self.conv(x))
        radix = y.reshape(y.shape[0], 2, 7, *y.shape[2:]).sum(dim=1)
        return radix * 0.5, y.sum((2, 3), keepdim=True) - 1.0, torch.sum(y.sigmoid(), 1)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_sums_compile_within_bounds_of_eager(layout: str) -> None:
    torch.manual_seed(2)
    m = Sums().eval()
    opt = brainslug.optimize(m, [0, 5, 13, 11], conv="library", layout=layout)
    rep = brainslug.report(opt)
    assert rep.count("nn.sum") == 3, rep
    assert " sum" not in rep.split("Fallbacks", 1)[1], rep
    for batch in (1, 3):
        x = _special(torch.randn(batch, 5, 13, 11) * 3)
        with torch.no_grad():
            xs = x.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else x
            ref, out = m(xs), opt(x)
        for o, r in zip(out, ref, strict=True):
            ok = r.isfinite()
            assert _same(o[~ok], r[~ok]), (o, r)  # NaN and the infinities as PyTorch's
            if ok.any():
                scale = max(1.0, r[ok].abs().max().item())
                assert (o[ok] - r[ok]).abs().max().item() <= 1e-6 * scale


class SplitAttentionTail(nn.Module):
    """ResNeSt's block after its split attention: a branch sum, `contiguous()`
    (a conversion of memory order in the plan) and three Identity modules
    before the next convolution. The last Identity's node names both a removed
    layer and the conversion the frontend makes for it; the plan used to
    alias it to its input and raise in scheduling (optimize() then left the
    whole model to PyTorch)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 16, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.bn2, self.drop, self.act2 = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        b, rc, h, w = y.shape
        out = y.reshape((b, 2, rc // 2, h, w)).sum(dim=1)
        return self.c2(self.act2(self.drop(self.bn2(out.contiguous()))))


def test_an_identity_whose_node_the_plan_converts_is_no_alias(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BRAINSLUG_STRICT", "1")  # a scheduling error raises
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))  # plan, not a cached one
    torch.manual_seed(3)
    m = SplitAttentionTail().eval()
    opt = brainslug.optimize(m, [0, 4, 9, 9])
    assert opt.plan is not None and "Fallbacks: none" in brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, 4, 9, 9)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())

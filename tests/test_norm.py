"""2-norms over dims (`x.norm(p=2, dim)`, `torch.norm`, `torch.linalg.vector_norm`)
compile as sqrt(sum(x * x)): ConvNeXt-V2's global response norm in both of
its layouts, within the reduction bound of eager and as accurate against
float64; other norms run in PyTorch with their reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import brainslug.pytorch as brainslug


class GRN(nn.Module):
    """timm's GlobalResponseNorm after a convolution: channels-last (the
    block's (B, H, W, C) tensor) or NCHW."""

    def __init__(self, c: int, channels_last: bool, form: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.channels_last, self.form = channels_last, form
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.randn(c) * 0.1)

    def _norm(self, x: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
        if self.form == "method":
            return x.norm(p=2, dim=dims, keepdim=True)
        if self.form == "torch.norm":
            return torch.norm(x, p=2, dim=dims, keepdim=True)
        return torch.linalg.vector_norm(x, dim=dims, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
            g = self._norm(x, (1, 2))
            n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
            shape = (1, 1, 1, -1)
        else:
            g = self._norm(x, (2, 3))
            n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
            shape = (1, -1, 1, 1)
        y = x + torch.addcmul(self.bias.view(shape), self.weight.view(shape), x * n)
        return y.permute(0, 3, 1, 2) if self.channels_last else y


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("form", ["method", "torch.norm", "vector_norm"])
def test_global_response_norm_compiles_within_bounds(channels_last: bool, form: str) -> None:
    torch.manual_seed(0)
    m = GRN(37, channels_last, form).eval()
    opt = brainslug.optimize(m, [0, 3, 13, 11])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "nn.sum" in rep and "nn.pow" in rep
    for batch in (1, 3):
        x = torch.randn(batch, 3, 13, 11)
        with torch.no_grad():
            ref, out = m(x), opt(x)
            exact = m.double()(x.double())
            m.float()
        scale = max(1.0, ref.abs().max().item())
        assert (out - ref).abs().max().item() <= 1e-5 * scale
        ours = (out.double() - exact).abs().max().item()
        theirs = (ref.double() - exact).abs().max().item()
        assert ours <= 1.5 * theirs + 1e-6 * scale, (ours, theirs)


def test_norm_keeps_nan_and_inf() -> None:
    """A NaN in a channel's plane makes its norm NaN, an Inf makes it Inf, as in
    PyTorch (rank 3, no keepdim)."""

    class Tokens(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.5 + x.norm(p=2, dim=1).unsqueeze(1)

    m = Tokens().eval()
    opt = brainslug.optimize(m, [0, 9, 5])
    assert "Fallbacks: none" in brainslug.report(opt)
    x = torch.randn(2, 9, 5)
    x[0, 3, 1] = float("nan")
    x[1, 4, 2] = float("inf")
    with torch.no_grad():
        ref, out = m(x), opt(x)
    assert torch.equal(ref.isnan(), out.isnan()) and torch.equal(ref.isinf(), out.isinf())
    ok = ref.isfinite()
    assert (out[ok] - ref[ok]).abs().max().item() <= 1e-5 * max(1.0, ref[ok].abs().max().item())


@pytest.mark.parametrize(("layer", "reason"), [
    (lambda x: x * x.norm(p=1, dim=1, keepdim=True), "norm with p=1"),
    (lambda x: x * x.norm(), "norm over all dimensions"),
])
def test_other_norms_run_in_pytorch_with_their_reason(layer, reason: str) -> None:
    class Layer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return layer(x)

    m = Layer().eval()
    opt = brainslug.optimize(m, [0, 7, 5])
    assert reason in brainslug.report(opt)
    x = torch.randn(3, 7, 5)
    with torch.no_grad():
        assert torch.allclose(opt(x), m(x))

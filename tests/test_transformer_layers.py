"""Transformer layers in vector code: GELU's tanh form and softmax use the
vector exp, as accurate as PyTorch against float64, with its NaN and Inf."""

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


@pytest.mark.parametrize("d", [37, 197, 768])
def test_softmax_within_bounds_of_eager_and_float64(d: int) -> None:
    opt = brainslug.optimize(Softmax().eval(), [0, 13, d])
    assert "Fallbacks: none" in brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, 13, d) * 3
        x[0, 0, 0] = float("nan")
        x[-1, 1, 2] = float("inf")
        with torch.no_grad():
            ref, out = Softmax()(x), opt(x)
        assert torch.equal(ref.isnan(), out.isnan())
        ok = ~ref.isnan()
        assert (out[ok] - ref[ok]).abs().max().item() <= 1e-6
        exact = torch.softmax(x.double() * 1.5, dim=-1)
        assert (out[ok].double() - exact[ok]).abs().max().item() <= 1e-6

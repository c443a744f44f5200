"""`torch.stack`, negation and float32-to-float32 conversions compiled: the
rotary position embedding of EVA and timm's RoPE ViTs is made of them
(`rot(x) = stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)`), and
results are eager's bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug

N, D = 13, 22


class Rotary(nn.Module):
    """A rotary embedding applied to a linear layer's output, as timm applies it."""

    def __init__(self, export: bool = False) -> None:
        super().__init__()
        self.export = export
        self.fc = nn.Linear(D, D)
        angles = torch.randn(N, D // 2).repeat_interleave(2, -1)
        self.register_buffer("sin", angles.sin())
        self.register_buffer("cos", angles.cos())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export and x.shape[1] < 2:  # (a branch on a size: torch.export)
            x = x * 2.0
        y = self.fc(x)
        rot = torch.stack([-y[..., 1::2], y[..., ::2]], -1).reshape(y.shape)
        out = y * self.cos.to(torch.float32) + rot * self.sin.type_as(y)
        return torch.stack([out.to(y.dtype), torch.neg(y)], dim=1) * 0.5


@pytest.mark.parametrize("export", [False, True], ids=["fx", "export"])
def test_rotary_embedding_compiles(export: bool) -> None:
    torch.manual_seed(0)
    m = Rotary(export).eval()
    opt = brainslug.optimize(m, [0, N, D])
    report = brainslug.report(opt)
    assert "Fallbacks: none" in report, report
    assert ("capture: torch.export" in report) == export
    compiled = {layer.split(": ")[1] for s in opt.info.stacks if s.compiled for layer in s.layers}
    assert {"nn.cat", "nn.mul"} <= compiled, compiled
    for batch in (1, 3):
        x = torch.randn(batch, N, D)
        x[0, 2, 3] = float("nan")
        x[-1, 5, 1] = float("inf")
        with torch.no_grad():
            torch.testing.assert_close(opt(x), m(x), rtol=0, atol=0, equal_nan=True)


class Converted(nn.Module):
    """A conversion that asks for a copy is no identity: PyTorch runs it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32, copy=True) * 3).to(x.dtype) + 1


def test_a_real_conversion_stays_pytorchs() -> None:
    m = Converted().eval()
    opt = brainslug.optimize(m, [0, N, D])
    assert "a conversion to another device, layout or copy" in brainslug.report(opt)
    x = torch.randn(2, N, D)
    with torch.no_grad():
        torch.testing.assert_close(opt(x), m(x), rtol=0, atol=0)

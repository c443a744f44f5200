"""Layers computed from parameters alone (weight standardisation: a batch norm
with batch statistics over a convolution's weight) have no batch: PyTorch
computes them, as library calls that follow weight changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import brainslug.pytorch as brainslug


class StdConv2d(nn.Conv2d):
    """timm's StdConv2d: the weight standardised per output channel each call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Standardised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = StdConv2d(5, 7, 3)
        self.norm = nn.GroupNorm(7, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x))) * 2.0


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_weight_standardisation_is_a_library_call_that_follows_weights(
        layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINSLUG_SPEED_CHECK", "0")  # keep the plan, however small
    torch.manual_seed(0)
    m = Standardised().eval()
    opt = brainslug.optimize(m, [0, 5, 13, 11], layout=layout)
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep and "nn.group_norm" in rep, rep
    for step in range(2):
        for batch in (1, 3):
            x = torch.randn(batch, 5, 13, 11)
            with torch.no_grad():
                xs = x.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else x
                err = (opt(x) - m(xs)).abs().max().item()
            assert err <= 1e-5, (step, batch, err)
        with torch.no_grad():
            m.conv.weight.mul_(1.5).add_(0.25)

"""Capture of layers that are the identity in eval mode."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth, stochastic_depth

import brainslug.pytorch as brainslug


class Block(nn.Module):
    """A residual block with torchvision's stochastic depth, as a module (as
    EfficientNet and ConvNeXt use it) and as a function."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.drop = StochasticDepth(0.2, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(torch.relu(self.bn(self.conv(x))))
        return x + stochastic_depth(torch.sigmoid(y), 0.3, "batch", self.training)


def test_stochastic_depth_is_the_identity_in_eval() -> None:
    torch.manual_seed(0)
    model = Block().eval()
    model.bn.running_var.uniform_(0.5, 2)
    for layout in ("NCHW", "NHWC"):
        opt = brainslug.optimize(model, [0, 5, 11, 7], layout=layout)
        assert not opt.info.fallbacks, opt.info.fallbacks
        for batch in (1, 3):
            x = torch.randn(batch, 5, 11, 7)
            with torch.no_grad():
                ref = model(x)
                assert (opt(x) - ref).abs().max().item() <= 1e-5 * max(1, ref.abs().max().item())

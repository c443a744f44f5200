"""Weights that make a whole-network comparison informative.

A model straight from its constructor can hide a wrong branch: torchvision's
ViT head is zero-initialised (its logits are exactly 0), batch norms start at
mean 0 and variance 1, and layer scales of 1e-6 shrink whole branches. A check
of `|out - ref|` against such a model proves nothing."""

from __future__ import annotations

import torch
from torch import nn


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Makes every layer count in `model`'s output, in place: random BN
    statistics, every 1-D parameter moved (biases, norm affines), layer scales
    (tiny 1-D factors) near 1, and zero linear layers (heads) random. Returns
    the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) * 1.5 + 0.5)
            if isinstance(mod, nn.Linear) and not mod.weight.abs().sum():
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.02)
        for _, p in model.named_parameters():
            if p.dim() != 1:
                continue
            if p.numel() and p.abs().max() < 1e-3 and p.abs().max() > 0:  # a layer scale
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model

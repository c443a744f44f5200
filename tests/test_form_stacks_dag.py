"""Stack formation on multi-branch graphs: stacks stay convex on any DAG.

A multi-resolution network (branches at two resolutions, upsampled and
strided back and added across stages, as in HRNet) and random DAGs of
stackable layers and library convolutions optimize without raising (the
suite runs strict: a cycle in bs-form-stacks raises) and match eager."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import brainslug.pytorch as brainslug


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return bn


class Exchange(nn.Module):
    """One fusion stage of two branches: each branch is a conv-BN-ReLU; the
    high branch gets the low one upsampled (1x1 conv, BN, nearest or
    bilinear), the low one gets the high one strided (3x3/2 conv, BN)."""

    def __init__(self, hi: int, lo: int, mode: str):
        super().__init__()
        self.hi = nn.Sequential(nn.Conv2d(hi, hi, 3, padding=1, bias=False), _bn(hi), nn.ReLU())
        self.lo = nn.Sequential(nn.Conv2d(lo, lo, 3, padding=1, bias=False), _bn(lo), nn.ReLU())
        self.up = nn.Sequential(nn.Conv2d(lo, hi, 1, bias=False), _bn(hi))
        self.down = nn.Sequential(nn.Conv2d(hi, lo, 3, stride=2, padding=1, bias=False), _bn(lo))
        self.mode = mode

    def forward(self, h: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, low = self.hi(h), self.lo(low)
        kw = {"align_corners": False} if self.mode == "bilinear" else {}
        up = F.interpolate(self.up(low), size=h.shape[-2:], mode=self.mode, **kw)
        return F.relu(h + up), F.relu(low + self.down(h))


class MultiResolution(nn.Module):
    """A stem, a split into two resolutions, two exchange stages, and a head
    that brings the low branch back up and adds it."""

    def __init__(self, hi: int = 13, lo: int = 22):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, hi, 3, padding=1, bias=False), _bn(hi), nn.ReLU())
        self.split = nn.Sequential(nn.Conv2d(hi, lo, 3, stride=2, padding=1, bias=False),
                                   _bn(lo), nn.ReLU())
        self.stages = nn.ModuleList([Exchange(hi, lo, "nearest"), Exchange(hi, lo, "bilinear")])
        self.head = nn.Conv2d(lo, hi, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        low = self.split(h)
        for stage in self.stages:
            h, low = stage(h, low)
        up = F.interpolate(self.head(low), scale_factor=2.0, mode="nearest")
        return torch.sigmoid(h) * up[..., : h.shape[-2], : h.shape[-1]] + h


@pytest.mark.parametrize("conv", ["library", "brainslug"])
def test_a_multi_resolution_network_matches_eager(conv: str) -> None:
    torch.manual_seed(0)
    m = MultiResolution().eval()
    opt = brainslug.optimize(m, [0, 3, 19, 19], conv=conv)
    assert "stacks: 0 compiled" not in brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 19, 19)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert ref.abs().max() > 0.1
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, ref.abs().max()))


class RandomDag(nn.Module):
    """A random DAG over values of one shape: each node applies a stackable
    layer (an activation, or an add/mul of two earlier values) or a library
    convolution to earlier values; the output sums the values nobody used."""

    def __init__(self, seed: int, nodes: int = 40, channels: int = 5):
        super().__init__()
        rng = random.Random(seed)
        self.plan: list[tuple[str, tuple[int, ...]]] = []
        self.convs = nn.ModuleList()
        for i in range(nodes):
            n = i + 1  # values so far: the input and each node
            kind = rng.choice(["relu", "sigmoid", "add", "mul", "conv", "conv"])
            if kind in ("add", "mul"):
                args: tuple[int, ...] = (rng.randrange(n), rng.randrange(n))
            elif kind == "conv":
                args = (rng.randrange(n), len(self.convs))
                self.convs.append(nn.Conv2d(channels, channels, 3, padding=1))
            else:
                args = (rng.randrange(n),)
            self.plan.append((kind, args))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        used = {0}
        for kind, args in self.plan:
            a = values[args[0]]
            used.add(args[0])
            if kind == "relu":
                y = torch.relu(a)
            elif kind == "sigmoid":
                y = torch.sigmoid(a)
            elif kind == "conv":
                y = self.convs[args[1]](a)
            else:
                used.add(args[1])
                b = values[args[1]]
                y = a + b if kind == "add" else a * torch.tanh(b)
            values.append(y)
        out = values[-1]
        for i, v in enumerate(values[:-1]):
            if i not in used:
                out = out + v
        return out


@pytest.mark.parametrize("seed", range(24))
def test_random_dags_form_convex_stacks(seed: int) -> None:
    torch.manual_seed(seed)
    m = RandomDag(seed).eval()
    opt = brainslug.optimize(m, [0, 5, 7, 9], conv="library")
    for batch in (1, 3):
        x = torch.randn(batch, 5, 7, 9)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, ref.abs().max()))

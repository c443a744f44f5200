"""chunk/split parts along channels are crops (`nn.pad` with negative counts)
in the plan's order, and a layer read by convolutions alone is stored
channels-last in a channels-last plan: oneDNN's convolutions get contiguous
channels-last inputs instead of copying strided views."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch import library_conv

C, H, W = 2 * 29, 13, 11


def shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNet V2's unit: half the channels through 1x1, depthwise and 1x1
    convolutions, concatenated with the other half and shuffled; then a
    convolution of the shuffled whole."""

    def __init__(self) -> None:
        super().__init__()
        half = C // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.head = nn.Conv2d(C, 7, 1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        y = shuffle(torch.cat((x1, self.branch(x2)), dim=1))
        return self.head(y)


class Parts(nn.Module):
    """Uneven chunks, split by sizes and by a list, a negative index."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = x.chunk(3, dim=1)  # 20, 20, 18 channels
        d = torch.split(x, [5, 40, 13], 1)[-1]
        e = x.split(25, dim=-3)[2]  # the last 8
        return torch.cat((a * 2, F.relu(b), c - 1, d, e), dim=1)


def _inputs_of_library_convs(opt: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    forward = library_conv.PackedConv2d.forward

    def spy(self, inp, other=None):  # type: ignore[no-untyped-def]
        seen.append(inp)
        return forward(self, inp, other)

    library_conv.PackedConv2d.forward = spy  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            opt(x)
    finally:
        library_conv.PackedConv2d.forward = forward  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("batch", [1, 3])
def test_shuffle_block_convolutions_read_channels_last(batch: int) -> None:
    torch.manual_seed(0)
    model = ShuffleBlock().eval()
    opt = brainslug.optimize(model, [0, C, H, W], layout="NHWC", conv="library")
    assert not opt.info.fallbacks, opt.info.fallbacks
    report = brainslug.report(opt)
    assert "nn.pad" in report  # the chunk's parts are crops in stacks
    x = torch.randn(batch, C, H, W)
    with torch.no_grad():
        ref = model(x)
        got = opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1, ref.abs().max().item())
    inputs = _inputs_of_library_convs(opt, x)
    assert len(inputs) == 4  # the branch's two 1x1s, the depthwise, the head
    for t in inputs:
        assert t.is_contiguous(memory_format=torch.channels_last), (t.shape, t.stride())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_parts_of_chunk_and_split(layout: str) -> None:
    model = Parts().eval()
    opt = brainslug.optimize(model, [0, C, H, W], layout=layout)
    assert not opt.info.fallbacks, opt.info.fallbacks
    assert brainslug.report(opt).count("nn.pad") >= 5
    for batch in (1, 2):
        x = torch.randn(batch, C, H, W)
        x[0, 3, 2, 1] = float("nan")
        with torch.no_grad():
            ref, got = model(x), opt(x)
        torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)

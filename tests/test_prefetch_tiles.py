"""bs-prefetch-tiles: the register-blocked sum of a depth-first tile prefetches
the next tile's prologue input. Prefetches are hints: the results are bit for
bit those without them."""

from __future__ import annotations

import pytest
import torch
from test_conv_kernels import assert_as_accurate_as_the_library, assert_same_bits, random_bn
from torch import nn
from torch.nn import functional as F

import brainslug.passes.prefetch_tiles as prefetch_tiles
import brainslug.pytorch as brainslug


class SqueezeExciteProject(nn.Module):
    """EfficientNet's squeeze-excite scale, then its 1x1 project convolution
    and batch norm: the scale is the project stack's prologue."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, 8, 1)
        self.expand = nn.Conv2d(8, cin, 1)
        self.project = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = random_bn(nn.BatchNorm2d(cout), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return self.bn(self.project(x * scale))


@pytest.mark.parametrize(("cin", "cout", "size"), [(150, 24, 31), (97, 40, 37)])
def test_prefetching_the_next_tile_gives_the_same_bits(cin, cout, size, monkeypatch) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    torch.manual_seed(cin)
    model = SqueezeExciteProject(cin, cout).eval()
    added: list[int] = []
    prefetches = prefetch_tiles._prefetches

    def spy(*args, **kwargs):
        loops = prefetches(*args, **kwargs)
        added.append(len(loops))
        return loops

    monkeypatch.setattr(prefetch_tiles, "_prefetches", spy)
    on = brainslug.optimize(model, [0, cin, size, size], conv="brainslug")
    assert added and max(added) > 0, added  # a tile's sum got prefetch loops
    monkeypatch.setattr("brainslug.pipeline.default.PREFETCH_TILES", False)
    added.clear()
    off = brainslug.optimize(model, [0, cin, size, size], conv="brainslug")
    assert not added
    assert_same_bits(on, off, cin, size)
    assert_as_accurate_as_the_library(model, on, cin, size, "prefetched tiles")

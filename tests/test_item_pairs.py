"""Two tilings of one depth-first chain (`loop.tile ... items few/many`): a
chain whose items, cut in two tiles for two threads, would recompute many halo
rows keeps a tiling with items whole, and each call runs the one that fits its
batch. Both compute every point with the same sums: results do not depend on
the batch or on which tiling ran."""

from __future__ import annotations

import pytest
import torch
from test_conv_kernels import assert_as_accurate_as_the_library, random_bn
from torch import nn

import brainslug.lowering.to_llvm as to_llvm
import brainslug.passes.tile_depth_first as tile_depth_first
import brainslug.pytorch as brainslug
from brainslug.dialects import loop

EXPANDED = 701  # 7×7×701 floats: over the chain threshold, not a multiple of 16


class Block(nn.Module):
    """1×1 expand, 5×5 depthwise and 1×1 project at 7×7 (EfficientNet's last stage)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, EXPANDED, 1, bias=False),
                                    random_bn(nn.BatchNorm2d(EXPANDED), 1), nn.SiLU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(EXPANDED, EXPANDED, 5, 1, 2, groups=EXPANDED, bias=False),
            random_bn(nn.BatchNorm2d(EXPANDED), 2), nn.SiLU())
        self.project = nn.Sequential(nn.Conv2d(EXPANDED, cin, 1, bias=False),
                                     random_bn(nn.BatchNorm2d(cin), 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.depthwise(self.expand(x)))


def _tilings(monkeypatch: pytest.MonkeyPatch) -> list[list[str | None]]:
    """Records the `items` of the top-level tiles of every kernel lowered."""
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")  # (lowered, not found in the kernel cache)
    seen: list[list[str | None]] = []
    original = to_llvm.lower_kernels

    def spy(op, *args, **kwargs):
        for fn in op.walk():
            tiles = [t for t in fn.regions[0].ops if isinstance(t, loop.TileOp)] \
                if fn.name == "func.func" and fn.regions and fn.regions[0].blocks else []
            if tiles:
                seen.append([t.items.data if t.items is not None else None for t in tiles])
        return original(op, *args, **kwargs)

    monkeypatch.setattr(to_llvm, "lower_kernels", spy)
    return seen


@pytest.fixture(scope="module")
def block() -> Block:
    torch.manual_seed(0)
    return Block(37).eval()


def test_both_tilings_give_the_same_bits_at_every_batch(block: Block, monkeypatch) -> None:
    seen = _tilings(monkeypatch)
    opt = brainslug.optimize(block, [0, 37, 7, 7], conv="brainslug", threads=2)
    assert ["few", "many"] in seen, seen
    monkeypatch.setattr(tile_depth_first.TileChain, "__init__", _without_pairs(
        tile_depth_first.TileChain.__init__))
    split = brainslug.optimize(block, [0, 37, 7, 7], conv="brainslug", threads=2)
    one_thread = brainslug.optimize(block, [0, 37, 7, 7], conv="brainslug", threads=1)
    torch.manual_seed(1)
    x = torch.randn(3, 37, 7, 7)
    x[0, 3, 2, 4], x[2, 5, 6, 0] = float("nan"), float("inf")
    with torch.no_grad():
        whole = opt(x)  # batch 3 on 2 threads: items many
        assert torch.equal(whole.isnan(), split(x).isnan())
        assert torch.allclose(whole, split(x), rtol=0, atol=0, equal_nan=True)
        assert torch.allclose(whole, one_thread(x), rtol=0, atol=0, equal_nan=True)
        for k in range(3):  # batch 1 on 2 threads: items few
            assert torch.allclose(opt(x[k:k + 1]), whole[k:k + 1], rtol=0, atol=0,
                                  equal_nan=True), k


def test_pairs_are_as_accurate_as_the_library(block: Block) -> None:
    """At batch 1 (`few`) and 3 (`many`) on two threads."""
    opt = brainslug.optimize(block, [0, 37, 7, 7], conv="brainslug", threads=2)
    torch.manual_seed(2)
    assert_as_accurate_as_the_library(block, opt, 37, 7, "item pairs")


def _without_pairs(init):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.item_pairs = False

    return patched

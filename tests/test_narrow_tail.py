"""A register block whose last vector has at most half its lanes active (24
or 40 output channels in vectors of 16) carries that vector's accumulators as
a narrower vector (8 lanes): the same FMAs in the same order, so the results
are bit for bit those of the full-width block."""

from __future__ import annotations

import pytest
import torch
from test_conv_kernels import assert_as_accurate_as_the_library, assert_same_bits, random_bn
from torch import nn

import brainslug.lowering.loop_to_llvm as loop_to_llvm
import brainslug.pytorch as brainslug

SHAPES = [  # cin, cout, kernel, stride, groups, size: 2 or 3 vectors, the last of 4 to 8 lanes
    (144, 24, 1, 1, 1, 19),
    (37, 24, 3, 1, 1, 13),
    (29, 20, 3, 2, 1, 15),
    (33, 21, 1, 1, 1, 11),
    (48, 24, 3, 1, 2, 9),
    (144, 40, 1, 1, 1, 11),  # 3 vectors (bs-register-tile's V for 33-48 channels)
    (23, 36, 1, 1, 1, 9),  # 3 vectors, the last of 4 lanes
    (20, 36, 3, 1, 1, 13),  # taps: HWIO weights, one block of 3 vectors
    (24, 40, 3, 2, 1, 15),
]


def _wide(parts):
    """`_vector_parts` without the narrow last part (the block at full width)."""

    def wide(em, op):
        v, last = parts(em, op)
        width = em.lanes // max(v, 1)
        if v > 1 and last < width:
            return (v, width) if em.lanes & (em.lanes - 1) else (1, 0)
        return v, last

    return wide


@pytest.mark.parametrize(("cin", "cout", "k", "stride", "groups", "size"), SHAPES)
def test_narrow_last_vector_gives_the_same_bits(cin, cout, k, stride, groups, size,
                                                monkeypatch) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    torch.manual_seed(cin + cout)
    model = nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups),
                          random_bn(nn.BatchNorm2d(cout), 1), nn.SiLU()).eval()
    lasts: list[int] = []
    parts = loop_to_llvm._reduce_loops_in_parts

    def spy(em, op, lbs, ubs, n, last):
        lasts.append(last * n)  # (16 for a block of 2 vectors whose last has 8 lanes)
        return parts(em, op, lbs, ubs, n, last)

    monkeypatch.setattr(loop_to_llvm, "_reduce_loops_in_parts", spy)
    narrow = brainslug.optimize(model, [0, cin, size, size], conv="brainslug")
    assert lasts and min(lasts) < 32, lasts  # a last part of 4 or 8 lanes was taken
    monkeypatch.setattr(loop_to_llvm, "_vector_parts", _wide(loop_to_llvm._vector_parts))
    wide = brainslug.optimize(model, [0, cin, size, size], conv="brainslug")
    assert_same_bits(narrow, wide, cin, size)
    assert_as_accurate_as_the_library(model, narrow, cin, size, "narrow last vector")

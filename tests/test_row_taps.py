"""Depthwise windows whose row of taps a register block unrolls (`loop.reduce
unroll`, bs-register-tile's `row_taps`): the same sums in the same order as
the loop form, so bit for bit its results, on rows that the blocks divide and
rows that end in a narrower block."""

from __future__ import annotations

import pytest
import torch
from test_conv_kernels import assert_as_accurate_as_the_library, compiled_convs, random_bn
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.dialects import loop
from brainslug.passes import register_tile

# name: (channels, k, stride, side): 13 and 29 columns take blocks of 8 and a
# narrower last one (5); 7x7 is ConvNeXt's window; 56 columns are 7 blocks
WINDOWS = {
    "3x3": (37, 3, 1, 13),
    "3x3/2": (37, 3, 2, 29),
    "5x5": (21, 5, 1, 13),
    "5x5/2": (19, 5, 2, 29),
    "7x7": (24, 7, 1, 13),
    "3x3, 56 columns": (17, 3, 1, 56),
}


def _model(c: int, k: int, s: int) -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Conv2d(c, c, k, s, k // 2, groups=c), random_bn(nn.BatchNorm2d(c)),
                         nn.SiLU()).eval()


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_unrolled_rows_of_taps_match_the_loops_bit_for_bit(kind: str, monkeypatch,
                                                          tmp_path) -> None:
    c, k, s, side = WINDOWS[kind]
    model = _model(c, k, s)
    unrolled: list[int] = []
    new_reduce = loop.ReduceOp.__init__

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        new_reduce(self, *args, **kwargs)
        if self.unrolled_from is not None:
            unrolled.append(self.unrolled_from)

    monkeypatch.setattr(loop.ReduceOp, "__init__", spy)
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path / "unrolled"))
    opt = brainslug.optimize(model, [0, c, side, side], conv="brainslug")
    assert unrolled and set(unrolled) == {1}, unrolled  # (kh, kw, ci): from kw on
    monkeypatch.setattr(register_tile, "UNROLLED_TAPS", 0)
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path / "loops"))
    unrolled.clear()
    loops = brainslug.optimize(model, [0, c, side, side], conv="brainslug")
    assert not unrolled
    assert compiled_convs(opt) == compiled_convs(loops) == 1, brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, c, side, side)
        x[0, c // 2, side // 2, 1] = float("nan")
        x[-1, 0, 0, side - 1] = float("inf")
        with torch.no_grad():
            got, ref = opt(x), loops(x)
        assert got.isnan().any()
        assert torch.equal(got.nan_to_num(7.0), ref.nan_to_num(7.0)), kind
    assert_as_accurate_as_the_library(model, opt, c, side, kind)

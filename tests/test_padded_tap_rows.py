"""A register block's chunk of one row of taps whose row lies above or below
the image (the first and last output rows of a 3×3 sum chunked by rows of
taps): every column would sum the same 0·w products, so one column's sum
stands for all (`windowed_reduce._one_column`). Bit for bit the full sum's
results, NaN from a non-finite weight on a padded tap included (as PyTorch's
oneDNN computes it)."""

from __future__ import annotations

import pytest
import torch
from test_conv_kernels import assert_as_accurate_as_the_library, channels_last, random_bn
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.lowering import windowed_reduce

# name: (Cin, Cout, k, stride, side): channel sums long enough to be chunked
# by rows of taps; 7 and 13 rows, so the padded rows are a large share
KINDS = {
    "3x3, 96 channels": (96, 13, 3, 1, 13),
    "3x3, 150 channels, 64 outputs": (150, 64, 3, 1, 7),
    "3x3/2": (96, 37, 3, 2, 13),
    "3x3, 256 channels in two chunks per row": (256, 24, 3, 1, 7),
}


def _model(kind: str) -> nn.Module:
    ci, co, k, s, _ = KINDS[kind]
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(ci, co, k, s, k // 2), random_bn(nn.BatchNorm2d(co)),
                         nn.ReLU()).eval()


def _optimize(model: nn.Module, kind: str, monkeypatch, cache) -> nn.Module:  # type: ignore[no-untyped-def]
    ci, *_, side = KINDS[kind]
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(cache))
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "1")  # (spies see the lowering)
    return brainslug.optimize(model, [0, ci, side, side], conv="brainslug")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_padded_rows_of_taps_sum_one_column_bit_for_bit(kind: str, monkeypatch,
                                                        tmp_path) -> None:
    model = _model(kind)
    taken: list[int] = []
    one_column = windowed_reduce._one_column

    def spy(em, op, *bounds):  # type: ignore[no-untyped-def]
        taken.append(len(op.accumulators))
        return one_column(em, op, *bounds)

    monkeypatch.setattr(windowed_reduce, "_one_column", spy)
    opt = _optimize(model, kind, monkeypatch, tmp_path / "one-column")
    assert taken and max(taken) > 1, taken
    monkeypatch.setattr(windowed_reduce, "_reads_inside", lambda *_: None)
    full = _optimize(model, kind, monkeypatch, tmp_path / "full")
    ci, *_, side = KINDS[kind]
    for batch in (1, 3):
        x = torch.randn(batch, ci, side, side)
        x[0, 1, 0, side // 2] = float("nan")
        with torch.no_grad():
            got, ref = opt(x), full(x)
        assert torch.equal(got.nan_to_num(7.0), ref.nan_to_num(7.0)), (kind, batch)
        assert torch.equal(got.isnan(), ref.isnan())
    assert_as_accurate_as_the_library(model, opt, ci, side, kind)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_non_finite_weight_on_a_padded_tap_gives_nan(bad: float, monkeypatch,
                                                       tmp_path) -> None:
    """0·inf and 0·NaN are NaN: a padded row's one-column sum keeps them, as
    the full sum does. (PyTorch's own result there depends on oneDNN's kernel:
    NaN at batch 1, the padded taps skipped at batch 2, for this shape.)"""
    kind = "3x3, 96 channels"
    model = _model(kind)
    with torch.no_grad():
        model[0].weight[2, 5, 0, 1] = bad  # top tap row: padded for output row 0
        model[0].weight[7, 9, 2, 2] = bad  # bottom tap row: padded for the last row
    opt = _optimize(model, kind, monkeypatch, tmp_path / "one-column")
    monkeypatch.setattr(windowed_reduce, "_reads_inside", lambda *_: None)
    full = _optimize(model, kind, monkeypatch, tmp_path / "full")
    ci, *_, side = KINDS[kind]
    x = torch.rand(2, ci, side, side) + 0.5
    with torch.no_grad():
        got, ref, eager = opt(x), full(x), model(channels_last(x[:1]))
    assert got[:, 2, 0].isnan().all() and got[:, 7, side - 1].isnan().all()
    assert torch.equal(got.isnan(), ref.isnan())
    assert torch.equal(got.nan_to_num(7.0), ref.nan_to_num(7.0))
    assert torch.equal(got[:1].isnan(), eager.isnan())

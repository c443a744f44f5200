"""Bilinear resampling (`nn.resize_bilinear`): PyTorch's index tables and
weights, computed at optimize(), within rounding of eager and as accurate as
PyTorch against float64, NaN and Inf as in PyTorch, in either memory order;
forms it can't take run in PyTorch with their reason."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from xdsl.ir import Block

import brainslug.pytorch as brainslug
from brainslug.dialects import nn as bsnn
from brainslug.frontend_torch.resampling import apply_tables, linear_table
from brainslug.testing.reference import eval_layer


class Resample(nn.Module):
    """FPN- and segmentation-head-style bilinear resampling, by scale and by
    size, corners aligned or not, up and down, of the input (NaN and Inf reach
    it) and of a convolution's output (which makes the plan channels-last)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 37, 3)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.relu(self.conv(x))
        return (
            self.up(y) * 2.0 + 1.0,
            F.interpolate(y, size=(17, 13), mode="bilinear", align_corners=True).sigmoid(),
            F.interpolate(x * 3.0, size=(5, 4), mode="bilinear"),   # down
            F.interpolate(x - 1.0, scale_factor=(1, 3), mode="bilinear"),  # rows kept
            F.interpolate(y, size=(28, 27), mode="bilinear") - 0.5,   # 11x9 -> 28x27
        )


def _specials(x: torch.Tensor) -> torch.Tensor:
    x[0, 1, 2, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    x[-1, 4, -1, -1] = float("inf")
    x[-1, 0, 5, 6:8] = torch.tensor([float("inf"), -float("inf")])
    return x


def _float64(m: Resample, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's resamplings in float64, with PyTorch's (float32) tables."""
    md = Resample().double().eval()
    md.load_state_dict(m.state_dict())
    xd = x.double()
    y = torch.relu(md.conv(xd))

    def bil(v: torch.Tensor, size: tuple[int, int], align: bool = False,
            sf: tuple[float, float] | None = None) -> torch.Tensor:
        rows = linear_table(v.shape[2], size[0], align, sf[0] if sf else None)
        cols = linear_table(v.shape[3], size[1], align, sf[1] if sf else None)
        return apply_tables(v, rows, cols)

    h, w = y.shape[2:]
    return (bil(y, (2 * h, 2 * w), sf=(2.0, 2.0)) * 2.0 + 1.0,
            bil(y, (17, 13), align=True).sigmoid(),
            bil(xd * 3.0, (5, 4)),
            bil(xd - 1.0, (x.shape[2], 3 * x.shape[3]), sf=(1.0, 3.0)),
            bil(y, (28, 27)) - 0.5)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_bilinear_within_rounding_of_eager_and_as_accurate_against_float64(layout: str) -> None:
    torch.manual_seed(0)
    m = Resample().eval()
    opt = brainslug.optimize(m, [0, 5, 13, 11], conv="library", layout=layout)
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert rep.count("nn.resize_bilinear") == 5, rep
    for batch in (1, 3):
        x = _specials(torch.randn(batch, 5, 13, 11) * 3)
        with torch.no_grad():
            xs = x.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else x
            outs, refs = opt(x), m(xs)
            exacts = _float64(m, x)
        for k, (o, r, e) in enumerate(zip(outs, refs, exacts, strict=True)):
            assert o.shape == r.shape, k
            fin = r.isfinite()
            assert torch.equal(o.isnan(), r.isnan()), (k, batch)
            assert torch.equal(o[r.isinf()], r[r.isinf()]), (k, batch)
            assert ((o - r).abs()[fin] <= 1e-5 * r.abs()[fin].clamp_min(1)).all(), (k, batch)
            ours = (o.double() - e).abs()[fin].max()
            theirs = (r.double() - e).abs()[fin].max()
            assert ours <= 1.5 * theirs + 1e-12, (k, batch, ours.item(), theirs.item())


@pytest.mark.parametrize(("n_in", "n_out", "align", "sf"), [
    (13, 26, False, 2.0), (7, 17, False, None), (7, 17, True, None), (28, 224, False, None),
    (20, 7, False, None), (9, 9, False, None), (1, 5, False, None), (5, 1, True, None)])
def test_tables_reproduce_pytorch(n_in: int, n_out: int, align: bool, sf: float | None) -> None:
    """Tables and weights applied in float64 are within float32 rounding of
    PyTorch's own kernel: a wrong index or weight would be off by O(1)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, n_in, 6)
    kw = {"scale_factor": (sf, 1.0)} if sf else {"size": (n_out, 6)}
    ref = F.interpolate(x, mode="bilinear", align_corners=align, **kw)
    ours = apply_tables(x.double(), linear_table(n_in, n_out, align, sf),
                        linear_table(6, 6, align, 1.0 if sf else None))
    assert ours.shape == ref.shape
    assert torch.allclose(ours.float(), ref, rtol=2e-7, atol=1e-6)


@pytest.mark.parametrize(("layer", "reason"), [
    (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True),
     "interpolation mode 'bilinear' with antialias"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), "interpolation mode 'bicubic'"),
    (lambda x: F.interpolate(x, scale_factor=2.4, mode="bilinear"),
     "is not affine in 4 runs"),
])
def test_unmapped_forms_run_in_pytorch_with_their_reason(layer, reason: str) -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return layer(torch.relu(x)) * 2.0

    m = M().eval()
    opt = brainslug.optimize(m, [0, 3, 17, 6])
    assert reason in brainslug.report(opt)
    x = torch.rand(2, 3, 17, 6) + 0.1
    with torch.no_grad():
        assert torch.equal(opt(x), m(x))


def test_reference_evaluator_matches_pytorch() -> None:
    x = torch.randn(2, 3, 4, 6)
    rows, cols = linear_table(4, 8, False, None), linear_table(6, 5, True, None)
    blk = Block(arg_types=[bsnn.make_tensor([bsnn.DYN, 3, 4, 6]), bsnn.make_tensor([2, 8]),
                           bsnn.make_tensor([2, 5])])
    op = bsnn.ResizeBilinearOp(*blk.args, [2, 3], [*rows[0], *rows[1]], [*cols[0], *cols[1]])
    got = eval_layer(op, [x, torch.from_numpy(rows[2]), torch.from_numpy(cols[2])])
    assert torch.equal(got, apply_tables(x, rows, cols))


def test_saved_plan_keeps_its_tables() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(5, 37, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(torch.relu(self.conv(x)), scale_factor=2, mode="bilinear") * 2

    torch.manual_seed(2)
    m = M().eval()
    opt = brainslug.optimize(m, [0, 5, 9, 11])
    assert "nn.resize_bilinear" in brainslug.report(opt)
    path = os.path.join(tempfile.mkdtemp(), "bilinear.bs")
    brainslug.save(opt, path)
    loaded = brainslug.load(path)
    x = torch.randn(2, 5, 9, 11)
    with torch.no_grad():
        assert torch.equal(loaded(x), opt(x))

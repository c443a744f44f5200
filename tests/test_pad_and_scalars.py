"""Constant padding and cropping (`nn.pad`) and division by numbers compile
bit for bit with PyTorch, NaN and Inf included, in either memory order."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from xdsl.ir import Block

import brainslug.pytorch as brainslug
from brainslug.dialects import nn as bsnn
from brainslug.testing.library_reference import with_plan_libraries
from brainslug.testing.reference import eval_layer


class PadImage(nn.Module):
    """Pads and crops of a channels-last image, around a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(5, 7, 3)
        self.zero = nn.ZeroPad2d((1, 2, 0, 3))
        self.const = nn.ConstantPad2d((0, 1, 2, 0), -1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(torch.relu(x), (1, 1, 2, 0), value=-0.25)
        y = self.zero(torch.relu(self.conv(y) - 0.5))
        y = F.pad(y, (-1, 0, 0, -2)) * 2.0
        return self.const(torch.constant_pad_nd(y, (0, 1, 1, 0), 3.0)) + 1.0


class PadSequence(nn.Module):
    """Pads of the last dims of a rank-3 tensor, and divisions by numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(torch.sigmoid(x), (2, 3, -1, 1)) / 0.3
        return 2.5 / (y - 1.0) + torch.div(y, 7)


def _special(x: torch.Tensor) -> torch.Tensor:
    x.view(-1)[:5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    return x


@pytest.mark.parametrize(("model", "shape"), [(PadImage, [5, 11, 13]), (PadSequence, [9, 17])])
def test_pad_crop_and_division_bit_for_bit(model: type[nn.Module], shape: list[int]) -> None:
    torch.manual_seed(0)
    m = model().eval()
    opt = brainslug.optimize(m, [0, *shape], conv="library")
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "nn.pad" in rep
    for batch in (1, 3):
        x = _special(torch.randn(batch, *shape) * 3)
        with torch.no_grad():
            # the library convolution of a channels-last input, as in the plan
            ref = with_plan_libraries(m, opt)(
                x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
            out = opt(x)
        assert out.shape == ref.shape
        assert torch.equal(out.isnan(), ref.isnan())
        assert torch.equal(out.nan_to_num(), ref.nan_to_num()), batch


def test_reflect_padding_falls_back_with_its_reason() -> None:
    class Reflect(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.pad(torch.relu(x), (1, 1), mode="reflect") * 2.0

    m = Reflect().eval()
    opt = brainslug.optimize(m, [0, 3, 10])
    assert "padding mode 'reflect'" in brainslug.report(opt)
    x = torch.randn(2, 3, 10)
    with torch.no_grad():
        assert torch.equal(opt(x), m(x))


def test_reference_pad_matches_compiled_semantics() -> None:
    """The reference evaluator's `nn.pad` (for stacks that fall back)."""
    x = torch.randn(2, 4, 6)
    x_ir = Block(arg_types=[bsnn.make_tensor([bsnn.DYN, 4, 6])]).args[0]
    op = bsnn.PadOp(x_ir, [0, 1, -2], [0, -1, 3], 0.75)
    out = eval_layer(op, [x])
    assert out.shape == (2, 4, 7)
    assert torch.equal(out, F.pad(x, (-2, 3, 1, -1), value=0.75))


"""A linear layer read only by compiled layers runs without its bias; `+ bias`
joins the next stack (no broadcast copy of the bias into the GEMM's output).
Same values as eager to float32 rounding, as accurate against float64, and
edits of the bias after optimize() show in the results."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import brainslug.pytorch as brainslug

C, HIDDEN = 37, 83


class Mlp(nn.Module):
    """ConvNeXt's MLP on a channels-last image: linear, GELU, linear, layer
    scale, back to NCHW, residual; then a linear whose result goes to a matmul
    (that one keeps its bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(C, HIDDEN), nn.Linear(HIDDEN, C)
        self.scale = nn.Parameter(torch.rand(C) + 0.5)
        self.q = nn.Linear(C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(y))) * self.scale
        z = x + y.permute(0, 3, 1, 2)
        t = z.flatten(2).transpose(1, 2)  # N, HW, C
        return torch.matmul(self.q(t), t.transpose(1, 2))


def _model() -> Mlp:
    torch.manual_seed(0)
    m = Mlp().eval()
    with torch.no_grad():
        for lin in (m.fc1, m.fc2, m.q):
            lin.bias.uniform_(-1, 1)
    return m


@pytest.mark.parametrize("batch", [1, 3])
def test_biases_join_the_stacks_after_them(batch: int) -> None:
    model = _model()
    opt = brainslug.optimize(model, [0, C, 13, 11])
    assert not opt.info.fallbacks, opt.info.fallbacks
    report = brainslug.report(opt)
    assert "bs_no_bias_fc1" in report and "bs_no_bias_fc2" in report
    assert "bs_no_bias_q" not in report  # read by a matmul: the GEMM adds its bias
    x = torch.randn(batch, C, 13, 11)
    with torch.no_grad():
        ref, got = model(x), opt(x)
        ref64 = model.double()(x.double())
        model.float()
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    err = (got.double() - ref64).abs().max().item()
    err_eager = (ref.double() - ref64).abs().max().item()
    assert err <= 1.5 * err_eager + 1e-7, (err, err_eager)


def test_bias_edits_after_optimize_show() -> None:
    model = _model()
    opt = brainslug.optimize(model, [0, C, 13, 11])
    x = torch.randn(2, C, 13, 11)
    with torch.no_grad():
        before = opt(x)
        model.fc1.bias.add_(0.5)
        model.fc2.bias.mul_(-1)
        ref, got = model(x), opt(x)
    assert (got - before).abs().max().item() > 1e-2
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())

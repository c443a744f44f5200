"""Parameters shaped for broadcasting inside `forward` (timm's `Scale`,
PoolFormer's layer scales): `p.view(C, 1, 1)`, `p.unsqueeze(-1).unsqueeze(-1)`,
`p[:, None, None]` against a channels-last tensor are read as the parameter
itself, in the tensor's memory order, and changes to the parameter are seen."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import brainslug.pytorch as brainslug

C = 19

FORMS = {
    "view": lambda p: p.view(-1, 1, 1),
    "unsqueeze": lambda p: p.unsqueeze(-1).unsqueeze(-1),
    "index": lambda p: p[:, None, None],
    "reshape4": lambda p: p.reshape(1, -1, 1, 1),
    "torch.reshape": lambda p: torch.reshape(p, (C, 1, 1)),
}


class ScaledBlock(nn.Module):
    """conv → BN, then `y + s * relu(y)`, `y / d - b` and an addcmul, each
    parameter shaped in `forward` by `form`."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = FORMS[form]
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.bn = nn.BatchNorm2d(C)
        self.s = nn.Parameter(torch.rand(C) + 0.5)
        self.d = nn.Parameter(torch.rand(C) + 0.5)
        self.b = nn.Parameter(torch.randn(C))
        self.t = nn.Parameter(torch.randn(C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        y = y + torch.relu(y) * self.form(self.s)
        y = y / self.form(self.d) - self.form(self.b)
        return torch.addcmul(y, y, self.form(self.t))


def _model(form: str) -> ScaledBlock:
    torch.manual_seed(0)
    m = ScaledBlock(form).eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    return m


@pytest.mark.parametrize("form", list(FORMS))
def test_parameter_views_broadcast_in_the_plans_order(form: str) -> None:
    m = _model(form)
    opt = brainslug.optimize(m, [0, 3, 13, 11])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "NHWC" in rep
    for batch in (1, 3):
        x = torch.randn(batch, 3, 13, 11)
        x[0, 1, 2, 3] = float("nan")
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert torch.equal(ref.isnan(), out.isnan())
        ok = ~ref.isnan()
        assert (out[ok] - ref[ok]).abs().max().item() <= 1e-5 * max(1.0, ref[ok].abs().max().item())
    with torch.no_grad():  # in place, as an optimizer step or load_state_dict does
        m.s.mul_(-2.0)
        m.b.add_(0.5)
        m.t.copy_(torch.linspace(-1, 1, C))
        x = torch.randn(2, 3, 13, 11)
        ref, out = m(x), opt(x)
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


class Unchanged(nn.Module):
    """A view that moves non-unit dims, and a computed parameter: not parameter
    views; the model still runs and is right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.p = nn.Parameter(torch.randn(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = y * self.p.t().reshape(4, 2, 1)[:, :1]  # (4, 1, 1): reads column 0
        return y + (self.p[0] * 2.0).view(4, 1, 1)


def test_other_views_of_parameters_stay_right() -> None:
    m = Unchanged().eval()
    opt = brainslug.optimize(m, [0, 3, 5, 7])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 5, 7)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max().item() <= 1e-6

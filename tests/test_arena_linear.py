"""Library linear layers write into the plan's arena: bit for bit their own
result, never into a buffer that a result the caller holds lives in."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.library_linear import ArenaLinear, PackedLinear, linear_into


class Mlp(nn.Module):
    """LayerNorm, an MLP whose layers are used twice (shared weights), and a
    head whose result (and a view of an inner layer's) leave the model."""

    def __init__(self, d: int = 37, hidden: int = 150) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d, bias=False)
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        z = y + self.fc2(F.gelu(self.fc1(self.norm(y))))  # the same layers again
        inner = self.fc1(z)  # leaves the model as a view
        return self.head(z), inner.view(inner.shape[0], -1)


def _arena_modules(opt: nn.Module) -> list[ArenaLinear]:
    return [m for m in opt.plan.modules() if isinstance(m, ArenaLinear)]


@pytest.mark.parametrize("rows", [7, 1100])  # packed rows, and F.linear's (more than 1024)
def test_results_and_held_outputs(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINSLUG_SPEED_CHECK", "0")
    torch.manual_seed(0)
    m = Mlp().eval()
    opt = brainslug.optimize(m, [0, rows, 37], conv="library")
    arena = _arena_modules(opt)
    assert len(arena) == 6
    in_slots = [a for a in arena if a._slot is not None]
    assert len(in_slots) == 4  # not the head's, nor the layer whose view leaves
    xs = [torch.randn(b, rows, 37) for b in (1, 3, 3)]
    outs = []
    with torch.no_grad():
        for x in xs:
            outs.append((opt(x), m(x)))
            for got, ref in zip(*outs[-1], strict=True):
                assert (got - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())
        # results of earlier calls are not overwritten by later ones
        for x, (got, _) in zip(xs, outs, strict=True):
            again = opt(x)
            assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True))
    assert all(a._same and all(a._same.values()) for a in in_slots)


def test_linear_into_is_f_linear_bit_for_bit() -> None:
    torch.manual_seed(1)
    for shape, bias in (((3, 41, 37), True), ((5, 37), False), ((2, 3, 7, 37), True)):
        x = torch.randn(shape)
        x.view(-1)[::97] = float("nan")
        w, b = torch.randn(29, 37), torch.randn(29) if bias else None
        out = torch.empty(*shape[:-1], 29)
        got = linear_into(x, w, b, out)
        assert got.data_ptr() == out.data_ptr()
        ref = F.linear(x, w, b)
        assert torch.equal(got.view(torch.int32), ref.view(torch.int32))
    x = torch.randn(37, 5).t()  # not contiguous: F.linear's own result
    out = torch.empty(5, 29)
    assert linear_into(x, w, None, out).data_ptr() != out.data_ptr()


def test_weight_changes_follow() -> None:
    torch.manual_seed(2)
    m = Mlp().eval()
    opt = brainslug.optimize(m, [0, 1100, 37], conv="library")
    assert any(isinstance(a.linear, PackedLinear) for a in _arena_modules(opt))
    with torch.no_grad():
        m.fc1.weight.mul_(-1.5)
        x = torch.randn(2, 1100, 37)
        for got, ref in zip(opt(x), m(x), strict=True):
            assert (got - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())

"""Values computed from parameters alone are cached by the plan and computed
again when a parameter changes, bit for bit what the model computes."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.weight_derived import WeightDerived, cache_weight_derived


class RelativeBias(nn.Module):
    """A table gathered by a fixed index, permuted and copied (Swin, MaxViT),
    added to the scores; a weight standardised per output row."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(9, 3))
        self.register_buffer("index", torch.randint(0, 9, (7 * 7,)))
        self.weight = nn.Parameter(torch.randn(7, 7))
        self.gamma = nn.Parameter(torch.rand(7) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.table[self.index].view(7, 7, 3).permute(2, 0, 1).contiguous()
        w = F.layer_norm(self.weight, (7,))
        y = torch.softmax(x + bias.unsqueeze(0), dim=-1) @ w
        return y * self.gamma.view(1, 1, 1, 7)  # a view of a parameter: not cached


def _cached(gm: fx.GraphModule) -> list[WeightDerived]:
    return [m for m in gm.modules() if isinstance(m, WeightDerived)]


def test_cached_values_match_and_follow_changes() -> None:
    torch.manual_seed(0)
    m = RelativeBias().eval()
    opt = brainslug.optimize(m, [0, 3, 7, 7])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "2 values computed from parameters alone" in rep, rep
    x = torch.randn(3, 3, 7, 7)
    x[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        assert torch.equal(opt(x).isnan(), m(x).isnan())
        ok = ~m(x).isnan()
        assert torch.equal(opt(x)[ok], m(x)[ok])
        for change in (lambda: m.table.mul_(-2.0),                      # in place
                       lambda: m.load_state_dict({**m.state_dict(),     # a new state
                                                  "weight": torch.randn(7, 7)}),
                       lambda: m.index.copy_(torch.randint(0, 9, (49,))),  # a buffer
                       lambda: m.table.data.copy_(torch.randn(9, 3))):  # through .data
            change()
            x = torch.randn(2, 3, 7, 7)
            assert torch.equal(opt(x), m(x))


def _trace(fn: nn.Module) -> fx.GraphModule:
    return fx.symbolic_trace(fn)


class Random(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.randn(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand_like(self.p * 2)
        return x + noise


class WrittenInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.randn(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.p * 2
        b.add_(1.0)
        return x + b


def test_random_and_in_place_values_are_not_cached() -> None:
    gm = _trace(Random())
    assert cache_weight_derived(gm) == ["mul"]  # p * 2 is; the noise drawn from it is not
    assert any(n.target is torch.rand_like for n in gm.graph.nodes)
    assert not any(n.target is torch.rand_like for m in _cached(gm)
                   for n in m.compute.graph.nodes)
    x = torch.zeros(5)
    assert not torch.equal(gm(x), gm(x))
    gm = _trace(WrittenInPlace())
    before = str(gm.graph)
    assert cache_weight_derived(gm) == []
    assert str(gm.graph) == before


def test_gradients_are_computed_every_call() -> None:
    m = RelativeBias()
    gm = _trace(m)
    assert len(cache_weight_derived(gm)) == 2
    x = torch.randn(2, 3, 7, 7)
    y = gm(x)
    assert y.requires_grad
    y.sum().backward()
    assert m.table.grad is not None and m.table.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(gm(x), m(x))

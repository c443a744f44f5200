"""The plan cache: a second optimize() of the same network reuses its plan
(traced shapes, kernels, object code) and still computes the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug

HIT = "plan loaded from the plan cache"


class Block(nn.Module):
    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 19, 3, padding=1)
        self.bn = nn.BatchNorm2d(19, eps=eps)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return self.pool(torch.relu(torch.cat([y, y * y], 1)))


def randomized(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    bn = model.bn
    bn.running_mean.copy_(0.1 * torch.randn(19, generator=g))
    bn.running_var.copy_(torch.rand(19, generator=g) + 0.5)
    bn.weight.data.copy_(1 + 0.1 * torch.randn(19, generator=g))
    return model.eval()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BRAINSLUG_CACHE", raising=False)
    return tmp_path


def check(model: nn.Module, opt: nn.Module) -> None:
    for batch in (1, 3):
        x = torch.randn(batch, 3, 15, 13)
        with torch.no_grad():
            ref = model(x)
            assert (opt(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_second_optimize_hits_and_matches(cache_dir) -> None:
    model = randomized(Block())
    first = brainslug.optimize(model, [0, 3, 15, 13])
    assert HIT not in first.info.notes
    second = brainslug.optimize(model, [0, 3, 15, 13])
    assert HIT in second.info.notes
    assert [s.name for s in second.info.stacks] == [s.name for s in first.info.stacks]
    check(model, second)
    # parameter values are read at run time: new statistics are seen
    model.bn.running_mean.add_(0.5)
    check(model, second)


def test_hyperparameters_shapes_and_layout_change_the_key(cache_dir) -> None:
    brainslug.optimize(randomized(Block()), [0, 3, 15, 13])
    other_eps = brainslug.optimize(randomized(Block(eps=1e-3)), [0, 3, 15, 13])
    assert HIT not in other_eps.info.notes
    check(other_eps.original, other_eps)
    other_shape = brainslug.optimize(randomized(Block()), [0, 3, 17, 13])
    assert HIT not in other_shape.info.notes
    other_layout = brainslug.optimize(randomized(Block()), [0, 3, 15, 13], layout="NCHW")
    assert HIT not in other_layout.info.notes
    check(other_layout.original, other_layout)


def test_missing_objects_are_a_miss(cache_dir) -> None:
    model = randomized(Block())
    # (conv="library": with "auto" the timing plan would compile the code again)
    brainslug.optimize(model, [0, 3, 15, 13], conv="library")
    records = sorted((cache_dir / "objects").glob("*.o"), key=lambda p: p.stat().st_mtime)
    for p in records[:-1]:  # keep the plan record (written last), drop the code
        p.unlink()
    again = brainslug.optimize(model, [0, 3, 15, 13], conv="library")
    assert HIT not in again.info.notes
    check(model, again)


def test_cache_off(cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    model = randomized(Block())
    brainslug.optimize(model, [0, 3, 15, 13])
    assert HIT not in brainslug.optimize(model, [0, 3, 15, 13]).info.notes


class WithConstant(nn.Module):
    """fx stores the tensor built in forward as `_tensor_constantN`, numbered
    with a process-wide counter, so every trace names it differently."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(x)) * torch.tensor([2.0])[0]


def test_a_second_trace_with_tensor_constants_hits(cache_dir) -> None:
    model = WithConstant().eval()
    assert HIT not in brainslug.optimize(model, [0, 3, 15, 13]).info.notes
    again = brainslug.optimize(model, [0, 3, 15, 13])
    assert HIT in again.info.notes
    check(model, again)

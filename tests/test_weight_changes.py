"""Weights changed after optimize(), in every mode: by load_state_dict, in
place (an optimizer step), and through `.data`; the plan's results follow
eager's, never stale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug

MODES = [{}, {"conv": "library"}, {"conv": "brainslug"}, {"layout": "NCHW"},
         {"fold_batchnorm": True}]


class Net(nn.Module):
    """Convolutions with BN and residuals, a depthwise one, a LayerNorm'd head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16))
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.gamma = nn.Parameter(torch.rand(16, 1, 1) + 0.5)  # a layer scale
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.dw(x))
        x = x + self.gamma * self.pw(x)
        return self.head(self.norm(x.mean((2, 3))))


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = Net()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return m.eval()


def _close(opt: nn.Module, m: nn.Module) -> None:
    for batch in (1, 3):
        x = torch.randn(batch, 3, 17, 15)
        with torch.no_grad():
            ref = m(x)
            for _ in range(2):  # the checked call, then the fast path
                got = opt(x)
                assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("options", MODES, ids=lambda o: ",".join(f"{k}={v}" for k, v in
                                                                  o.items()) or "default")
def test_plan_follows_weight_changes(options: dict) -> None:
    m = _net(0)
    opt = brainslug.optimize(m, [0, 3, 17, 15], **options)
    assert opt.plan is not None, brainslug.report(opt)
    _close(opt, m)
    m.load_state_dict(_net(1).state_dict())  # another model's weights
    _close(opt, m)
    with torch.no_grad():  # in place, as an optimizer step
        for p in m.parameters():
            p.mul_(1.1)
        m.stem[1].running_var.add_(0.25)
    _close(opt, m)
    m.pw[0].weight.data = m.pw[0].weight.data * 0.5 + 0.01  # a new tensor through .data
    m.dw[1].running_mean.data.copy_(torch.rand(16))        # same tensor, bypassing _version
    _close(opt, m)
    m.stem[0].weight.data.mul_(-0.75)  # a packed weight in place, bypassing _version
    _close(opt, m)


@pytest.mark.parametrize("options", MODES, ids=lambda o: ",".join(f"{k}={v}" for k, v in
                                                                  o.items()) or "default")
def test_plan_follows_replaced_tensors(options: dict) -> None:
    """A module's parameter or buffer replaced by a new tensor (`m.weight =
    nn.Parameter(...)`): the plan reads the new one."""
    m = _net(0)
    opt = brainslug.optimize(m, [0, 3, 17, 15], **options)
    _close(opt, m)
    other = _net(1)
    m.stem[0].weight = nn.Parameter(other.stem[0].weight.detach().clone())
    m.dw[0].weight = nn.Parameter(other.dw[0].weight.detach().clone())
    m.pw[1].bias = nn.Parameter(other.pw[1].bias.detach().clone())
    m.stem[1].running_var = other.stem[1].running_var.clone()
    m.norm.weight = nn.Parameter(torch.rand(16) + 0.5)
    m.head.weight = nn.Parameter(torch.randn(5, 16))
    _close(opt, m)
    # strided: the kernel reads a contiguous copy, never the strided memory as if dense
    m.gamma = nn.Parameter((torch.rand(16, 1, 2) + 0.5)[:, :, :1])
    assert not m.gamma.is_contiguous()
    _close(opt, m)


def test_watches_of_dropped_plans_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    from brainslug.frontend_torch import replaced_tensors

    class Holder:
        def rebind(self, old: torch.Tensor, new: torch.Tensor) -> None:
            pass

    monkeypatch.setattr(replaced_tensors, "PURGE_EVERY", 1)
    kept = [torch.zeros(2) for _ in range(3)]
    holders = [Holder() for _ in kept]
    for t, h in zip(kept, holders, strict=True):
        replaced_tensors.watch(t, h)
    assert all(id(t) in replaced_tensors._holders for t in kept)
    del holders, h  # a plan dropped
    alive, other = Holder(), torch.zeros(2)
    replaced_tensors.watch(other, alive)
    assert not any(id(t) in replaced_tensors._holders for t in kept)
    assert id(other) in replaced_tensors._holders

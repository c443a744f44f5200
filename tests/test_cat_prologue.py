"""DenseNet's pre-activation as a convolution's prologue: the `cat` of the
earlier layers' features, its batch norm and ReLU run tile by tile before the
1×1 convolution, in one stack (bs-form-stacks `conv-prologues`, then
bs-tile-depth-first over the split `cat`'s parts and bs-register-tile on the
tile's rows). Neither the concatenation nor its BN-ReLU is written whole.
Checked against float64, the library and eager, with NaN/Inf and weight
changes, at batch 1 and 3."""

from __future__ import annotations

import copy

import pytest
import torch
from test_conv_chains import as_accurate_as_the_library, non_finite_kept
from test_conv_kernels import random_bn
from torch import nn
from torchvision.models.densenet import _DenseBlock, _Transition

import brainslug.pytorch as brainslug
from brainslug.pipeline.target import tile_budget

PROLOGUE = ["nn.cat", "nn.batch_norm", "nn.relu", "nn.conv2d"]


def dense_block(features: int, growth: int, layers: int = 3) -> nn.Module:
    """torchvision's dense block (and a transition after it), every batch
    norm with random statistics."""
    block = _DenseBlock(layers, features, 2, growth, 0.0)
    model = nn.Sequential(block, _Transition(features + layers * growth, 29))
    for k, m in enumerate(model.modules()):
        if isinstance(m, nn.BatchNorm2d):
            random_bn(m, k)
    return model.eval()


def prologue_stacks(opt: nn.Module) -> list[list[str]]:
    """The layer kinds of each compiled stack that starts with a `cat` and
    its pre-activation before a convolution."""
    kinds = [[x.split(": ")[1] for x in s.layers] for s in opt.info.stacks if s.compiled]
    return [k for k in kinds if k[:4] == PROLOGUE]


def stack_kernels(opt: nn.Module) -> list[nn.Module]:
    return [k for k in opt.modules() if getattr(k, "is_stack_kernel", False)]


@pytest.mark.parametrize("growth", [19, 32])  # pieces of odd widths; a table of 32-wide ones
def test_dense_layers_read_their_pieces_in_place(growth: int) -> None:
    torch.manual_seed(growth)
    model = dense_block(37, growth)
    opt = brainslug.optimize(model, [0, 37, 13, 13], conv="brainslug")
    # every dense layer's first convolution and the transition's
    assert len(prologue_stacks(opt)) == 4, brainslug.report(opt)
    as_accurate_as_the_library(model, opt, (37, 13, 13))
    # no stack keeps a full-size buffer of its prologue's result
    widest = 4 * 3 * (37 + 3 * growth) * 13 * 13
    for k in stack_kernels(opt):
        assert k.runner.scratch_bytes() < widest // 4, (k.stack_name, k.runner.scratch_bytes())


def test_an_item_of_several_tiles() -> None:
    """Maps large enough that an item's BN-ReLU spans several tiles of rows."""
    torch.manual_seed(3)
    model = dense_block(101, 32, layers=2)
    h = int((tile_budget("x86-64") // (4 * 165)) ** 0.5) + 3 | 1
    opt = brainslug.optimize(model, [0, 101, h, h], conv="brainslug")
    assert len(prologue_stacks(opt)) == 3, brainslug.report(opt)
    as_accurate_as_the_library(model, opt, (101, h, h))


def test_nan_inf_and_weight_changes() -> None:
    torch.manual_seed(4)
    model = dense_block(37, 32)
    opt = brainslug.optimize(model, [0, 37, 13, 13], conv="brainslug")
    assert prologue_stacks(opt)
    x = torch.randn(3, 37, 13, 13)
    x[0, 3, 0, 0] = float("nan")
    x[1, 0, 6, 7] = float("inf")
    x[2, 36, 12, 11] = float("-inf")

    non_finite_kept(model, opt, x)
    layer = model[0].denselayer2
    with torch.no_grad():
        layer.norm1.running_var.mul_(1.7)  # the prologue's batch norm
        layer.norm1.bias.add_(0.3)
        layer.conv1.weight.mul_(-1.25)
    non_finite_kept(model, opt, x)


def test_library_plan_and_auto_choice() -> None:
    """conv="library" keeps the `cat`'s BN-ReLU a stack of its own (after a
    pool, whose tile has a halo); conv="auto" times each convolution with its
    prologue against the library call after that stack."""
    torch.manual_seed(6)
    model = nn.Sequential(random_bn(nn.BatchNorm2d(37)), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                          dense_block(37, 32)).eval()
    m64 = copy.deepcopy(model).double()
    for conv in ("library", "auto"):
        opt = brainslug.optimize(model, [0, 37, 25, 25], conv=conv)
        report = brainslug.report(opt)
        assert "could not time" not in report, report
        if conv == "library":
            assert not prologue_stacks(opt), report
        for batch in (1, 3):
            x = torch.randn(batch, 37, 25, 25)
            with torch.no_grad():
                ref, lib, got = m64(x.double()), model(x).double(), opt(x).double()
            e_lib, e_bs = (lib - ref).abs().max().item(), (got - ref).abs().max().item()
            assert e_bs <= 1.5 * e_lib + 1e-7, (conv, batch, e_bs, e_lib)

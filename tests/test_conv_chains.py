"""Depth-first chains of convolutions: MobileNet's 1×1 expand, the depthwise
convolution after it and the 1×1 project in one stack (bs-form-stacks
`conv-chains`), run tile by tile by bs-tile-depth-first, against float64, the
library and eager, with NaN/Inf and weight changes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_conv_kernels import channels_last, random_bn
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.pipeline.target import conv_chain_bytes, tile_budget

EXPANDED = 101  # channels of the expanded tensor: not a multiple of 16


def side(budget: int | None = None) -> int:
    """An odd map size whose expanded tensor is over `budget` bytes per item
    (by default the chain threshold: the planner chains the pair only above
    it; over the tile budget, an item takes several tiles of rows)."""
    s = math.isqrt((budget or conv_chain_bytes("x86-64")) // (4 * EXPANDED)) + 2
    return s | 1


class Expand(nn.Module):
    """An inverted residual: 1×1 expand, depthwise 3×3, 1×1 project."""

    def __init__(self, cin: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, EXPANDED, 1, bias=False),
                                    random_bn(nn.BatchNorm2d(EXPANDED), 1), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(EXPANDED, EXPANDED, 3, stride, 1, groups=EXPANDED, bias=False),
            random_bn(nn.BatchNorm2d(EXPANDED), 2), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(EXPANDED, cin, 1, bias=False),
                                     random_bn(nn.BatchNorm2d(cin), 3))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


def chained_stacks(opt: nn.Module) -> list[list[str]]:
    return [s.layers for s in opt.info.stacks if s.compiled
            and sum(layer.endswith("nn.conv2d") for layer in s.layers) > 1]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", ["two tiles per item", "over the tile budget"])
def test_expand_and_depthwise_run_depth_first(stride: int, size: str) -> None:
    torch.manual_seed(stride)
    h = side(tile_budget("x86-64") if size == "over the tile budget" else None)
    model = Expand(37, stride, residual=stride == 1).eval()
    opt = brainslug.optimize(model, [0, 37, h, h], conv="brainslug")
    chains = chained_stacks(opt)
    assert len(chains) == 1, brainslug.report(opt)
    for part in ("expand", "depthwise", "project"):
        assert any(part in x for x in chains[0]), chains
    m64 = copy.deepcopy(model).double()
    for batch in (1, 3):
        x = torch.randn(batch, 37, h, h)
        with torch.no_grad():
            ref = m64(x.double())
            lib = model(channels_last(x)).double()
            got = opt(x).double()
        e_lib, e_bs = (lib - ref).abs().max().item(), (got - ref).abs().max().item()
        assert e_bs <= 1.5 * e_lib + 1e-7 * ref.abs().max().item(), (batch, e_bs, e_lib)
        assert (got - lib).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_small_expanded_tensors_stay_in_two_stacks() -> None:
    """Under the budget the pair would run as one tile per item (one thread at
    batch 1): each convolution keeps its own stack."""
    model = Expand(37, 1, residual=True).eval()
    opt = brainslug.optimize(model, [0, 37, 13, 13], conv="brainslug")
    assert not chained_stacks(opt)
    x = torch.randn(2, 37, 13, 13)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_nan_inf_and_weight_changes_in_a_chain() -> None:
    torch.manual_seed(5)
    h = side()
    model = Expand(37, 1, residual=False).eval()
    opt = brainslug.optimize(model, [0, 37, h, h], conv="brainslug")
    assert len(chained_stacks(opt)) == 1
    x = torch.randn(2, 37, h, h)
    x[0, 3, 0, 0] = float("nan")  # on the border: read through the halo
    x[1, 0, h // 2, 7] = float("inf")
    x[1, 5, h - 1, h - 2] = float("-inf")

    non_finite_kept(model, opt, x)
    with torch.no_grad():
        model.expand[0].weight.mul_(1.5)
        model.depthwise[0].weight.add_(0.25)
        model.depthwise[1].running_var.mul_(2.0)
    non_finite_kept(model, opt, x)


def non_finite_kept(model: nn.Module, opt: nn.Module, x: torch.Tensor) -> None:
    """NaN and ±Inf where eager has them, within 1e-5 relative elsewhere."""
    with torch.no_grad():
        ref, got = model(channels_last(x)), opt(x)
    assert torch.equal(torch.isnan(ref), torch.isnan(got))
    assert torch.equal(torch.isinf(ref), torch.isinf(got))
    fin = torch.isfinite(ref)
    scale = max(1.0, ref[fin].abs().max().item())
    assert (got[fin] - ref[fin]).abs().max().item() <= 1e-5 * scale


def as_accurate_as_the_library(model: nn.Module, opt: nn.Module,
                               shape: tuple[int, ...]) -> torch.Tensor:
    """Checks `opt` against float64 at batch 1 and 3: its max error at most
    1.5× the library's; returns the batch-3 input."""
    m64 = copy.deepcopy(model).double()
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            ref, lib, got = m64(x.double()), model(x).double(), opt(x).double()
        e_lib, e_bs = (lib - ref).abs().max().item(), (got - ref).abs().max().item()
        assert e_bs <= 1.5 * e_lib + 1e-7, (batch, e_bs, e_lib)
    return x


def nan_kept(ref: torch.Tensor, got: torch.Tensor) -> None:
    """NaN where the reference has it, within 1e-5 relative elsewhere."""
    assert torch.equal(ref.isnan(), got.isnan())
    ok = ~ref.isnan()
    assert (got[ok] - ref[ok]).abs().max().item() <= 1e-5 * max(1.0, ref[ok].abs().max().item())


class SqueezeExcite(nn.Module):
    """A depthwise convolution and torchvision's squeeze-excite block on it:
    pool, two one-pixel 1×1 convolutions (SiLU, sigmoid), scale."""

    def __init__(self, c: int = 43) -> None:
        super().__init__()
        from torchvision.ops import SqueezeExcitation

        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
                                random_bn(nn.BatchNorm2d(c), 4), nn.SiLU())
        self.se = SqueezeExcitation(c, 11, activation=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.dw(x))


def test_squeeze_excite_layers_run_in_one_stack() -> None:
    """conv="auto" compiles the one-pixel convolutions untimed, and the two run
    in one stack with their activations; as accurate as the library against
    float64, NaN kept, weight changes followed."""
    pytest.importorskip("torchvision")
    torch.manual_seed(6)
    model = SqueezeExcite().eval()
    opt = brainslug.optimize(model, [0, 43, 15, 13], conv="auto")
    chosen = {c.node: c for c in opt.info.convs}
    assert {chosen[n].runs for n in ("se_fc1", "se_fc2")} == {"brainslug"}, chosen
    assert "one pixel" in chosen["se_fc1"].why
    assert any(len([x for x in chain if x.endswith("nn.conv2d")]) == 2 and
               any("fc1" in x for x in chain) for chain in chained_stacks(opt))
    x = as_accurate_as_the_library(model, opt, (43, 15, 13))
    x[0, 2, 4, 4] = float("nan")  # pooled into every pixel of channel 2's scale
    with torch.no_grad():
        model.se.fc2.weight.mul_(-1.5)
        ref, got = model(x), opt(x)
    nan_kept(ref, got)


def test_squeeze_is_the_excitations_prologue() -> None:
    """The global pool of a squeeze-excite block whose input a convolution's
    kernel writes runs in the excitation's stack (one call, not two): as
    accurate as the library against float64, NaN pooled into its channel."""
    pytest.importorskip("torchvision")
    torch.manual_seed(9)
    model = SqueezeExcite().eval()
    opt = brainslug.optimize(model, [0, 43, 15, 13], conv="brainslug")
    ops = [[x.split(": ")[1] for x in s.layers] for s in opt.info.stacks]
    assert ["nn.adaptive_avg_pool2d", "nn.conv2d", "nn.silu", "nn.conv2d",
            "nn.sigmoid"] in ops, ops
    x = as_accurate_as_the_library(model, opt, (43, 15, 13))
    x[1, 2, 4, 4] = float("nan")
    with torch.no_grad():
        ref, got = model(x), opt(x)
    nan_kept(ref, got)


class ScaledProject(nn.Module):
    """A squeeze-excite block's scale read by a 1x1 project convolution + BN."""

    def __init__(self, c: int = 43, out: int = 17) -> None:
        super().__init__()
        self.se = SqueezeExcite(c)
        self.project = nn.Sequential(nn.Conv2d(c, out, 1, bias=False),
                                     random_bn(nn.BatchNorm2d(out), 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(x))


@pytest.mark.parametrize("hw", [(15, 13), (side(tile_budget("x86-64")), 9)])
def test_scale_is_the_project_convolutions_prologue(hw: tuple[int, int]) -> None:
    """The scale `x * s` that only the project convolution reads runs in its
    stack, tile by tile (also an item of several tiles of rows): as accurate
    as the library against float64, NaN kept, weight changes followed."""
    pytest.importorskip("torchvision")
    torch.manual_seed(8)
    model = ScaledProject().eval()
    opt = brainslug.optimize(model, [0, 43, *hw], conv="brainslug")
    ops = [[x.split(": ")[1] for x in s.layers] for s in opt.info.stacks]
    assert ["nn.mul", "nn.conv2d", "nn.batch_norm"] in ops, ops
    x = as_accurate_as_the_library(model, opt, (43, *hw))
    x[1, 2, 4, 4] = float("nan")
    x[0, 5, 1, 2] = float("inf")
    with torch.no_grad():
        model.se.se.fc2.weight.mul_(-1.5)
        model.project[0].weight.add_(0.1)
        ref, got = model(x), opt(x)
    assert torch.equal(ref.isnan(), got.isnan())
    ok = torch.isfinite(ref)
    assert torch.equal(ok, torch.isfinite(got))
    assert (got[ok] - ref[ok]).abs().max().item() <= 1e-5 * max(1.0, ref[ok].abs().max().item())

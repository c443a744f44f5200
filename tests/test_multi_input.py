"""Models of several inputs: `optimize(model, [shape_a, shape_b])`, one shape
per input of the forward, 0 in dim 0 the batch shared by all inputs of a call;
inputs of different ranks; both layouts; save/load; clear errors for a spec
or a call that does not fit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.graph import check_shape
from brainslug.frontend_torch.kernel_module import StackKernel


def _perturbed(m: nn.Module, seed: int = 0) -> nn.Module:
    """`m` in eval mode with random BN statistics and affine terms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return m.eval()


def _close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Within 1e-5 * max(1, |ref|), NaN where the reference has NaN."""
    assert out.shape == ref.shape
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(out), nan)
    err = (out - ref).abs()[~nan]
    tol = 1e-5 * ref.abs()[~nan].clamp(min=1.0)
    assert bool((err <= tol).all()), f"max |diff| {err.max().item()}"


def _stacks(opt: nn.Module) -> list[StackKernel]:
    return [m for m in opt.plan.modules() if isinstance(m, StackKernel)]


class Two(nn.Module):
    """The issue's model: BN and ReLU on x, plus y."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(37).eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(x)) + y


class Mixed(nn.Module):
    """An image and a vector of other channel counts: BN and ReLU stacks on
    both, a convolution between, the vector broadcast over the image."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_x = nn.BatchNorm2d(37)
        self.conv = nn.Conv2d(37, 24, 3, padding=1)
        self.bn_c = nn.BatchNorm2d(24)
        self.bn_y = nn.BatchNorm1d(24)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.conv(torch.relu(self.bn_x(x)))
        v = torch.relu(self.bn_y(y))
        return torch.relu(self.bn_c(h)) * torch.sigmoid(v)[:, :, None, None] + v[:, :, None, None]


class FixedFirst(nn.Module):
    """A fixed-batch input read first by a stack whose other input has the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(37)

    def forward(self, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(torch.relu(bias) + x))


def test_issue_acceptance_at_batch_1_and_3() -> None:
    m = Two().eval()
    opt = brainslug.optimize(m, [[0, 37, 13, 13], [0, 37, 13, 13]])
    assert opt.plan is not None and _stacks(opt)
    for batch in (1, 3, 1):
        x, y = torch.randn(batch, 37, 13, 13), torch.randn(batch, 37, 13, 13)
        with torch.no_grad():
            assert (opt(x, y) - m(x, y)).abs().max().item() <= 1e-5
            assert (opt(x, y=y) - m(x, y)).abs().max().item() <= 1e-5
    assert "inputs: x Nx37x13x13, y Nx37x13x13" in brainslug.report(opt)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_inputs_of_other_ranks_and_channels(layout: str) -> None:
    m = _perturbed(Mixed())
    opt = brainslug.optimize(m, [[0, 37, 13, 13], [0, 24]], layout=layout)
    assert opt.plan is not None and opt.info.layout == layout
    assert len([s for s in opt.info.stacks if s.compiled]) >= 2, brainslug.report(opt)
    g = torch.Generator().manual_seed(1)
    for batch in (3, 1, 2):
        x = torch.randn(batch, 37, 13, 13, generator=g)
        y = torch.randn(batch, 24, generator=g)
        with torch.no_grad():
            _close(opt(x, y), m(x, y))
    # NaN in one input goes where it goes in eager
    x, y = torch.randn(2, 37, 13, 13, generator=g), torch.randn(2, 24, generator=g)
    x[1, 5, 6, 7] = float("nan")
    y[0, 3] = float("nan")
    with torch.no_grad():
        ref = m(x, y)
        assert torch.isnan(ref).any()
        _close(opt(x, y), ref)


def test_a_fixed_batch_input_beside_a_batched_one() -> None:
    m = _perturbed(FixedFirst())
    opt = brainslug.optimize(m, [[1, 37, 1, 1], [0, 37, 13, 13]])
    # the kernel reads (bias, x): its batch is x's dim 0, not bias's (1)
    assert [k._batch_input for k in _stacks(opt)] == [1]
    for batch in (3, 1):
        b, x = torch.randn(1, 37, 1, 1), torch.randn(batch, 37, 13, 13)
        with torch.no_grad():
            _close(opt(b, x), m(b, x))
    with pytest.raises(ValueError, match=r"expected input shape 1x37x1x1 for input 0 \(bias\)"):
        opt(torch.randn(3, 37, 1, 1), torch.randn(3, 37, 13, 13))


def test_a_spec_that_does_not_fit_the_forward_is_a_clear_error() -> None:
    m = Two().eval()
    with pytest.raises(ValueError, match=r"Two\.forward\(x, y\) takes 2 inputs.*gives 1 shape"):
        brainslug.optimize(m, [0, 37, 13, 13])
    with pytest.raises(ValueError, match=r"Two\.forward\(x, y\) takes 2 inputs.*gives 3 shapes"):
        brainslug.optimize(m, [[0, 37, 13, 13]] * 3)
    one = nn.Sequential(nn.BatchNorm2d(37), nn.ReLU()).eval()
    with pytest.raises(ValueError, match=r"takes 1 input, but the input spec gives 2 shapes"):
        brainslug.optimize(one, [[0, 37, 13, 13], [0, 37, 13, 13]])


@pytest.mark.parametrize("bad", [
    [[0, 37, 13, 13], [0, -1]],
    [[0, 37, 13, 13], []],
    [[0, 37, 13, 13], [0, 37.0]],
    [[0, 37, 13, 13], 13],
    [[0, 37, 13, 13], "0,37"],
])
def test_a_bad_inner_shape_is_a_value_error(bad: list) -> None:
    with pytest.raises(ValueError):
        brainslug.optimize(Two().eval(), bad)


def test_check_shape_forms() -> None:
    assert check_shape([0, 3, 8, 8]) == [0, 3, 8, 8]
    assert check_shape(torch.Size([2, 3])) == [2, 3]
    assert check_shape([[0, 3, 8, 8]]) == [0, 3, 8, 8]  # one shape: the one-input form
    assert check_shape([(0, 3, 8, 8), torch.Size([0, 5])]) == [[0, 3, 8, 8], [0, 5]]
    assert check_shape(((0, 3), (0, 5))) == [[0, 3], [0, 5]]


def test_calls_that_do_not_fit_are_clear_errors() -> None:
    opt = brainslug.optimize(_perturbed(Mixed()), [[0, 37, 13, 13], [0, 24]], layout="NCHW")
    x, y = torch.randn(3, 37, 13, 13), torch.randn(3, 24)
    with pytest.raises(ValueError, match=r"batch sizes differ: input 1 \(y\) has 2"):
        opt(x, torch.randn(2, 24))
    with pytest.raises(ValueError, match=r"takes 2 input tensors \(x, y\).*got 1"):
        opt(x)
    with pytest.raises(ValueError, match=r"expected input shape Nx24 for input 1 \(y\)"):
        opt(x, torch.randn(3, 23))
    with pytest.raises(ValueError, match=r"expected a 2-d input of shape Nx24 for input 1"):
        opt(x, torch.randn(3, 24, 1))
    with pytest.raises(ValueError, match=r"dtype torch.float32 for input 0 \(x\)"):
        opt(x.double(), y)
    with pytest.raises(ValueError, match="unexpected 'z'"):
        opt(x, z=y)
    with torch.no_grad():  # the good call still runs after the bad ones
        _close(opt(x, y), opt.original(x, y))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_save_load_round_trip(layout: str, tmp_path: Path) -> None:
    m = _perturbed(Mixed())
    opt = brainslug.optimize(m, [[0, 37, 13, 13], [0, 24]], layout=layout)
    path = tmp_path / "two.bslug"
    brainslug.save(opt, path)
    back = brainslug.load(path)
    assert back.input_shape == [[0, 37, 13, 13], [0, 24]]
    assert back.input_names == ["x", "y"]
    for batch in (2, 1):
        x, y = torch.randn(batch, 37, 13, 13), torch.randn(batch, 24)
        with torch.no_grad():
            assert torch.equal(back(x, y), opt(x, y))
    with pytest.raises(ValueError, match="batch sizes differ"):
        back(torch.randn(2, 37, 13, 13), torch.randn(3, 24))
    copied = copy.deepcopy(opt)  # (pickling goes through the same format)
    x, y = torch.randn(2, 37, 13, 13), torch.randn(2, 24)
    with torch.no_grad():
        assert torch.equal(copied(x, y), opt(x, y))


class Branchy(nn.Module):
    """Python control flow on the inputs' ranks: torch.fx can't trace it, torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(37)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 2:
            y = y[:, :, None, None]
        return torch.relu(self.bn(x)) + y


def test_torch_export_with_several_inputs_keeps_one_dynamic_batch() -> None:
    m = _perturbed(Branchy())
    opt = brainslug.optimize(m, [[0, 37, 13, 13], [0, 37]], layout="NCHW")
    assert opt.info.capture == "torch.export", brainslug.report(opt)
    assert _stacks(opt)
    for batch in (3, 1):
        x, y = torch.randn(batch, 37, 13, 13), torch.randn(batch, 37)
        with torch.no_grad():
            _close(opt(x, y), m(x, y))


def test_the_plan_cache_keys_every_input_shape(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BRAINSLUG_CACHE", raising=False)
    hit = "plan loaded from the plan cache"
    m = _perturbed(Mixed())
    first = brainslug.optimize(m, [[0, 37, 13, 13], [0, 24]], layout="NHWC")
    assert hit not in first.info.notes
    second = brainslug.optimize(m, [[0, 37, 13, 13], [0, 24]], layout="NHWC")
    assert hit in second.info.notes
    # the second shape is part of the key: y of a fixed batch is another plan
    other = brainslug.optimize(m, [[0, 37, 13, 13], [1, 24]], layout="NHWC")
    assert hit not in other.info.notes
    x, y = torch.randn(3, 37, 13, 13), torch.randn(3, 24)
    with torch.no_grad():
        _close(second(x, y), m(x, y))
        _close(other(x, y[:1]), m(x, y[:1].expand(3, 24)))


@pytest.mark.parametrize("options", [{"conv": "brainslug"}, {"fold_batchnorm": True}])
def test_convolution_options(options: dict) -> None:
    m = _perturbed(Mixed())
    opt = brainslug.optimize(m, [[0, 37, 13, 13], [0, 24]], **options)
    assert opt.plan is not None
    for batch in (2, 1):
        x, y = torch.randn(batch, 37, 13, 13), torch.randn(batch, 24)
        with torch.no_grad():
            ref = m(x, y)
            out = opt(x, y)
        if options.get("fold_batchnorm"):  # folded weights round differently
            assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
        else:
            _close(out, ref)


def test_a_forward_of_star_args_is_captured_input_by_input() -> None:
    """`forward(self, *xs)`: torch.fx would pass the inputs as one tuple (a
    cat of it failed as a fallback); torch.export takes them one by one, and
    the cat, batch norm and ReLU of them run in one stack."""

    class Pieces(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(42)

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.bn(torch.cat(xs, 1)))

    model = _perturbed(Pieces())
    opt = brainslug.optimize(model, [[0, 37, 13, 11], [0, 5, 13, 11]])
    assert opt.info.capture == "torch.export"
    assert not opt.info.fallbacks, opt.info.fallbacks
    assert [[x.split(": ")[1] for x in s.layers] for s in opt.info.stacks] == [
        ["nn.cat", "nn.batch_norm", "nn.relu"]]
    for batch in (1, 3):
        x, y = torch.randn(batch, 37, 13, 11), torch.randn(batch, 5, 13, 11)
        with torch.no_grad():
            assert (opt(x, y) - model(x, y)).abs().max().item() <= 1e-6

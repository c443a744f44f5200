"""Linear layers computed by BrainSlug as pointwise convolutions over their
rows (`conv="brainslug"`, and `conv="auto"` where its kernel is faster): the
weight packed as a 1×1 convolution's, the bias, activation and residual add
applied in registers, results as accurate as MKL's against float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.compile import compile_plan
from brainslug.frontend_torch.graph import check_shape, trace_model
from brainslug.frontend_torch.linear_bias import split_linear_biases


class Mlp(nn.Module):
    """A transformer's MLP block on rows of `c` features: fc1, GELU, fc2, residual."""

    def __init__(self, c: int = 37, hidden: int = 150) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


def plan(model: nn.Module, shape: list[int], linears: bool) -> tuple[nn.Module, object]:
    """`model`'s NCHW plan with its linear layers compiled or in the library."""
    spec = check_shape(shape)
    gm, _, _ = trace_model(model, spec)
    split_linear_biases(gm)
    new_gm, info, _ = compile_plan(gm, spec, layout="NCHW", linears=linears)
    return new_gm, info


def compiled_linears(info: object) -> int:
    return sum(1 for s in info.stacks if s.compiled  # type: ignore[attr-defined]
               for layer in s.layers if layer.endswith("nn.linear"))


@pytest.mark.parametrize("shape", [[0, 13, 37], [0, 5, 7, 37]])
def test_linears_compile_with_their_epilogues(shape: list[int]) -> None:
    """fc1 with its bias and GELU, fc2 with its bias and the residual add: two
    stacks, each a linear layer and its epilogue."""
    torch.manual_seed(0)
    model = Mlp().eval()
    opt, info = plan(model, shape, linears=True)
    assert compiled_linears(info) == 2
    stacks = [s.layers for s in info.stacks if s.compiled]  # type: ignore[attr-defined]
    assert len(stacks) == 2 and all(len(layers) == 3 for layers in stacks), stacks
    assert not info.library  # type: ignore[attr-defined]
    for batch in (1, 3):
        x = torch.randn(batch, *shape[1:])
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("features", [(37, 150), (768, 300), (1000, 77)])
def test_compiled_linears_are_as_accurate_as_mkl(features: tuple[int, int]) -> None:
    """Against float64, at batch 1 and 3: the max error at most 1.5 times that
    of PyTorch's own linear layers (MKL), over sums of 37 to 1000 products
    (chunked past `MAX_CHUNK_TERMS`)."""
    c, hidden = features
    torch.manual_seed(1)
    model = Mlp(c, hidden).eval()
    opt, info = plan(model, [0, 29, c], linears=True)
    assert compiled_linears(info) == 2
    m64 = copy.deepcopy(model).double()
    for batch in (1, 3):
        x = torch.randn(batch, 29, c)
        with torch.no_grad():
            ref = m64(x.double())
            e_lib = (model(x).double() - ref).abs().max().item()
            e_bs = (opt(x).double() - ref).abs().max().item()
        assert e_bs <= 1.5 * e_lib + 1e-7 * ref.abs().max().item(), (features, batch, e_bs, e_lib)


def test_nan_and_inf_propagate_as_in_pytorch() -> None:
    torch.manual_seed(2)
    model = Mlp().eval()
    opt, _ = plan(model, [0, 13, 37], linears=True)
    x = torch.randn(2, 13, 37)
    x[0, 3, 5], x[1, 7, 0], x[1, 9, 36] = float("nan"), float("inf"), -float("inf")
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert torch.equal(ref.isnan(), got.isnan())
    finite = ref.isfinite()
    assert torch.equal(finite, got.isfinite())
    assert (got[finite] - ref[finite]).abs().max().item() <= 1e-5 * ref[finite].abs().max()


def test_weight_changes_are_repacked() -> None:
    """The packed weight follows the parameter: in place, and replaced."""
    torch.manual_seed(3)
    model = Mlp().eval()
    opt = brainslug.optimize(model, [0, 13, 37], conv="brainslug")
    assert "bs_no_bias_fc1: brainslug" in brainslug.report(opt)
    x = torch.randn(2, 13, 37)
    with torch.no_grad():
        model.fc1.weight.mul_(1.5)  # in place: _version changes
        assert (opt(x) - model(x)).abs().max().item() < 1e-5
        model.fc2.weight.copy_(torch.randn_like(model.fc2.weight))
        assert (opt(x) - model(x)).abs().max().item() < 1e-4


def test_library_mode_keeps_linears_in_the_library() -> None:
    """conv="library": PyTorch's linear layers, bit for bit."""
    torch.manual_seed(4)
    model = Mlp().eval()
    opt = brainslug.optimize(model, [0, 13, 37], conv="library")
    assert "fc1: brainslug" not in brainslug.report(opt)
    x = torch.randn(3, 13, 37)
    with torch.no_grad():
        assert torch.equal(opt(x), model(x))


def test_rows_of_one_stay_in_the_library() -> None:
    """A linear layer of [batch, features] (a classifier) has no rows to block in
    registers: it stays a library call, also with conv="brainslug"."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(37, 53), nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, 37], conv="brainslug")
    assert ("bs_no_bias_0", "nn.linear") in opt.info.library
    x = torch.randn(3, 37)
    with torch.no_grad():
        assert (opt(x) - model(x)).abs().max().item() < 1e-6


def test_auto_times_each_linear_against_the_library(monkeypatch, tmp_path) -> None:
    """conv="auto" times a linear layer's kernel with its epilogue against MKL's
    call and a pass, and lists the choice and both times in the report."""
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    torch.manual_seed(6)
    model = Mlp(96, 384).eval()
    opt = brainslug.optimize(model, [0, 49, 96])
    text = brainslug.report(opt)
    assert "Convolutions and linear layers: " in text
    lines = [line for line in text.splitlines() if "bs_no_bias_fc" in line and " ms" in line]
    assert len(lines) == 2, text
    assert all("brainslug " in line and "library " in line for line in lines)
    x = torch.randn(2, 49, 96)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


class ConvNeXtBlock(nn.Module):
    """Depthwise convolution, then LayerNorm and the MLP on [N, H, W, C] (a
    permuted channels-last tensor, row-major), a layer scale, a residual."""

    def __init__(self, c: int = 37) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.mlp = nn.LayerNorm(c), Mlp(c, 4 * c)
        self.scale = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.mlp.fc2(self.mlp.act(self.mlp.fc1(self.norm(y)))) * self.scale
        return x + y.permute(0, 3, 1, 2)


def test_linears_over_pixels_in_a_channels_last_plan() -> None:
    """In an NHWC plan a rank-4 [N, H, W, C] tensor that a permute made
    row-major keeps its order through the compiled linear layers (their
    results were typed channels-last before, and the layers stayed MKL's)."""
    torch.manual_seed(7)
    model = ConvNeXtBlock().eval()
    opt = brainslug.optimize(model, [0, 37, 11, 11], conv="brainslug")
    text = brainslug.report(opt)
    assert "bs_no_bias_mlp_fc1: brainslug" in text and "bs_no_bias_mlp_fc2: brainslug" in text, \
        text
    assert not any(op == "nn.linear" for _, op in opt.info.library), opt.info.library
    for batch in (1, 3):
        x = torch.randn(batch, 37, 11, 11)
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_saved_plans_keep_their_compiled_linears(tmp_path) -> None:
    """brainslug.save/load: the loaded plan runs the same kernels (the same
    result, bit for bit) and its packed weights follow the loaded model's."""
    torch.manual_seed(8)
    model = Mlp().eval()
    opt = brainslug.optimize(model, [0, 13, 37], conv="brainslug")
    x = torch.randn(2, 13, 37)
    path = tmp_path / "mlp.bslug"
    brainslug.save(opt, path)
    back = brainslug.load(path)
    assert "bs_no_bias_fc1: brainslug" in brainslug.report(back)
    with torch.no_grad():
        assert torch.equal(back(x), opt(x))
        back.original.fc1.weight.mul_(1.5)
        ref = Mlp().eval()
        ref.load_state_dict(back.original.state_dict())
        assert (back(x) - ref(x)).abs().max().item() <= 1e-5

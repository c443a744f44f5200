"""`PackedLinear`: MKL-prepacked library linear layers in the plan."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.library_linear import (
    MAX_ROWS,
    MIN_ROWS,
    PackedLinear,
    _detect_support,
)

pytestmark = pytest.mark.skipif(not _detect_support()[0], reason=_detect_support()[1])


def _linear(k: int, n: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias).eval()
    with torch.no_grad():
        lin.weight.normal_()
        if bias:
            lin.bias.normal_()
    return lin


@pytest.mark.parametrize(("rows", "k", "n"), [(16, 37, 19), (37, 768, 77), (197, 3072, 29),
                                               (251, 129, 1000), (MAX_ROWS, 53, 61)])
def test_packed_linear_is_as_accurate_as_the_library(rows: int, k: int, n: int) -> None:
    """Against float64, the packed product's largest error is at most 1.5 times
    F.linear's on the same inputs (the convolution issue's rule), and it did
    run packed."""
    lin = _linear(k, n)
    packed = PackedLinear(lin)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(1))
    ref = x.double() @ lin.weight.double().T + lin.bias.double()
    with torch.no_grad():
        ours, library = packed(x), lin(x)
    assert packed.packed_bytes() > 0
    e_ours = (ours.double() - ref).abs().max().item()
    e_lib = (library.double() - ref).abs().max().item()
    assert e_ours <= 1.5 * e_lib + 1e-7, (e_ours, e_lib)


@pytest.mark.parametrize("rows", [1, MIN_ROWS - 1, MAX_ROWS + 1])
def test_calls_outside_the_row_window_are_the_library_call(rows: int) -> None:
    lin = _linear(768, 77)
    packed = PackedLinear(lin)
    x = torch.randn(rows, 768)
    with torch.no_grad():
        assert torch.equal(packed(x), lin(x))
    assert packed.packed_bytes() == 0  # nothing packed for such calls


def test_ranks_no_bias_nan_and_inf() -> None:
    """Rank-3 and rank-4 inputs (rows over the leading dims), no bias, and NaN
    and Inf where F.linear has them."""
    lin = _linear(53, 37, bias=False)
    packed = PackedLinear(lin)
    for shape in [(3, 13, 53), (2, 3, 5, 53)]:
        x = torch.randn(*shape)
        x.view(-1, 53)[2, 4] = float("nan")
        x.view(-1, 53)[5, 0] = float("inf")
        x.view(-1, 53)[7, 1] = -float("inf")
        with torch.no_grad():
            ours, ref = packed(x), lin(x)
        assert ours.shape == ref.shape
        assert torch.equal(ours.isnan(), ref.isnan())
        assert torch.equal(ours.isinf(), ref.isinf())
        finite = ref.isfinite()
        assert torch.allclose(ours[finite], ref[finite], rtol=1e-5, atol=1e-4)


def test_weight_changes_repack() -> None:
    lin = _linear(37, 19)
    packed = PackedLinear(lin)
    x = torch.randn(40, 37)
    with torch.no_grad():
        before = packed(x)
        lin.weight.mul_(-2)  # in place: the same tensor, a new version
        assert torch.allclose(packed(x), lin(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(packed(x), before)
        lin.load_state_dict({"weight": torch.randn(19, 37), "bias": torch.randn(19)})
        assert torch.allclose(packed(x), lin(x), rtol=1e-5, atol=1e-5)
        lin.weight.data = torch.randn(19, 37)  # a new tensor behind the parameter
        assert torch.allclose(packed(x), lin(x), rtol=1e-5, atol=1e-5)


def test_gradients_run_the_library_call() -> None:
    lin = _linear(37, 19).train()
    packed = PackedLinear(lin)
    x = torch.randn(40, 37, requires_grad=True)
    y = packed(x)
    y.sum().backward()
    assert x.grad is not None and torch.equal(y.detach(), lin(x).detach())
    assert packed.packed_bytes() == 0


def test_copies_pack_their_own_weight() -> None:
    lin = _linear(37, 19)
    packed = PackedLinear(lin)
    x = torch.randn(40, 37)
    with torch.no_grad():
        ref = packed(x)
        for twin in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
            assert twin.packed_bytes() == 0
            assert torch.allclose(twin(x), ref, rtol=1e-6, atol=1e-6)


class _Mlp(nn.Module):
    """Token-mixer-free transformer MLP: LayerNorm, Linear, GELU, Linear, residual."""

    def __init__(self, d: int = 53, hidden: int = 131) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


def test_optimize_packs_linear_layers_unless_asked_not_to() -> None:
    torch.manual_seed(3)
    model = _Mlp().eval()
    opt = brainslug.optimize(model, [0, 37, 53], conv="library")
    layers = [m for m in opt.modules() if isinstance(m, PackedLinear)]
    assert len(layers) == 2 and all(m.packed for m in layers)
    assert "2 of 2 library linear layers run on MKL" in brainslug.report(opt)
    for batch in (1, 3):
        x = torch.randn(batch, 37, 53)
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert all(m.packed_bytes() > 0 for m in layers)
    with torch.no_grad():  # the model's weights change: the plan follows
        model.fc1.weight.mul_(0.5)
        x = torch.randn(2, 37, 53)
        assert (opt(x) - model(x)).abs().max().item() <= 1e-5
    plain = brainslug.optimize(model, [0, 37, 53], pack_linear=False)
    assert not any(isinstance(m, PackedLinear) for m in plain.modules())
    with pytest.raises(ValueError, match="pack_linear must be True or False"):
        brainslug.optimize(model, [0, 37, 53], pack_linear="yes")

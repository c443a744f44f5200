"""`x[index]` with ints and unit-step slices, where a compiled layer reads the
result: a crop and a reshape in the reader's stack, which loads the part it
needs from the whole tensor (before, the stack's call copied a strided view
first). Where only matrix work reads it, it stays PyTorch's view."""

from __future__ import annotations

import pytest
import torch

import brainslug.pytorch as brainslug
from brainslug.testing.library_reference import with_plan_libraries


class Parts(torch.nn.Module):
    """Int, slice, Ellipsis and negative indices of a (B, 7, 3, 5, 9) tensor that
    a linear layer computes; each part read by a compiled layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(9, 9)
        self.w = torch.nn.Parameter(torch.randn(9, 4))

    def forward(self, x: torch.Tensor):
        y = self.lin(x)
        a = y[:, :, 1] * 0.5 + 1.0                  # (B, 7, 5, 9)
        b = torch.relu(y[:, 2:5, 0:2])              # (B, 3, 2, 5, 9)
        c = y[..., -1, :].transpose(1, 2).contiguous()  # (B, 3, 7, 9)
        d = y[:, 0, 2] @ self.w                      # matrix work alone: a view
        return a, b, c, d


def _nodes(info) -> tuple[set[str], set[str]]:
    compiled = {layer.split(": ")[0] for s in info.stacks if s.compiled for layer in s.layers}
    return compiled, {n for n, _ in info.library}


@pytest.mark.parametrize("batch", [1, 3])
def test_parts_read_in_place_by_their_stacks(batch: int) -> None:
    torch.manual_seed(0)
    m = Parts().eval()
    # (conv="library": the linear layer stays MKL's, as the reference runs it)
    opt = brainslug.optimize(m, [0, 7, 3, 5, 9], conv="library")
    compiled, library = _nodes(opt.info)
    assert {"getitem", "getitem_1", "getitem_2"} <= compiled, (compiled, library)
    assert "getitem_3" in library  # read by matmul alone
    assert not opt.info.fallbacks
    _check_parts(opt, m, batch)


def _check_parts(opt: torch.nn.Module, m: torch.nn.Module, batch: int) -> None:
    """The optimized model's parts are eager's bit for bit, NaN and Inf included."""
    x = torch.randn(batch, 7, 3, 5, 9)
    x[0, 1, 1, 2, 3] = float("nan")
    x[-1, 3, 2, 4, 8] = float("inf")
    with torch.no_grad():
        for got, ref in zip(opt(x), with_plan_libraries(m, opt)(x), strict=True):
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)


def test_parts_follow_weight_changes() -> None:
    torch.manual_seed(1)
    m = Parts().eval()
    # (conv="library": the linear layer stays MKL's, as the reference runs it)
    opt = brainslug.optimize(m, [0, 7, 3, 5, 9], conv="library")
    x = torch.randn(2, 7, 3, 5, 9)
    with torch.no_grad():
        m.lin.bias.add_(0.25)
        for got, ref in zip(opt(x), with_plan_libraries(m, opt)(x), strict=True):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)


class ExportedParts(Parts):
    """`Parts` behind a branch on a size, which torch.fx can't trace: torch.export
    writes its indices as ATen `select.int` and `slice.Tensor` (a slice over a
    whole dim included)."""

    def forward(self, x: torch.Tensor):
        if x.shape[1] < 3:
            x = x * 2.0
        return super().forward(x)


@pytest.mark.parametrize("batch", [1, 3])
def test_aten_slices_and_selects_are_parts_too(batch: int) -> None:
    torch.manual_seed(0)
    m = ExportedParts().eval()
    opt = brainslug.optimize(m, [0, 7, 3, 5, 9])
    assert "capture: torch.export" in brainslug.report(opt)
    assert not opt.info.fallbacks, opt.info.fallbacks
    compiled, _ = _nodes(opt.info)
    assert any(n.startswith("select") for n in compiled), compiled
    assert any(n.startswith("slice") for n in compiled), compiled
    _check_parts(opt, m, batch)

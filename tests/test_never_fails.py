"""optimize() never fails on a model the framework can run: a bug of
BrainSlug's leaves the model (or the stack) to the framework with the reason in
the report; bad input is a ValueError; BRAINSLUG_STRICT=1 raises instead."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug

# the module (the package's `optimize` attribute is the function)
torch_optimize = sys.modules["brainslug.frontend_torch.optimize"]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU()).eval()


def test_a_compiler_error_leaves_the_model_to_the_framework(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a pass")

    monkeypatch.setattr(torch_optimize, "compile_plan", broken)
    monkeypatch.setenv("BRAINSLUG_STRICT", "0")
    m = model()
    opt = brainslug.optimize(m, [0, 3, 13, 11])
    assert opt.plan is None
    assert opt.info.fallbacks == [("<model>", "optimize() failed, the model runs as it is: "
                                   "RuntimeError: a bug in a pass")]
    x = torch.randn(2, 3, 13, 11)
    with torch.no_grad():
        assert torch.equal(opt(x), m(x))
    monkeypatch.setenv("BRAINSLUG_STRICT", "1")
    with pytest.raises(RuntimeError, match="a bug in a pass"):
        brainslug.optimize(m, [0, 3, 13, 11])


def test_a_shape_the_model_cannot_run_is_a_value_error(monkeypatch) -> None:
    monkeypatch.setenv("BRAINSLUG_STRICT", "0")
    with pytest.raises(ValueError, match=r"does not run on inputs of shape Nx4x13x11"):
        brainslug.optimize(model(), [0, 4, 13, 11])


@pytest.mark.parametrize("cpu", ["bogus", 123, ""])
def test_an_unknown_cpu_is_a_value_error(cpu) -> None:
    """LLVM aborts the process on an unknown CPU when it emits code: BrainSlug
    checks the name first."""
    with pytest.raises(ValueError, match="cpu"):
        brainslug.optimize(model(), [0, 3, 13, 11], cpu=cpu)


def test_a_named_cpu_compiles() -> None:
    m = model()
    opt = brainslug.optimize(m, [0, 3, 13, 11], cpu="haswell")
    x = torch.randn(2, 3, 13, 11)
    with torch.no_grad():
        ref = m(x)
        assert (opt(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_another_dtype_runs_as_it_is_with_a_warning(dtype) -> None:
    m = model().to(dtype)
    with pytest.warns(UserWarning, match="float32 models"):
        opt = brainslug.optimize(m, [0, 3, 13, 11])
    assert opt.plan is None and opt.info.fallbacks[0][0] == "<model>"
    assert "float32" in brainslug.report(opt)
    x = torch.randn(2, 3, 13, 11, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(opt(x), m(x))


def test_a_meta_model_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="meta"):
        brainslug.optimize(model().to("meta"), [0, 3, 13, 11])


def test_bs_opt_names_a_binary_input(tmp_path, capsys) -> None:
    """Bytes that aren't UTF-8 get bs-opt's own error naming the file, not a
    UnicodeDecodeError."""
    from brainslug.tools.bs_opt import main

    path = tmp_path / "k.mlir"
    path.write_bytes(b"\x00\x01\x02\xff\xfe")
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} is not UTF-8 text (byte 0xff at offset 3)" in err
    assert "UnicodeDecodeError" not in err


def test_state_dict_is_the_models() -> None:
    """The optimized module's state_dict is the model's (no `original.`
    prefix; it loads into the plain model and back, and the plan follows).
    Pickling is tested in test_save_load."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    opt = brainslug.optimize(m, [0, 3, 12, 12], conv="library")
    assert list(opt.state_dict()) == list(m.state_dict())
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    plain.load_state_dict(opt.state_dict())
    with torch.no_grad():
        plain[1].running_mean.uniform_(-1, 1)
    opt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert (opt(x) - plain(x)).abs().max().item() <= 1e-5



def test_a_reshape_across_the_batch_dimension_runs_in_the_framework() -> None:
    """LeViT's batch norm over the B*N tokens of a (B, N, C) tensor, reshaped
    back to B x N: the stack's reshape moves elements between the batch and
    the other dims, which a compiled reshape can't (it raised IndexError)."""
    import torch.nn as nn

    class TokensBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(36).eval()
            with torch.no_grad():
                self.bn.running_mean.normal_()
                self.bn.running_var.uniform_(0.5, 2.0)

        def forward(self, x):
            y = self.bn(x.flatten(0, 1)).reshape_as(x)
            return torch.relu(y.view(x.shape[0], 13, 4, 9))

    m = TokensBN().eval()
    opt = brainslug.optimize(m, [0, 13, 36])
    for batch in (1, 3):
        x = torch.randn(batch, 13, 36)
        with torch.no_grad():
            assert (opt(x) - m(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("conv", ["library", "brainslug"])
def test_a_cat_of_a_cat_leaves_no_dead_node_to_the_framework(conv: str) -> None:
    """Inception-v3's Mixed_7b/7c: cat([a, cat([b, c]), d]) of BN-ReLU
    branches. The stack reads b and c in place of the inner cat, which then has
    no reader: the plan must drop it, not run it on values the stack keeps
    (strict mode raised `KeyError: ... used outside its stack`)."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(6, k, 1) for k in (3, 5, 7, 4))
            self.bns = nn.ModuleList(nn.BatchNorm2d(k) for k in (3, 5, 7, 4))
            for bn in self.bns:
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

        def forward(self, x):
            pairs = zip(self.convs, self.bns, strict=True)
            a, b, c, d = (torch.relu(bn(linear(x))) for linear, bn in pairs)
            return torch.cat([a, torch.cat([b, c], 1), d], 1)

    torch.manual_seed(0)
    m = Mixed().eval()
    opt = brainslug.optimize(m, [0, 6, 11, 13], conv=conv)
    assert opt.info.stacks and all(s.compiled for s in opt.info.stacks)
    for batch in (1, 3):
        x = torch.randn(batch, 6, 11, 13)
        x[0, 1, 2, 3] = float("nan")
        with torch.no_grad():
            out, ref = opt(x), m(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_a_shape_read_of_a_stack_value_needs_no_cycle(tmp_path) -> None:
    """XCiT reads the shape of its patch embedding's tokens (a stack's value)
    to build the positional encoding that the same stack adds: the plan's
    schedule had a cycle through `x.shape[1]` (KeyError 'transpose is used
    outside its stack but is not an output'). The shape now comes from the
    static extents and the input's batch, and the plan saves and loads."""
    xcit = pytest.importorskip("timm.models.xcit")
    torch.manual_seed(0)
    m = xcit.Xcit(img_size=48, patch_size=16, embed_dim=32, depth=1, num_heads=4,
                  cls_attn_layers=1, num_classes=7).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.1)
    opt = brainslug.optimize(m, [0, 3, 48, 48])
    assert "stacks: 0 compiled" not in brainslug.report(opt)
    path = tmp_path / "xcit.bslug"
    brainslug.save(opt, path)
    loaded = brainslug.load(path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 48, 48)
        with torch.no_grad():
            ref = m(x)
            assert ref.abs().max() > 0.1
            assert (opt(x) - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
            assert torch.equal(loaded(x), opt(x))


class _InPlaceViews(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn, self.bn2 = nn.BatchNorm2d(5), nn.BatchNorm2d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(x))
        y.transpose_(2, 3)  # fx's graph keeps y's old shape for the users below
        z = torch.sigmoid(self.bn2(y)) * 2
        z.unsqueeze_(1)
        return z.squeeze_(1) + 1


def test_in_place_view_methods_are_followed() -> None:
    """`y.transpose_()` changes the shape of `y` for the code after it: the plan
    follows (the first call used to raise a shape error)."""
    torch.manual_seed(3)
    m = _InPlaceViews().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn2.running_var.uniform_(0.5, 2)
    opt = brainslug.optimize(m, [0, 5, 7, 9])
    for b in (1, 3):
        x = torch.randn(b, 5, 7, 9)
        with torch.no_grad():
            ref, got = m(x), opt(x)
        assert got.shape == ref.shape == (b, 5, 9, 7)
        assert (got - ref).abs().max().item() <= 1e-5

"""Swin's shifted-window attention traced through for the plan's H and W:
the graph computes what torchvision's function computes, bit for bit, and
the optimized model matches eager with the attention's memory-bound steps
compiled."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx

torchvision = pytest.importorskip("torchvision")
from torchvision.models import swin_transformer as swin  # noqa: E402

import brainslug.pytorch as brainslug  # noqa: E402
from brainslug.frontend_torch.graph import trace_model  # noqa: E402
from brainslug.frontend_torch.window_attention import (  # noqa: E402
    inline_window_attention,
    window_mask,
)

SHAPE = [0, 3, 60, 76]
"""15 x 19 patches of 4 x 4: windows of 7 pad both extents, and the second
stage (8 x 10) pads again; every block shifts."""


def _swin(v2: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"block": swin.SwinTransformerBlockV2,
             "downsample_layer": swin.PatchMergingV2} if v2 else {}
    m = swin.SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2],
                             num_heads=[2, 3], window_size=[7, 7], num_classes=11,
                             **extra).eval()
    with torch.no_grad():  # informative: biases and norms away from their init
        for name, p in m.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 1.0)
            elif name.endswith("bias"):
                p.uniform_(-0.3, 0.3)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.6, 1.4)
            elif "logit_scale" in name:
                p.uniform_(1.0, 3.0)
    return m


def _attention_calls(gm: fx.GraphModule) -> int:
    return sum(n.op == "call_function" and n.target is swin.shifted_window_attention
               for n in gm.graph.nodes)


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_traced_through_bitwise(v2: bool) -> None:
    m = _swin(v2)
    gm, how, notes = trace_model(m, SHAPE)
    assert how == "torch.fx" and gm is not None
    assert _attention_calls(gm) == 0
    assert any("4 calls of torchvision's shifted_window_attention" in s for s in notes), notes
    torch.manual_seed(1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 60, 76) * 2
        with torch.no_grad():
            assert torch.equal(gm(x), m(x))


def test_linear_layers_are_the_models() -> None:
    """qkv and proj are called as the model's own Linear modules (packed like
    any other), sharing its parameters."""
    m = _swin(False)
    gm, _, _ = trace_model(m, SHAPE)
    assert gm is not None
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    attn = m.features[1][0].attn
    assert {"features.1.0.attn.qkv", "features.1.0.attn.proj"} <= called
    assert gm.get_submodule("features.1.0.attn.qkv") is attn.qkv


def test_dynamic_extent_keeps_the_call() -> None:
    """With H or W not fixed by the plan, the branches can't be taken: the call
    stays the library call it was."""
    m = _swin(False)
    gm, _, _ = trace_model(m, [0, 3, 56, 56])
    plain = torch.fx.symbolic_trace(m)
    metas = {n.name: ((-1, -1, 14, 24), torch.float32) for n in plain.graph.nodes}
    assert _attention_calls(plain) == 4
    assert inline_window_attention(plain, metas, m) == []
    assert _attention_calls(plain) == 4


def test_window_mask() -> None:
    """-100 exactly between tokens of a window that the cyclic shift brought
    from different regions; symmetric, 0 on the diagonal and in windows the
    shift did not wrap."""
    mask = window_mask(21, 14, [7, 7], [3, 3], torch.empty(0))
    assert mask.shape == (1, 6, 1, 49, 49)
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    m = mask[0, :, 0]
    assert torch.equal(m, m.transpose(1, 2))
    assert not m.diagonal(dim1=1, dim2=2).any()
    assert not m[0].any()  # the top-left window holds one region
    assert m[-1].any()  # the bottom-right window holds four


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_optimized_matches_eager_and_float64(v2: bool) -> None:
    m = _swin(v2)
    opt = brainslug.optimize(m, SHAPE)
    report = brainslug.report(opt)
    assert "Fallbacks: none" in report, report
    assert "shifted_window_attention" not in report.split("Library calls")[-1]
    m64 = _swin(v2).double()
    torch.manual_seed(2)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 60, 76) * 2
        with torch.no_grad():
            ref, out, exact = m(x), opt(x), m64(x.double())
        assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())
        eager_err = (ref.double() - exact).abs().max().item()
        assert (out.double() - exact).abs().max().item() <= 1.5 * eager_err + 1e-6


def test_weight_changes_follow() -> None:
    m = _swin(False)
    opt = brainslug.optimize(m, SHAPE)
    attn = m.features[3][1].attn
    with torch.no_grad():
        attn.qkv.weight.mul_(1.25)
        attn.relative_position_bias_table.normal_(0, 2.0)
        attn.proj.bias.add_(0.5)
    x = torch.randn(2, 3, 60, 76)
    with torch.no_grad():
        ref, out = m(x), opt(x)
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())

"""Values that merge the batch with other dims (window attention's
(B * windows, N, C)) held split, and size arithmetic that doesn't follow the
batch folded: the rewritten graph computes what the model computes, bit for
bit, and the optimized model compiles the layers between the GEMMs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.frontend_torch import batch_split
from brainslug.frontend_torch.batch_split import split_merged_batch
from brainslug.frontend_torch.graph import trace_model
from brainslug.frontend_torch.static_sizes import fold_static_sizes
from brainslug.frontend_torch.tracing import trace

H, W, C = 9, 13, 39
SHAPE = [0, H, W, C]


class WindowAttention(nn.Module):
    """timm's window attention in miniature: the map padded to whole windows
    (pads computed from its shape), partitioned into (B * windows, N, C),
    heads by `permute(2, 0, 3, 1, 4)` and `unbind`, a relative position bias,
    softmax (or PyTorch's fused attention), the windows reversed and cropped."""

    def __init__(self, fused: bool, window: int = 5, heads: int = 3,
                 branches: bool = False) -> None:
        super().__init__()
        self.fused, self.window, self.heads, self.branches = fused, window, heads, branches
        self.norm = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.bias = nn.Parameter(torch.randn(heads, window * window, window * window))
        self.scale = (C // heads) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = self.norm(x)
        if not self.branches or pad_b or pad_r:  # (torch.fx can't trace a branch on sizes)
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        y = y.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        y = y.reshape(-1, ws * ws, c)
        b_, n, _ = y.shape
        qkv = self.qkv(y).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + self.bias
            o = attn.softmax(dim=-1) @ v
        o = self.proj(o.transpose(1, 2).reshape(b_, n, c))
        o = o.view(-1, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        o = o.reshape(-1, hp, wp, c)[:, :h, :w, :].contiguous()
        return x + o


def _model(fused: bool, branches: bool = False) -> nn.Module:
    torch.manual_seed(0)
    m = WindowAttention(fused, branches=branches).eval()
    with torch.no_grad():
        m.norm.weight.uniform_(0.6, 1.4)
        m.norm.bias.uniform_(-0.3, 0.3)
    return m


def _inputs(batch: int) -> torch.Tensor:
    x = torch.randn(batch, H, W, C) * 2
    x[0, 1, 2, 3] = float("nan")  # one token's row becomes NaN, as in eager
    return x


@pytest.mark.parametrize("fused", [False, True], ids=["softmax", "sdpa"])
def test_rewritten_graph_is_bitwise_the_model(fused: bool) -> None:
    m = _model(fused)
    gm, how, notes = trace_model(m, SHAPE)
    assert how == "torch.fx" and gm is not None
    assert any("held with the batch as a dim of its own" in s for s in notes), notes
    assert any("folded to constants" in s for s in notes), notes
    merged = [n for n in gm.graph.nodes if n.op == "call_method" and n.target == "flatten"
              and n.args[1:] in ((0, 1), (1, 2))]
    assert not merged, [n.format_node() for n in merged]  # (no reader needed it merged)
    if fused:
        assert any(n.target is batch_split.attention for n in gm.graph.nodes)
    torch.manual_seed(1)
    for batch in (1, 2, 5):
        x = _inputs(batch)
        with torch.no_grad():
            ref, got = m(x), gm(x)
        assert torch.equal(ref.isnan(), got.isnan())
        assert torch.equal(ref.nan_to_num(), got.nan_to_num())


def test_torch_export_graph_is_rewritten_too() -> None:
    """A model torch.fx can't trace (it branches on sizes): its ATen graph."""
    m = _model(True, branches=True)
    gm, how, notes = trace_model(m, SHAPE)
    assert how == "torch.export" and gm is not None
    assert any("held with the batch as a dim of its own" in s for s in notes), notes
    assert any(n.target is batch_split.attention for n in gm.graph.nodes)
    for batch in (1, 2, 5):
        x = _inputs(batch)
        with torch.no_grad():
            ref, got = m(x), gm(x)
        assert torch.equal(ref.nan_to_num(), got.nan_to_num())
        assert torch.equal(ref.isnan(), got.isnan())


@pytest.mark.parametrize(("fused", "branches"), [(False, False), (True, False), (True, True)],
                         ids=["softmax", "sdpa", "sdpa-export"])
def test_optimized_compiles_the_windows(fused: bool, branches: bool) -> None:
    m = _model(fused, branches)
    opt = brainslug.optimize(m, SHAPE)
    report = brainslug.report(opt)
    assert "Fallbacks: none" in report, report
    m64 = _model(fused, branches).double()
    torch.manual_seed(2)
    for batch in (1, 3):
        x = _inputs(batch)
        with torch.no_grad():
            ref, out, exact = m(x), opt(x), m64(x.double())
        assert torch.equal(ref.isnan(), out.isnan())
        ref, out, exact = ref.nan_to_num(), out.nan_to_num(), exact.nan_to_num()
        assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())
        eager_err = (ref.double() - exact).abs().max().item()
        assert (out.double() - exact).abs().max().item() <= 1.5 * eager_err + 1e-6


def test_a_wrong_rewrite_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewrite whose results differ from the model's (here: permutes that
    swap the split pair, which keeps every shape) leaves the graph as it was."""
    def swapped(self: batch_split._Split, n: torch.fx.Node, perm: list[int],
                at: int) -> tuple[int]:
        new: list[int] = []
        for d in perm:
            new += [at + 1, at] if d == at else [d + 1 if d > at else d]
        n.op, n.target, n.kwargs = "call_method", "permute", {}
        n.args = (n.args[0], tuple(new))
        return (perm.index(at),)

    m = _model(False)
    gm = trace(m)
    fold_static_sizes(gm, [SHAPE])
    before = str(gm.graph)
    monkeypatch.setattr(batch_split._Split, "_permuted", swapped)
    assert split_merged_batch(gm, [SHAPE]) == 0
    assert str(gm.graph) == before


class TokenNorm(nn.Module):
    """LeViT's batch norm over the tokens of all samples: a reader that takes
    the merged value, between two that take it split."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(C, C)
        self.bn = nn.BatchNorm1d(C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.fc(x.reshape(-1, W, C)).softmax(dim=-1)  # (B * H, W, C)
        t = self.bn(t.flatten(0, 1)).reshape_as(t)
        return t.reshape(-1, H, W, C) * 2.0


def test_a_reader_it_does_not_know_gets_the_merged_value() -> None:
    torch.manual_seed(0)
    m = TokenNorm().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    gm, _, notes = trace_model(m, SHAPE)
    assert gm is not None and any("held with the batch" in s for s in notes), notes
    opt = brainslug.optimize(m, SHAPE)
    for batch in (1, 3):
        x = _inputs(batch)
        with torch.no_grad():
            ref, got, out = m(x), gm(x), opt(x)
        assert torch.equal(ref.nan_to_num(), got.nan_to_num())
        assert torch.equal(ref.isnan(), out.isnan())
        assert (out - ref).nan_to_num().abs().max() <= 1e-5 * max(
            1.0, ref.nan_to_num().abs().max().item())


class BatchScaled(nn.Module):
    """Sizes from the batch (never constants: `b // 4` is 0 at batch 1 and 2,
    1 at 4) next to sizes from the other dims (constants)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = F.pad(x, (0, 0, 0, (4 - w % 4) % 4))
        return y * (b // 4 + 1) + h


def test_sizes_that_follow_the_batch_stay_computed() -> None:
    m = BatchScaled().eval()
    gm = trace(m)
    assert fold_static_sizes(gm, [SHAPE]) > 0
    pads = [n for n in gm.graph.nodes if n.target is F.pad]
    assert pads and all(isinstance(v, int) for v in pads[0].args[1])
    assert any(n.target is getattr for n in gm.graph.nodes)  # (b stays a size)
    opt = brainslug.optimize(m, SHAPE)
    for batch in (1, 4, 9):
        x = _inputs(batch).nan_to_num()
        with torch.no_grad():
            assert torch.equal(gm(x), m(x))
            assert torch.equal(opt(x), m(x))


class MergedForALibrary(nn.Module):
    """A reader that needs the merged value (an LSTM over each row), after a
    permuted view: the merge is PyTorch's flatten of the batch with the rows
    (which copies), never a compiled one."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(C)
        self.rnn = nn.LSTM(C, 7, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.norm(x).permute(0, 2, 1, 3).flatten(0, 1)  # (B * W, H, C)
        return self.rnn(rows)[0].reshape(-1, W, H, 7) + 1.0


def test_a_flatten_of_the_batch_runs_in_pytorch() -> None:
    torch.manual_seed(0)
    m = MergedForALibrary().eval()
    opt = brainslug.optimize(m, SHAPE)
    assert "flatten merges the batch dimension with others" in brainslug.report(opt)
    for batch in (1, 3):
        x = _inputs(batch).nan_to_num()
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_saved_and_loaded(tmp_path: Path) -> None:
    """The rewritten graph's helpers (`attention`) are found again by name."""
    m = _model(True)
    opt = brainslug.optimize(m, SHAPE)
    path = tmp_path / "windows.bslug"
    brainslug.save(opt, path)
    loaded = brainslug.load(path)
    x = _inputs(2).nan_to_num()
    with torch.no_grad():
        assert torch.equal(loaded(x), opt(x))

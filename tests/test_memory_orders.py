"""Memory orders in the PyTorch frontend: every value is typed as PyTorch
stores it, so that a permute of a channels-last tensor is a row-major one (a
view, not a copy), and layer norm over its last dim runs compiled."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import brainslug.pytorch as brainslug
from brainslug.frontend_torch.kernel_module import StackKernel


class ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock in miniature: a depthwise conv, then in the
    permuted (row-major) order LayerNorm, Linear, GELU, Linear, then back to
    channels-last for a layer scale and the residual add."""

    def __init__(self, c: int = 19):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.ln = nn.LayerNorm(c, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.scale = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.ln(y))))
        return x + self.scale * torch.permute(y, (0, 3, 1, 2))


class LayerNorm2d(nn.LayerNorm):
    """timm's and torchvision's LayerNorm over C of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Stem(nn.Module):
    def __init__(self, c: int = 21):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.norm = LayerNorm2d(c)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def _kernels(opt: torch.nn.Module) -> list[StackKernel]:
    return [m for m in opt.modules() if isinstance(m, StackKernel)]


def _close_to_eager(m: nn.Module, opt: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref, out = m(x), opt(x)
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("batch", [1, 3])
def test_convnext_block_channels_last(batch: int) -> None:
    torch.manual_seed(0)
    m = ConvNeXtBlock().eval()
    opt = brainslug.optimize(m, [0, 19, 13, 11], conv="library")
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "ln: nn.layer_norm" in rep and "nn.gelu" in rep
    _close_to_eager(m, opt, torch.randn(batch, 19, 13, 11) * 2)


def test_kernels_take_views_without_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer norm kernel's input is the permuted conv output: row-major
    [N, H, W, C], read in place (the native run takes its pointer; a copy
    would need the checked call, kernel by kernel)."""
    from brainslug.frontend_torch import kernel_sequence

    torch.manual_seed(1)
    m = ConvNeXtBlock(c=23).eval()
    opt = brainslug.optimize(m, [0, 23, 9, 10], conv="library")
    x = torch.randn(2, 23, 9, 10)
    with torch.no_grad():
        opt(x)  # checked, kernel by kernel: prepares the native runs
        runs: list[bool] = []
        real = kernel_sequence._Prepared.__call__

        def spy(self, args):  # type: ignore[no-untyped-def]
            outs = real(self, args)
            runs.append(outs is not None)
            return outs

        monkeypatch.setattr(kernel_sequence._Prepared, "__call__", spy)
        monkeypatch.setattr(StackKernel, "forward",
                            lambda self, *a: pytest.fail(f"{self.stack_name} called alone"))
        got = opt(x)
    assert runs and all(runs), runs
    _close_to_eager(m, opt, x)
    assert torch.equal(got, opt(x))


@pytest.mark.parametrize("batch", [1, 2])
def test_layer_norm_2d_over_channels(batch: int) -> None:
    """LayerNorm2d: permute, layer_norm, permute of a channels-last tensor is
    a layer norm over C, compiled with no copy either way."""
    torch.manual_seed(2)
    m = Stem().eval()
    opt = brainslug.optimize(m, [0, 3, 15, 14], conv="library")
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    _close_to_eager(m, opt, torch.randn(batch, 3, 15, 14))


@pytest.mark.parametrize("d", [37, 197, 768])
def test_layer_norm_against_float64(d: int) -> None:
    """Compiled layer norm is as close to float64 as PyTorch's own (rows of
    odd lengths, a mean far from 0, NaN and Inf rows propagate)."""
    torch.manual_seed(3)
    m = nn.Sequential(nn.LayerNorm(d)).eval()
    with torch.no_grad():
        m[0].weight.uniform_(0.5, 1.5)
        m[0].bias.uniform_(-0.5, 0.5)
    opt = brainslug.optimize(m, [0, 13, d])
    assert "Fallbacks: none" in brainslug.report(opt)
    x = torch.randn(3, 13, d) * 3 + 5
    x[0, 1, 3] = float("nan")
    x[1, 2, 0] = float("inf")
    with torch.no_grad():
        ref, out = m(x), opt(x)
        r64 = m.double()(x.double())
        m.float()
    assert torch.equal(out.isnan(), ref.isnan())
    ok = ~ref.isnan()
    ours = (out[ok].double() - r64[ok]).abs().max().item()
    theirs = (ref[ok].double() - r64[ok]).abs().max().item()
    assert (out[ok] - ref[ok]).abs().max().item() <= 1e-5 * max(1.0, ref[ok].abs().max().item())
    assert ours <= 2 * theirs + 1e-7, (ours, theirs)


def test_layer_scale_parameter_broadcast() -> None:
    """A [C, 1, 1] parameter times a channels-last [N, C, H, W] tensor reads
    the parameter as [1, 1, 1, C] (a view of it), and follows its updates."""
    torch.manual_seed(4)
    m = ConvNeXtBlock(c=11).eval()
    opt = brainslug.optimize(m, [0, 11, 8, 9], conv="library")
    x = torch.randn(2, 11, 8, 9)
    with torch.no_grad():
        m.scale.mul_(-3.0)
        ref, out = m(x), opt(x)
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


class MixedOrders(nn.Module):
    """A product of a channels-last tensor and a transposed one: the transposed
    operand is read through a permuted map, in the stack."""

    def __init__(self, c: int = 13):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(3, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.a(x).transpose(2, 3) * self.b(x))
        return z.mean((2, 3))


@pytest.mark.parametrize("batch", [1, 3])
def test_operands_in_other_orders_are_permuted_in_the_stack(batch: int) -> None:
    torch.manual_seed(5)
    m = MixedOrders().eval()
    opt = brainslug.optimize(m, [0, 3, 11, 11], conv="library")
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "mul: nn.permute" in rep, rep
    _close_to_eager(m, opt, torch.randn(batch, 3, 11, 11))


class PermuteAcrossLibrary(nn.Module):
    """The permuted operand of an add comes from a layer norm whose stack the
    add can't join (a linear in PyTorch sits between): the permute must go with
    the add, not with the norm (it once joined the norm's stack and took the
    add's name, so the add's readers got the permuted norm)."""

    def __init__(self, c: int = 12):
        super().__init__()
        self.conv, self.ln, self.lin = nn.Conv2d(3, c, 3, padding=1), nn.LayerNorm(c), nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.ln(self.conv(x).permute(0, 2, 3, 1))
        s = self.lin(v.transpose(1, 2)).transpose(1, 2) + v
        return torch.relu(s) * 2


@pytest.mark.parametrize("batch", [1, 2])
def test_permute_stays_with_its_user(batch: int) -> None:
    torch.manual_seed(6)
    m = PermuteAcrossLibrary().eval()
    opt = brainslug.optimize(m, [0, 3, 9, 7], conv="library")
    rep = brainslug.report(opt)
    assert "add: nn.permute" in rep, rep
    stacks = {s.name: s.layers for s in opt.info.stacks}
    home = [n for n, layers in stacks.items() if "add: nn.permute" in layers]
    assert len(home) == 1 and "add: nn.add" in stacks[home[0]], stacks
    _close_to_eager(m, opt, torch.randn(batch, 3, 9, 7))


class ConvPlusTransposed(nn.Module):
    def __init__(self, c: int = 10):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(3, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.b(x)).transpose(2, 3)
        return self.a(x) + t


def test_compiled_conv_epilogue_leaves_a_permuted_operand_to_its_user() -> None:
    """A residual add whose other operand is permuted is not a compiled
    convolution's epilogue: the add and its permute form a stack of their own
    (the conv's chain once took the add and left the permute behind)."""
    torch.manual_seed(7)
    m = ConvPlusTransposed().eval()
    opt = brainslug.optimize(m, [0, 3, 9, 9], conv="brainslug")
    stacks = {s.name: s.layers for s in opt.info.stacks}
    home = [n for n, layers in stacks.items() if "add: nn.permute" in layers]
    assert len(home) == 1 and "add: nn.add" in stacks[home[0]], stacks
    for batch in (1, 2):
        x = torch.randn(batch, 3, 9, 9)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


class Scalars(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x * 0.3 + 1) * 2
        return 0.7 + 3 * y + y * -1.25


@pytest.mark.parametrize("batch", [1, 3])
def test_scalar_operands_compiled_exactly(batch: int) -> None:
    """x * c and x + c with Python numbers (either side) run compiled, as
    PyTorch computes them: in float32 with float32(c), bit for bit."""
    m = Scalars().eval()
    opt = brainslug.optimize(m, [0, 5, 13, 11])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    x = torch.randn(batch, 5, 13, 11) * 3
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    with torch.no_grad():
        ref, out = m(x), opt(x)
    assert torch.equal(ref.isnan(), out.isnan())
    ok = ~ref.isnan()
    assert torch.equal(out[ok], ref[ok])


class ChannelShuffle(nn.Module):
    """ShuffleNet's unit: a cat of two branches, the channel shuffle (view,
    transpose, contiguous, view), then a split into halves."""

    def __init__(self, c: int = 7):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([torch.relu(self.a(x)), self.bn(self.b(x))], 1)
        n, c, h, w = z.size()
        z = torch.transpose(z.view(n, 2, c // 2, h, w), 1, 2).contiguous()
        z = z.view(n, c, h, w)
        p, q = z.chunk(2, dim=1)
        return torch.cat([p, torch.relu(self.a(q))], 1)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_channel_shuffle_compiled(batch: int, layout: str) -> None:
    """view, transpose and contiguous of a channels-last (or row-major)
    tensor compile: views keep the data where it is, contiguous is the
    permute PyTorch's copy is."""
    torch.manual_seed(2)
    m = ChannelShuffle().eval()
    opt = brainslug.optimize(m, [0, 7, 11, 9], layout=layout)
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    _close_to_eager(m, opt, torch.randn(batch, 7, 11, 9))


class Reshapes(nn.Module):
    """A conv's channels-last output reshaped as a view (ViT's patch
    embedding), reshaped with a copy, flattened across non-adjacent dims, and
    a transposed sequence made contiguous."""

    def __init__(self, c: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))                     # [N, C, H, W] channels-last
        n, c, h, w = y.shape
        tokens = y.reshape(n, c, h * w).permute(0, 2, 1)  # a view: [N, HW, C]
        copied = y.reshape(n, c * h, w) + 1               # a copy in PyTorch
        flat = torch.flatten(y, 1)                        # (C, H, W) not adjacent
        seq = tokens.transpose(1, 2).contiguous() * 2    # [N, C, HW]
        return torch.cat([tokens.flatten(1), copied.flatten(1), flat, seq.flatten(1)], 1)


@pytest.mark.parametrize("batch", [1, 3])
def test_reshapes_of_channels_last_tensors(batch: int) -> None:
    torch.manual_seed(3)
    m = Reshapes().eval()
    opt = brainslug.optimize(m, [0, 3, 13, 11])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    x = torch.randn(batch, 3, 13, 11)
    with torch.no_grad():
        ref, out = m(x), opt(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


class SequenceFirst(nn.Module):
    """ViT's encoder block in miniature: a class token broadcast over the
    batch (stride 0), and attention whose output is stored sequence-first,
    added to the residual and normalised."""

    def __init__(self, d: int = 12):
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, d))
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 3, batch_first=True)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], 1)
        y = self.ln(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        return self.ln2(torch.relu(y) + x)


@pytest.mark.parametrize("batch", [1, 3])
def test_sequence_first_library_results(batch: int) -> None:
    """A PyTorch result stored with the batch inside is copied batch-first
    (PyTorch's contiguous) before the layers that BrainSlug compiles."""
    torch.manual_seed(4)
    m = SequenceFirst().eval()
    opt = brainslug.optimize(m, [0, 7, 12])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert "nn.layer_norm" in rep and "nn.add" in rep
    _close_to_eager(m, opt, torch.randn(batch, 7, 12))


def test_one_copy_per_sequence_first_result() -> None:
    """Only the attention's output is copied: the dropout and add after the
    copy see the batch outermost, and the residual add and the norm after it
    are one stack (before, every layer after attention got its own copy)."""
    from torchvision.models.vision_transformer import EncoderBlock

    torch.manual_seed(5)
    m = nn.Sequential(EncoderBlock(4, 48, 96, 0.0, 0.0), EncoderBlock(4, 48, 96, 0.0, 0.0)).eval()
    opt = brainslug.optimize(m, [0, 37, 48])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    assert rep.count("method:contiguous") == 2, rep  # one per attention output
    assert re.search(r"add\w*: nn.add, \w*ln_2: nn.layer_norm", rep), rep
    for batch in (1, 3):
        _close_to_eager(m, opt, torch.randn(batch, 37, 48))


def test_swin_patch_merging() -> None:
    from torchvision.models.swin_transformer import PatchMerging

    torch.manual_seed(5)
    m = PatchMerging(5).eval()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.uniform_(-0.5, 0.5)
    opt = brainslug.optimize(m, [0, 6, 10, 5])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep, rep
    for batch in (1, 3):
        x = torch.randn(batch, 6, 10, 5)
        with torch.no_grad():
            ref, out = m(x), opt(x)
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    # odd H or W: a zero row or column padded first, as PyTorch does
    for shape in ([7, 10, 5], [6, 9, 5], [7, 9, 5]):
        opt = brainslug.optimize(m, [0, *shape])
        assert "Fallbacks: none" in brainslug.report(opt)
        for batch in (1, 3):
            x = torch.randn(batch, *shape)
            x[0, -1, -1, 0] = float("nan")  # the last row and column reach the output
            with torch.no_grad():
                ref, out = m(x), opt(x)
            assert torch.equal(out.isnan(), ref.isnan())
            ok = ~ref.isnan()
            assert (out[ok] - ref[ok]).abs().max().item() <= \
                1e-5 * max(1.0, ref[ok].abs().max().item())


class GatheredBias(nn.Module):
    """MaxViT's relative position bias: a table gathered by a fixed index."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(10, 5))
        self.register_buffer("index", torch.tensor([3, 1, 4, 1, 5, 9, 2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.table[self.index])


def test_layers_of_parameters_alone_are_not_fallbacks() -> None:
    """A layer computed from parameters alone (no activation reaches it) runs
    in PyTorch as a library call, and follows weight changes."""
    m = GatheredBias().eval()
    opt = brainslug.optimize(m, [0, 7, 5])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep and "nn.relu" in rep, rep
    for batch in (1, 3):
        x = torch.randn(batch, 7, 5)
        with torch.no_grad():
            assert torch.equal(opt(x), m(x))
            m.table.mul_(-2)
            assert torch.equal(opt(x), m(x))


class SubDiv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(5, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - 0.25) / self.scale        # by a parameter, broadcast
        z = 1.5 - torch.relu(y)            # a number minus a tensor
        return torch.div(z, x * x + 1) - y


@pytest.mark.parametrize("batch", [1, 3])
def test_sub_and_div_bit_for_bit(batch: int) -> None:
    """sub (tensors and numbers) and div (of tensors) compile as IEEE
    operations: bit for bit with PyTorch, NaN and Inf included."""
    m = SubDiv().eval()
    opt = brainslug.optimize(m, [0, 5, 13, 11])
    rep = brainslug.report(opt)
    assert "Fallbacks: none" in rep and "nn.div" in rep and "nn.sub" in rep, rep
    x = torch.randn(batch, 5, 13, 11) * 3
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    with torch.no_grad():
        ref, out = m(x), opt(x)
    assert torch.equal(ref.isnan(), out.isnan())
    ok = ~ref.isnan()
    assert torch.equal(out[ok], ref[ok])


class FourierPositions(nn.Module):
    """timm's PositionalEncodingFourier (EdgeNeXt, XCiT): sin/cos features of
    the grid position, computed from the input's shape alone, projected and
    added to the tokens. At W = hidden_dim = 32 a channels-last plan once
    confused the two equal extents and was wrong by up to 2 (issue 13)."""

    def __init__(self, hidden_dim: int = 32, dim: int = 24) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.hidden_dim = hidden_dim

    def positions(self, shape: tuple[int, int, int]) -> torch.Tensor:
        inv_mask = ~torch.zeros(shape).to(dtype=torch.bool)
        y_embed = inv_mask.cumsum(1, dtype=torch.float32)
        x_embed = inv_mask.cumsum(2, dtype=torch.float32)
        y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * (2 * math.pi)
        x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * (2 * math.pi)
        dim_t = torch.arange(self.hidden_dim, dtype=torch.int64).to(torch.float32)
        dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden_dim)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4)
        pos = torch.cat((pos_y.flatten(3), pos_x.flatten(3)), dim=3).permute(0, 3, 1, 2)
        return self.token_projection(pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, h * w).permute(0, 2, 1)
        pos = self.positions((b, h, w)).reshape(b, -1, h * w).permute(0, 2, 1)
        return torch.relu(tokens + pos) * 0.5 + x.mean((2, 3))[:, None, :]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_fourier_positions_at_equal_extents(layout: str) -> None:
    torch.manual_seed(6)
    m = FourierPositions().eval()
    opt = brainslug.optimize(m, [0, 3, 32, 32], layout=layout, conv="library")
    assert "flatten: nn.flatten" in brainslug.report(opt)  # (sin, cos and stack stay PyTorch's)
    for batch in (1, 3):
        _close_to_eager(m, opt, torch.randn(batch, 3, 32, 32))

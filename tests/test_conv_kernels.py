"""Convolutions compiled by BrainSlug (`optimize(..., conv="brainslug")`): every
kernel kind against float64 and against the library, the fused epilogues,
NaN/Inf, weight changes, and the option's checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import brainslug.pytorch as brainslug
from brainslug.plan.report import ConvChoice

# name: (Cin, Cout, k, stride, pad, dilation, groups); channel counts are not
# multiples of 16, the maps (13x13) not multiples of the register block
KINDS = {
    "pointwise": (37, 53, 1, 1, 0, 1, 1),
    "3x3": (37, 53, 3, 1, 1, 1, 1),
    "3x3/2": (37, 53, 3, 2, 1, 1, 1),
    "7x7/2 stem": (3, 29, 7, 2, 3, 1, 1),
    "dilated": (21, 19, 3, 1, 2, 2, 1),
    "grouped": (36, 52, 3, 1, 1, 1, 4),
    # groups of whole vectors: blocks of channels within a group broadcast
    # its input (32 outputs per group: V = 2; 16 per group, stride 2: V = 1)
    "grouped, 32 per group": (63, 96, 3, 1, 1, 1, 3),
    "grouped/2, 16 per group": (45, 80, 3, 2, 1, 1, 5),
    "depthwise 3x3": (37, 37, 3, 1, 1, 1, 37),
    "depthwise 3x3/2": (37, 37, 3, 2, 1, 1, 37),
    "depthwise 5x5": (37, 37, 5, 1, 2, 1, 37),
    "many channels": (37, 150, 1, 1, 0, 1, 1),
    # channel sums whose weights exceed the L1 chunk (and `SMALL_L2`):
    # bs-block-reduction
    "chunked pointwise": (576, 128, 1, 1, 0, 1, 1),
    # chunks of 128 channels and a last one of the 44 left
    "chunked pointwise, short last chunk": (300, 77, 1, 1, 0, 1, 1),
    "chunked 3x3": (96, 13, 3, 1, 1, 1, 1),
    # chunks of one row of taps and 75 channels, two per row (a whole sum of
    # 96 channels was 2-3 times less accurate than oneDNN's)
    "chunked 3x3, 64 outputs": (150, 64, 3, 1, 1, 1, 1),
    # each block's weights fit, all of them do not: blocks outside the pixels
    "blocked pointwise": (128, 520, 1, 1, 0, 1, 1),
    # groups of 64 inputs and outputs: each group's sum in chunks of one row
    # of taps
    "chunked grouped 3x3": (128, 128, 3, 1, 1, 1, 2),
}


SMALL_L2 = 64 * 1024
"""The L2 that the chunked kinds' tests give bs-block-reduction: all their
weights exceed it (on the machine's own L2 they would stay whole sums)."""


def small_l2(kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """For the chunked and blocked kinds: an L2 their weights exceed, and a
    kernel cache of their own (the plan cache does not key the L2)."""
    if kind.startswith(("chunked", "blocked")):
        monkeypatch.setattr("brainslug.pipeline.default.l2_cache_bytes", lambda: SMALL_L2)
        monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path / "small-l2"))


def random_bn(bn: nn.BatchNorm2d, seed: int = 0) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
        bn.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g) * 0.3)
    return bn


def compiled_convs(opt: nn.Module) -> int:
    """Convolutions inside compiled stacks, from the report's stack list."""
    return sum(1 for s in opt.info.stacks if s.compiled for layer in s.layers
               if layer.endswith("nn.conv2d"))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def assert_as_accurate_as_the_library(model: nn.Module, opt: nn.Module, ci: int, side: int,
                                      kind: str) -> None:
    """At batch 1 and 3: `opt`'s max error against float64 is at most 1.5 times
    the library's, and it is within 1e-5 (relative) of the library."""
    m64 = copy.deepcopy(model).double()
    for batch in (1, 3):
        x = torch.randn(batch, ci, side, side)
        with torch.no_grad():
            ref = m64(x.double())
            lib = model(channels_last(x)).double()
            got = opt(x).double()
        e_lib, e_bs = (lib - ref).abs().max().item(), (got - ref).abs().max().item()
        assert e_bs <= 1.5 * e_lib + 1e-7 * ref.abs().max().item(), (kind, batch, e_bs, e_lib)
        assert (got - lib).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def assert_same_bits(a: nn.Module, b: nn.Module, ci: int, side: int) -> None:
    """At batch 1 and 3, with a NaN and an Inf in the input: `a` and `b` give
    the same bits (two lowerings that sum the same products in the same order)."""
    for batch in (1, 3):
        x = torch.randn(batch, ci, side, side)
        x[0, 1, 2, 3] = float("nan")
        x[-1, 2, 0, 1] = float("inf")
        with torch.no_grad():
            got, want = a(x), b(x)
        assert torch.allclose(got, want, rtol=0, atol=0, equal_nan=True), batch


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_as_accurate_as_the_library(kind: str, monkeypatch, tmp_path) -> None:
    small_l2(kind, monkeypatch, tmp_path)
    ci, co, k, s, p, d, g = KINDS[kind]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(ci, co, k, s, p, d, g), random_bn(nn.BatchNorm2d(co)),
                          nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, ci, 13, 13], conv="brainslug")
    assert compiled_convs(opt) == 1 and not opt.info.library, brainslug.report(opt)
    assert_as_accurate_as_the_library(model, opt, ci, 13, kind)


@pytest.mark.parametrize("kind", ["chunked pointwise", "chunked pointwise, short last chunk",
                                  "chunked 3x3", "chunked 3x3, 64 outputs",
                                  "blocked pointwise", "chunked grouped 3x3"])
def test_chunked_channel_sums_take_the_blocked_path(kind: str, monkeypatch, tmp_path) -> None:
    """The chunked kinds above do run through bs-block-reduction (else their
    accuracy test would not test it), and agree with one long sum."""
    from brainslug.passes import block_reduction

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))  # compile, don't reuse
    small_l2(kind, monkeypatch, tmp_path)

    seen: list[str] = []
    shape = block_reduction.BlockReduction.shape

    def spy(self, nest):  # type: ignore[no-untyped-def]
        found = shape(self, nest)
        if found is not None:
            seen.append(f"{found.chunks} chunks of {found.chunk}, the last of {found.last}, "
                        f"{found.tap_rows} rows of taps")
        return found

    monkeypatch.setattr(block_reduction.BlockReduction, "shape", spy)
    ci, co, k, s, p, d, g = KINDS[kind]
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(ci, co, k, s, p, d, g)).eval()
    opt = brainslug.optimize(model, [0, ci, 13, 13], conv="brainslug")
    assert seen, "the channel sum was not chunked"
    if k > 1:  # a sum over taps: each chunk one row of taps (`tap_row_chunk`)
        assert all(text.endswith(f"{k} rows of taps") for text in seen), seen
    monkeypatch.setattr(block_reduction.BlockReduction, "shape", lambda self, nest: None)
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path / "whole"))
    whole = brainslug.optimize(copy.deepcopy(model), [0, ci, 13, 13], conv="brainslug")
    x = torch.randn(2, ci, 13, 13)
    with torch.no_grad():
        got, ref = opt(x), whole(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item()), seen


@pytest.mark.parametrize("kind, broadcast", [("grouped, 32 per group", True),
                                             ("grouped/2, 16 per group", True),
                                             ("chunked grouped 3x3", True),
                                             ("grouped", False)])
def test_groups_of_whole_vectors_broadcast_their_input(kind: str, broadcast: bool, monkeypatch,
                                                       tmp_path) -> None:
    """A grouped convolution whose groups hold whole vectors of output
    channels reads its input as one broadcast per block of channels (13
    channels per group stay a gather); its results match PyTorch's
    channels-last convolution, NaN and Inf included, at batch 1 and 3."""
    from brainslug.passes import register_tile

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))  # compile, don't reuse
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "1")  # (the spy sees the pass)
    groups_seen: list[int] = []
    real = register_tile.broadcast_group_loads

    def spy(lp, group, block, cb):  # type: ignore[no-untyped-def]
        groups_seen.append(group)
        real(lp, group, block, cb)

    monkeypatch.setattr(register_tile, "broadcast_group_loads", spy)
    ci, co, k, s, p, d, g = KINDS[kind]
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(ci, co, k, s, p, d, g), random_bn(nn.BatchNorm2d(co)),
                          nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, ci, 15, 15], conv="brainslug")
    assert compiled_convs(opt) == 1 and not opt.info.library, brainslug.report(opt)
    assert groups_seen == ([co // g] * len(groups_seen) if broadcast else []) and (
        bool(groups_seen) == broadcast), groups_seen
    for batch in (1, 3):
        x = torch.randn(batch, ci, 15, 15)
        x[0, ci - 1, 7, 7] = float("nan")
        x[-1, 0, 0, 14] = float("inf")
        with torch.no_grad():
            ref, got = model(channels_last(x)), opt(x)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
        assert torch.equal(got.isnan(), ref.isnan()) and torch.equal(got.isinf(), ref.isinf())


def test_weights_that_fit_l2_stay_one_sum(monkeypatch, tmp_path) -> None:
    """A channel sum whose weights all fit the core's L2 is not chunked (the
    chunked pointwise kind's 288 KiB, with a 1 MiB L2), and is as accurate."""
    from brainslug.passes import block_reduction

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("brainslug.pipeline.default.l2_cache_bytes", lambda: 1 << 20)
    seen: list[object] = []
    shape = block_reduction.BlockReduction.shape
    monkeypatch.setattr(block_reduction.BlockReduction, "shape",
                        lambda self, nest: seen.append(shape(self, nest)) or seen[-1])
    ci, co, k, s, p, d, g = KINDS["chunked pointwise"]
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(ci, co, k, s, p, d, g), random_bn(nn.BatchNorm2d(co))).eval()
    opt = brainslug.optimize(model, [0, ci, 13, 13], conv="brainslug")
    assert seen and not any(seen), seen
    m64 = copy.deepcopy(model).double()
    x = torch.randn(3, ci, 13, 13)
    with torch.no_grad():
        ref, lib, got = m64(x.double()), model(channels_last(x)).double(), opt(x).double()
    assert (got - ref).abs().max() <= 1.5 * (lib - ref).abs().max() + 1e-7 * ref.abs().max()


class Epilogues(nn.Module):
    """Each convolution with a different epilogue: BN+hardswish, SiLU, ReLU6,
    no bias with a residual add and ReLU, and BN then an add of a second input."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(5, 21, 3, padding=1)
        self.b1 = random_bn(nn.BatchNorm2d(21), 1)
        self.c2 = nn.Conv2d(21, 21, 1)
        self.c3 = nn.Conv2d(21, 21, 3, padding=1, groups=21)
        self.c4 = nn.Conv2d(21, 21, 3, padding=1, bias=False)
        self.c5 = nn.Conv2d(21, 21, 1)
        self.b5 = random_bn(nn.BatchNorm2d(21), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = nn.functional.hardswish(self.b1(self.c1(x)))
        b = nn.functional.silu(self.c2(a))
        c = nn.functional.relu6(self.c3(b))
        d = torch.relu(self.c4(c) + b)
        return self.b5(self.c5(d)) + a


def test_fused_epilogues_match_eager() -> None:
    torch.manual_seed(1)
    model = Epilogues().eval()
    opt = brainslug.optimize(model, [0, 5, 11, 11], conv="brainslug")
    assert compiled_convs(opt) == 5
    layers = [s.layers for s in opt.info.stacks if s.compiled]
    assert any(any("add" in x for x in ls) and any("conv2d" in x for x in ls) for ls in layers)
    for batch in (1, 3):
        x = torch.randn(batch, 5, 11, 11)
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_nan_and_inf_propagate_as_in_pytorch() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(7, 19, 3, padding=1), random_bn(nn.BatchNorm2d(19)),
                          nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, 7, 9, 9], conv="brainslug")
    x = torch.randn(2, 7, 9, 9)
    x[0, 3, 4, 4] = float("nan")
    x[1, 0, 0, 8] = float("inf")
    x[1, 5, 7, 1] = float("-inf")
    with torch.no_grad():
        ref, got = model(channels_last(x)), opt(x)
    assert torch.equal(torch.isnan(ref), torch.isnan(got))
    assert torch.isnan(got).any()
    assert torch.equal(torch.isinf(ref), torch.isinf(got))
    fin = torch.isfinite(ref)
    assert (got[fin] - ref[fin]).abs().max().item() <= 1e-5 * max(1.0, ref[fin].abs().max().item())


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(2, 2),
                                  nn.MaxPool2d(3, 2, ceil_mode=True)],
                         ids=["3x3s2p1", "2x2s2", "3x3s2ceil"])
def test_a_max_pool_ends_the_convolutions_stack(pool: nn.MaxPool2d) -> None:
    """ResNet's stem (7×7/2, BN, ReLU, 3×3/2 max pool) and VGG's 2×2 pool: one
    stack, the pool over the convolution's tiles in cache. 37 channels, odd
    rows and columns, a NaN that must win its windows, an Inf, batch 1 and 3."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 37, 7, 2, 3, bias=False), random_bn(nn.BatchNorm2d(37)),
                          nn.ReLU(), pool, nn.Conv2d(37, 5, 1)).eval()
    opt = brainslug.optimize(model, [0, 3, 45, 39], conv="brainslug")
    assert any(any("max_pool2d" in x for x in s.layers) and any("conv2d" in x for x in s.layers)
               for s in opt.info.stacks if s.compiled)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 45, 39)
        x[0, 1, 20, 17] = float("nan")
        x[-1, 2, 44, 38] = float("inf")
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert torch.isnan(got).any()
        assert torch.equal(torch.isnan(ref), torch.isnan(got))
        fin = torch.isfinite(ref)
        assert (got[fin] - ref[fin]).abs().max().item() <= 1e-5 * max(
            1.0, ref[fin].abs().max().item())


def test_weight_changes_are_repacked() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(6, 17, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(17, 9, 1)).eval()
    opt = brainslug.optimize(model, [0, 6, 10, 10], conv="brainslug")
    assert compiled_convs(opt) == 2
    x = torch.randn(2, 6, 10, 10)

    def check() -> None:
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())

    check()
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # in place: _version changes
    check()
    state = {k: v + 0.25 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    check()
    with torch.no_grad():
        model[2].weight.data[0, 0] += 3.0  # through .data: the fingerprint sees it
        model[2].weight.data.mul_(0.5)
    check()


def test_conv_option_is_checked() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    with pytest.raises(ValueError, match="conv must be one of"):
        brainslug.optimize(model, [0, 3, 8, 8], conv="fast")
    with pytest.raises(ValueError, match="channels-last"):
        brainslug.optimize(model, [0, 3, 8, 8], conv="brainslug", layout="NCHW")
    with pytest.raises(ValueError, match="fold_batchnorm"):
        brainslug.optimize(model, [0, 3, 8, 8], conv="brainslug", fold_batchnorm=True)


def test_library_mode_keeps_convolutions_in_the_library() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, 3, 12, 12], conv="library")
    assert compiled_convs(opt) == 0
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(opt(x), model(channels_last(x)))


def test_auto_times_each_convolution_and_caches_the_choice(monkeypatch, tmp_path) -> None:
    from brainslug.frontend_torch import conv_choice

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BRAINSLUG_CACHE", raising=False)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), random_bn(nn.BatchNorm2d(24)),
                          nn.ReLU(), nn.Conv2d(24, 40, 1), random_bn(nn.BatchNorm2d(40), 1),
                          nn.Hardswish(), nn.Conv2d(40, 8, 1)).eval()
    calls = []
    measure = conv_choice._measure
    monkeypatch.setattr(conv_choice, "_measure", lambda *a: calls.append(1) or measure(*a))
    opt = brainslug.optimize(model, [0, 3, 15, 15])  # conv="auto" is the default
    assert len(calls) == 1 and len(opt.info.convs) == 3
    timed = [c for c in opt.info.convs if c.brainslug_ms is not None]
    assert len(timed) == 3  # the last one too, which has no epilogue pass to save
    for c, favor in zip(timed, [conv_choice.EPILOGUE_FAVOR_RATIO] * 2
                        + [conv_choice.BARE_FAVOR_RATIO], strict=True):
        assert c.runs in ("brainslug", "library") and c.brainslug_ms > 0 and c.library_ms > 0
        if c.more is None:  # decided at batch 1 alone
            ratio = c.library_ms * favor + conv_choice.FAVOR_SECONDS * 1e3
            assert abs(math.log(ratio / c.brainslug_ms)) > math.log(conv_choice.DECISIVE)
            continue
        (batch, bs, lib), = c.more  # the batch is free: timed at batch 1 and 8
        assert batch == 8 and bs > 0 and lib > 0
    ours = {c.node for c in opt.info.convs if c.runs == "brainslug"}
    assert compiled_convs(opt) == len(ours)
    text = brainslug.report(opt)
    assert "Convolutions and linear layers: " in text
    for c in opt.info.convs:
        assert f"{c.runs} " in text
    assert ("at batch 8: " in text) == any(c.more for c in timed)
    x = torch.randn(3, 3, 15, 15)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    again = brainslug.optimize(model, [0, 3, 15, 15])  # the choices come from the cache
    assert len(calls) == 1 and [c.runs for c in again.info.convs] == [
        c.runs for c in opt.info.convs]


def test_auto_falls_back_to_the_library_when_timing_fails(monkeypatch) -> None:
    from brainslug.frontend_torch import conv_choice

    def broken(*args: object) -> None:
        raise RuntimeError("trial plan broke")

    monkeypatch.setattr(conv_choice, "_measure", broken)
    monkeypatch.setenv("BRAINSLUG_STRICT", "0")
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), random_bn(nn.BatchNorm2d(8)), nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, 3, 12, 12])
    assert compiled_convs(opt) == 0 and opt.plan is not None
    assert any("could not time the convolutions" in n for n in opt.info.notes)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert (opt(x) - model(x)).abs().max().item() <= 1e-5


def test_auto_weighs_the_batch_sizes_and_a_fixed_cost() -> None:
    from brainslug.frontend_torch.conv_choice import (
        EPILOGUE_FAVOR_RATIO,
        FAVOR_RATIO,
        FAVOR_SECONDS,
        _brainslug_wins,
    )

    ms = 1e-3
    bare = ("nn.conv2d", "nn.add")  # oneDNN's post-op takes the add: no pass of its own
    # a quarter slower on a large convolution loses (the old ratio let it win)
    assert not _brainslug_wins([(1, 1.25 * ms, 1.0 * ms)], bare)
    assert _brainslug_wins([(1, 1.0 * ms, 1.0 * ms)], bare)
    # a small one wins within the epilogue stack's fixed cost
    assert _brainslug_wins([(1, 30e-6 * FAVOR_RATIO + 0.9 * FAVOR_SECONDS, 30e-6)], bare)
    assert not _brainslug_wins([(1, 2 * (30e-6 * FAVOR_RATIO + FAVOR_SECONDS), 30e-6)], bare)
    # slower at batch 1 by 1.26x, 2.5x faster at batch 8: the kernel runs
    assert _brainslug_wins([(1, 0.30 * ms, 0.238 * ms), (8, 1.0 * ms, 2.5 * ms)], bare)
    assert not _brainslug_wins([(1, 0.30 * ms, 0.238 * ms), (8, 2.4 * ms, 2.3 * ms)], bare)
    # where the library plan needs a pass for the epilogue, the larger favor
    passes = ("nn.conv2d", "nn.batch_norm", "nn.relu")
    assert _brainslug_wins([(1, 1.25 * ms, 1.0 * ms)], passes)
    assert not _brainslug_wins([(1, 1.02 * EPILOGUE_FAVOR_RATIO * ms, 1.0 * ms)], passes)
    # with no epilogue at all (DenseNet's 3x3 before a cat), a favor between the two
    alone = ("nn.conv2d",)
    assert _brainslug_wins([(1, 1.15 * ms, 1.0 * ms)], alone)
    assert not _brainslug_wins([(1, 1.25 * ms, 1.0 * ms)], alone)


def test_auto_measures_a_loss_twice(monkeypatch, tmp_path) -> None:
    """A kernel the plan already compiled goes back to the library only if it
    loses on both measurements, each side keeping its lower time: a noisy
    first loss is not a second compile of the plan."""
    from brainslug.frontend_torch import conv_choice

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    rounds = iter([{"brainslug": 1.5e-3, "library": 1.0e-3},   # a loss (noise)
                   {"brainslug": 0.95e-3, "library": 1.1e-3}])  # then a win
    calls = []

    def fake(candidates, x, rounds_=7, warmup=1, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        return next(rounds)

    monkeypatch.setattr(conv_choice, "medians", fake)
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), random_bn(nn.BatchNorm2d(24)),
                          nn.ReLU()).eval()
    opt = brainslug.optimize(model, [2, 3, 15, 15])  # one batch size
    (c,) = opt.info.convs
    assert len(calls) == 2 and c.runs == "brainslug"
    assert c.brainslug_ms == pytest.approx(0.95) and c.library_ms == pytest.approx(1.0)
    assert compiled_convs(opt) == 1


def test_auto_skips_the_larger_batch_only_where_batch_1_decides() -> None:
    from brainslug.frontend_torch.conv_choice import BARE_FAVOR_RATIO, DECISIVE, _decided

    ms = 1e-3
    bare = ("nn.conv2d",)
    favored = 1.0 * ms * BARE_FAVOR_RATIO  # (the fixed favor is negligible at 1 ms)
    assert _decided([(1, favored / (DECISIVE * 1.02), 1.0 * ms)], bare)  # ours far faster
    assert _decided([(1, favored * DECISIVE * 1.02, 1.0 * ms)], bare)  # the library's
    assert not _decided([(1, favored * 1.26, 1.0 * ms)], bare)  # mobilenet_v2's dw 3x3/2
    assert not _decided([(1, favored / 1.2, 1.0 * ms)], bare)


def test_auto_times_a_fixed_batch_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), random_bn(nn.BatchNorm2d(24)),
                          nn.ReLU()).eval()
    opt = brainslug.optimize(model, [2, 3, 15, 15])
    (c,) = opt.info.convs
    assert c.brainslug_ms is not None and c.more is None
    x = torch.randn(2, 3, 15, 15)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_auto_times_the_library_side_on_each_batch_sizes_own_residual(monkeypatch,
                                                                       tmp_path) -> None:
    """At batch 8 the library side adds the batch-8 residual (a batch-1 one
    would broadcast, and time less work)."""
    from brainslug.frontend_torch import conv_choice

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn0 = random_bn(nn.BatchNorm2d(24))
            self.conv = nn.Conv2d(24, 24, 3, padding=1)
            self.bn = random_bn(nn.BatchNorm2d(24))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn0(x))
            return torch.relu(self.bn(self.conv(h)) + x)

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    batches = []
    library_call = conv_choice._library_call

    def recorded(conv, args, ops):
        batches.append(tuple(a.shape[0] for a in args))
        return library_call(conv, args, ops)

    monkeypatch.setattr(conv_choice, "_library_call", recorded)
    monkeypatch.setattr(conv_choice, "DECISIVE", math.inf)  # (time batch 8 however 1 went)
    torch.manual_seed(6)
    model = Block().eval()
    opt = brainslug.optimize(model, [0, 24, 11, 13])
    # the input and the residual, per batch size timed (twice where ours lost)
    assert batches[:2] == [(1, 1), (8, 8)] and set(batches) == {(1, 1), (8, 8)}
    x = torch.randn(3, 24, 11, 13)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_auto_times_on_inputs_stored_as_the_kernel_reads_them(monkeypatch, tmp_path) -> None:
    """conv='auto' times each kernel on random activations of its own shapes
    (the input and a residual, at batch 1 and 8), channels-last and dense, so
    that the kernel takes its pointer path (no conversion timed), without
    running the trial plan."""
    from brainslug.frontend_torch import conv_choice

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn0 = random_bn(nn.BatchNorm2d(19))
            self.conv = nn.Conv2d(19, 19, 3, padding=1)
            self.bn = random_bn(nn.BatchNorm2d(19))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.bn(self.conv(torch.relu(self.bn0(x)))) + x)

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    made = []
    timing_inputs = conv_choice.timing_inputs

    def recorded(kernel, batch, pool):
        args = timing_inputs(kernel, batch, pool)
        made.append((batch, [tuple(a.shape) for a in args],
                     all(a.is_contiguous(memory_format=torch.channels_last) for a in args)
                     and args[0].data_ptr() != args[1].data_ptr(),
                     args[0].abs().min().item() != args[0].abs().max().item()))
        return args

    monkeypatch.setattr(conv_choice, "timing_inputs", recorded)
    monkeypatch.setattr(conv_choice, "DECISIVE", math.inf)  # (time batch 8 however 1 went)
    torch.manual_seed(7)
    model = Block().eval()
    opt = brainslug.optimize(model, [0, 19, 11, 13])
    assert made == [(1, [(1, 19, 11, 13)] * 2, True, True),
                    (8, [(8, 19, 11, 13)] * 2, True, True)]
    (choice,) = opt.info.convs
    assert choice.brainslug_ms > 0 and choice.library_ms > 0
    monkeypatch.undo()
    x = torch.randn(3, 19, 11, 13)
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("out_channels", [64, 37])
def test_gelu_epilogue_of_a_register_block_matches_eager(out_channels: int) -> None:
    """oneDNN's GELU erf in a register block's epilogue (4 vectors of 16 lanes:
    its table lookups are one vpermi2ps per 16 lanes, joined again), on outputs
    across the table's ranges, with NaN and Inf."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(9, out_channels, 1), nn.GELU()).eval()
    with torch.no_grad():
        model[0].weight.mul_(6.0)
    opt = brainslug.optimize(model, [0, 9, 5, 13], conv="brainslug")
    assert compiled_convs(opt) == 1
    for batch in (1, 3):
        x = torch.randn(batch, 9, 5, 13) * 2
        x[0, 2, 1, 3] = float("nan")
        x[-1, 4, 4, 12] = float("inf")
        with torch.no_grad():
            ref, got = model(x), opt(x)  # (oneDNN's GELU: NCHW, as the user calls it)
        assert ref[torch.isfinite(ref)].abs().max() > 8  # past the table's last range
        assert torch.equal(torch.isnan(ref), torch.isnan(got)) and torch.isnan(got).any()
        fin = torch.isfinite(ref)
        assert (got[fin] - ref[fin]).abs().max().item() <= 1e-5 * ref[fin].abs().max().item()


def test_auto_times_a_scale_prologue_against_its_own_pass(monkeypatch, tmp_path) -> None:
    """A squeeze-excite scale before the project convolution is that kernel's
    prologue in the trial plan as in the final one (so the final plan reuses
    the kernel timed). The library side is timed with the scale's pass, the
    convolution and the residual of each batch size, told apart by shape."""
    from brainslug.frontend_torch import conv_choice

    class Excite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn0 = random_bn(nn.BatchNorm2d(40), seed=1)
            self.fc1, self.fc2 = nn.Conv2d(40, 10, 1), nn.Conv2d(10, 40, 1)
            self.project = nn.Conv2d(40, 24, 1, bias=False)
            self.bn = random_bn(nn.BatchNorm2d(24), seed=2)

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            h = F.silu(self.bn0(x))
            s = torch.sigmoid(self.fc2(F.silu(self.fc1(F.adaptive_avg_pool2d(h, 1)))))
            return self.bn(self.project(s * h)) + r

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    seen = []
    library_call = conv_choice._library_call

    def recorded(conv, args, ops):
        seen.append((ops, [tuple(a.shape) for a in args]))
        return library_call(conv, args, ops)

    monkeypatch.setattr(conv_choice, "_library_call", recorded)
    monkeypatch.setattr(conv_choice, "DECISIVE", math.inf)  # (time batch 8 however 1 went)
    torch.manual_seed(8)
    model = Excite().eval()
    opt = brainslug.optimize(model, [[0, 40, 13, 11], [0, 24, 13, 11]])
    (ops, shapes), _, *again = seen  # (measured again where ours lost)
    assert len(again) in (0, 2)
    assert ops[:2] == ("nn.mul", "nn.conv2d") and ops[-1] == "nn.add"
    assert sorted(shapes) == [(1, 24, 13, 11), (1, 40, 1, 1), (1, 40, 13, 11)]
    project = next(c for c in opt.info.convs if "project" in c.node)
    assert project.brainslug_ms > 0 and project.library_ms > 0
    monkeypatch.undo()
    for batch in (1, 3):
        x, r = torch.randn(batch, 40, 13, 11), torch.randn(batch, 24, 13, 11)
        with torch.no_grad():
            ref, got = model(x, r), opt(x, r)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_a_family_of_convolutions_follows_its_timed_members(monkeypatch, tmp_path) -> None:
    """Convolutions that differ only in their input channels (DenseNet's 1×1
    ones in a dense block) are a family: the fewest, middle and most channels
    are timed, and the others take the choice of the two that enclose them
    where those agree, else the library."""
    from brainslug.frontend_torch.conv_choice import _as_family, _followers

    class Growing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(8 * (k + 1), 24, 1, bias=False)
                                       for k in range(5))
            self.bns = nn.ModuleList(random_bn(nn.BatchNorm2d(24), k) for k in range(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pairs = enumerate(zip(self.convs, self.bns, strict=True))
            return torch.cat([torch.relu(bn(conv(x[:, :8 * (k + 1)] * 1.5)))
                              for k, (conv, bn) in pairs], 1)

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    torch.manual_seed(10)
    model = Growing().eval()
    opt = brainslug.optimize(model, [0, 40, 13, 11])
    by = {c.node: c for c in opt.info.convs}
    timed = sorted(n for n, c in by.items() if c.brainslug_ms is not None)
    assert timed == ["convs_0", "convs_2", "convs_4"], by
    for node, (lo, hi) in (("convs_1", ("convs_0", "convs_2")),
                           ("convs_3", ("convs_2", "convs_4"))):
        c = by[node]
        assert c.brainslug_ms is None, c
        if by[lo].runs == by[hi].runs:
            assert c.runs == by[lo].runs and c.why.startswith(f"as {lo} and {hi}"), c
        else:
            assert c.runs == "library", c
    for batch in (1, 3):
        x = torch.randn(batch, 40, 13, 11)
        with torch.no_grad():
            ref, got = model(x), opt(x)
        assert (got - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    # the enclosing members decide; where they disagree, the library runs it
    members = [(8 * (k + 1), f"c{k}") for k in (4, 0, 3, 1, 2)]
    assert _followers(members) == {"c1": ("c0", "c2"), "c3": ("c2", "c4")}
    assert _followers(members[:3]) == {}
    chosen = [ConvChoice("c0", "brainslug"), ConvChoice("c2", "brainslug"),
              ConvChoice("c4", "library")]
    got = {c.node: c.runs for c in _as_family(_followers(members), chosen)}
    assert got == {"c1": "brainslug", "c3": "library"}


def test_pointwise_weights_pack_in_blocks_of_three_vectors_where_they_pad_least() -> None:
    """A pointwise convolution's weight is packed in blocks of 3 vectors (48
    channels on AVX-512) where that pads least, the larger block on a tie; a
    convolution with taps keeps blocks of 1, 2 or 4 vectors; 33-40 channels
    stay unpacked (one register block of 3 vectors, the last half a vector)."""
    from brainslug.pipeline.target import conv_weight_block

    pointwise = {144: 48, 240: 48, 672: 48, 96: 48, 136: 48, 1152: 64, 384: 64,
                 160: 32, 80: 16, 150: 32, 40: 0, 48: 0}
    for channels, block in pointwise.items():
        assert conv_weight_block(channels, 16, three=True) == block, channels
    taps = {144: 16, 96: 32, 240: 16, 136: 16, 1152: 64, 40: 0, 36: 0, 33: 0, 41: 16, 48: 16, 56: 0}
    for channels, block in taps.items():
        assert conv_weight_block(channels, 16) == block, channels
    assert conv_weight_block(144, 8, max_vectors=2, three=True) == 16  # (V <= 2)


@pytest.mark.parametrize("side", [13, 16])
@pytest.mark.parametrize("out_channels", [144, 136])
def test_blocks_of_three_vectors_are_as_accurate_as_the_library(out_channels: int,
                                                                side: int) -> None:
    """Register blocks of 3 vectors (their accumulators carried as 3 machine
    vectors, joined for the epilogue): 144 channels in 3 blocks of 48; 136
    with a last block of 40 (its third vector masked at 8 lanes); 13 columns
    (blocks of 8 and 5, the stores of the missing columns guarded) and 16.
    A BN + SiLU epilogue and a residual add; NaN and Inf as in PyTorch."""
    from brainslug.frontend_torch.kernel_module import StackKernel
    from brainslug.frontend_torch.weight_watch import PackedWeight

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(37, out_channels, 1)
            self.bn = random_bn(nn.BatchNorm2d(out_channels))
            self.skip = nn.Conv2d(37, out_channels, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.silu(self.bn(self.conv(x))) + self.skip(x)

    torch.manual_seed(0)
    model = Block().eval()
    opt = brainslug.optimize(model, [0, 37, side, side], conv="brainslug")
    assert compiled_convs(opt) == 2 and not opt.info.library, brainslug.report(opt)
    blocks = {b.block for k in opt.plan.modules() if isinstance(k, StackKernel)
              for b in k._bound if isinstance(b, PackedWeight)}
    assert blocks == {48}, blocks
    assert_as_accurate_as_the_library(model, opt, 37, side, f"{out_channels} at {side}")
    x = torch.randn(3, 37, side, side)
    x[0, 5, 2, 3] = float("nan")
    x[2, 0, side - 1, side - 2] = float("inf")
    with torch.no_grad():
        ref, got = model(x), opt(x)
    assert torch.equal(ref.isnan(), got.isnan())
    finite = ref.isfinite()
    assert torch.equal(ref[~finite].nan_to_num(), got[~finite].nan_to_num())
    assert (got[finite] - ref[finite]).abs().max().item() <= 1e-4 * max(
        1.0, ref[finite].abs().max().item())


def test_pointwise_register_blocks_of_six_run_across_rows() -> None:
    """With AVX-512's 32 registers, 4 vectors of outputs and a broadcast, 6
    columns need no spill: a 1x1 convolution takes 6 where they fit the
    columns or, taken row-major, the points of the rows with at most 3% past
    the end (56, 28 and 14 columns: none do, 3136, 784 and 196 points do); a
    convolution with taps, or one whose points don't fit (7x7), keeps 7
    columns of a row."""
    from brainslug.passes.register_tile import MIN_USED, RegisterTile

    tile = RegisterTile(lanes=16, registers=32, max_vectors=4, cache=1 << 20,
                        broadcast_operands=True)
    for side in (56, 28, 14):
        p, v, across = tile.shape(64, side, None, True, side)
        assert (p, v) == (6, 4) and across is not None, side
        per_row, rows = across
        assert per_row * rows * p >= side * side > (per_row * rows - 1) * p
        assert side * side / (per_row * rows * p) >= MIN_USED
    assert tile.shape(64, 7, None, True, 7) == (7, 4, None)
    assert tile.shape(64, 56, None, True, None) == (7, 4, None)  # taps: no rows above
    assert tile.shape(64, 12, None, True, 12) == (6, 4, None)  # 6 fit a row
    # V = 2 keeps the broadcasts' own limit, in a row
    assert tile.shape(32, 56, None, True, 56) == (8, 2, None)


def test_spilling_register_blocks_split_the_row() -> None:
    """With AVX-512, a block of 7 columns × 4 vectors spills one accumulator
    per step; where blocks of 6 and of 5 cover the columns exactly, the row
    runs as those instead (the 5s in a nest of their own)."""
    from brainslug.passes.register_tile import RegisterTile

    tile = RegisterTile(lanes=16, registers=32, max_vectors=4, cache=1 << 20,
                        broadcast_operands=True)
    assert tile.split(56, 7, 4, True) == ((6, 6), (5, 4))
    assert tile.split(28, 7, 4, True) == ((6, 3), (5, 2))
    assert tile.split(112, 7, 4, True) == ((6, 17), (5, 2))  # ResNet's stem
    assert tile.split(42, 7, 4, True) == ((6, 7), (5, 0))  # 6 divides 42
    assert tile.split(14, 7, 4, True) is None  # 6 + 4 + 4: tails of 4 don't pay
    assert tile.split(13, 7, 4, True) is None
    assert tile.split(7, 7, 4, True) is None  # one block, no row to split
    assert tile.split(56, 6, 4, True) is None  # no spill
    assert tile.split(56, 7, 4, False) is None  # no broadcast
    no_fold = RegisterTile(lanes=16, registers=32, max_vectors=4, cache=1 << 20)
    assert no_fold.split(56, 7, 4, True) is None


SPLIT_ROWS = {
    # (Cin, Cout, k, stride, pad, input side, a max pool after it): 28 output
    # columns, 3 x 6 + 2 x 5
    "3x3": (37, 53, 3, 1, 1, 28, False),
    "7x7/2 stem": (3, 64, 7, 2, 3, 56, False),
    # chunked (bs-block-reduction bands both nests)
    "chunked 3x3, 64 outputs": (96, 64, 3, 1, 1, 28, False),
    # in depth-first tiles, the pool's
    "7x7/2 stem, tiled with its max pool": (3, 64, 7, 2, 3, 56, True),
    "3x3, tiled with a 2x2 max pool": (37, 64, 3, 1, 1, 28, True),
}


@pytest.mark.parametrize("kind", sorted(SPLIT_ROWS))
def test_split_rows_are_as_accurate_as_the_library(kind: str, monkeypatch, tmp_path) -> None:
    from brainslug.passes import register_tile

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))  # compile, don't reuse
    small_l2(kind, monkeypatch, tmp_path)
    splits: list[object] = []
    split = register_tile.RegisterTile.split

    def spy(self, *args):  # type: ignore[no-untyped-def]
        found = split(self, *args)
        if found is not None:
            splits.append(found)
        return found

    monkeypatch.setattr(register_tile.RegisterTile, "split", spy)
    ci, co, k, s, p, side, pool = SPLIT_ROWS[kind]
    torch.manual_seed(2)
    pools = [nn.MaxPool2d(3, 2, 1) if k == 7 else nn.MaxPool2d(2, 2)] if pool else []
    model = nn.Sequential(nn.Conv2d(ci, co, k, s, p), random_bn(nn.BatchNorm2d(co)),
                          nn.ReLU(), *pools).eval()
    opt = brainslug.optimize(model, [0, ci, side, side], conv="brainslug")
    assert compiled_convs(opt) == 1 and not opt.info.library, brainslug.report(opt)
    assert ((6, 3), (5, 2)) in splits, splits
    if pool:  # one stack: the pool runs over the convolution's tiles
        assert any(any("max_pool2d" in x for x in st.layers) for st in opt.info.stacks
                   if st.compiled), brainslug.report(opt)
    assert_as_accurate_as_the_library(model, opt, ci, side, kind)
    # NaN in a column of the first nest's blocks, Inf in one of the tail's
    x = torch.randn(2, ci, side, side)
    x[0, 0, side // 2, 3 * s] = float("nan")
    x[1, ci - 1, 1, side - 2] = float("inf")
    with torch.no_grad():
        got, lib = opt(x), model(channels_last(x))
    assert torch.equal(got.isnan(), lib.isnan()) and torch.equal(got.isinf(), lib.isinf())
    fine = ~lib.isnan() & ~lib.isinf()
    assert got.isnan().any() and (got[fine] - lib[fine]).abs().max().item() <= 1e-4


PADDED_WINDOWS = {
    # name: (Cin, Cout, k, stride, groups, side); rows of several register
    # blocks, so that some blocks' windows lie inside the image and some meet
    # its border. Depthwise: vector loads; stems: scalar ones over 3 channels
    "depthwise 3x3": (37, 37, 3, 1, 37, 61),
    "depthwise 3x3/2": (37, 37, 3, 2, 37, 61),
    "depthwise 5x5": (21, 21, 5, 1, 21, 47),
    "stem 3x3/2": (3, 37, 3, 2, 1, 121),
    "stem 7x7/2": (3, 64, 7, 2, 1, 61),
}


@pytest.mark.parametrize("kind", sorted(PADDED_WINDOWS))
def test_windows_inside_the_image_skip_the_padding(kind: str, monkeypatch, tmp_path) -> None:
    """A padded window's taps run in two versions: unchecked where the block's
    whole window lies inside the image, checked at the border. Both are as
    accurate as the library, and a NaN inside and Infs on the border
    propagate as in PyTorch."""
    from brainslug.lowering import windowed_reduce

    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))  # compile, don't reuse
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "1")  # (the spy sees the lowering)
    versioned: list[int] = []
    inside = windowed_reduce._window_inside

    def spy(*args):  # type: ignore[no-untyped-def]
        cond, ids = inside(*args)
        if ids and not isinstance(cond, bool):
            versioned.append(len(ids))
        return cond, ids

    monkeypatch.setattr(windowed_reduce, "_window_inside", spy)
    ci, co, k, s, g, side = PADDED_WINDOWS[kind]
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(ci, co, k, s, k // 2, groups=g), random_bn(nn.BatchNorm2d(co)),
                          nn.ReLU()).eval()
    opt = brainslug.optimize(model, [0, ci, side, side], conv="brainslug")
    assert compiled_convs(opt) == 1 and not opt.info.library, brainslug.report(opt)
    assert versioned, "no window was versioned"
    assert_as_accurate_as_the_library(model, opt, ci, side, kind)
    x = torch.randn(2, ci, side, side)
    x[0, 1, side // 2, side // 2] = float("nan")
    x[1, ci - 1, 0, side - 1] = float("inf")
    x[1, 0, side - 1, 0] = float("-inf")
    with torch.no_grad():
        got, lib = opt(x), model(channels_last(x))
    assert torch.equal(got.isnan(), lib.isnan()) and torch.equal(got.isinf(), lib.isinf())
    fine = torch.isfinite(lib)
    assert got.isnan().any() and got.isinf().any()
    assert (got[fine] - lib[fine]).abs().max().item() <= 1e-5 * max(1.0, lib[fine].abs().max().item())

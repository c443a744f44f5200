"""In-place residual adds: a stack whose output is `add(..., r)` (then
elementwise ops) writes into the arena slot of `r` where `r` dies there; the
register blocks' clamped columns and rows must not write a point twice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import brainslug.pytorch as brainslug
from brainslug.ir.context import parse_module
from brainslug.plan import arena
from brainslug.plan.arena import plan_buffers
from brainslug.plan.schedule import schedule
from brainslug.plan.stacks import StackBinding, in_place_inputs

T = "tensor<?x13x13x37xf32>"


def _stack(body: str, outputs: int = 1) -> object:
    """The `nn.stack` of a function of two inputs `%y`, `%r` around `body`."""
    types = ", ".join([T] * outputs)
    results = ", ".join(f"%o#{k}" for k in range(outputs))
    module = parse_module(f"""
func.func @f(%fy: {T}, %fr: {T}) -> ({types}) {{
  %o:{outputs} = nn.stack "s" (%fy, %fr) : ({T}, {T}) -> ({types}) {{
  ^bb0(%y: {T}, %r: {T}):
{body}
  }}
  func.return {results} : {types}
}}""")
    fn = next(iter(module.ops))
    return next(o for o in fn.body.block.ops if o.name == "nn.stack")


@pytest.mark.parametrize("body, expected", [
    # a residual add, then ReLU: the output may take %r's buffer
    ("    %c = nn.sigmoid %y : {T} -> {T}\n    %a = nn.add %c, %r : ({T}, {T}) -> {T}\n"
     "    %b = nn.relu %a : {T} -> {T}\n    nn.yield %b : {T}", {0: 1}),
    # %r read twice (by the add and by the multiply): not in place
    ("    %c = nn.sigmoid %y : {T} -> {T}\n    %a = nn.add %c, %r : ({T}, {T}) -> {T}\n"
     "    %b = nn.mul %a, %r : ({T}, {T}) -> {T}\n    nn.yield %b : {T}", {}),
    # the add is not the last elementwise chain's root (a multiply is)
    ("    %c = nn.sigmoid %y : {T} -> {T}\n    %a = nn.mul %c, %r : ({T}, {T}) -> {T}\n"
     "    nn.yield %a : {T}", {}),
    # the sum also feeds a LayerNorm (XCiT's `x + γ·y`, then norm): the norm's
    # second pass would read %r again after the sum overwrote it
    ("    %c = nn.sigmoid %y : {T} -> {T}\n    %a = nn.add %c, %r : ({T}, {T}) -> {T}\n"
     "    %b = nn.layer_norm %a {eps = 1.0e-5 : f64} : {T} -> {T}\n"
     "    nn.yield %b, %a : {T}, {T}", {}),
])
def test_in_place_inputs(body: str, expected: dict[int, int]) -> None:
    op = _stack(body.replace("{T}", T), outputs=body.split("nn.yield")[1].count("%"))
    assert in_place_inputs(op) == expected  # type: ignore[arg-type]


def test_arena_gives_a_residual_output_its_dying_input_slot() -> None:
    """s1 = add(q, p) may overwrite p: it does where p dies at s1; where a later
    node still reads p, s1 gets a slot of its own."""
    for later_reader in (False, True):
        inputs = {"p": ["x"], "q": ["p"], "r": ["q", "p"], "out": ["r", "p"] if later_reader
                  else ["r"]}
        stacks = [StackBinding("s0", {"p"}, ["x"], ["p"], [(-1, 10)]),
                  StackBinding("s1", {"r"}, ["q", "p"], ["r"], [(-1, 10)], in_place={0: 1})]
        plan = schedule(["x", "p", "q", "r", "out"], lambda n, g=inputs: g.get(n, []), stacks,
                        {}, ["out"], ["x"])
        graph = {"q": ["p"], "out": inputs["out"]}
        for in_place in (False, True):
            a = plan_buffers(plan, lambda n, g=graph: g.get(n, []), lambda n: True, ["out"],
                             in_place=in_place).assignment
            shared = a.get(("s0", 0)) is not None and a.get(("s0", 0)) == a.get(("s1", 0))
            assert shared is (in_place and not later_reader)


class Residual(nn.Module):
    """Two residual blocks, `relu(bn(conv(relu(bn(conv(x))))) + x)`, of 1x1
    and 3x3 convolutions: 13x13 = 169 points are no multiple of a register
    block's 6 (the last block clamps columns to the last point, which must be
    written once), 37 channels no multiple of 16 lanes."""

    def __init__(self, c: int = 37) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, k, padding=k // 2, bias=False)
                                   for k in (1, 1, 3, 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x * 1.5)
        for i in (0, 2):
            y = torch.relu(self.bns[i](self.convs[i](x)))
            x = torch.relu(self.bns[i + 1](self.convs[i + 1](y)) + x)
        return x


def in_place_and_separate(monkeypatch, m: nn.Module, shape: list[int],
                          in_place: int) -> tuple[nn.Module, nn.Module]:
    """Plans of `m` (its BN statistics randomized) with `in_place` stack
    outputs in their residual's slot, and with separate buffers."""
    for bn in m.bns:  # type: ignore[union-attr]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    taken = []
    real = arena._overwritable
    monkeypatch.setattr(arena, "_overwritable",
                        lambda *a, **k: (taken.append(s := real(*a, **k)), s)[1])
    fast = brainslug.optimize(m, shape, conv="brainslug")
    assert sum(s is not None for s in taken) == in_place
    monkeypatch.setattr(arena, "_overwritable", lambda *a, **k: None)
    return fast, brainslug.optimize(m, shape, conv="brainslug")


def test_in_place_residual_adds_match_separate_buffers(monkeypatch) -> None:
    torch.manual_seed(0)
    m = Residual().eval()
    # (the second block's output is the plan's: never in the arena)
    fast, plain = in_place_and_separate(monkeypatch, m, [0, 37, 13, 13], 1)
    for batch in (1, 3):
        x = torch.randn(batch, 37, 13, 13)
        x[0, 5, 12, 12] = float("nan")  # (the last point: where columns clamp)
        x[-1, 3, 0, 0] = float("inf")
        with torch.no_grad():
            got, want, ref = fast(x), plain(x), m(x)
            again = fast(x)
        assert torch.equal(got.isnan(), ref.isnan())
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
        assert torch.equal(torch.nan_to_num(again), torch.nan_to_num(got))
        fin = ref.isfinite()
        torch.testing.assert_close(got[fin], ref[fin], rtol=1e-4, atol=1e-4)


class BasicBlock(nn.Module):
    """A 1×1 stem, then ResNet's basic block, `relu(bn(conv3x3(relu(bn(
    conv3x3(x))))) + x)`, over 64 channels: the block's second sum (576
    products) is chunked by bs-block-reduction, whose bands of rows clamp past
    the last of 13 rows and recompute it. (A 1×1 head follows: a plan's
    output is never in the arena.)"""

    def __init__(self, c: int = 64) -> None:
        super().__init__()
        self.stem, self.head = nn.Conv2d(5, c, 1), nn.Conv2d(c, 3, 1)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(2))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bns[0](self.convs[0](x)))
        return self.head(torch.relu(self.bns[1](self.convs[1](y)) + x))


def test_in_place_sum_after_a_banded_convolution(monkeypatch) -> None:
    torch.manual_seed(0)
    m = BasicBlock().eval()
    fast, plain = in_place_and_separate(monkeypatch, m, [0, 5, 13, 13], 1)
    for batch in (1, 3):
        x = torch.randn(batch, 5, 13, 13)
        with torch.no_grad():
            got, want, ref = fast(x), plain(x), m(x)
        assert torch.equal(got, want)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)

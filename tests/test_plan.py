"""The framework-neutral plan layer on its own: compiling a captured `nn`
module's stacks, the schedule, and the static arena."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.passes import ModulePass

from brainslug.ir.context import parse_module
from brainslug.plan.arena import plan_buffers
from brainslug.plan.capture import Bound, Captured
from brainslug.plan.compile import compile_stacks
from brainslug.plan.report import PlanInfo, format_report
from brainslug.plan.schedule import needed, schedule
from brainslug.plan.stacks import StackBinding
from brainslug.plan.targets import CpuTarget

C, H, W, K = 5, 9, 7, 3
T = f"tensor<?x{C}x{H}x{W}xf32>"
P = f"tensor<{C}xf32>"
CONV = f"tensor<?x{K}x{H - 2}x{W - 2}xf32>"

# x -> BN -> ReLU -> conv (stays in the framework) -> ReLU -> dropout (removed)
GRAPH = f"""
func.func @forward(%x: {T}, %g: {P}, %b: {P}, %m: {P}, %v: {P}, %w: tensor<{K}x{C}x3x3xf32>) -> {CONV} {{
  %bn = nn.batch_norm %x weight %g bias %b mean %m var %v {{eps = 1.000000e-05 : f64, layout = "NCHW", bs.node = "bn"}} : ({T}, {P}, {P}, {P}, {P}) -> {T}
  %r = nn.relu %bn {{bs.node = "relu"}} : {T} -> {T}
  %c = nn.conv2d %r, %w {{strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW", bs.node = "conv"}} : ({T}, tensor<{K}x{C}x3x3xf32>) -> {CONV}
  %r2 = nn.relu %c {{bs.node = "relu2"}} : {CONV} -> {CONV}
  %d = nn.dropout %r2 {{p = 5.000000e-01 : f64, training = false, bs.node = "drop"}} : {CONV} -> {CONV}
  func.return %d : {CONV}
}}
"""


def params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "g": rng.standard_normal(C).astype(np.float32),
        "b": rng.standard_normal(C).astype(np.float32),
        "m": rng.standard_normal(C).astype(np.float32),
        "v": rng.uniform(0.5, 2.0, C).astype(np.float32),
        "w": rng.standard_normal((K, C, 3, 3)).astype(np.float32),
    }


def test_compile_stacks_without_a_framework() -> None:
    """Two stacks around a library convolution: the report, the bindings (an
    activation by node name, parameters bound), the removed dropout as an
    alias, and kernels that compute BN -> ReLU on numpy arrays."""
    rng = np.random.default_rng(7)
    p = params(rng)
    module = parse_module(GRAPH)
    sources = ["x", *(Bound(p[k], k) for k in ("g", "b", "m", "v", "w"))]
    compiled = compile_stacks(Captured(module, sources), CpuTarget(threads=1))
    info = compiled.info
    assert [s.compiled for s in info.stacks] == [True, True]
    assert ("conv", "nn.conv2d") in info.library and not info.fallbacks
    assert info.target == "x86-64"
    first, second = compiled.bindings
    assert first.members == {"bn", "relu"} and first.outputs == ["relu"]
    assert first.inputs[0] == "x" and [b.name for b in first.inputs[1:]] == ["g", "b", "m", "v"]
    assert second.inputs == ["conv"] and second.outputs == ["relu2"]
    assert compiled.aliases == {"drop": "relu2"}
    for batch in (1, 3):
        x = rng.standard_normal((batch, C, H, W)).astype(np.float32)
        x[0, 1, 2, 3] = np.nan
        out = np.empty_like(x)
        compiled.runners[first.name]([x, p["g"], p["b"], p["m"], p["v"], out])
        scale = p["g"] / np.sqrt(p["v"] + np.float32(1e-5))
        ref = np.maximum((x - p["m"][:, None, None]) * scale[:, None, None]
                         + p["b"][:, None, None], 0)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        assert np.isnan(out[0, 1, 2, 3])


def binding(name: str, members: set[str], inputs: list[str], outputs: list[str],
            numel: int = 10) -> StackBinding:
    return StackBinding(name, members, list(inputs), outputs, [(-1, numel)] * len(outputs))


GRAPH_INPUTS = {"a": ["x"], "b": ["a"], "c": ["b"], "drop": ["a"], "d": ["c", "drop"],
                "out": ["d"]}


def test_schedule_places_a_stack_once_after_its_inputs() -> None:
    stack = binding("s0", {"b", "c"}, ["a"], ["c"])
    plan = schedule(["x", *GRAPH_INPUTS], lambda n: GRAPH_INPUTS.get(n, []), [stack],
                    {"drop": "a"}, ["out"], available=["x"])
    steps = [st.stack.name if st.stack else st.node for st in plan.steps]
    assert steps == ["a", "s0", "d", "out"]
    assert plan.resolve("drop") == "a" and plan.resolve("c") == "c"


def test_schedule_rejects_a_stack_value_that_is_not_an_output() -> None:
    stack = binding("s0", {"b", "c"}, ["a"], ["c"])
    inputs = {**GRAPH_INPUTS, "d": ["c", "b"]}
    with pytest.raises(KeyError, match="b is used outside its stack"):
        schedule(["x", *inputs], lambda n: inputs.get(n, []), [stack], {}, ["out"], ["x"])


def test_a_node_only_a_stack_read_before_it_was_flattened_is_not_needed() -> None:
    # inner = cat(b, c) was flattened into the stack's outer = cat(a, b, c): the
    # stack reads b and c itself, so nothing needs `inner`, nor `b` outside it
    inputs = {"a": ["x"], "b": ["x"], "inner": ["b", "c"], "c": ["x"],
              "outer": ["a", "inner"], "out": ["outer"]}
    stack = binding("s0", {"b", "outer"}, ["a", "c"], ["outer"])
    live = needed(["out"], lambda n: inputs.get(n, []), [stack], {})
    assert live == {"out", "outer", "a", "c", "x"}
    roots = [n for n in inputs if n in live and n not in stack.members]
    plan = schedule(["x", *inputs], lambda n: inputs.get(n, []), [stack], {}, roots, ["x"])
    assert [st.stack.name if st.stack else st.node for st in plan.steps] == [
        "a", "c", "s0", "out"]


@pytest.mark.parametrize("view", [False, True])
def test_arena_reuses_dead_slots_and_keeps_views_alive(view: bool) -> None:
    """s0's output is dead once q has read it, so s1 takes its slot, unless q
    may be a view of it (then s1 reads it through q). s2's output leaves the
    graph and gets no slot."""
    graph = {"q": ["p"], "out": ["r2"]}
    stacks = [binding("s0", {"p"}, ["x"], ["p"]), binding("s1", {"r"}, ["q"], ["r"], 8),
              binding("s2", {"r2"}, ["r"], ["r2"])]
    order = ["x", "p", "q", "r", "r2", "out"]
    inputs = {"p": ["x"], "r": ["q"], "r2": ["r"], **graph}
    plan = schedule(order, lambda n: inputs.get(n, []), stacks, {}, ["out"], ["x"])
    buffers = plan_buffers(plan, lambda n: graph.get(n, []), lambda n: not view, ["r2"])
    a = buffers.assignment
    assert ("s2", 0) not in a
    assert (a[("s0", 0)] == a[("s1", 0)]) is not view
    assert all(s.per_batch for s in buffers.slots)
    assert buffers.slots[a[("s0", 0)]].numel == 10


def test_plan_imports_no_framework() -> None:
    code = ("import sys, pkgutil, importlib, brainslug.plan as p\n"
            "for m in pkgutil.walk_packages(p.__path__, 'brainslug.plan.'):\n"
            "    importlib.import_module(m.name)\n"
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


class FailOnKernel(ModulePass):
    """Raises once the kernel of stack `stack` exists (a stand-in for a bug in
    a pass that only one stack triggers)."""

    name = "fail-on-kernel"

    def __init__(self, stack: str):
        self.stack = stack

    def apply(self, ctx, op) -> None:
        if any(isinstance(f, func.FuncOp) and f.sym_name.data == self.stack for f in op.ops):
            raise RuntimeError(f"cannot compile {self.stack}")


@pytest.mark.parametrize("strict", ["0", "1"])
def test_a_stack_that_fails_to_compile_runs_in_the_framework(monkeypatch, strict: str) -> None:
    from brainslug.plan import compile as plan_compile

    passes = plan_compile.default_passes
    monkeypatch.setattr(plan_compile, "default_passes", lambda target, cpu, **kw: [
        *passes(target, cpu)[:2], FailOnKernel("stack1"), *passes(target, cpu)[2:]])
    monkeypatch.setenv("BRAINSLUG_STRICT", strict)
    p = params(np.random.default_rng(3))
    sources = ["x", *(Bound(p[k], k) for k in ("g", "b", "m", "v", "w"))]
    captured = Captured(parse_module(GRAPH), sources)
    if strict == "1":
        with pytest.raises(RuntimeError, match="cannot compile stack1"):
            compile_stacks(captured, CpuTarget(threads=1))
        return
    compiled = compile_stacks(captured, CpuTarget(threads=1))
    first, second = compiled.info.stacks
    assert first.compiled and not second.compiled
    assert second.reason == "compiling it failed: RuntimeError: cannot compile stack1"
    assert (second.name, second.reason) in compiled.info.fallbacks
    assert set(compiled.runners) == {first.name}


def test_report_groups_fallbacks_by_reason() -> None:
    info = PlanInfo(fallbacks=[("a", "method permute"), ("b", "module LayerNorm"),
                               ("c", "method permute"), ("stack3", "no loop lowering")])
    text = format_report(info)
    summary = text[text.index("Fallbacks by reason"):text.index("Fallbacks (layers")]
    assert summary.splitlines()[:4] == [
        "Fallbacks by reason (4 layers, 3 reasons):",
        "      2  method permute",
        "      1  module LayerNorm",
        "      1  no loop lowering",
    ]
    assert "  c: method permute" in text
    assert "Fallbacks: none" in format_report(PlanInfo())

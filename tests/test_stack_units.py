"""Stacks compiled one by one (`brainslug.plan.units`): identical stacks share a
kernel, a stack compiled once comes from the stack cache in any later plan,
forked processes share the work, and a stack that fails stays in the framework
alone."""

from __future__ import annotations

import numpy as np
import pytest
from test_plan import FailOnKernel
from xdsl.passes import ModulePass

from brainslug.ir.context import parse_module
from brainslug.passes.fuse import FusePass
from brainslug.plan.capture import Captured
from brainslug.plan.compile import compile_stacks
from brainslug.plan.targets import CpuTarget

C, W = 5, 7


def chain(heights: list[int], first: int = 0) -> str:
    """x -> [library op -> BN-free ReLU stack] per height: each library call
    changes the height, so stacks of equal heights are identical up to names."""
    t = [f"tensor<?x{C}x{h}x{W}xf32>" for h in heights]
    lines, prev = [], "%x"
    for i, (a, b) in enumerate(zip(t, t[1:], strict=False)):
        n = first + i
        lines.append(f'  %l{n} = nn.library "torch.f{n}" ({prev}) {{bs.node = "lib{n}"}} : ({a}) -> {b}')
        lines.append(f'  %r{n} = nn.relu %l{n} {{bs.node = "relu{n}"}} : {b} -> {b}')
        lines.append(f'  %s{n} = nn.sigmoid %r{n} {{bs.node = "sig{n}"}} : {b} -> {b}')
        prev = f"%s{n}"
    return (f"func.func @forward(%x: {t[0]}) -> {t[-1]} {{\n" + "\n".join(lines)
            + f"\n  func.return {prev} : {t[-1]}\n}}\n")


def run_stack(compiled, name: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    for batch in (1, 3):
        x = rng.standard_normal((batch, *shape)).astype(np.float32) * 4
        x.flat[5] = np.nan
        out = np.empty_like(x)
        compiled.runners[name]([x, out])
        ref = 1 / (1 + np.exp(-np.maximum(x.astype(np.float64), 0)))
        np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-7)
        assert np.isnan(out.flat[5])


class CountFuse(ModulePass):
    """Counts the modules bs-fuse runs on (in this process)."""

    name = "count-fuse"
    runs = 0

    def apply(self, ctx, op) -> None:
        CountFuse.runs += 1


@pytest.fixture
def counted(monkeypatch):
    from brainslug.plan import compile as plan_compile

    passes = plan_compile.default_passes

    def with_counter(target, cpu, **kw):
        out = passes(target, cpu, **kw)
        at = next(i for i, p in enumerate(out) if isinstance(p, FusePass))
        return [*out[:at], CountFuse(), *out[at:]]

    CountFuse.runs = 0
    monkeypatch.setattr(plan_compile, "default_passes", with_counter)
    monkeypatch.setattr(CountFuse, "__repr__", lambda self: "CountFuse()")
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "1")
    return CountFuse


def test_identical_stacks_share_one_kernel(counted, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    heights = [9, 11, 13, 11, 13, 11]
    compiled = compile_stacks(Captured(parse_module(chain(heights)), ["x"]), CpuTarget(threads=1))
    launch = compiled.kernels.launch_of
    assert len(launch) == 5 and not compiled.info.fallbacks
    # stacks on heights 11 (three) and 13 (two) are one kernel each, whatever their layer names
    assert launch["stack0"] == launch["stack2"] == launch["stack4"] != launch["stack1"]
    assert launch["stack1"] == launch["stack3"]
    assert counted.runs == 2 and len(compiled.kernels.infos) == 2
    for i, h in enumerate(heights[1:]):
        run_stack(compiled, f"stack{i}", (C, h, W))


def test_stack_cache_serves_a_later_plan(counted, monkeypatch, tmp_path) -> None:
    """A second plan, whose stacks have other names and positions, runs no pass
    for the stacks the first compiled; with the cache off every stack compiles."""
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    compile_stacks(Captured(parse_module(chain([9, 11, 13])), ["x"]), CpuTarget(threads=1))
    assert counted.runs == 2
    counted.runs = 0
    later = compile_stacks(Captured(parse_module(chain([8, 15, 11, 13])), ["x"]),
                           CpuTarget(threads=1))
    assert counted.runs == 1  # only the height-15 stack is new
    for i, h in enumerate([15, 11, 13]):
        run_stack(later, f"stack{i}", (C, h, W))
    counted.runs = 0
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    compile_stacks(Captured(parse_module(chain([8, 15, 11, 13])), ["x"]), CpuTarget(threads=1))
    assert counted.runs == 3


def test_forked_units_and_a_failing_stack(monkeypatch, tmp_path) -> None:
    """Six distinct stacks shared between two processes; the one whose passes
    raise (in whichever process) stays in the framework with the error, the
    others compute right."""
    from brainslug.plan import compile as plan_compile

    passes = plan_compile.default_passes
    monkeypatch.setattr(plan_compile, "default_passes", lambda target, cpu, **kw: [
        *passes(target, cpu, **kw)[:2], FailOnKernel("stack3"), *passes(target, cpu, **kw)[2:]])
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("BRAINSLUG_COMPILE_WORKERS", "2")
    monkeypatch.setenv("BRAINSLUG_STRICT", "0")
    heights = [4, 5, 6, 7, 8, 9, 10]
    compiled = compile_stacks(Captured(parse_module(chain(heights)), ["x"]), CpuTarget(threads=1))
    assert dict(compiled.info.fallbacks) == {
        "stack3": "compiling it failed: RuntimeError: cannot compile stack3"}
    assert "stack3" not in compiled.runners
    for i, h in enumerate(heights[1:]):
        if i != 3:
            run_stack(compiled, f"stack{i}", (C, h, W))
    monkeypatch.setenv("BRAINSLUG_STRICT", "1")
    with pytest.raises(RuntimeError, match="cannot compile stack3"):
        compile_stacks(Captured(parse_module(chain(heights)), ["x"]), CpuTarget(threads=1))

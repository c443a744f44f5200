"""Where optimize()'s time goes.

Two tables, for one optimize() call (`profiling()`):
- *stages*: wall seconds of its steps in this process (capture, the
  convolution choice's trial compile and timing, the plan's compile, the
  speed check), which add up to about the whole call;
- *passes*: seconds of each step of compiling a stack (the pipeline's passes,
  building the LLVM IR, LLVM's optimization and code generation), summed over
  the stacks compiled and over the processes that compiled them (`forked`),
  with the number of stacks compiled. Stacks from the kernel cache count
  nothing.

`bench --compile-time` prints them for a cold and a warm optimize(); the
report prints the stages.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from xdsl.ir import Operation


@dataclass
class CompileProfile:
    """Seconds per stage (wall, this process) and per compile step (summed)."""

    stages: dict[str, float] = field(default_factory=dict)
    passes: dict[str, float] = field(default_factory=dict)
    units: int = 0
    kinds: dict[str, list[float]] = field(default_factory=dict)
    """Per kind of stack (its layers' ops): [stacks compiled, seconds]."""

    def add_passes(self, seconds: dict[str, float], kind: str = "") -> None:
        """One compiled stack's seconds per step."""
        self.units += 1
        for k, v in seconds.items():
            self.passes[k] = self.passes.get(k, 0.0) + v
        count = self.kinds.setdefault(kind, [0, 0.0])
        count[0] += 1
        count[1] += sum(seconds.values())

    def to_json(self) -> dict[str, object]:
        return {"stages": dict(self.stages), "passes": dict(self.passes), "units": self.units,
                "kinds": {k: list(v) for k, v in self.kinds.items()}}


_active: contextvars.ContextVar[CompileProfile | None] = contextvars.ContextVar(
    "brainslug_compile_profile", default=None)


@contextlib.contextmanager
def profiling() -> Iterator[CompileProfile]:
    """Collects the profile of the optimize() inside (an outer one, if any,
    keeps collecting into its own)."""
    outer = _active.get()
    if outer is not None:
        yield outer
        return
    token = _active.set(profile := CompileProfile())
    try:
        yield profile
    finally:
        _active.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Adds the wall time of the block to stage `name` of the active profile."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if (profile := _active.get()) is not None:
            profile.stages[name] = profile.stages.get(name, 0.0) + time.perf_counter() - t0


def add_unit(seconds: dict[str, float], kind: str = "") -> None:
    """Adds one compiled stack's seconds per step to the active profile."""
    if (profile := _active.get()) is not None:
        profile.add_passes(seconds, kind)


def stack_kind(module: Operation) -> str:
    """A stack's kind: the distinct ops of its layers, in order (a DenseNet
    layer's `nn.cat`, `nn.batch_norm`, `nn.relu` whatever its pieces)."""
    seen: dict[str, None] = {}
    for op in module.walk():
        if op.name.startswith("nn.") and op.name not in ("nn.stack", "nn.yield"):
            seen.setdefault(op.name.removeprefix("nn."), None)
    return ", ".join(seen)


class StepTimer:
    """Seconds per named step of one stack's compile (kept in its result, so
    that forked workers send them back)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def format_profile(profile: dict[str, object], title: str) -> str:
    """The two tables as text (`CompileProfile.to_json` form)."""
    stages: dict[str, float] = profile.get("stages", {})  # type: ignore[assignment]
    passes: dict[str, float] = profile.get("passes", {})  # type: ignore[assignment]
    units = int(profile.get("units", 0))  # type: ignore[call-overload]
    lines = [title, "-" * len(title)]
    width = max((len(k) for k in (*stages, *passes)), default=10)
    lines.append(f"  {'stage (wall, this process)':<{width}}  {'s':>7}")
    for k, v in stages.items():
        lines.append(f"  {k:<{width}}  {v:7.2f}")
    if passes:
        total = sum(passes.values())
        lines.append(f"  {'step (summed over ' + str(units) + ' stacks compiled)':<{width}}"
                     f"  {'s':>7}  {'ms/stack':>8}  {'share':>5}")
        for k, v in sorted(passes.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {k:<{width}}  {v:7.2f}  {v / max(units, 1) * 1e3:8.1f}"
                         f"  {v / total:5.0%}")
        lines.append(f"  {'all steps':<{width}}  {total:7.2f}  "
                     f"{total / max(units, 1) * 1e3:8.1f}")
    kinds: dict[str, list[float]] = profile.get("kinds", {})  # type: ignore[assignment]
    if kinds:
        total = sum(s for _, s in kinds.values())
        lines.append(f"  {'stacks compiled, by kind':<{width}}  {'s':>7}  {'ms/stack':>8}"
                     f"  {'share':>5}  stacks")
        for k, (n, sec) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"  {k[:width]:<{width}}  {sec:7.2f}  {sec / max(n, 1) * 1e3:8.1f}"
                         f"  {sec / max(total, 1e-9):5.0%}  {int(n)}")
    return "\n".join(lines)

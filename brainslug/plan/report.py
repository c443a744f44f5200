"""What `optimize()` did to a model: `PlanInfo`, and its text for `report()`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StackInfo:
    """One stack as the report shows it."""

    name: str
    layers: list[str]            # "node: nn.op"
    inputs: list[str]
    outputs: list[str]
    layout: str
    bytes_unfused: int           # per batch item: every layer reads its inputs, writes its output
    bytes_fused: int             # per batch item: the stack reads its inputs, writes its outputs
    compiled: bool = True
    reason: str = ""
    flops: int = 0               # per batch item: 2 per multiply-add of its convolutions and linears
    math: dict[str, int] = field(default_factory=dict)  # per batch item: elements of exp/erf/tanh math, by kind

    def layer_ops(self) -> list[tuple[str, str]]:
        """(framework node, nn op name) of each layer."""
        return [tuple(x.split(": ", 1)) for x in self.layers]  # type: ignore[misc]


@dataclass
class PlanInfo:
    """What optimize() did, for report()."""

    stacks: list[StackInfo] = field(default_factory=list)
    library: list[tuple[str, str]] = field(default_factory=list)   # (node, callee)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # (node, reason)
    capture: str = "torch.fx"
    compile_seconds: float = 0.0
    target: str = "x86-64"
    notes: list[str] = field(default_factory=list)
    layout: str = "NCHW"         # how the plan stores rank-4 activations
    convs: list[ConvChoice] = field(default_factory=list)  # who runs each convolution
    min_batch: int = 1  # smaller batches run the model as it is (the plan measured slower)
    compile_profile: dict[str, Any] | None = None  # `plan.compile_profile`, JSON form


@dataclass
class ConvChoice:
    """Who runs one convolution or linear layer (with its epilogue), and the
    times that decided."""

    node: str
    runs: str                    # "brainslug" or "library"
    brainslug_ms: float | None = None   # at the first batch size timed
    library_ms: float | None = None
    why: str = ""
    more: list[list[float]] | None = None  # [batch, brainslug ms, library ms] at others


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def format_report(info: PlanInfo, title: str = "BrainSlug plan") -> str:
    """The report as text: stacks with their memory traffic, library calls and
    fallbacks with their reasons."""
    lines = [title, "=" * len(title)]
    compiled = [s for s in info.stacks if s.compiled]
    lines.append(
        f"capture: {info.capture}   target: {info.target}   optimize(): "
        f"{info.compile_seconds:.2f} s   stacks: {len(compiled)} compiled, "
        f"{len(info.stacks) - len(compiled)} in the framework   library calls: "
        f"{len(info.library)}"
    )
    if info.compile_profile and (stages := info.compile_profile.get("stages")):
        other = info.compile_seconds - sum(stages.values())
        parts = [f"{k} {v:.2f}" for k, v in stages.items()] + [f"the rest {max(other, 0):.2f}"]
        units = info.compile_profile.get("units", 0)
        lines.append(f"optimize()'s time (s): {', '.join(parts)}; {units} stacks compiled "
                     f"(bench --compile-time: each step)")
    lines += info.notes
    if info.stacks:
        before = sum(s.bytes_unfused for s in compiled)
        after = sum(s.bytes_fused for s in compiled)
        lines.append(
            f"memory traffic of the stacks per batch item: {_kb(before)} layer by layer, "
            f"{_kb(after)} fused ({(1 - after / max(before, 1)) * 100:.0f}% less)"
        )
        lines.append("")
        lines.append("Stacks (bytes per batch item, read + written):")
        lines.append(f"  {'stack':10s} {'layout':6s} {'unfused':>13s} {'fused':>13s}  layers")
        for s in info.stacks:
            state = "" if s.compiled else f"   [runs in the framework: {s.reason}]"
            lines.append(
                f"  {s.name:10s} {s.layout:6s} {_kb(s.bytes_unfused):>13s} "
                f"{_kb(s.bytes_fused):>13s}  {', '.join(s.layers)}{state}"
            )
    if info.convs:
        ours = sum(c.runs == "brainslug" for c in info.convs)
        lines.append("")
        lines.append(f"Convolutions and linear layers: {ours} of {len(info.convs)} in "
                     f"BrainSlug's kernels (with their epilogues)")
        for c in info.convs:
            times = ""
            if c.brainslug_ms is not None and c.library_ms is not None:
                times = (f"  brainslug {c.brainslug_ms:.3f} ms, library {c.library_ms:.3f} ms")
                for batch, bs, lib in c.more or ():
                    times += f"; at batch {batch:g}: {bs:.3f} ms, {lib:.3f} ms"
            lines.append(f"  {c.node}: {c.runs}{times}" + (f"  ({c.why})" if c.why else ""))
    if info.library:
        lines.append("")
        lines.append("Library calls (run by the framework):")
        for node, callee in info.library:
            lines.append(f"  {node}: {callee}")
    lines.append("")
    if info.fallbacks:
        counts = Counter(why for _, why in info.fallbacks)
        lines.append(f"Fallbacks by reason ({len(info.fallbacks)} layers, "
                     f"{len(counts)} reasons):")
        for why, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {n:5d}  {why}")
        lines.append("")
        lines.append("Fallbacks (layers BrainSlug could not optimize, and why):")
        for node, why in info.fallbacks:
            lines.append(f"  {node}: {why}")
    else:
        lines.append("Fallbacks: none")
    return "\n".join(lines)

"""`report(opt)`: what BrainSlug did to a model, as a readable table."""

from __future__ import annotations

from typing import Any

from brainslug.frontend_torch.optimize import PlanInfo


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def format_report(info: PlanInfo, title: str = "BrainSlug plan") -> str:
    lines = [title, "=" * len(title)]
    compiled = [s for s in info.stacks if s.compiled]
    lines.append(
        f"capture: {info.capture}   target: {info.target}   optimize(): "
        f"{info.compile_seconds:.2f} s   stacks: {len(compiled)} compiled, "
        f"{len(info.stacks) - len(compiled)} in the framework   library calls: "
        f"{len(info.library)}"
    )
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
    if info.library:
        lines.append("")
        lines.append("Library calls (run by the framework):")
        for node, callee in info.library:
            lines.append(f"  {node}: {callee}")
    lines.append("")
    if info.fallbacks:
        lines.append("Fallbacks (layers BrainSlug could not optimize, and why):")
        for node, why in info.fallbacks:
            lines.append(f"  {node}: {why}")
    else:
        lines.append("Fallbacks: none")
    return "\n".join(lines)


def report(opt: Any) -> str:
    """The report of a module returned by `brainslug.pytorch.optimize`."""
    info = getattr(opt, "info", None)
    if not isinstance(info, PlanInfo):
        raise ValueError("report() expects a module returned by brainslug.pytorch.optimize()")
    return format_report(info, f"BrainSlug plan for {type(opt.original).__name__}")

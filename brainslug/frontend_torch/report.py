"""`report(opt)`: what BrainSlug did to a model, as a readable table."""

from __future__ import annotations

from typing import Any

from brainslug.frontend_torch.graph import input_shapes, shape_text
from brainslug.plan.report import PlanInfo, format_report


def report(opt: Any) -> str:
    """The report of a module returned by `brainslug.pytorch.optimize`."""
    info = getattr(opt, "info", None)
    if not isinstance(info, PlanInfo):
        raise ValueError("report() expects a module returned by brainslug.pytorch.optimize()")
    name = getattr(opt.original, "model_name", None) or type(opt.original).__name__
    text = format_report(info, f"BrainSlug plan for {name}")
    shapes = input_shapes(getattr(opt, "input_shape", None))
    if not shapes:
        return text
    names = getattr(opt, "input_names", None) or [f"x{k}" for k in range(len(shapes))]
    inputs = ", ".join(f"{n} {shape_text(s)}" for n, s in zip(names, shapes, strict=False))
    line = f"input{'s' if len(shapes) > 1 else ''}: {inputs}"
    if any(s[0] == 0 for s in shapes):
        line += "   (N: any batch size)"
    lines = text.split("\n")
    lines.insert(3, line)  # after the title and the summary line
    return "\n".join(lines)

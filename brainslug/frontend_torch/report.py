"""`report(opt)`: what BrainSlug did to a model, as a readable table."""

from __future__ import annotations

from typing import Any

from brainslug.plan.report import PlanInfo, format_report


def report(opt: Any) -> str:
    """The report of a module returned by `brainslug.pytorch.optimize`."""
    info = getattr(opt, "info", None)
    if not isinstance(info, PlanInfo):
        raise ValueError("report() expects a module returned by brainslug.pytorch.optimize()")
    name = getattr(opt.original, "model_name", None) or type(opt.original).__name__
    return format_report(info, f"BrainSlug plan for {name}")

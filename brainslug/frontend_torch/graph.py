"""Getting a model's graph: the input shape, tracing (torch.fx, else
torch.export), the capture on the model's device, and the capture as the plan
layer sees it."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch.capture import Capture, capture, export, trace
from brainslug.plan.capture import Bound, Captured


def check_shape(shape: Any) -> list[int]:
    """The input shape as a list of ints; 0 means any extent (the batch)."""
    if isinstance(shape, torch.Size | tuple):
        shape = list(shape)
    if not isinstance(shape, list) or not shape:
        raise ValueError(f"shape must be a non-empty list of ints such as [0, 3, 224, 224], "
                         f"got {shape!r}")
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"shape entries must be ints >= 0 (0 = any size), got {shape!r}")
        out.append(int(d))
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def trace_model(model: torch.nn.Module, spec: list[int], device: torch.device | None = None,
                ) -> tuple[fx.GraphModule | None, str, list[str]]:
    """(graph, how it was captured, notes): torch.fx, else torch.export (with
    example inputs on `device`); no graph when neither can capture the model,
    the reason being the last note."""
    try:
        return trace(model), "torch.fx", []
    except Exception as e:  # fx can't trace it: torch.export, else run the model as it is
        notes = [f"torch.fx could not trace the model ({type(e).__name__}: "
                 f"{str(e).splitlines()[0][:200]}); captured with torch.export"]
    ctx = torch.device(device) if device is not None and device.type != "cpu" \
        else contextlib.nullcontext()
    try:
        with ctx:
            return export(model, spec), "torch.export", notes
    except Exception as e2:
        return None, "none", [*notes, f"neither torch.fx nor torch.export could capture it: "
                              f"{type(e2).__name__}: {e2}"]


def capture_on_device(
    gm: fx.GraphModule, shape: Sequence[int] | None, device: torch.device
) -> Capture:
    """`capture`, with the example inputs of shape propagation made on `device`."""
    ctx = torch.device(device) if device.type != "cpu" else contextlib.nullcontext()
    with ctx:
        return capture(gm, [list(shape)] if shape is not None else [])


def captured(cap: Capture) -> Captured:
    """The capture as the plan layer sees it: graph arguments are fx nodes
    (by name) or the model's own tensors (bound)."""
    out = Captured(cap.module, [], cap.library_reasons)
    args = out.function.body.block.args
    out.sources = [
        src.name if isinstance(src, fx.Node) else Bound(src, a.name_hint or "param")
        for src, a in zip(cap.arg_sources, args, strict=True)
    ]
    return out

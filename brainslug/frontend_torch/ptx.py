"""`emit_ptx(model, shape)`: the PTX of all of a model's stacks, without a GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.fx as fx
from xdsl.dialects.builtin import ModuleOp

from brainslug.frontend_torch.capture import Capture, capture, export, trace


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def capture_on_device(
    gm: fx.GraphModule, shape: Sequence[int] | None, device: torch.device
) -> Capture:
    """`capture`, with the example inputs of shape propagation made on `device`."""
    ctx = torch.device(device) if device.type != "cpu" else contextlib.nullcontext()
    with ctx:
        return capture(gm, [list(shape)] if shape is not None else [])


def lower_model(
    model: torch.nn.Module, shape: Sequence[int], target: str = "nvptx", cpu: str = "sm_90"
) -> tuple[fx.GraphModule, Capture, ModuleOp]:
    """Traces `model` (torch.export if fx can't) and runs the default pipeline for
    `target` on its `nn` module: (graph, capture, lowered module)."""
    from brainslug.frontend_torch.optimize import check_shape
    from brainslug.ir.context import make_context
    from brainslug.pipeline.default import default_passes

    spec = check_shape(list(shape))
    try:
        gm = trace(model)
    except Exception:
        gm = export(model, spec)
    cap = capture_on_device(gm, spec, model_device(model))
    ctx = make_context()
    for p in default_passes(target, cpu):
        p.apply(ctx, cap.module)
    return gm, cap, cap.module


def emit_ptx(model: torch.nn.Module, shape: Sequence[int], cpu: str = "sm_90") -> str:
    """PTX of every stack kernel of `model` for inputs of `shape` (0 = any size):
    one `.entry` per phase, for `ptxas`/the CUDA driver. Needs no GPU."""
    from brainslug.lowering.backends.nvptx import emit_ptx as module_ptx

    _, _, module = lower_model(model, shape, "nvptx", cpu)
    return module_ptx(module, cpu)

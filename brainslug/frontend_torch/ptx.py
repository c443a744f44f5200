"""`emit_ptx(model, shape)`: the PTX of all of a model's stacks, without a GPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
from xdsl.dialects.builtin import ModuleOp

from brainslug.frontend_torch.capture import Capture
from brainslug.frontend_torch.graph import capture_on_device, check_shape, model_device
from brainslug.frontend_torch.tracing import export, trace
from brainslug.ir.context import make_context
from brainslug.lowering.backends.nvptx import emit_ptx as module_ptx
from brainslug.pipeline.default import default_passes


def lower_model(
    model: torch.nn.Module, shape: Sequence[int], target: str = "nvptx", cpu: str = "sm_90"
) -> tuple[fx.GraphModule, Capture, ModuleOp]:
    """Traces `model` (torch.export if fx can't) and runs the default pipeline for
    `target` on its `nn` module: (graph, capture, lowered module)."""
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
    _, _, module = lower_model(model, shape, "nvptx", cpu)
    return module_ptx(module, cpu)

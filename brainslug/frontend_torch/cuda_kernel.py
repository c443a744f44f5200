"""The CUDA plan: `optimize(model.cuda(), shape)`.

The model's fx graph is planned as on the CPU (the same capture, stacks and
graph rewrite), the stacks are lowered with `bs-lower-to-llvm{target=nvptx}`,
loaded with cuda-python (`brainslug.runtime.cuda`) and called as
`CudaStackKernel` modules on torch CUDA tensors; convolutions, linear layers
and everything BrainSlug does not map stay PyTorch calls (cuDNN, cuBLAS).
Kernels run on PyTorch's current stream, so the plan is stream-ordered like
eager PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType as XTensorType

from brainslug.frontend_torch.module import BrainSlugModule

CUDA_OPTIONS = frozenset({"cpu", "arch", "layout"})
"""optimize() options on the CUDA path (`arch`/`cpu`: the sm_XY to compile for)."""


def is_cuda_model(model: torch.nn.Module) -> bool:
    """Whether the model's parameters (or buffers) live on a CUDA device."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device.type == "cuda"
    return False


def require_cuda_python() -> None:
    """ImportError that says how to install cuda-python when it is missing."""
    from brainslug.runtime.cuda import driver

    driver()


class CudaStackKernel(torch.nn.Module):
    """Launches one compiled stack on CUDA tensors by pointer.

    Bound tensors (parameters, running statistics) are the model's own;
    activations come in as call arguments. Outputs come from PyTorch's caching
    allocator on the activations' device and stream.
    """

    is_stack_kernel = True

    def __init__(
        self,
        name: str,
        runner: Any,
        inputs: Sequence[fx.Node | torch.Tensor],
        output_types: Sequence[XTensorType],
    ):
        super().__init__()
        self.stack_name = name
        self.runner = runner
        self._bound: list[torch.Tensor | None] = [
            None if isinstance(x, fx.Node) else x for x in inputs
        ]
        self._slots = [i for i, x in enumerate(self._bound) if x is None]
        self._out_shapes = [tuple(t.get_shape()) for t in output_types]

    def output_sizes(self) -> list[tuple[tuple[int, ...], bool]]:
        """(shape without the batch, whether it has one) of each output."""
        return [(tuple(d for d in s if d >= 0), any(d < 0 for d in s)) for s in self._out_shapes]

    def extra_repr(self) -> str:
        return f"{self.stack_name}, {len(self._bound)} inputs, {len(self._out_shapes)} outputs (CUDA)"

    def forward(self, *activations: torch.Tensor) -> Any:
        bufs: list[Any] = list(self._bound)
        for slot, a in zip(self._slots, activations, strict=True):
            bufs[slot] = a if a.is_contiguous() else a.contiguous()
        batch = activations[0].shape[0] if activations else 1
        device = activations[0].device if activations else next(
            t.device for t in self._bound if t is not None
        )
        outs = [
            torch.empty(tuple(batch if d < 0 else d for d in s), dtype=torch.float32, device=device)
            for s in self._out_shapes
        ]
        self.runner([t.detach() if t.requires_grad else t for t in bufs] + outs, batch)
        return outs[0] if len(outs) == 1 else tuple(outs)


class CudaBrainSlugModule(BrainSlugModule):
    """A BrainSlug module whose plan runs on a CUDA device."""

    def check_input(self, x: Any) -> None:
        """ValueError naming what was expected when `x` does not fit the plan."""
        want = "x".join("N" if d == 0 else str(d) for d in self.input_shape)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape {want}, got {type(x).__name__}")
        if x.device.type != "cuda":
            raise ValueError(
                f"expected a CUDA tensor (the plan was compiled for the GPU), got device {x.device}"
            )
        if x.dtype != torch.float32:
            raise ValueError(f"expected dtype torch.float32, got {x.dtype}")
        if x.dim() != len(self.input_shape) or any(
            e and d != e for d, e in zip(x.shape, self.input_shape, strict=True)
        ):
            raise ValueError(f"expected input shape {want}, got {tuple(x.shape)}")


def compile_cuda_plan(
    gm: fx.GraphModule, shape: list[int], device: torch.device, arch: str | None = None
):
    """Capture, run the nvptx pipeline, load the kernels, rewrite the graph."""
    from brainslug.frontend_torch.optimize import (
        PlanInfo,
        _bindings,
        describe_stacks,
        record_library,
        removed_aliases,
        rewrite_graph,
        stack_launches,
    )
    from brainslug.frontend_torch.ptx import capture_on_device
    from brainslug.ir.context import make_context
    from brainslug.passes.form_stacks import FormStacksPass
    from brainslug.pipeline.default import default_passes
    from brainslug.runtime.cuda import compile_cuda_kernels, device_arch

    t0 = time.perf_counter()
    arch = arch or device_arch(device)
    cap = capture_on_device(gm, shape, device)
    ctx = make_context()
    module = cap.module
    fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
    aliases = removed_aliases(fn)
    FormStacksPass().apply(ctx, module)
    nodes = {n.name: n for n in gm.graph.nodes}
    infos = describe_stacks(fn, cap)
    bindings = _bindings(fn, cap, nodes)
    for p in default_passes("nvptx", arch)[1:]:
        p.apply(ctx, module)
    launch_of, fallback_stacks = stack_launches(fn)
    runners = compile_cuda_kernels(module, arch, device) if launch_of else None
    kernels = {
        b.name: CudaStackKernel(b.name, runners[launch_of[b.name]], b.inputs, b.output_types)
        for b in bindings
        if b.name in launch_of and runners is not None
    }
    info = PlanInfo(stacks=infos, target="nvptx")
    record_library(info, fn, fallback_stacks, cap.library_reasons)
    new_gm = rewrite_graph(gm, bindings, kernels, aliases)  # type: ignore[arg-type]
    info.compile_seconds = time.perf_counter() - t0
    return new_gm, info, module


def optimize_cuda(model: torch.nn.Module, spec: list[int], **options: Any) -> BrainSlugModule:
    """optimize() for a model on a CUDA device (see the module doc)."""
    from brainslug.frontend_torch.capture import export, trace
    from brainslug.frontend_torch.optimize import PlanInfo
    from brainslug.frontend_torch.ptx import model_device

    unknown = set(options) - CUDA_OPTIONS
    if unknown:
        raise ValueError(f"unknown optimize() options: {sorted(unknown)}")
    if options.get("layout", "auto") not in ("auto", "NCHW"):
        raise ValueError("the CUDA backend plans NCHW models (layout='auto' or 'NCHW')")
    require_cuda_python()
    arch = options.get("arch") or options.get("cpu")
    arch = arch if isinstance(arch, str) and arch.startswith("sm_") else None
    device = model_device(model)
    how, notes = "torch.fx", []
    try:
        gm = trace(model)
    except Exception as e:  # fx can't trace it: torch.export, else run the model as it is
        notes.append(
            f"torch.fx could not trace the model ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); captured with torch.export"
        )
        try:
            with torch.device(device):  # the example input on the model's device
                gm, how = export(model, spec), "torch.export"
        except Exception as e2:
            info = PlanInfo(capture="none", notes=notes[:1], target="nvptx")
            info.fallbacks.append(
                ("<model>", f"neither torch.fx nor torch.export could capture it: {e2}")
            )
            return CudaBrainSlugModule(model, None, spec, info)
    new_gm, info, _ = compile_cuda_plan(gm, spec, device, arch)
    info.capture, info.notes = how, notes
    return CudaBrainSlugModule(model, new_gm, spec, info)

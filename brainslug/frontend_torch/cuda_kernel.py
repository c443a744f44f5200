"""The CUDA plan: `optimize(model.cuda(), shape)`.

The model's fx graph is planned as on the CPU (the same capture, stacks and
graph rewrite), the stacks are lowered with `bs-lower-to-llvm{target=nvptx}`,
loaded with cuda-python (`brainslug.runtime.cuda`) and called as
`CudaStackKernel` modules on torch CUDA tensors; convolutions, linear layers
and everything BrainSlug does not map stay PyTorch calls (cuDNN, cuBLAS).
Kernels run on PyTorch's current stream, so the plan is stream-ordered like
eager PyTorch. As on the CPU, the plan is timed against the model at
optimize() and kept only where it is faster (`speed`): on an H100 each stack
call costs about 50 µs of host time, so today's plans measure slower than
cuDNN eager on torchvision's CNNs, and those models run as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch import speed
from brainslug.frontend_torch.bind import rewrite_graph
from brainslug.frontend_torch.compile import plan_key_parts
from brainslug.frontend_torch.graph import capture_on_device, captured, model_device, trace_model
from brainslug.frontend_torch.module import BrainSlugModule
from brainslug.plan.capture import Bound, Source
from brainslug.plan.compile import compile_stacks
from brainslug.plan.report import PlanInfo
from brainslug.plan.targets import CudaTarget

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
        inputs: Sequence[Source],
        output_shapes: Sequence[tuple[int, ...]],
    ):
        super().__init__()
        self.stack_name = name
        self.runner = runner
        self._bound: list[torch.Tensor | None] = [
            x.value if isinstance(x, Bound) else None for x in inputs
        ]
        self._slots = [i for i, x in enumerate(self._bound) if x is None]
        self.output_shapes = [tuple(s) for s in output_shapes]

    def extra_repr(self) -> str:
        return f"{self.stack_name}, {len(self._bound)} inputs, {len(self.output_shapes)} outputs (CUDA)"

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
            for s in self.output_shapes
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
    from brainslug.runtime.cuda import device_arch

    t0 = time.perf_counter()
    target = CudaTarget(arch or device_arch(device), device)
    stacks = compile_stacks(captured(capture_on_device(gm, shape, device)), target)
    kernels = {
        b.name: CudaStackKernel(b.name, stacks.runners[b.name], b.inputs, b.output_shapes)
        for b in stacks.bindings if b.name in stacks.runners
    }
    new_gm = rewrite_graph(gm, stacks, kernels)  # type: ignore[arg-type]
    stacks.info.compile_seconds = time.perf_counter() - t0
    return new_gm, stacks.info, stacks.module


def optimize_cuda(model: torch.nn.Module, spec: list[int], **options: Any) -> BrainSlugModule:
    """optimize() for a model on a CUDA device (see the module doc)."""
    unknown = set(options) - CUDA_OPTIONS
    if unknown:
        raise ValueError(f"unknown optimize() options: {sorted(unknown)}")
    if options.get("layout", "auto") not in ("auto", "NCHW"):
        raise ValueError("the CUDA backend plans NCHW models (layout='auto' or 'NCHW')")
    require_cuda_python()
    arch = options.get("arch") or options.get("cpu")
    arch = arch if isinstance(arch, str) and arch.startswith("sm_") else None
    device = model_device(model)
    gm, how, notes = trace_model(model, spec, device)
    if gm is None:
        info = PlanInfo(capture="none", notes=notes[:-1], target="nvptx")
        info.fallbacks.append(("<model>", notes[-1]))
        return CudaBrainSlugModule(model, None, spec, info)
    new_gm, info, _ = compile_cuda_plan(gm, spec, device, arch)
    info.capture, info.notes = how, notes + info.notes
    opt = CudaBrainSlugModule(model, new_gm, spec, info)
    if model.training or not speed.enabled():
        return opt
    return _kept_if_faster(opt, model, spec, device, [
        *plan_key_parts(gm, spec, "NCHW", CudaTarget(arch or "", device)), "cuda",
        torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)])


def _kept_if_faster(opt: CudaBrainSlugModule, model: torch.nn.Module, spec: list[int],
                    device: torch.device, key_parts: list[str]) -> CudaBrainSlugModule:
    """Never slower than eager, as on the CPU (`speed`): the plan measured
    against the model on the device; from the smallest batch where it pays,
    or not at all."""
    info = opt.info
    judged = speed.judge(opt, model, spec, key_parts, "the CUDA plan", device)
    if judged.keep:
        if judged.min_batch is not None:
            info.min_batch = judged.min_batch
        info.notes += judged.notes
        return opt
    slower = PlanInfo(capture=info.capture, target="nvptx", notes=judged.notes)
    slower.fallbacks.append(("<model>", "the CUDA plan measured slower than the model: it "
                             "runs as it is"))
    return CudaBrainSlugModule(model, None, spec, slower)

"""`torch.compile(model, backend="brainslug")`.

Dynamo hands over an fx graph of torch functions with parameters as graph
inputs; BrainSlug maps it like a traced model, compiles its stacks for the
example inputs' shapes and returns the rewritten graph. Graphs that need
gradients run unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

BACKEND_NAME = "brainslug"


def brainslug_backend(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    """Compile one dynamo graph; inference only (training graphs run as they are)."""
    from brainslug.frontend_torch.compile import compile_plan
    from brainslug.frontend_torch.shapes import tensor_meta

    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
    if len(tensors) != len(example_inputs) or any(t.device.type != "cpu" for t in tensors):
        return gm.forward  # symbolic sizes or device tensors: leave the graph to PyTorch
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return gm.forward
    metas = tensor_meta(gm, list(example_inputs))
    plan, _, _ = compile_plan(gm, metas=metas)

    def run(*args: Any) -> Any:
        with torch.no_grad():
            return plan(*args)

    run.brainslug_plan = plan  # type: ignore[attr-defined]
    return run


def register_backend() -> None:
    """Make `backend="brainslug"` known to torch.compile (idempotent)."""
    from torch._dynamo import list_backends
    from torch._dynamo.backends.registry import register_backend as _register

    if BACKEND_NAME not in list_backends(exclude_tags=()):
        _register(compiler_fn=brainslug_backend, name=BACKEND_NAME)

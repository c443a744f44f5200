"""PyTorch frontend: capture with torch.fx, plan, compile, run."""

from brainslug.frontend_torch.optimize import optimize
from brainslug.frontend_torch.ptx import emit_ptx

__all__ = ["emit_ptx", "optimize"]

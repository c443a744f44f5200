"""PyTorch frontend: capture with torch.fx, plan, compile, run."""

from brainslug.frontend_torch.optimize import optimize

__all__ = ["optimize"]

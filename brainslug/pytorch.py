"""BrainSlug for PyTorch.

    import brainslug.pytorch as brainslug
    model = brainslug.optimize(model, [0, 3, 224, 224])   # 0 = any batch size
    print(brainslug.report(model))

Importing this module also registers the `torch.compile` backend "brainslug".
"""

from brainslug.frontend_torch.dynamo import register_backend
from brainslug.frontend_torch.optimize import optimize
from brainslug.frontend_torch.report import report

register_backend()

__all__ = ["optimize", "report"]

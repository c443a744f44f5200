"""BrainSlug for PyTorch.

    import brainslug.pytorch as brainslug
    model = brainslug.optimize(model, [0, 3, 224, 224])   # 0 = any batch size
    print(brainslug.report(model))
    brainslug.save(model, "model.bslug")       # one file; brainslug.load() in any process

Importing this module also registers the `torch.compile` backend "brainslug".
"""

from brainslug.frontend_torch.dynamo import register_backend
from brainslug.frontend_torch.optimize import optimize
from brainslug.frontend_torch.report import report
from brainslug.frontend_torch.saved import load, save

register_backend()

__all__ = ["load", "optimize", "report", "save"]

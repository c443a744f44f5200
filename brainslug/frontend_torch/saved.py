"""`save(opt, path)` and `load(path)`: an optimized PyTorch module in one file.

The file holds the plan's graph, the modules it calls, the parameters, the
report and the kernels (object code and IR) as `plan_file` encodes them.
`load` builds the module from it in any process: it needs neither the
model's class nor a compiler run when the CPU features and versions match,
and recompiles the kernels from their IR with a warning when they don't.
The object code runs on load, like a shared library: load only files you trust.
"""

from __future__ import annotations

import os

from brainslug.frontend_torch.kernel_module import kernel_threads
from brainslug.frontend_torch.module import BrainSlugModule
from brainslug.frontend_torch.plan_file import decode, encode
from brainslug.plan.saved import SaveError
from brainslug.runtime import bundle


def save(opt: BrainSlugModule, path: str | os.PathLike[str]) -> None:
    """Writes the optimized module `opt` to one file at `path`."""
    if not isinstance(opt, BrainSlugModule) or type(opt) is not BrainSlugModule:
        raise SaveError(f"brainslug.save takes what brainslug.optimize returns for a CPU "
                        f"model, got a {type(opt).__name__}")
    if opt.plan is None or opt.kernels is None:
        raise SaveError("this model was not optimized (it runs as it is; see "
                        "brainslug.report): save the model itself with torch.save")
    bundle.write(path, *encode(opt.plan, opt.original, opt.info, opt.input_shape,
                               opt.options, opt.kernels))


def load(path: str | os.PathLike[str]) -> BrainSlugModule:
    """The optimized module saved at `path`, in eval mode. A damaged or
    foreign file is a ValueError naming it and what is wrong."""
    d = decode(bundle.read(path), None, kernel_threads)
    return BrainSlugModule(d.original, d.plan, d.input_shape, d.info, kernels=d.kernels,
                           options=d.options)

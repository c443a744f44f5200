"""BrainSlug for TensorFlow: Keras 3 models (Functional and Sequential).

    import brainslug.tensorflow as brainslug
    opt = brainslug.optimize(model, [0, 224, 224, 3])   # NHWC, 0 = any batch size
    y = opt(x)                                          # == model(x, training=False)
    print(brainslug.report(opt))

Layers map to the `nn` dialect in NHWC; memory-bound sequences become stacks
compiled for NHWC (innermost vector loop along C), convolutions and dense
layers run in TensorFlow, and every other layer runs in Keras with the reason
in the report.
"""

from __future__ import annotations

from typing import Any

from brainslug.frontend_tf.api import optimize, report

__all__ = ["optimize", "report"]


def __dir__() -> list[str]:
    return __all__


_ = Any

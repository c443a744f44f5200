"""BrainSlug for TensorFlow (Keras models and tf.function graphs).

The TensorFlow frontend is planned (see the issue "TensorFlow frontend"): it will
map Keras layers to the same `nn` dialect in NHWC and share the plan, the
kernels and the report with the PyTorch frontend. Until then `optimize` says so.
"""

from __future__ import annotations

from typing import Any


def optimize(model: Any, shape: Any, **options: Any) -> Any:
    raise NotImplementedError(
        "brainslug.tensorflow.optimize is not implemented yet; the PyTorch frontend "
        "(brainslug.pytorch) is available"
    )


def report(opt: Any) -> str:
    raise NotImplementedError("brainslug.tensorflow.report is not implemented yet")

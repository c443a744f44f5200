"""BrainSlug for TensorFlow: Keras 3 models and tf.function graphs.

    import brainslug.tensorflow as brainslug
    opt = brainslug.optimize(model, [0, 224, 224, 3])   # NHWC, 0 = any batch size
    y = opt(x)                                          # == model(x, training=False)
    print(brainslug.report(opt))
    brainslug.save(opt, "model.bslug")                  # brainslug.load() it anywhere

`model` is a Keras Functional or Sequential model (nested models are inlined)
or a `tf.function` / concrete function of one NHWC float32 tensor (captured
from its frozen graph). Layers map to the `nn` dialect in NHWC; memory-bound
sequences become stacks compiled for NHWC (innermost vector loop along C),
convolutions and dense layers run in TensorFlow (oneDNN), and every other
layer runs in TensorFlow with the reason in the report. `opt(x)` takes a
tf.Tensor or a numpy array and returns a tf.Tensor; kernels read and write
the tensors' memory directly (numpy views in, DLPack out, no copies).
Weights are snapshotted by optimize(): call it again after changing them.
"""

from __future__ import annotations

from brainslug.frontend_tf.api import optimize, report
from brainslug.frontend_tf.saved import load, save

__all__ = ["load", "optimize", "report", "save"]

"""`brainslug.tensorflow.save(opt, path)` and `load(path)`: an optimized Keras
model in one BrainSlug file (`runtime.bundle`).

The file holds the Keras model's own JSON config and its weights (the
safetensors layout), optimize()'s options, and the kernels (`plan.saved`:
object code and `nn` IR). `load` rebuilds the model from its config with
Keras (built-in layers, or custom ones registered with
`keras.saving.register_keras_serializable`), captures it again, and binds the
saved kernels to its stacks: nothing is lowered or compiled when the stacks
are the ones the kernels were compiled from and the CPU and versions match.
The object code runs on load, like a shared library: load only files you trust.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from brainslug.frontend_tf.optimize import compile_plan
from brainslug.plan.loaded import load_kernels
from brainslug.plan.saved import SaveError, kernel_sections
from brainslug.runtime import bundle

if TYPE_CHECKING:
    from brainslug.frontend_tf.module import OptimizedModel

KIND = "brainslug.tensorflow"
VERSION = 1
DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
          np.dtype(np.float16): "F16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
          np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}
NUMPY = {v: k for k, v in DTYPES.items()}


def save(opt: OptimizedModel, path: str | os.PathLike[str]) -> None:
    """Writes the optimized Keras model `opt` to one file at `path`."""
    import keras

    from brainslug.frontend_tf.module import OptimizedModel

    if not isinstance(opt, OptimizedModel):
        raise SaveError(f"brainslug.tensorflow.save takes what brainslug.tensorflow.optimize "
                        f"returns, got a {type(opt).__name__}")
    if opt.plan is None or opt.plan.kernels is None:
        raise SaveError("this model was not optimized (it runs as it is; see "
                        "brainslug.tensorflow.report): save the Keras model itself")
    if not isinstance(opt.original, keras.Model):
        raise SaveError("plans of a tf.function can't be saved: save the Keras model it "
                        "comes from, or the function with tf.saved_model")
    try:
        config = opt.original.to_json()
    except Exception as e:
        raise SaveError(f"the Keras model has no JSON config ({type(e).__name__}: {e})") from e
    weights = [np.asarray(w) for w in opt.original.get_weights()]
    for k, w in enumerate(weights):
        if w.dtype not in DTYPES:
            raise SaveError(f"weight {k} is {w.dtype}, which a file can't store")
    kernels, sections = kernel_sections(opt.plan.kernels)
    sections["tensors"] = bundle.encode_tensors(
        {f"w{k}": (DTYPES[w.dtype], w.shape, np.ascontiguousarray(w).tobytes())
         for k, w in enumerate(weights)}, {"format": "keras weights, in get_weights() order"})
    manifest = {"kind": KIND, "version": VERSION, "keras_config": config,
                "weights": len(weights), "input_shape": opt.input_shape,
                "options": opt.options, "kernels": kernels}
    bundle.write(path, manifest, sections)


def load(path: str | os.PathLike[str]) -> OptimizedModel:
    """The optimized model saved at `path`. A damaged or foreign file is a
    ValueError naming it and what is wrong."""
    import keras

    from brainslug.frontend_tf.api import DEFAULT_THREADS
    from brainslug.frontend_tf.module import OptimizedModel

    b = bundle.read(path)
    m = b.expect(KIND, VERSION, "a TensorFlow one (brainslug.pytorch.load reads PyTorch "
                                "plans)")
    try:
        raw = bundle.decode_tensors(b.section("tensors"))
        weights = [np.frombuffer(bytes(data), NUMPY[dtype]).reshape(shape)
                   for dtype, shape, data in (raw[f"w{k}"] for k in range(m["weights"]))]
    except (KeyError, ValueError, TypeError) as e:
        raise bundle.BundleError(f"{b.path}: damaged weights ({e})") from None
    try:
        model: Any = keras.models.model_from_json(m["keras_config"])
    except Exception as e:
        raise ValueError(f"{b.path}: Keras can't rebuild the model from its config "
                         f"({type(e).__name__}: {str(e)[:300]}); custom layers must be "
                         f"importable and registered with "
                         f"keras.saving.register_keras_serializable") from e
    model.set_weights(weights)
    options: dict[str, Any] = dict(m["options"])
    conv = options.get("conv", "auto")
    threads = options.get("threads", DEFAULT_THREADS if conv == "library" else None)
    kernels = load_kernels(m["kernels"], b, threads)
    plan = compile_plan(model, list(m["input_shape"]), cpu=kernels.target.cpu,
                        threads=threads, convs=conv != "library", saved=kernels)
    opt = OptimizedModel(model, plan, list(m["input_shape"]), plan.info,
                         options.get("mode", "eager"))
    opt.options = options
    return opt

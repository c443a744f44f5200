"""`optimize()` and `report()` of `brainslug.tensorflow`."""

from __future__ import annotations

from typing import Any

from brainslug.frontend_tf.optimize import check_shape, compile_plan
from brainslug.lowering.backends.x86 import check_cpu
from brainslug.plan.compile import strict
from brainslug.plan.report import PlanInfo, format_report

DEFAULT_THREADS: int | None = 1
"""Threads of the kernels' pool (None: the process-wide pool). The kernels run
between TensorFlow ops whose own thread pool keeps spinning on every core for a
while after each op; measured on a 2-core machine, kernels on one thread made
whole models 1.1-1.3x faster than on two (MobileNetV2, ResNet50, batch 1 and 8)."""


def optimize(model: Any, shape: Any, **options: Any) -> Any:
    """The BrainSlug-accelerated callable of a Keras model or a tf.function for
    NHWC inputs of `shape` (0 = any batch size).

    Options: `conv` ("auto", "library", "brainslug": who computes the
    convolutions; "library" keeps TensorFlow's, bit for bit; "brainslug" and
    "auto" compile each with the batch norm and activations after it: with
    convolutions in BrainSlug's kernels the plan calls TensorFlow far less,
    and measured on MobileNetV2 and ResNet50 that paid everywhere);
    `threads` (the kernels' thread pool, default `DEFAULT_THREADS`;
    None = the process-wide pool), `mode` ("eager": the schedule runs op by op
    from Python, the default; "graph": as one tf.function whose stacks are
    `tf.numpy_function` calls), `cpu` (LLVM CPU name, default the host),
    `verbose` (default True: a cold optimize() that runs past 2 s shows one
    line of progress on stderr, when it is a terminal, erased when done)."""
    import keras

    from brainslug.frontend_tf.graphdef import is_tf_function
    from brainslug.frontend_tf.keras_layers import Unmapped
    from brainslug.frontend_tf.module import OptimizedModel
    from brainslug.plan import progress

    if not isinstance(model, keras.Model) and not is_tf_function(model):
        raise ValueError(f"optimize() expects a keras.Model or a tf.function, got "
                         f"{type(model).__name__}")
    spec = check_shape(list(shape) if isinstance(shape, tuple) else shape)
    unknown = set(options) - {"cpu", "threads", "mode", "conv", "verbose"}
    if unknown:
        raise ValueError(f"unknown optimize() options: {sorted(unknown)}")
    verbose = options.get("verbose", True)
    if not isinstance(verbose, bool):
        raise ValueError(f"verbose must be True or False, got {verbose!r}")
    conv = options.get("conv", "auto")
    # with the convolutions in BrainSlug's kernels, TensorFlow runs little and
    # its spinning threads cost little: the kernels get every core
    threads = options.get("threads", DEFAULT_THREADS if conv == "library" else None)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    check_cpu(options.get("cpu", "host"))
    if conv not in ("auto", "library", "brainslug"):
        raise ValueError(f"conv must be one of ['auto', 'library', 'brainslug'], got {conv!r}")
    mode = options.get("mode", "eager")
    if mode not in ("eager", "graph"):
        raise ValueError(f"mode must be 'eager' or 'graph', got {mode!r}")
    try:
        with progress.showing(verbose):
            plan = compile_plan(model, spec, cpu=options.get("cpu", "host"), threads=threads,
                                convs=conv != "library")
    except Unmapped as e:
        info = PlanInfo(capture="none")
        info.fallbacks.append(("<model>", f"the model runs in Keras as it is: {e}"))
        return OptimizedModel(model, None, spec, info)
    except ValueError:  # bad input: the user's to fix
        raise
    except Exception as e:  # a bug of BrainSlug's: the model still runs
        if strict():
            raise
        info = PlanInfo(capture="none")
        info.fallbacks.append(("<model>", f"optimize() failed, the model runs as it is: "
                               f"{type(e).__name__}: {e}"))
        return OptimizedModel(model, None, spec, info)
    opt = OptimizedModel(model, plan, spec, plan.info, mode)
    opt.options = {k: v for k, v in options.items() if k != "cpu" or v != "host"}
    if mode == "graph":
        plan.info.notes.append("the schedule runs as one tf.function; stacks are "
                               "tf.numpy_function calls")
    return opt


def report(opt: Any) -> str:
    """The report of a model returned by `brainslug.tensorflow.optimize`."""
    info = getattr(opt, "info", None)
    if not isinstance(info, PlanInfo):
        raise ValueError("report() expects a model returned by brainslug.tensorflow.optimize()")
    name = getattr(opt.original, "name", None) or type(opt.original).__name__
    return format_report(info, f"BrainSlug plan for {name} (layout NHWC)")

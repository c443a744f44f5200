"""TensorFlow benchmark: Keras eager, tf.function, XLA and BrainSlug in one process.

Every contender computes `model(x, training=False)` of a `keras.applications`
model (no weights) on an NHWC float32 input. The outputs are checked against
Keras eager first; then the contenders that pass are timed interleaved after
a warm-up (see `brainslug.bench.stats`), with ratios to BrainSlug per round.
`roofline` measures every compiled stack of an optimized Keras model against
the copy bandwidth, as `brainslug.bench.roofline` does for PyTorch.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from brainslug.bench.harness import (
    BASELINE,
    TOLERANCE,
    ModelResult,
    Row,
    _short,
    empty_kernel_cache,
    format_table,
    to_json,
)
from brainslug.bench.stats import median, summarize, time_interleaved

TF_CONTENDERS = ("keras_eager", "tf_function", "xla", "brainslug", "brainslug_library")


def load_keras_model(name: str) -> tuple[Any, int]:
    """A `keras.applications` model without weights, and its input size."""
    import keras

    ctor = getattr(keras.applications, name, None)
    if ctor is None or not callable(ctor):
        known = [n for n in dir(keras.applications) if n[0].isupper()]
        raise ValueError(f"unknown keras.applications model {name!r}; known: {known}")
    model = ctor(weights=None)
    return model, int(model.inputs[0].shape[1])


def build(name: str, model: Any, shape: list[int], opt: Any) -> Callable[[Any], Any]:
    """The function that runs `model` on a tf.Tensor for contender `name`."""
    import tensorflow as tf

    if name == "keras_eager":
        return lambda x: model(x, training=False)
    if name == "tf_function":
        return tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    if name == "xla":
        return tf.function(lambda x: model(x, training=False), jit_compile=True)
    if name == "brainslug":
        if opt is None:
            raise RuntimeError("optimize() failed")
        return opt
    if name == "brainslug_library":  # convolutions in TensorFlow
        import brainslug.tensorflow as brainslug

        return brainslug.optimize(model, shape, conv="library")
    raise ValueError(f"unknown contender {name!r}; known: {', '.join(TF_CONTENDERS)}")


def compare(out: Any, ref: np.ndarray, tolerance: float = TOLERANCE) -> tuple[float, str | None]:
    """(max|out - ref|, why it fails or None)."""
    o = np.asarray(out)
    if o.shape != ref.shape:
        return math.nan, f"shape {o.shape}, eager {ref.shape}"
    d = float(np.abs(o - ref).max()) if ref.size else 0.0
    if not math.isfinite(d):
        return d, "not finite where eager is"
    bound = tolerance * max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
    return d, (f"max|Δ| {d:.3g} > {bound:.3g}" if d > bound else None)


def bench_tf_model(name: str, model: Any, hw: int, batches: Sequence[int],
                   contenders: Sequence[str] | None = None, *, repeats: int = 20,
                   warmup: int = 3, log: Callable[[str], None] = print,
                   seed: int = 0) -> ModelResult:
    """Benchmarks one Keras model at each batch size."""
    import tensorflow as tf

    import brainslug.tensorflow as brainslug

    names = list(contenders or TF_CONTENDERS)
    result = ModelResult(name, hw)
    shape = [0, hw, hw, int(model.inputs[0].shape[3])]
    opt = None
    if "brainslug" in names:
        with empty_kernel_cache():
            try:
                t0 = time.perf_counter()
                brainslug.optimize(model, shape)
                result.optimize_cold_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                opt = brainslug.optimize(model, shape)
                result.optimize_warm_s = time.perf_counter() - t0
                log(f"  optimize(): cold {result.optimize_cold_s:.2f} s (empty kernel cache), "
                    f"warm {result.optimize_warm_s:.2f} s")
            except Exception as e:
                result.notes.append(f"optimize() failed: {_short(e)}")
                log(f"  optimize() failed: {_short(e)}")
    built: dict[str, Callable[[Any], Any]] = {}
    dropped: dict[str, str] = {}
    for n in names:
        try:
            built[n] = build(n, model, shape, opt)
        except Exception as e:
            dropped[n] = f"build failed: {_short(e)}"
    rng = np.random.default_rng(seed)
    for batch in batches:
        x = tf.constant(rng.standard_normal((batch, hw, hw, shape[3])).astype(np.float32))
        ref = np.asarray(model(x, training=False))
        rows: dict[str, Row] = {}
        fns: dict[str, Callable[[], Any]] = {}
        for n in names:
            row = rows[n] = Row(name, batch, n)
            if n in dropped:
                row.status, row.note = "error", dropped[n]
                continue
            try:
                t0 = time.perf_counter()
                out = built[n](x)
                row.setup_s = time.perf_counter() - t0
            except Exception as e:
                row.status, row.note = "error", f"run failed: {_short(e)}"
                log(f"  {n} (batch {batch}): run failed: {_short(e)}")
                continue
            diff, why = compare(out, ref)
            row.max_abs_diff = diff
            if why is not None:
                row.status, row.note = "FAILED", why
                log(f"  {n} (batch {batch}): FAILED the check against eager: {why}")
                continue
            fns[n] = _bind(built[n], x)
        times, errors = time_interleaved(fns, repeats, warmup)
        for n, msg in errors.items():
            rows[n].status, rows[n].note = "error", f"raised while timed: {msg}"
        for n, s in summarize(times, BASELINE).items():
            r = rows[n]
            r.median_ms = s.median_ms
            r.ratio_vs_brainslug_median = s.ratio_median
            r.ratio_vs_brainslug_min = s.ratio_min
            r.ratio_vs_brainslug_max = s.ratio_max
        result.rows += [rows[n] for n in names]
        log(format_table(result, batch, repeats, warmup))
    return result


def _bind(run: Callable[[Any], Any], x: Any) -> Callable[[], Any]:
    return lambda: run(x)


def run_tf_benchmark(models: Sequence[str], batches: Sequence[int],
                     contenders: Sequence[str] | None = None, *, repeats: int = 20,
                     warmup: int = 3, hw: int | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Benchmarks keras.applications models; returns the JSON document."""
    import tensorflow as tf

    results = []
    for m in models:
        model, size = load_keras_model(m)
        if hw is not None and hw != size:
            import keras

            model = getattr(keras.applications, m)(weights=None, input_shape=(hw, hw, 3))
            size = hw
        log(f"== {m} ({size}x{size}) ==")
        results.append(bench_tf_model(m, model, size, batches, contenders, repeats=repeats,
                                      warmup=warmup, log=log))
        del model
        gc.collect()
    doc = to_json(results, repeats=repeats, warmup=warmup)
    doc["meta"]["tensorflow"] = tf.__version__
    return doc


# ------------------------------------------------------------------ roofline


def roofline(opt: Any, x: Any, *, model_name: str = "", repeats: int = 7,
             copy_bytes: int = 256 << 20) -> dict[str, Any]:
    """The roofline document of `brainslug.bench.roofline` for a Keras plan."""
    from brainslug.bench.roofline import (
        CacheFlusher,
        StackResult,
        copy_bandwidth,
        time_call_cold,
    )
    from brainslug.bench.stack_calls import StackCall, time_call

    layers = {s.name: s.layers for s in opt.info.stacks}
    opt(x)
    calls: list[StackCall] = []
    steps = [st for st in opt.steps if st.stack is not None]
    originals = [st.runner for st in steps]

    def recorder(st: Any, runner: Any) -> Callable[[list[Any], int], None]:
        n_out = len(st.stack.outputs)

        def record(buffers: list[Any], batch: int) -> None:
            n_in = len(buffers) - n_out
            copied = [np.array(b) for b in buffers[:n_in]] + \
                [np.empty_like(b) for b in buffers[n_in:]]
            calls.append(StackCall(st.stack.name, runner, copied, n_out, batch))
            runner(buffers, batch)

        return record

    try:
        for st, r in zip(steps, originals, strict=True):
            st.runner = recorder(st, r)
        opt(x)
    finally:
        for st, r in zip(steps, originals, strict=True):
            st.runner = r
    bw = copy_bandwidth(copy_bytes)
    flush = CacheFlusher()
    stacks = []
    for c in calls:
        cold = time_call_cold(c, flush, repeats)
        hot = time_call(c, repeats)
        stacks.append(StackResult(c.name, layers.get(c.name, []), c.bytes, cold * 1e3,
                                  c.bytes / cold / 1e9, None, hot * 1e3, c.bytes / hot / 1e9,
                                  model_name, int(x.shape[0])))
    flush_bytes = flush.buffer.numel() * 4
    del flush
    bw += copy_bandwidth(copy_bytes)
    copy_gbps = median(bw)
    for s in stacks:
        s.copy_fraction = s.gbps / copy_gbps
    forward_s = time_call(lambda: opt(x), max(3, repeats // 2), min_time=0.0)
    return {"copy_gbps": copy_gbps, "copy_gbps_samples": bw, "forward_ms": forward_s * 1e3,
            "flush_bytes": flush_bytes, "stacks": [asdict(s) for s in stacks]}

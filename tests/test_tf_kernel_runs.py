"""TensorFlow schedules: consecutive stack steps run as one native call
(`frontend_tf/kernel_runs.py`), with the same results as step by step and
as Keras, a TensorFlow op between stacks splitting the run."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import brainslug.tensorflow as brainslug  # noqa: E402
from brainslug.frontend_tf import module as tf_module  # noqa: E402
from brainslug.frontend_tf.kernel_runs import KernelRun  # noqa: E402

L = keras.layers


def _model(between: bool = False) -> keras.Model:
    inp = keras.Input(shape=(13, 11, 5))
    x = L.Conv2D(37, 3, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    if between:
        x = L.Lambda(lambda t: tf.reverse(t, axis=[2]))(x)  # a TensorFlow op
    x = L.Conv2D(19, 1)(x)
    x = L.BatchNormalization()(x)
    y = L.Activation("swish")(x)
    x = L.Conv2D(19, 3, padding="same")(y)
    x = L.Add()([x, y])
    model = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            for v, lo, hi in ((layer.moving_mean, -0.5, 0.5), (layer.moving_variance, 0.5, 2.0),
                              (layer.gamma, 0.5, 1.5), (layer.beta, -0.3, 0.3)):
                v.assign(rng.uniform(lo, hi, v.shape).astype("float32"))
    return model


def _runs(opt) -> list[KernelRun]:
    return list(opt._runs.values())


def _close(got, ref) -> None:
    ref, got = np.asarray(ref), np.asarray(got)
    err = float(np.abs(got - ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), err


@pytest.mark.parametrize("batch", [1, 3])
def test_stack_steps_run_in_one_native_call(batch: int, monkeypatch) -> None:
    model = _model()
    opt = brainslug.optimize(model, [0, 13, 11, 5], conv="brainslug")
    runs = _runs(opt)
    stacks = sum(1 for st in opt.steps if st.stack is not None)
    assert len(runs) == 1 and runs[0].end - runs[0].start == stacks >= 3
    x = tf.random.normal([batch, 13, 11, 5], seed=batch)
    ref = model(x, training=False)
    first = opt(x).numpy()  # step by step; prepares the run
    monkeypatch.setattr(tf_module.FastCalls, "__call__",
                        lambda *a: pytest.fail("a kernel was called step by step"))
    native = opt(x).numpy()
    monkeypatch.undo()
    _close(native, ref)
    assert np.array_equal(native, first)


def test_a_tensorflow_op_between_stacks_splits_the_run() -> None:
    model = _model(between=True)
    opt = brainslug.optimize(model, [0, 13, 11, 5], conv="brainslug")
    runs = _runs(opt)
    assert len(runs) == 2
    assert any(opt.steps[k].piece is not None for k in range(runs[0].end, runs[1].start))
    for batch in (2, 1, 2):
        x = tf.random.normal([batch, 13, 11, 5], seed=batch)
        _close(opt(x), model(x, training=False))


def test_arena_pointers_are_set_once_per_thread_storage(monkeypatch) -> None:
    """A run points its slots at a thread's arena storage once; later calls
    set only the inputs' and fresh outputs' pointers. Each thread's storage,
    and each batch size's, gets its own pointers and the right results."""
    import threading

    from brainslug.frontend_tf import kernel_runs

    model = _model()
    opt = brainslug.optimize(model, [0, 13, 11, 5], conv="brainslug")
    built = []
    init = kernel_runs._Fixed.__init__

    def counted(self, *a, **k):
        built.append(threading.get_ident())
        init(self, *a, **k)

    monkeypatch.setattr(kernel_runs._Fixed, "__init__", counted)
    xs = {b: tf.random.normal([b, 13, 11, 5], seed=10 + b) for b in (2, 3)}
    refs = {b: model(x, training=False) for b, x in xs.items()}
    for _ in range(2):
        _close(opt(xs[2]), refs[2])  # prepares, then runs natively
    assert len(built) == 1
    for _ in range(3):
        _close(opt(xs[2]), refs[2])
    assert len(built) == 1  # the same storage: no new pointers
    for _ in range(2):
        _close(opt(xs[3]), refs[3])  # another batch size: its own storage
    _close(opt(xs[2]), refs[2])
    assert len(built) == 2  # (a batch size's run keeps its own pointers)

    got = {}

    def other() -> None:
        for _ in range(3):
            got["y"] = opt(xs[2]).numpy()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    _close(got["y"], refs[2])
    assert t.ident in built
    _close(opt(xs[2]), refs[2])  # this thread's storage again

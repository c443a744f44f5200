"""The contenders: ways of running one PyTorch model for inference.

A builder takes the model (eval mode, never modified: builders that change it
work on a copy) and a `BuildContext`, and returns a `Contender` whose `run(x)`
computes the model's output for an NCHW float32 input `x`. A builder that
cannot build raises `Skip` (with a note: the contender is left out) or any
other exception (reported as an error); neither stops the benchmark.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


class Skip(Exception):
    """The contender does not apply here (a note, not an error)."""


@dataclass
class Contender:
    name: str
    run: Callable[[Any], Any]
    """The model's output for a prepared input."""
    prepare: Callable[[torch.Tensor], Any] = lambda x: x
    """The NCHW input as this contender takes it (done once, outside timing)."""
    compile_context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    """Active on the calls before timing (the ones that compile lazily)."""
    note: str = ""


@dataclass
class BuildContext:
    shape: list[int]  # [0, C, H, W]
    example: torch.Tensor  # an input of batch 2
    brainslug: Any = None  # the module optimize() returned (the harness times it)
    extra: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[torch.nn.Module, BuildContext], Contender]


def load_model(name: str) -> tuple[torch.nn.Module, int]:
    """A torchvision classification model without weights, and its input size.
    Its weights are perturbed (`testing.weights.perturb`: random BN statistics,
    no zero head, layer scales near 1) so that the correctness check before
    timing compares outputs that depend on every layer: at initialisation
    vit_b_16's logits are exactly 0 and efficientnet_b0's about 1e-20."""
    import torchvision

    from brainslug.testing.weights import perturb

    kwargs: dict[str, Any] = {"weights": None}
    if name in ("inception_v3", "googlenet"):
        kwargs["init_weights"] = True
    try:
        model = torchvision.models.get_model(name, **kwargs)
    except ValueError as e:
        raise ValueError(f"unknown torchvision model {name!r}: {e}") from None
    return perturb(model.eval()), 299 if name == "inception_v3" else 224


# --------------------------------------------------------------------- eager


def eager(model: torch.nn.Module, ctx: BuildContext) -> Contender:
    return Contender("eager", model)


def eager_channels_last(model: torch.nn.Module, ctx: BuildContext) -> Contender:
    m = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    return Contender(
        "eager_channels_last",
        m,
        prepare=lambda x: x.contiguous(memory_format=torch.channels_last),
        note="input converted to channels_last outside timing",
    )


# ------------------------------------------------------------- torch.compile


def _compile(name: str, model: torch.nn.Module, freezing: bool) -> Contender:
    import torch._dynamo

    # every batch size gets its own static-shape graph; several models share
    # forward code objects, so allow more than the default 8 graphs per code
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    m = copy.deepcopy(model).eval()
    # freezing goes in `options`, not in a config patch around the first call:
    # dynamo keys its cache on the forward code object and the backend, so a
    # second torch.compile of the same class with the same backend would
    # silently reuse the first one's (unfrozen) graph
    compiled = torch.compile(m, dynamic=False, options={"freezing": freezing})  # inductor
    return Contender(
        name,
        compiled,
        note="inductor, static shapes (compiled on the first call per batch)"
        + (", freezing" if freezing else ""),
    )


def torch_compile(model: torch.nn.Module, ctx: BuildContext) -> Contender:
    return _compile("torch_compile", model, freezing=False)


def torch_compile_freezing(model: torch.nn.Module, ctx: BuildContext) -> Contender:
    return _compile("torch_compile_freezing", model, freezing=True)


# --------------------------------------------------------------- onnxruntime


def export_onnx(model: torch.nn.Module, example: torch.Tensor) -> tuple[bytes, str]:
    """The model as ONNX with a dynamic batch axis: (bytes, how it was exported).

    The TorchScript exporter first (fast, robust on torchvision models), then
    the torch.export-based one."""
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            f = io.BytesIO()
            torch.onnx.export(
                model,
                (example,),
                f,
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}},
                opset_version=17,
            )
            return f.getvalue(), "torch.onnx.export(dynamo=False)"
        except Exception as e:
            errors.append(f"dynamo=False: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["x"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
            return prog.model_proto.SerializeToString(), "torch.onnx.export(dynamo=True)"
        except Exception as e:
            errors.append(f"dynamo=True: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    raise RuntimeError("ONNX export failed: " + "; ".join(errors))


def onnxruntime(model: torch.nn.Module, ctx: BuildContext, threads: int = 2) -> Contender:
    import numpy as np
    import onnxruntime as ort

    data, how = export_onnx(model, ctx.example)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # spinning workers would steal the cores from the contender timed next
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> list[torch.Tensor]:
        return [torch.from_numpy(y) for y in sess.run(None, {in_name: x})]

    return Contender(
        "onnxruntime",
        run,
        prepare=lambda x: np.ascontiguousarray(x.numpy()),
        note=f"{how}, CPU EP, {threads} intra-op threads, no spinning",
    )


# ----------------------------------------------------------------- brainslug


def brainslug(model: torch.nn.Module, ctx: BuildContext) -> Contender:
    if ctx.brainslug is None:
        from brainslug.pytorch import optimize

        ctx.brainslug = optimize(model, ctx.shape).eval()
    return Contender("brainslug", ctx.brainslug)


def brainslug_fold(model: torch.nn.Module, ctx: BuildContext) -> Contender:
    from brainslug.pytorch import optimize

    try:
        opt = optimize(model, ctx.shape, fold_batchnorm=True)
    except (TypeError, ValueError) as e:
        if "fold_batchnorm" in str(e):
            raise Skip(f"optimize() does not accept fold_batchnorm yet ({e})") from None
        raise
    return Contender("brainslug_fold", opt.eval())


def _brainslug_conv(mode: str) -> Builder:
    def build(model: torch.nn.Module, ctx: BuildContext) -> Contender:
        from brainslug.pytorch import optimize

        return Contender(f"brainslug_{mode}", optimize(model, ctx.shape, conv=mode).eval())

    return build


CONTENDERS: dict[str, Builder] = {
    "eager": eager,
    "eager_channels_last": eager_channels_last,
    "torch_compile": torch_compile,
    "torch_compile_freezing": torch_compile_freezing,
    "onnxruntime": onnxruntime,
    "brainslug": brainslug,
    "brainslug_fold": brainslug_fold,
    "brainslug_library": _brainslug_conv("library"),  # convolutions in oneDNN
    "brainslug_convs": _brainslug_conv("brainslug"),  # convolutions in BrainSlug's kernels
}
"""Every contender, in the default order of the table."""

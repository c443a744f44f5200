"""Getting a model's graph: the input shapes, tracing (torch.fx, else
torch.export), the capture on the model's device, and the capture as the plan
layer sees it.

An input spec is one shape (`[0, 3, 224, 224]`, a model of one input) or a
list of shapes, one per input of the model's forward (`[[0, 37, 13, 13],
[0, 37]]`); 0 is any size, and a 0 in dim 0 is the batch, which is the same
for all inputs of one call."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch.batch_split import split_merged_batch
from brainslug.frontend_torch.capture import Capture, capture
from brainslug.frontend_torch.shapes import propagate_shapes
from brainslug.frontend_torch.static_sizes import fold_static_sizes
from brainslug.frontend_torch.tracing import export, trace
from brainslug.plan.capture import Bound, Captured

Spec = list[int] | list[list[int]]
"""What `check_shape` returns: one shape (one input), or one shape per input."""

EXAMPLE = "[[0, 3, 224, 224], [0, 10]]"


def _one_shape(shape: Any, spec: Any, k: int | None = None) -> list[int]:
    where = "" if k is None else f"shape {k} of the input spec: "
    if isinstance(shape, torch.Size | tuple):
        shape = list(shape)
    if not isinstance(shape, list) or not shape:
        raise ValueError(f"{where}shape must be a non-empty list of ints such as "
                         f"[0, 3, 224, 224], got {shape!r}"
                         + (f" (in {spec!r})" if k is not None else ""))
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"{where}shape entries must be ints >= 0 (0 = any size), "
                             f"got {shape!r}" + (f" (in {spec!r})" if k is not None else ""))
        out.append(int(d))
    return out


def check_shape(shape: Any) -> Spec:
    """The input spec, checked: one shape as a list of ints (a model of one
    input), or a list of such shapes, one per input of the model (a list of
    one shape is the one-input form). 0 means any extent (the batch)."""
    if isinstance(shape, torch.Size | tuple):
        shape = list(shape)
    if isinstance(shape, list) and shape and all(
            isinstance(s, list | tuple | torch.Size) for s in shape):
        shapes = [_one_shape(s, shape, k) for k, s in enumerate(shape)]
        return shapes[0] if len(shapes) == 1 else shapes
    if isinstance(shape, list) and any(isinstance(s, list | tuple | torch.Size) for s in shape):
        raise ValueError(f"the input spec mixes shapes and ints: give one shape such as "
                         f"[0, 3, 224, 224], or one shape per input such as {EXAMPLE}; "
                         f"got {shape!r}")
    return _one_shape(shape, shape)


def input_shapes(spec: Spec | None) -> list[list[int]]:
    """One shape per input of a checked spec (none for None)."""
    if spec is None or not spec:
        return []
    if all(isinstance(s, list | tuple) for s in spec):
        return [list(s) for s in spec]  # type: ignore[arg-type]
    return [list(spec)]  # type: ignore[arg-type]


def shape_text(shape: Sequence[int]) -> str:
    """`Nx3x224x224` for [0, 3, 224, 224]."""
    return "x".join("N" if d == 0 else str(d) for d in shape)


def spec_text(spec: Spec | None) -> str:
    """The spec as the errors and the report write it: `Nx3x224x224`, or
    `(Nx37x13x13, Nx37)` for several inputs."""
    shapes = input_shapes(spec)
    if len(shapes) == 1:
        return shape_text(shapes[0])
    return "(" + ", ".join(shape_text(s) for s in shapes) + ")"


def example_inputs(spec: Spec, batch: int = 1, *,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Random inputs of the spec, one per input, of batch size `batch` where
    the spec has 0 in dim 0 (the timings' inputs)."""
    return [torch.randn([batch if k == 0 and d == 0 else d for k, d in enumerate(s)],
                        generator=generator) for s in input_shapes(spec)]


def forward_parameters(model: torch.nn.Module) -> tuple[list[str], int, bool] | None:
    """(names of the positional parameters of the model's forward, how many of
    them have no default, whether it takes *args); None when it has no
    signature to read."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None
    names, required, var = [], 0, False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
            required += p.default is p.empty
        elif p.kind is p.VAR_POSITIONAL:
            var = True
    return names, required, var


def check_spec_fits(model: torch.nn.Module, spec: Spec) -> None:
    """ValueError naming the forward's parameters when the spec gives another
    number of shapes than the model takes inputs."""
    found = forward_parameters(model)
    if found is None:
        return
    names, required, var = found
    n = len(input_shapes(spec))
    if required <= n and (var or n <= len(names)):
        return
    takes = f"{required}" if required == len(names) and not var else (
        f"at least {required}" if var else f"{required} to {len(names)}")
    params = ", ".join(names) + (", *args" if var else "")
    given = f"1 shape ({spec_text(spec)})" if n == 1 else f"{n} shapes {spec_text(spec)}"
    raise ValueError(f"{type(model).__name__}.forward({params}) takes {takes} input"
                     f"{'' if takes == '1' else 's'}, but the input spec gives {given}: "
                     f"pass one shape per input, such as {EXAMPLE} for two inputs")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def trace_model(model: torch.nn.Module, spec: Spec, device: torch.device | None = None,
                ) -> tuple[fx.GraphModule | None, str, list[str]]:
    """(graph, how it was captured, notes): torch.fx, else torch.export (with
    example inputs on `device`); no graph when neither can capture the model,
    the reason being the last note."""
    try:
        gm = trace(model)
        packed = [str(n.target) for n in gm.graph.nodes
                  if n.op == "placeholder" and str(n.target).startswith("*")]
        if packed:  # a forward(*xs): fx passes the tuple as one value
            raise TypeError(f"the forward takes {packed[0]}, which torch.fx traces as one "
                            f"tuple")
    except Exception as e:  # fx can't trace it: torch.export, else run the model as it is
        notes = [f"torch.fx could not trace the model ({type(e).__name__}: "
                 f"{str(e).splitlines()[0][:200]}); captured with torch.export"]
    else:
        return gm, "torch.fx", _traced_through(gm, model, spec)
    ctx = torch.device(device) if device is not None and device.type != "cpu" \
        else contextlib.nullcontext()
    try:
        with ctx:
            gm = export(model, spec)
    except Exception as e2:
        return None, "none", [*notes, f"neither torch.fx nor torch.export could capture it: "
                              f"{type(e2).__name__}: {e2}"]
    return gm, "torch.export", notes + _split_batch(gm, spec)


def _traced_through(gm: fx.GraphModule, model: torch.nn.Module, spec: Spec) -> list[str]:
    """Trace through the calls that torchvision wraps for fx where the plan's
    static shapes decide their branches (Swin's window attention), and hold
    values that merge the batch with other dims split; notes."""
    from brainslug.frontend_torch.window_attention import (
        inline_window_attention,
        wraps_window_attention,
    )

    notes = []
    if wraps_window_attention(gm):
        try:
            metas = propagate_shapes(gm, input_shapes(spec))
        except Exception:  # the model does not run on the spec: capture says so
            return []
        if done := inline_window_attention(gm, metas, model):
            notes.append(f"{len(done)} calls of torchvision's shifted_window_attention "
                         f"traced through for H x W of the plan")
    if folded := fold_static_sizes(gm, input_shapes(spec)):
        notes.append(f"{folded} size computations that don't follow the batch folded "
                     f"to constants")
    return notes + _split_batch(gm, spec)


def _split_batch(gm: fx.GraphModule, spec: Spec) -> list[str]:
    split = split_merged_batch(gm, input_shapes(spec))
    return [f"{split} values that merge the batch with other dims (windows, heads) held "
            f"with the batch as a dim of its own"] if split else []


def capture_on_device(
    gm: fx.GraphModule, shape: Spec | None, device: torch.device
) -> Capture:
    """`capture`, with the example inputs of shape propagation made on `device`."""
    ctx = torch.device(device) if device.type != "cpu" else contextlib.nullcontext()
    with ctx:
        return capture(gm, input_shapes(shape))


def captured(cap: Capture) -> Captured:
    """The capture as the plan layer sees it: graph arguments are fx nodes
    (by name) or the model's own tensors (bound)."""
    out = Captured(cap.module, [], cap.library_reasons)
    args = out.function.body.block.args
    out.sources = [
        src.name if isinstance(src, fx.Node) else Bound(src, a.name_hint or "param")
        for src, a in zip(cap.arg_sources, args, strict=True)
    ]
    return out

"""`BrainSlugModule`: what optimize() returns.

In eval mode it runs the optimized plan (inference only, no autograd); in
training mode it runs the original model unchanged. `.train()`/`.eval()`
switch between the two as on any module.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Collection
from typing import Any

import torch
import torch.fx as fx

from brainslug.frontend_torch.fold import FoldedConv2d
from brainslug.frontend_torch.graph import input_shapes, shape_text, spec_text
from brainslug.frontend_torch.kernel_module import ForkedChild, StackKernel, after_fork
from brainslug.frontend_torch.replaced_tensors import watch_plan
from brainslug.plan.report import PlanInfo
from brainslug.plan.saved import PlanKernels

MAX_BATCH_SIZES = 8
"""Batch sizes whose buffers a plan keeps (the last used)."""


def _arenas(plan: fx.GraphModule | None) -> list[Any]:
    if plan is None:
        return []
    found = {id(m._arena): m._arena for m in plan.modules()
             if isinstance(m, StackKernel) and m._arena is not None}
    return list(found.values())


class BrainSlugModule(torch.nn.Module):
    """The original model plus its BrainSlug plan."""

    device_type = "cpu"
    """Where the plan's inputs must be (the inputs of a model of several are
    checked against it; `check_input` checks the input of a model of one)."""

    def __init__(self, original: torch.nn.Module, plan: fx.GraphModule | None,
                 shape: list[int] | list[list[int]], info: PlanInfo, *,
                 kernels: PlanKernels | None = None, options: dict[str, Any] | None = None):
        super().__init__()
        self.original = original
        self.plan = plan
        # the input spec as optimize() took it: one shape, or one per input
        self.input_shape = [list(s) if isinstance(s, list | tuple) else s for s in shape]
        self.input_shapes = input_shapes(self.input_shape)  # one per input
        self.input_names = _input_names(plan, original, len(self.input_shapes))
        self.info = info
        self.kernels = kernels  # what `brainslug.save` stores of the plan's kernels
        self.options = dict(options or {})  # optimize()'s options
        self._warned_train = False
        self._warned_grad = False
        self._accepted: set[torch.Size] = set()  # input shapes that passed `check_input`
        # called before each run: folded batch norms fold the model's weights again
        # when they changed (`fold.FoldedConv2d.refresh`)
        self._refresh = [m.refresh for m in plan.modules()
                         if isinstance(m, FoldedConv2d)] if plan is not None else []
        # what keeps buffers per batch size: kernels, packed convolutions, arenas
        self._releasers = [m.release for m in plan.modules() if hasattr(m, "release")
                           and callable(m.release)] if plan is not None else []
        self._releasers += [a.release for a in _arenas(plan)]
        # the plan's copies of tensors the model replaces later take the new ones
        self._holders = watch_plan(plan, original) if plan is not None else []
        self.max_batch_sizes = MAX_BATCH_SIZES
        self._batches: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._last_batch = -1  # (the most recent of `_batches`)
        self.train(original.training)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """The original model's state_dict (its keys as in the plain model)."""
        return self.original.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True,  # type: ignore[override]
                        assign: bool = False) -> Any:
        """Loads into the original model; the plan follows its weights."""
        if assign:
            raise ValueError("load_state_dict(assign=True) would replace the tensors the plan "
                             "reads: load into the model without assign, or optimize() again")
        return self.original.load_state_dict(state_dict, strict=strict)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """pickle, copy.deepcopy and torch.save: the plan in `brainslug.save`'s
        format, the original model as it pickles."""
        from brainslug.frontend_torch.plan_file import encode, external_names
        from brainslug.runtime.bundle import to_bytes

        why = "it was not optimized (it runs as it is)" if self.plan is None \
            or self.kernels is None else ""
        if not why:
            try:
                data = to_bytes(*encode(self.plan, self.original, self.info,  # type: ignore[arg-type]
                                        self.input_shape, self.options, self.kernels,  # type: ignore[arg-type]
                                        external_names(self.original)))
                return _unpickle, (data, self.original)
            except ValueError as e:
                why = str(e)
        raise TypeError(f"this optimized module can't be pickled or copied: {why}. "
                        f"brainslug.save(opt, path) and brainslug.load(path) store the plan "
                        f"alone; or pickle the model and optimize() it again")

    def extra_repr(self) -> str:
        n = sum(1 for s in self.info.stacks if s.compiled)
        shape = f"shape={self.input_shape}" if len(self.input_shapes) == 1 \
            else f"shapes={self.input_shapes}"
        return f"{shape}, stacks={n}"

    def release_buffers(self, batch_sizes: Collection[int] | None = None) -> None:
        """Frees the buffers kept for inputs of these batch sizes (all if None),
        in every thread: activations, kernel scratch, packed weights. They are
        made again by the next call that needs them. Calls keep buffers for
        the `max_batch_sizes` batch sizes used last (default 8) and release
        the others by themselves."""
        batches = None if batch_sizes is None else frozenset(int(b) for b in batch_sizes)
        for release in self._releasers:
            release(batches)
        for b in list(self._batches):
            if batches is None or b in batches:
                self._batches.pop(b, None)
        self._last_batch = -1

    def buffer_bytes(self) -> int:
        """Bytes of activation and scratch buffers the plan holds, all threads."""
        if self.plan is None:
            return 0
        runners = {id(m.runner): m.runner for m in self.plan.modules()
                   if isinstance(m, StackKernel)}
        return sum(a.held_bytes() for a in _arenas(self.plan)) + sum(
            r.scratch_bytes() for r in runners.values() if hasattr(r, "scratch_bytes"))

    def _seen_batch(self, b: int) -> None:
        """Keeps the buffers of the last `max_batch_sizes` batch sizes."""
        recent = self._batches
        self._last_batch = b
        if b in recent:
            recent.move_to_end(b)
            return
        recent[b] = None
        if len(recent) > max(1, self.max_batch_sizes):
            self.release_buffers([next(iter(recent))])

    def check_input(self, x: Any) -> None:
        """ValueError naming what was expected when `x` does not fit the plan
        (a model of one input)."""
        if isinstance(x, torch.Tensor) and x.shape in self._accepted \
                and x.dtype is torch.float32 and x.device.type == "cpu":
            return
        self._check_tensor(x, self.input_shapes[0], "the input", "the input")
        if len(self._accepted) < 64:
            self._accepted.add(x.shape)

    def _check_tensor(self, x: Any, shape: list[int], what: str, which: str) -> None:
        """ValueError naming what was expected when tensor `x` (`what` in
        messages, `which` before "dim k") does not fit `shape`."""
        want = shape_text(shape)
        of = "" if what == "the input" else f" for {what}"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape {want}{of}, "
                             f"got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise ValueError(f"expected dtype torch.float32{of}, got {x.dtype}")
        if x.device.type != self.device_type:
            where = "a CPU tensor" if self.device_type == "cpu" \
                else f"a {self.device_type.upper()} tensor"
            plan = "x86-64" if self.device_type == "cpu" else "the GPU"
            raise ValueError(f"expected {where}{of} (the plan was compiled for {plan}), "
                             f"got device {x.device}")
        if x.dim() != len(shape):
            raise ValueError(f"expected a {len(shape)}-d input of shape {want}{of}, "
                             f"got {x.dim()}-d {tuple(x.shape)}")
        for k, (d, e) in enumerate(zip(x.shape, shape, strict=True)):
            if e and d != e:
                raise ValueError(f"expected input shape {want}{of}, got {tuple(x.shape)} "
                                 f"(dim {k} is {d}, expected {e})")
            if not e and d == 0:
                raise ValueError(f"dim {k} of {which} is empty")

    def check_inputs(self, args: tuple[Any, ...]) -> int:
        """ValueError naming what was expected when the call's inputs do not
        fit the plan: one tensor per shape of the spec, each of its shape, and
        one batch size (dim 0 of the inputs whose spec has 0 there) for all.
        Returns the batch size (dim 0 of the first input when none is free)."""
        shapes = self.input_shapes
        if len(args) != len(shapes):
            names = ", ".join(self.input_names)
            raise ValueError(
                f"the optimized model takes {len(shapes)} input tensor"
                f"{'' if len(shapes) == 1 else 's'} ({names}) of shape"
                f"{'' if len(shapes) == 1 else 's'} {spec_text(self.input_shape)} as "
                f"positional arguments, got {len(args)}")
        if len(shapes) == 1:
            self.check_input(args[0])
            return args[0].shape[0]
        key = tuple(x.shape if isinstance(x, torch.Tensor) and x.dtype is torch.float32
                    and x.device.type == self.device_type else None for x in args)
        if None in key or key not in self._accepted:
            batch = None
            for k, (x, shape, name) in enumerate(zip(args, shapes, self.input_names,
                                                     strict=True)):
                what = f"input {k} ({name})"
                self._check_tensor(x, shape, what, what)
                if shape[0] == 0:
                    if batch is not None and x.shape[0] != batch[0]:
                        raise ValueError(
                            f"the inputs' batch sizes differ: {what} has {x.shape[0]} in "
                            f"dim 0, {batch[1]} has {batch[0]} (the spec "
                            f"{spec_text(self.input_shape)} gives them one batch, the N)")
                    batch = batch or (x.shape[0], what)
            if len(self._accepted) < 64:
                self._accepted.add(key)  # type: ignore[arg-type]
        return next((x.shape[0] for x, s in zip(args, shapes, strict=True) if s[0] == 0),
                    args[0].shape[0])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.training or self.plan is None:
            if self.training and not self._warned_train:
                warnings.warn("BrainSlug accelerates inference: in training mode the original "
                              "model runs unchanged (call .eval() for the optimized path)",
                              stacklevel=2)
                self._warned_train = True
            return self.original(*args, **kwargs)
        if kwargs:
            args = self._positional(args, kwargs)
        batch = self.check_inputs(args)
        grad = torch.is_grad_enabled()
        if grad and not self._warned_grad and (
            any(x.requires_grad for x in args)
            or any(p.requires_grad for p in self.original.parameters())
        ):
            warnings.warn("BrainSlug's optimized path is inference only: its outputs are not "
                          "differentiable (use torch.no_grad() or .train())", stacklevel=2)
            self._warned_grad = True
        if batch < getattr(self.info, "min_batch", 1):  # the plan measured slower there
            return self.original(*args)
        if ForkedChild.pending:
            after_fork()
        if batch != self._last_batch:
            self._seen_batch(batch)
        if not grad:  # (entering no_grad costs about 1 µs)
            return self._run_plan(args)
        with torch.no_grad():
            return self._run_plan(args)

    def _run_plan(self, args: tuple[Any, ...]) -> Any:
        for refresh in self._refresh:
            refresh()
        return self.plan.forward(*args)  # (no module hooks: a call's overhead counts)

    def _positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The call's inputs in the order of the forward's parameters (inputs
        after the positional ones may be passed by their names)."""
        names, rest = self.input_names, self.input_names[len(args):]
        unknown = [k for k in kwargs if k not in rest]
        missing = [n for n in rest if n not in kwargs]
        if unknown or missing:
            got = f"unexpected {', '.join(map(repr, unknown))}" if unknown \
                else f"missing {', '.join(missing)}"
            raise ValueError(f"the optimized model takes {len(names)} input tensor"
                             f"{'' if len(names) == 1 else 's'} ({', '.join(names)}), "
                             f"positional or by name: {got}")
        return (*args, *(kwargs[n] for n in rest))


def _input_names(plan: fx.GraphModule | None, original: torch.nn.Module, n: int) -> list[str]:
    """Names of the model's `n` inputs: its forward's parameters, else the
    plan's placeholders, else x0, x1, ..."""
    from brainslug.frontend_torch.graph import forward_parameters

    found = forward_parameters(original)
    names = found[0] if found is not None else []
    if len(names) < n and plan is not None:
        names = [str(p.target) for p in plan.graph.nodes if p.op == "placeholder"]
    if len(names) < n:
        names = [f"x{k}" for k in range(n)]
    return names[:n]


def _unpickle(data: bytes, original: torch.nn.Module) -> BrainSlugModule:
    """A pickled `BrainSlugModule` (see `__reduce_ex__`)."""
    from brainslug.frontend_torch.kernel_module import kernel_threads
    from brainslug.frontend_torch.plan_file import decode
    from brainslug.runtime.bundle import from_bytes

    d = decode(from_bytes(data, "<pickled BrainSlug module>"), original, kernel_threads)
    opt = BrainSlugModule(original, d.plan, d.input_shape, d.info, kernels=d.kernels,
                          options=d.options)
    opt.train(original.training)
    return opt

"""`optimize(model, shape)`, the PyTorch frontend's entry: its options, the
trace, and the CPU plan (`compile`) or, for a model on a GPU, the CUDA plan
(`cuda_kernel`)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from brainslug.frontend_torch import cuda_kernel, speed
from brainslug.frontend_torch.compile import compile_plan, plan_key_parts
from brainslug.frontend_torch.graph import (
    Spec,
    check_shape,
    check_spec_fits,
    input_shapes,
    trace_model,
)
from brainslug.frontend_torch.kernel_module import kernel_threads
from brainslug.frontend_torch.module import BrainSlugModule
from brainslug.ir.compile_time import gc_paused
from brainslug.lowering.backends.x86 import check_cpu
from brainslug.plan import compile_profile, progress
from brainslug.plan.compile import strict
from brainslug.plan.report import ConvChoice, PlanInfo
from brainslug.plan.targets import CpuTarget
from brainslug.runtime.threads import default_pool

LAYOUTS = ("auto", "NCHW", "NHWC")
"""Values of optimize()'s `layout` option."""


def choose_layout(model: torch.nn.Module, layout: Any = "auto") -> str:
    """The activation layout of the plan: `auto` picks channels-last (NHWC) for
    models with 2-d convolutions when oneDNN runs them (its channels-last
    kernels are faster than NCHW ones on x86), else NCHW."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if layout != "auto":
        return layout
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return "NHWC" if has_conv and torch.backends.mkldnn.is_available() else "NCHW"


OPTIONS = ("cpu", "layout", "fold_batchnorm", "pack_convolutions", "pack_linear", "threads",
           "conv", "verbose")
"""optimize()'s keyword options (CPU plans)."""

CONV_MODES = ("auto", "library", "brainslug")
"""Values of optimize()'s `conv` option."""


def conv_mode(options: dict[str, Any]) -> str:
    """The `conv` option, checked: who computes the convolutions."""
    mode = options.get("conv", "auto")
    if mode not in CONV_MODES:
        raise ValueError(f"conv must be one of {list(CONV_MODES)}, got {mode!r}")
    if mode == "brainslug" and options.get("layout", "auto") == "NCHW":
        raise ValueError("conv='brainslug' compiles channels-last convolutions: use "
                         "layout='auto' or 'NHWC', not 'NCHW'")
    if mode == "brainslug" and options.get("fold_batchnorm", False):
        raise ValueError("conv='brainslug' applies batch norm in the convolution's epilogue "
                         "exactly; fold_batchnorm=True is for library convolutions")
    return mode


def optimize(model: torch.nn.Module, shape: Sequence[int] | Sequence[Sequence[int]],
             **options: Any):
    """The BrainSlug-accelerated module for inputs of `shape` (0 = any size).

    `shape` is one shape for a model of one input (`[0, 3, 224, 224]`), or
    one shape per input of the model's forward (`[[0, 37, 13, 13], [0, 37]]`);
    a 0 in dim 0 is the batch, any size but the same for all inputs of one
    call. A spec that does not fit the forward's parameters is a ValueError.

    Options: `conv` ("auto", "library", "brainslug": who computes the
    convolutions; "brainslug" compiles each channels-last convolution with
    the batch norm, activations and residual add after it in one kernel);
    `layout` ("auto", "NCHW", "NHWC"; see `choose_layout`);
    `pack_convolutions` (default True: with a channels-last plan, convolutions
    run on oneDNN with prepacked weights, bitwise equal to PyTorch's
    channels-last convolutions); `pack_linear` (default True: linear layers
    run on MKL with a prepacked weight in calls of 16 to 1024 rows, which takes
    2-4 times the weight's memory; see `library_linear`); `threads` (the kernels' threads; see
    `kernel_threads`); `fold_batchnorm` (default False: folds each
    batch norm that follows a convolution into its weights, which changes the
    rounding; the report says so); `cpu` (LLVM CPU name, default the host);
    `verbose` (default True: a cold optimize() that runs past 2 s shows one
    line of progress on stderr, when it is a terminal, erased when done).

    Never slower than eager: a plan is measured against the model (`speed`);
    with `layout="auto"` an NCHW plan is tried when the channels-last one is
    slower, and when every plan is, the model runs as it is, with the
    measurements in the report."""
    verbose = options.pop("verbose", True)
    if not isinstance(verbose, bool):
        raise ValueError(f"verbose must be True or False, got {verbose!r}")
    t0 = time.perf_counter()
    with speed.optimizing(), progress.showing(verbose), \
            compile_profile.profiling() as profile:
        opt = _optimize(model, shape, **options)
    info = getattr(opt, "info", None)
    if isinstance(info, PlanInfo):
        info.compile_seconds = time.perf_counter() - t0
        info.compile_profile = profile.to_json()
    return opt


def _optimize(model: torch.nn.Module, shape: Sequence[int] | Sequence[Sequence[int]],
              **options: Any):
    """optimize(), with its timing marked as in progress (`speed.optimizing`)."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"optimize() expects a torch.nn.Module, got {type(model).__name__}")
    spec = check_shape(shape)
    check_spec_fits(model, spec)
    if cuda_kernel.is_cuda_model(model) and len(input_shapes(spec)) > 1:
        info = PlanInfo(capture="none", target="nvptx")
        info.fallbacks.append(("<model>", "the CUDA plan takes models of one input: this "
                               "one runs as it is"))
        return BrainSlugModule(model, None, spec, info)
    if cuda_kernel.is_cuda_model(model):  # stacks become CUDA kernels; convolutions stay in cuDNN
        return cuda_kernel.optimize_cuda(model, spec, **options)
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown optimize() options: {sorted(unknown)} "
                         f"(known: {', '.join(OPTIONS)})")
    for flag in ("fold_batchnorm", "pack_convolutions", "pack_linear"):
        if not isinstance(options.get(flag, False), bool):
            raise ValueError(f"{flag} must be True or False, got {options[flag]!r}")
    check_cpu(options.get("cpu", "host"))
    convs = conv_mode(options)
    devices = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if devices - {"cpu"}:
        raise ValueError(f"the model's tensors are on {sorted(devices)}: BrainSlug plans CPU "
                         f"and CUDA models (move it with model.to('cpu') or model.cuda())")
    dtypes = {t.dtype for t in model.parameters() if t.is_floating_point()}
    if dtypes - {torch.float32}:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        warnings.warn(f"BrainSlug compiles float32 models; this one has {names} parameters "
                      f"and runs as it is (model.float() converts it)", stacklevel=2)
        info = PlanInfo(capture="none")
        info.fallbacks.append(("<model>", f"{names} parameters: BrainSlug compiles float32 "
                               f"models, so the model runs as it is"))
        return BrainSlugModule(model, None, spec, info)
    asked = options.get("layout", "auto")
    first = "NHWC" if convs == "brainslug" else choose_layout(model, asked)
    layouts = [first, "NCHW"] if asked == "auto" and first == "NHWC" else [first]
    if convs == "brainslug":
        layouts = ["NHWC"]
    threads = kernel_threads(options.get("threads", "auto"))
    measured: list[str] = []
    for layout in layouts:
        try:
            opt, key_parts = _plan(model, spec, layout, threads, options)
        except ValueError:  # bad input: the user's to fix
            raise
        except Exception as e:  # a bug of BrainSlug's: the model still runs
            if strict():
                raise
            info = PlanInfo(capture="none", notes=measured)
            info.fallbacks.append(("<model>", f"optimize() failed, the model runs as it is: "
                                   f"{type(e).__name__}: {e}"))
            return BrainSlugModule(model, None, spec, info)
        if opt.plan is None or model.training or not speed.enabled() or convs == "brainslug":
            return opt  # (conv="brainslug" is the user's choice: not second-guessed)
        with compile_profile.stage("speed check"):
            judged = speed.judge(opt, model, spec, key_parts, f"the {layout} plan")
        if judged.keep:
            if judged.min_batch is None:
                opt.info.notes += judged.notes
                opt.info.notes[:0] = measured
            else:
                opt.info.min_batch = judged.min_batch
                opt.info.notes[:0] = [*measured, *judged.notes]
            return opt
        measured += judged.notes
    info = PlanInfo(capture=opt.info.capture, notes=measured)
    info.fallbacks.append(("<model>", "every plan measured slower than the model: it runs "
                           "as it is"))
    return BrainSlugModule(model, None, spec, info)


def _plan(model: torch.nn.Module, spec: Spec, layout: str, threads: int | None,
          options: dict[str, Any]) -> tuple[BrainSlugModule, list[str]]:
    """The CPU plan of `model` in `layout`, and what keys its speed verdict."""
    with compile_profile.stage("capture"):
        gm, how, notes = trace_model(model, spec)
    if gm is None:
        info = PlanInfo(capture="none", notes=notes[:-1])
        info.fallbacks.append(("<model>", notes[-1]))
        return BrainSlugModule(model, None, spec, info), []
    if options.get("fold_batchnorm", False):
        from brainslug.frontend_torch.fold import fold_batchnorm

        gm, folded = fold_batchnorm(gm, assume_eval=True)
        notes.append(f"fold_batchnorm=True: {len(folded)} batch norms folded into the "
                     f"convolutions before them (weights computed in float64 at optimize() "
                     f"time; results round differently from the model's)")
    if how == "torch.fx":
        from brainslug.frontend_torch.linear_bias import split_linear_biases

        split_linear_biases(gm)  # biases join the stacks after their linear layers
    from brainslug.frontend_torch.weight_derived import cache_weight_derived

    if cached := cache_weight_derived(gm):
        notes.append(f"{len(cached)} values computed from parameters alone (a relative "
                     f"position bias, a standardised weight) are computed again only when "
                     f"a parameter changes")
    cpu = options.get("cpu", "host")
    mode = conv_mode(options)
    choices: list[ConvChoice] = []
    compiled: bool | set[str] = mode == "brainslug"
    auto = None
    if mode == "auto" and not options.get("fold_batchnorm", False):
        from brainslug.frontend_torch import conv_choice

        parts = [*plan_key_parts(gm, spec, layout, CpuTarget(cpu, threads, True)),
                 str(threads or default_pool().size)]  # timed on this many threads
        try:
            with gc_paused():
                found = conv_choice.start(gm, spec, parts)
        except Exception as e:  # a bug of BrainSlug's: the convolutions stay in the library
            if strict():
                raise
            notes.append(f"conv='auto' could not time the convolutions, they run in the "
                         f"library: {type(e).__name__}: {str(e)[:200]}")
            found = []
        if isinstance(found, list):  # chosen before (the kernel cache), or nothing to time
            choices = found
            compiled = {c.node for c in choices if c.runs == "brainslug"}
        else:  # compiled first, then timed: the losers go back to the library
            auto, compiled = found, found.optimistic
    post_ops: list[str] = []  # the library convolutions with an add as oneDNN's post-op
    new_gm, info, stacks, key_parts, plan_notes = _compile(gm, spec, layout, threads, options,
                                                           compiled, post_ops)
    if auto is not None:
        try:
            with gc_paused():
                choices = conv_choice.finish(auto, gm, spec, new_gm, info, cpu=cpu,
                                             threads=threads)
        except Exception as e:
            if strict():
                raise
            notes.append(f"conv='auto' could not time the convolutions, they run in the "
                         f"library: {type(e).__name__}: {str(e)[:200]}")
            choices = []
        if (chosen := {c.node for c in choices if c.runs == "brainslug"}) != compiled:
            new_gm, info, stacks, key_parts, plan_notes = _compile(
                gm, spec, layout, threads, options, chosen, post_ops,
                stage="plan: compiled again, the convolutions that lost in the library")
    notes += plan_notes
    pack = layout == "NHWC" and options.get("pack_convolutions", True)
    info.convs = choices or [
        ConvChoice(name, "brainslug", why="conv='brainslug'")
        for s in info.stacks if s.compiled for name, op in s.layer_ops()
        if op in ("nn.conv2d", "nn.linear")]
    if pack:
        from brainslug.frontend_torch.library_conv import PackedConv2d, pack_graph_convolutions

        packed = pack_graph_convolutions(new_gm)
        convs = [m for m in new_gm.modules() if isinstance(m, PackedConv2d)]
        reasons = sorted({m.reason for m in convs if not m.packed})
        if packed:
            notes.append(f"{sum(m.packed for m in convs)} of {len(packed)} library "
                         f"convolutions run on oneDNN with prepacked weights"
                         + (f" (the others: {'; '.join(reasons)})" if reasons else ""))
    if options.get("pack_linear", True):
        from brainslug.frontend_torch.library_linear import (
            MAX_ROWS,
            MIN_ROWS,
            PackedLinear,
            pack_graph_linears,
        )

        if packed := pack_graph_linears(new_gm):
            linears = [m for m in new_gm.modules() if isinstance(m, PackedLinear)]
            reasons = sorted({m.reason for m in linears if not m.packed})
            notes.append(f"{sum(m.packed for m in linears)} of {len(packed)} library linear "
                         f"layers run on MKL with prepacked weights in calls of {MIN_ROWS} "
                         f"to {MAX_ROWS} rows (packed on the first: 2-4 times the weight's "
                         f"memory; pack_linear=False keeps the plain layers)"
                         + (f" (the others: {'; '.join(reasons)})" if reasons else ""))
    info.capture, info.notes = how, notes + info.notes
    saved = {k: v for k, v in options.items() if k != "cpu" or v != "host"}
    return BrainSlugModule(model, new_gm, spec, info, kernels=stacks.kernels,
                           options=saved), key_parts


def _compile(gm: Any, spec: Spec, layout: str, threads: int | None, options: dict[str, Any],
             compiled: bool | set[str], post_ops: list[str],
             stage: str = "plan: stacks formed and compiled"
             ) -> tuple[Any, PlanInfo, Any, list[str], list[str]]:
    """The plan of `gm` with the convolutions and linear layers `compiled` (the
    others in the library, convolutions with oneDNN's post-ops where they
    apply): the rewritten graph, its
    report, its stacks, what keys its speed verdict, and notes. `gm` keeps the
    post-ops, and `post_ops` their convolutions: a later call with fewer
    convolutions compiled adds those of the others."""
    cpu = options.get("cpu", "host")
    notes: list[str] = []
    pack = layout == "NHWC" and options.get("pack_convolutions", True)
    if pack and compiled is not True:
        from brainslug.frontend_torch.library_conv import fuse_conv_activations, fuse_conv_add

        skip = compiled if isinstance(compiled, set) else set()
        # oneDNN's activation post-ops turn NaN into 0: only where BN is folded
        folded = bool(options.get("fold_batchnorm", False))
        post_ops += fuse_conv_add(gm, skip, relu=folded)
        if post_ops:
            notes.append(f"{len(post_ops)} residual adds run as oneDNN post-ops of the "
                         f"convolutions before them (bit for bit the separate add)"
                         + (", with the ReLUs after them (NaN becomes 0)" if folded else ""))
        if folded and (fused := fuse_conv_activations(gm, skip)):
            notes.append(f"{len(fused)} ReLU/ReLU6 layers run as oneDNN post-ops of the "
                         f"convolutions before them (as the separate activation, "
                         f"except that NaN becomes 0)")
    key_parts = [*plan_key_parts(gm, spec, layout, CpuTarget(cpu, threads, bool(compiled))),
                 str(pack), str(threads),
                 ",".join(sorted(compiled)) if isinstance(compiled, set) else str(compiled)]
    with gc_paused(), compile_profile.stage(stage):
        new_gm, info, stacks = compile_plan(gm, spec, cpu=cpu, layout=layout, threads=threads,
                                            convs=compiled, linears=compiled)
    return new_gm, info, stacks, key_parts, notes

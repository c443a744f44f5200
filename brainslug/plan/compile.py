"""One compile entry for every frontend and target: a captured `nn` module ->
its stacks compiled for a backend, with the plan and kernel caches.

`compile_stacks` runs `bs-form-stacks`, describes the stacks for the report
and the schedule, runs the rest of the default pipeline for the target (or
takes it from a plan-cache record), compiles the kernels and records what
runs where in a `PlanInfo`.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr

from brainslug.dialects import nn
from brainslug.ir.context import make_context
from brainslug.pipeline.default import default_passes, form_stacks_pass
from brainslug.plan import cache as plan_cache
from brainslug.plan import progress
from brainslug.plan.capture import Captured
from brainslug.plan.report import PlanInfo
from brainslug.plan.saved import PlanKernels
from brainslug.plan.stacks import (
    StackBinding,
    describe,
    record_library,
    removed_aliases,
    stack_launches,
)
from brainslug.plan.targets import Target
from brainslug.runtime import cache

PLAN_CACHE_HIT = "plan loaded from the plan cache"


@dataclass
class CompiledStacks:
    """A captured graph's stacks, compiled."""

    info: PlanInfo
    bindings: list[StackBinding]          # every stack, compiled or not
    runners: dict[str, Any]               # stack name -> its kernel's runner (compiled ones)
    aliases: dict[str, str]               # removed node -> the node it passes on
    module: ModuleOp
    kernels: PlanKernels | None = None    # what a saved plan stores of the kernels


def cached_record(key_parts: list[str] | None) -> tuple[str | None, plan_cache.PlanRecord | None]:
    """The plan-cache key of `key_parts` and its record (None, None with the cache off)."""
    if key_parts is None or not cache.enabled():
        return None, None
    key = plan_cache.plan_key(*key_parts)
    return key, plan_cache.load(key)


def compile_stacks(
    captured: Captured,
    target: Target,
    *,
    default_layout: str = "NCHW",
    library_prefix: str = "",
    key: str | None = None,
    record: plan_cache.PlanRecord | None = None,
    frontend_data: Any = None,
    only: Callable[[nn.StackOp], bool] | None = None,
    saved: PlanKernels | None = None,
) -> CompiledStacks:
    """Forms, compiles and describes the stacks of `captured` for `target`.

    With `record` (a plan-cache hit for `key`) no pass after bs-form-stacks
    runs and the kernels come from the kernel cache; with `key` and no record,
    the result is stored under `key`, with `frontend_data` (plain JSON). With
    `only`, the stacks it rejects are left to the framework uncompiled (a
    trial plan that needs some kernels only). With `saved` (a saved plan's
    kernels) they are used where the stacks are the ones they were compiled
    from (else compiled, with a note)."""
    t0 = time.perf_counter()
    module = captured.module
    fn = captured.function
    aliases = removed_aliases(fn, captured.sources)
    ctx = make_context()
    info = PlanInfo(target=target.name, layout=default_layout)
    try:
        # (a trial plan times each convolution alone: no depth-first chains)
        form_stacks_pass(target.name, target.convs, chains=only is None).apply(ctx, module)
    except Exception as e:  # no stacks: every layer runs in the framework
        if strict():
            raise
        info.fallbacks.append(("<stacks>", f"bs-form-stacks failed, every layer runs in the "
                               f"framework: {type(e).__name__}: {e}"))
        return CompiledStacks(info, [], {}, aliases, module)
    info.stacks, bindings = describe(fn, captured.sources, default_layout)
    kernels = None
    source: ModuleOp | str | None = None
    if saved is not None:
        if _same_ir(saved.source_text() or "", str(module)):
            launch_of, fallback_stacks = saved.launch_of, saved.fallback_stacks
            kernels, infos_json, source = saved.kernels, saved.infos, saved.source
        else:
            info.notes.append("the model's stacks differ from the saved plan's: compiled "
                              "again")
    elif record is not None:
        launch_of, fallback_stacks = record.launch_of, record.fallback_stacks
        kernels = target.load(record.infos, record.unit_keys)
        infos_json = record.infos
        if kernels is not None:
            info.notes.append(PLAN_CACHE_HIT)
            source = module  # (not lowered on a hit)
    if kernels is None:
        lowered = lower_stacks(module, target, only)
        module, kernels, source = lowered.module, lowered.kernels, lowered.source
        fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
        launch_of, fallback_stacks = lowered.launch_of, lowered.fallback_stacks
        infos_json = lowered.infos
        if key is not None and infos_json is not None and target.fingerprint() is not None:
            plan_cache.store(key, plan_cache.PlanRecord(
                frontend_data, launch_of, fallback_stacks, infos_json,
                target.unit_keys(kernels) if kernels is not None else {}))
    runners = {s: kernels[k] for s, k in launch_of.items()} if kernels is not None else {}
    record_library(info, fn, fallback_stacks, captured.library_reasons, library_prefix)
    info.compile_seconds = time.perf_counter() - t0
    plan_kernels = PlanKernels(target, kernels, dict(launch_of), infos_json, source,
                               dict(fallback_stacks)) if kernels is not None else None
    return CompiledStacks(info, bindings, runners, aliases, module, plan_kernels)


_SSA_NAME = re.compile(r"%[\w.$-]+")


def _same_ir(a: str, b: str) -> bool:
    """Whether two modules' texts are the same up to the names of values (a
    rebuilt Keras model names its input anew)."""
    def numbered(text: str) -> str:
        names: dict[str, str] = {}
        return _SSA_NAME.sub(lambda m: names.setdefault(m[0], f"%v{len(names)}"), text)

    return a == b or numbered(a) == numbered(b)


def strict() -> bool:
    """`BRAINSLUG_STRICT=1`: an error while compiling raises instead of leaving
    the stack (or the model) to the framework."""
    return os.environ.get("BRAINSLUG_STRICT", "0").strip().lower() in ("1", "on", "true", "yes")


@dataclass
class Lowered:
    """A module's stacks compiled: the graph (lowered, or as it was where the
    stacks were compiled one by one), the kernels' runners, the IR they were
    lowered from, which stack runs which kernel, which stacks stay in the
    framework and why, and the kernel records (`plan_cache.infos_to_json`)."""

    module: ModuleOp
    kernels: Any
    source: ModuleOp
    launch_of: dict[str, str]
    fallback_stacks: dict[str, str]
    infos: list[dict[str, Any]] | None


def _lower(module: ModuleOp, target: Target, skip: dict[str, str]) -> Any:
    """Runs the pipeline after bs-form-stacks on `module` (stacks in `skip` stay
    in the framework, with that reason) and compiles its kernels."""
    for op in module.walk():
        if isinstance(op, nn.StackOp) and op.stack_name_value in skip:
            op.attributes["bs.fallback"] = StringAttr(skip[op.stack_name_value])
    ctx = make_context()
    for p in default_passes(target.name, target.cpu, compute=target.convs)[1:]:
        p.apply(ctx, module)
    fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
    return target.compile(module) if stack_launches(fn)[0] else None


def lower_stacks(module: ModuleOp, target: Target,
                 only: Callable[[nn.StackOp], bool] | None = None,
                 skip: dict[str, str] | None = None) -> Lowered:
    """The kernels of `module`'s stacks (of those `only` accepts, if given,
    and not in `skip`: stack name -> why not). On a CPU each distinct stack
    is compiled on its own (`plan.units`); elsewhere the module is lowered as
    a whole. A stack whose passes or compilation raise is left to the
    framework, with the error as its reason (unless `strict()`)."""
    left = {op.stack_name_value: "not needed by this trial plan" for op in module.walk()
            if isinstance(op, nn.StackOp) and only is not None and not only(op)}
    left.update(skip or {})
    if hasattr(getattr(target, "backend", None), "phase_units"):
        return _lower_units(module, target, left)
    pristine = module.clone()

    def done(lowered: ModuleOp, kernels: Any) -> Lowered:
        fn = next(o for o in lowered.ops if isinstance(o, func.FuncOp))
        launch_of, fallback_stacks = stack_launches(fn)
        return Lowered(lowered, kernels, pristine, launch_of, fallback_stacks,
                       plan_cache.infos_to_json(lowered))

    try:
        return done(module, _lower(module, target, left))
    except Exception:
        if strict():
            raise
    names = [op.stack_name_value for op in pristine.walk()
             if isinstance(op, nn.StackOp) and op.stack_name_value not in left]
    failed: dict[str, str] = {}

    def bisect(group: list[str]) -> None:
        others = {**left, **{n: "not in this trial" for n in names if n not in group}}
        try:
            _lower(pristine.clone(), target, others)
        except Exception as e:
            if len(group) == 1:
                failed[group[0]] = f"compiling it failed: {type(e).__name__}: {e}"
            else:
                bisect(group[: len(group) // 2])
                bisect(group[len(group) // 2:])

    bisect(names)
    if not failed:  # no stack fails alone: the stacks fail together
        failed = {n: "compiling the stacks together failed" for n in names}
    lowered = pristine.clone()
    return done(lowered, _lower(lowered, target, {**left, **failed}))


def _lower_units(module: ModuleOp, target: Any, left: dict[str, str]) -> Lowered:
    """`lower_stacks` one distinct stack at a time (`plan.units`): from the
    stack cache, else through the passes and LLVM in forked processes."""
    from brainslug.plan import compile_profile
    from brainslug.plan.units import (
        UnitCompiler,
        UnitResult,
        family_key,
        renamed,
        standalone,
        structure_key,
    )
    from brainslug.runtime.forked import fork_map

    fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
    compiler = UnitCompiler(target, lambda: default_passes(
        target.name, target.cpu, compute=target.convs)[1:])
    fallback_stacks: dict[str, str] = {}
    rep_of: dict[str, str] = {}                 # stack -> the stack whose kernel it runs
    first: dict[str, str] = {}                  # structure -> its first stack
    results: dict[str, UnitResult] = {}
    todo: list[tuple[str, ModuleOp, str]] = []  # (stack, standalone module, cache key)
    sizes: dict[str, int] = {}                  # stack -> the length of its IR text
    for op in fn.body.block.ops:
        if not isinstance(op, nn.StackOp):
            continue
        name = op.stack_name_value
        if name in left:
            fallback_stacks[name] = left[name]
            continue
        unit = standalone(op)
        structure = structure_key(unit, name)
        sizes[name] = len(structure)
        if structure in first:
            rep_of[name] = first[structure]
            continue
        first[structure] = rep_of[name] = name
        key = compiler.cache_key(structure)
        hit = _cached_unit(key)
        if hit is not None:
            results[name] = hit
        else:
            todo.append((name, unit, key))

    done = multiprocessing.Value("i", len(results))  # shared with the forked workers
    total = len(results) + len(todo)
    what = "compiling stacks" if not left else "compiling the stacks to time"
    progress.note(what, done.value, total)

    def build(item: tuple[str, ModuleOp, str]) -> UnitResult:
        name, unit, key = item
        try:
            result = compiler.compile(unit, name)
        except Exception as e:
            if strict():
                raise
            result = UnitResult(fallback=f"compiling it failed: {type(e).__name__}: {e}")
        else:
            if result.record is not None:
                cache.store(key, result.to_json().encode())
        with done.get_lock():
            done.value += 1
        progress.note(what, done.value, total)
        return result

    kinds = {name: compile_profile.stack_kind(unit) for name, unit, _ in todo}  # (lowered in place)
    # a family's units in one process, which compiles their shared phases once;
    # the largest families first, so that none is left to run alone at the end
    families: dict[str, list[tuple[str, ModuleOp, str]]] = {}
    for item in todo:
        families.setdefault(family_key(item[1]), []).append(item)
    work = sorted(families.values(), key=lambda f: -sum(sizes[name] for name, _, _ in f))
    for family, built in zip(work, fork_map(lambda f: [build(i) for i in f], work), strict=True):
        for (name, _, _), result in zip(family, built, strict=True):
            results[name] = result
            compile_profile.add_unit(result.seconds, kinds[name])
    infos: list[dict[str, Any]] = []
    objects: dict[str, bytes] = {}
    unit_keys: dict[str, str] = {}
    launch_of: dict[str, str] = {}
    for name, rep in rep_of.items():
        result = results[rep]
        if result.record is None:
            fallback_stacks[name] = result.fallback or "no loop lowering"
            continue
        launch_of[name] = rep
        if rep == name:
            infos.append(renamed(result.record, rep))
            objects.update(result.objects)
            unit_keys.update(result.unit_keys)
    kernels = None
    if infos:
        missing = {sym: k for sym, k in unit_keys.items() if sym not in objects}
        for sym, k in missing.items():  # generic phases another process compiled
            data = cache.load(k)
            if data is None:
                raise RuntimeError(f"the object code of phase {sym} went missing")
            objects[sym] = data
        kernels = target.link(infos, objects, unit_keys,
                              compiled=sum(r.compiled for r in results.values()))
    return Lowered(module, kernels, module, launch_of, fallback_stacks, infos)


def _cached_unit(key: str) -> Any:
    """A compiled stack from the stack cache, with its object code (None on a miss)."""
    from brainslug.plan.units import UnitResult

    if not cache.enabled() or (blob := cache.load(key)) is None:
        return None
    result = UnitResult.from_json(blob)
    if result is None or result.record is None:
        return None
    for sym, k in result.unit_keys.items():
        data = cache.load(k)
        if data is None:
            return None
        result.objects[sym] = data
    return result

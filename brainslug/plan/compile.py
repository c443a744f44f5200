"""One compile entry for every frontend and target: a captured `nn` module ->
its stacks compiled for a backend, with the plan and kernel caches.

`compile_stacks` runs `bs-form-stacks`, describes the stacks for the report
and the schedule, runs the rest of the default pipeline for the target (or
takes it from a plan-cache record), compiles the kernels and records what
runs where in a `PlanInfo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from brainslug.ir.context import make_context
from brainslug.passes.form_stacks import FormStacksPass
from brainslug.pipeline.default import default_passes
from brainslug.plan import cache as plan_cache
from brainslug.plan.capture import Captured
from brainslug.plan.report import PlanInfo
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
) -> CompiledStacks:
    """Forms, compiles and describes the stacks of `captured` for `target`.

    With `record` (a plan-cache hit for `key`) no pass after bs-form-stacks
    runs and the kernels come from the kernel cache; with `key` and no record,
    the result is stored under `key`, with `frontend_data` (plain JSON)."""
    t0 = time.perf_counter()
    module = captured.module
    fn = captured.function
    aliases = removed_aliases(fn, captured.sources)
    ctx = make_context()
    FormStacksPass().apply(ctx, module)
    infos, bindings = describe(fn, captured.sources, default_layout)
    notes: list[str] = []
    kernels = None
    if record is not None:
        launch_of, fallback_stacks = record.launch_of, record.fallback_stacks
        kernels = target.load(plan_cache.infos_from_json(record.infos), record.unit_keys)
        if kernels is not None:
            notes.append(PLAN_CACHE_HIT)
    if kernels is None:
        for p in default_passes(target.name, target.cpu)[1:]:
            p.apply(ctx, module)
        launch_of, fallback_stacks = stack_launches(fn)
        kernels = target.compile(module) if launch_of else None
        infos_json = plan_cache.infos_to_json(module)
        if key is not None and infos_json is not None and target.fingerprint() is not None:
            plan_cache.store(key, plan_cache.PlanRecord(
                frontend_data, launch_of, fallback_stacks, infos_json,
                target.unit_keys(kernels) if kernels is not None else {}))
    runners = {s: kernels[k] for s, k in launch_of.items()} if kernels is not None else {}
    info = PlanInfo(stacks=infos, notes=notes, target=target.name, layout=default_layout)
    record_library(info, fn, fallback_stacks, captured.library_reasons, library_prefix)
    info.compile_seconds = time.perf_counter() - t0
    return CompiledStacks(info, bindings, runners, aliases, module)

"""The plan cache: what a warm `optimize()` reuses instead of recompiling.

A frontend keys a plan record by what determines it (its graph, the model's
hyperparameters and tensor shapes, the input shape, the layout, the target;
`runtime.cache.key` adds the versions and BrainSlug's source hash). The record
holds which stack runs which kernel, why the others were not lowered, the
kernels' `loop.kernel_info` ops as data, the kernel-cache key of every phase
function's object code, and the frontend's own data (the traced shapes, so
that shape propagation does not run the model again). A hit skips every pass
after bs-form-stacks and LLVM; a record whose objects are gone is a miss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from xdsl.dialects.builtin import MemRefType, ModuleOp, f32

from brainslug.dialects import loop
from brainslug.runtime import cache
from brainslug.runtime.abi import kernel_record

FORMAT = "4"
"""Bump when the record's content or meaning changes."""


@dataclass
class PlanRecord:
    frontend: Any                        # the frontend's own data (plain JSON)
    launch_of: dict[str, str]            # stack name -> kernel name
    fallback_stacks: dict[str, str]      # stack name -> why it was not lowered
    infos: list[dict[str, Any]]          # the kernel_info ops (`infos_to_json`)
    unit_keys: dict[str, str]            # phase function -> object key


def plan_key(*parts: str) -> str:
    """The cache key of a plan determined by `parts`."""
    return cache.key("plan", FORMAT, *parts)


def load(key: str) -> PlanRecord | None:
    blob = cache.load(key)
    if blob is None:
        return None
    try:
        d = json.loads(blob)
        return PlanRecord(d["frontend"], d["launch_of"], d["fallback_stacks"], d["infos"],
                          d["unit_keys"])
    except (ValueError, KeyError, TypeError):
        return None


def store(key: str, record: PlanRecord) -> None:
    cache.store(key, json.dumps({
        "frontend": record.frontend,
        "launch_of": record.launch_of,
        "fallback_stacks": record.fallback_stacks,
        "infos": record.infos,
        "unit_keys": record.unit_keys,
    }).encode())


def infos_to_json(module: ModuleOp) -> list[dict[str, Any]] | None:
    """The `loop.kernel_info` ops of a lowered module as plain data
    (`runtime.abi.kernel_record`; runners are made from it without parsing or
    building IR); None if a buffer is not an f32 memref."""
    out = []
    for op in module.ops:
        if not isinstance(op, loop.KernelInfoOp):
            continue
        if any(not isinstance(t, MemRefType) or t.element_type != f32 for t in op.buffers.data):
            return None
        out.append(kernel_record(op))
    return out

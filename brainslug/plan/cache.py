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

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, MemRefType, ModuleOp, f32, i64

from brainslug.dialects import loop
from brainslug.lowering.to_llvm import NUM_ARGS_ATTR, PARALLEL_ATTR, SCRATCH_DIMS_ATTR
from brainslug.runtime import cache

FORMAT = "3"
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


_INT_ATTRS = (NUM_ARGS_ATTR, PARALLEL_ATTR, SCRATCH_DIMS_ATTR)


def infos_to_json(module: ModuleOp) -> list[dict[str, Any]] | None:
    """The `loop.kernel_info` ops of a lowered module as plain data (parsing
    their IR text back would cost more than the rest of a warm optimize());
    None if a buffer is not an f32 memref."""
    out = []
    for op in module.ops:
        if not isinstance(op, loop.KernelInfoOp):
            continue
        buffers = []
        for t in op.buffers.data:
            if not isinstance(t, MemRefType) or t.element_type != f32:
                return None
            buffers.append(list(t.get_shape()))
        d: dict[str, Any] = {
            "kernel": op.kernel.data,
            "phases": [p.data for p in op.phases.data],
            "buffers": buffers,
            "work": list(op.work.get_values()),
            "target": op.target.data,
            "phase_args": list(op.phase_args.get_values()) if op.phase_args else None,
            "slots": list(op.slots.get_values()) if op.slots else None,
        }
        for name in _INT_ATTRS:
            a = op.attributes.get(name)
            if isinstance(a, IntegerAttr):
                d[name] = a.value.data
            elif isinstance(a, DenseArrayBase):
                d[name] = list(a.get_values())
        out.append(d)
    return out


def infos_from_json(infos: list[dict[str, Any]]) -> ModuleOp:
    """The module of `loop.kernel_info` ops that `infos_to_json` describes."""
    ops = []
    for d in infos:
        op = loop.KernelInfoOp(
            d["kernel"], d["phases"], [MemRefType(f32, s) for s in d["buffers"]], d["work"],
            d["target"], d["phase_args"], d["slots"],
        )
        for name in _INT_ATTRS:
            v = d.get(name)
            if isinstance(v, int):
                op.attributes[name] = IntegerAttr(v, i64)
            elif isinstance(v, list):
                op.attributes[name] = DenseArrayBase.from_list(i64, v)
        ops.append(op)
    return ModuleOp(ops)

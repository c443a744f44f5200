"""The plan cache: what a warm `optimize()` reuses instead of recompiling.

A plan record is keyed by the traced graph (its code and module tree, which
shows every layer's hyperparameters), the names, shapes and dtypes of the
parameters and buffers, the input shape, the layout, the target and the
versions (`runtime.cache.key`). It holds the traced shapes (so shape
propagation does not run the model again), which stack runs which kernel, the
kernels' `loop.kernel_info` ops, and the kernel-cache key of every phase
function's object code. A hit skips shape propagation, every pass after
bs-form-stacks and LLVM; a record whose objects are gone is a miss.

Parameter values are not part of the key: kernels read them at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32

from brainslug.dialects import loop
from brainslug.runtime import cache

FORMAT = "3"
"""Bump when the record's content or meaning changes."""


@dataclass
class PlanRecord:
    metas: dict[str, tuple[tuple[int, ...], torch.dtype]]
    launch_of: dict[str, str]            # stack name -> kernel name
    fallback_stacks: dict[str, str]      # stack name -> why it was not lowered
    infos: list[dict[str, Any]]          # the kernel_info ops (`infos_to_json`)
    unit_keys: dict[str, str]            # phase function -> object key


def plan_key(gm: fx.GraphModule, shape: list[int] | None, layout: str, target: str) -> str:
    tensors = [
        (name, tuple(t.shape), str(t.dtype))
        for name, t in [*gm.named_parameters(), *gm.named_buffers()]
    ]
    return cache.key("plan", FORMAT, type(gm).__name__, str(gm), gm.code, repr(tensors),
                     repr(shape), layout, target)


def load(key: str) -> PlanRecord | None:
    blob = cache.load(key)
    if blob is None:
        return None
    try:
        d = json.loads(blob)
        metas = {
            name: (tuple(shape), getattr(torch, dtype.removeprefix("torch.")))
            for name, (shape, dtype) in d["metas"].items()
        }
        return PlanRecord(metas, d["launch_of"], d["fallback_stacks"], d["infos"],
                          d["unit_keys"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def store(key: str, record: PlanRecord) -> None:
    d: dict[str, Any] = {
        "metas": {n: [list(s), str(t)] for n, (s, t) in record.metas.items()},
        "launch_of": record.launch_of,
        "fallback_stacks": record.fallback_stacks,
        "infos": record.infos,
        "unit_keys": record.unit_keys,
    }
    cache.store(key, json.dumps(d).encode())


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
        launch = op.gpu_launch
        out.append({
            "kernel": op.kernel.data,
            "phases": [p.data for p in op.phases.data],
            "buffers": buffers,
            "work": list(op.work.get_values()),
            "target": op.target.data,
            "num_args": op.num_args.value.data,
            "parallel": list(op.parallel.get_values()),
            "scratch_dims": op.scratch_pairs(),
            "phase_args": list(op.phase_args.get_values()) if op.phase_args else None,
            "slots": list(op.slots.get_values()) if op.slots else None,
            "gpu_launch": None if launch is None else [
                list(launch.lanes.get_values()),
                list(launch.tiles.get_values()),
                list(launch.groups.get_values()),
                launch.arch.data,
            ],
        })
    return out


def infos_from_json(infos: list[dict[str, Any]]) -> ModuleOp:
    """The module of `loop.kernel_info` ops that `infos_to_json` describes."""
    return ModuleOp([
        loop.KernelInfoOp(
            d["kernel"], d["phases"], [MemRefType(f32, s) for s in d["buffers"]], d["work"],
            d["target"], d["num_args"], d["parallel"], [tuple(p) for p in d["scratch_dims"]],
            d["phase_args"], d["slots"],
            None if d["gpu_launch"] is None else loop.GpuLaunchAttr(*d["gpu_launch"]),
        )
        for d in infos
    ])

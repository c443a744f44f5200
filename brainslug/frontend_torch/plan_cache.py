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
from xdsl.dialects.builtin import ModuleOp

from brainslug.dialects import loop
from brainslug.runtime import cache

FORMAT = "1"
"""Bump when the record's content or meaning changes."""


@dataclass
class PlanRecord:
    metas: dict[str, tuple[tuple[int, ...], torch.dtype]]
    launch_of: dict[str, str]            # stack name -> kernel name
    fallback_stacks: dict[str, str]      # stack name -> why it was not lowered
    infos: str                           # the kernel_info ops, as IR text
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


def kernel_infos_text(module: ModuleOp) -> str:
    """The `loop.kernel_info` ops of a lowered module, as a module's IR text."""
    infos = [op.clone() for op in module.ops if isinstance(op, loop.KernelInfoOp)]
    return str(ModuleOp(infos))

"""A saved plan's kernels loaded: `load_kernels` links their object code when
it was compiled for this CPU with these versions of BrainSlug and LLVM, and
otherwise compiles their IR again for this CPU, with a warning."""

from __future__ import annotations

import time
import warnings
from typing import Any

from brainslug.dialects import nn
from brainslug.plan.compile import lower_stacks
from brainslug.plan.saved import PlanKernels
from brainslug.plan.targets import CpuTarget
from brainslug.runtime import cache
from brainslug.runtime.bundle import Bundle


def load_kernels(entry: dict[str, Any], bundle: Bundle, threads: int | None) -> PlanKernels:
    """The kernels of a saved plan: its object code when it was compiled for
    this CPU with these versions, else its IR compiled again for this CPU
    (with a warning). ValueError when neither works."""
    from brainslug.lowering.backends.x86 import check_cpu
    from brainslug.runtime.jit import CompiledKernels

    flush = bool(entry.get("flush_denormals", False))
    try:
        target = CpuTarget(check_cpu(entry["cpu"]), threads, bool(entry["convs"]), flush)
    except ValueError as e:
        target, why = CpuTarget("host", threads, bool(entry["convs"]), flush), str(e)
    else:
        why = ""
        if target.fingerprint() != entry["fingerprint"]:
            why = (f"its code was compiled for {entry['fingerprint']}, this CPU is "
                   f"{target.fingerprint()}")
        elif entry["versions"] != cache.versions():
            why = f"it was compiled by {entry['versions']}, this is {cache.versions()}"
    ir = bundle.section("ir/stacks.mlir")
    if not why:
        objects = {sym: bytes(bundle.section(f"objects/{sym}"))
                   for sym in set(entry["symbols"].values())}
        kernels = CompiledKernels.from_objects(entry["infos"], entry["symbols"], objects, target.backend,
                                               target._pool(), entry["unit_keys"])
        return PlanKernels(target, kernels, dict(entry["launch_of"]), entry["infos"],
                           bytes(ir).decode(), dict(entry.get("fallback_stacks", {})))
    t0 = time.perf_counter()
    pk = recompile(bytes(ir).decode(), target, set(entry["launch_of"]), bundle.path)
    warnings.warn(f"{bundle.path}: {why}; its kernels were compiled again from the IR "
                  f"in the file ({time.perf_counter() - t0:.1f} s)", stacklevel=3)
    return pk


def recompile(text: str, target: CpuTarget, stacks: set[str], where: str) -> PlanKernels:
    """The stacks named in `stacks` of IR `text` compiled for `target`."""
    from brainslug.ir.context import parse_module

    try:
        module = parse_module(text, where)
    except Exception as e:
        raise ValueError(f"{where}: its kernels can't be rebuilt here, and this BrainSlug "
                         f"can't read their IR ({type(e).__name__}: {str(e)[:300]}): "
                         f"optimize() the model again") from None
    left = {op.stack_name_value: "not compiled when the plan was saved" for op in module.walk()
            if isinstance(op, nn.StackOp) and op.stack_name_value not in stacks}
    lowered = lower_stacks(module, target, skip=left)
    missing = sorted(stacks - set(lowered.launch_of))
    if missing or lowered.kernels is None:
        raise ValueError(f"{where}: its stacks {missing[:5]} can't be compiled for this CPU "
                         f"({target.fingerprint()}): optimize() the model again")
    return PlanKernels(target, lowered.kernels, lowered.launch_of, lowered.infos, text,
                       lowered.fallback_stacks)

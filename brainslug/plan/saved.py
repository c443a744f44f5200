"""A plan's compiled kernels as a BrainSlug file stores them, for every frontend.

`PlanKernels` is what `compile_stacks` keeps of a plan's kernels: the runners,
which stack runs which kernel, the `loop.kernel_info` ops as data, and the
stacks' `nn` IR after bs-form-stacks (the source the kernels were lowered
from). `kernel_sections` turns it into a manifest entry and file sections: the
object code of every phase function and that IR (`plan.loaded` reads them
back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from brainslug.plan.targets import CpuTarget, Target
from brainslug.runtime import cache


@dataclass
class PlanKernels:
    """The compiled kernels of one plan and what rebuilds them."""

    target: Target
    kernels: Any                       # `CompiledKernels`
    launch_of: dict[str, str]          # stack name -> kernel name (compiled stacks)
    infos: list[dict[str, Any]] | None  # the kernel_info ops (`plan_cache.infos_to_json`)
    source: ModuleOp | str | None      # the stacks after bs-form-stacks (IR or its text)
    fallback_stacks: dict[str, str] = field(default_factory=dict)  # stack -> why not lowered

    def runners(self) -> dict[str, Any]:
        """Stack name -> its kernel's runner."""
        return {s: self.kernels[k] for s, k in self.launch_of.items()}

    def source_text(self) -> str | None:
        if isinstance(self.source, ModuleOp):
            self.source = str(self.source)
        return self.source


class SaveError(ValueError):
    """A plan that can't be written to a file, and why."""


def kernel_sections(pk: PlanKernels) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest entry and the file sections of `pk` (the kernels' object
    code by symbol, and their IR)."""
    k = pk.kernels
    objects = getattr(k, "objects", None)
    if not isinstance(pk.target, CpuTarget) or objects is None or pk.infos is None:
        raise SaveError("only CPU plans can be saved: this plan's kernels are "
                        f"{pk.target.name} code without separate object files")
    text = pk.source_text()
    if text is None:
        raise SaveError("this plan kept no IR of its stacks to store")
    sections = {f"objects/{sym}": bytes(data) for sym, data in objects.items()}
    sections["ir/stacks.mlir"] = text.encode()
    entry = {
        "target": pk.target.name,
        "cpu": pk.target.cpu,
        "convs": pk.target.convs,
        "flush_denormals": getattr(pk.target, "flush_denormals", False),
        "fingerprint": pk.target.fingerprint(),
        "versions": cache.versions(),
        "launch_of": pk.launch_of,
        "fallback_stacks": pk.fallback_stacks,
        "infos": pk.infos,
        "symbols": dict(k.symbols),
        "unit_keys": dict(k.unit_keys),
    }
    return entry, sections

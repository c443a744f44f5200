"""bs-dedup-kernels: stacks with identical kernels share one compiled kernel.

Two kernels are identical when their IR is the same up to SSA names;
launches of a duplicate are redirected to the first one and the duplicate is
erased. (DenseNet-121 repeats its BN→ReLU bottleneck stacks 58 times over
4 shapes.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, SymbolRefAttr
from xdsl.passes import ModulePass

from brainslug.dialects import loop, loop_kernels
from brainslug.ir.compile_time import gc_paused

_SSA = re.compile(r"%[A-Za-z_0-9][\w$.-]*")


def structural_key(fn: func.FuncOp) -> str:
    """A key that is equal for kernels whose IR is the same up to SSA names: the
    exact-mode key of `brainslug.analysis.generic_phases` (fast), or the IR text with
    SSA names numbered by first appearance."""
    from brainslug.analysis.generic_phases import Canonicalizer, NotGeneric

    block = fn.body.block
    try:
        return Canonicalizer(block, (), generic=False).body(block.args)
    except NotGeneric:
        return "text:" + text_key(fn)


def text_key(fn: func.FuncOp) -> str:
    """The kernel's IR text with SSA names numbered by first appearance."""
    text = str(fn).replace(f"@{fn.sym_name.data}(", "@kernel(", 1)
    names: dict[str, str] = {}

    def rename(m: re.Match[str]) -> str:
        return names.setdefault(m.group(0), f"%{len(names)}")

    return _SSA.sub(rename, text)


@dataclass(frozen=True)
class DedupKernelsPass(ModulePass):
    """Redirect launches of structurally identical kernels to one of them."""

    name = "bs-dedup-kernels"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            self._apply(op)

    def _apply(self, op: ModuleOp) -> None:
        kernels = list(loop_kernels.kernel_functions(op))
        if len(kernels) < 2:
            return  # (a stack compiled on its own: nothing to share)
        first: dict[str, str] = {}
        rename: dict[str, str] = {}
        for fn in kernels:
            key = structural_key(fn)
            name = fn.sym_name.data
            if key in first:
                rename[name] = first[key]
                op.body.block.erase_op(fn)
            else:
                first[key] = name
        if not rename:
            return
        for launch in op.walk():
            if isinstance(launch, loop.LaunchOp) and launch.callee_name in rename:
                launch.callee = SymbolRefAttr(rename[launch.callee_name])

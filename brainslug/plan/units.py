"""Stacks compiled one by one: each stack is a compilation unit of its own.

After bs-form-stacks a plan's stacks are independent: each is
IsolatedFromAbove, and every pass after it works inside one stack's kernel.
So each distinct stack is lifted into a module of its own (`standalone`) and
taken through the rest of the pipeline and LLVM there, which gives:

- **work per distinct stack**: stacks whose IR is the same up to their name
  and SSA names (DenseNet's bottleneck BN-ReLU, ResNet's repeated blocks) are
  compiled once and share the kernel;
- **a stack cache**: a compiled stack is kept in the kernel cache under its
  IR, so a plan that meets it again (the final plan after `conv="auto"`'s trial
  plan, another model with the same layers) runs no pass for it;
- **parallel passes**: the units are shared between forked processes
  (`fork_map`), passes and LLVM alike, not only LLVM;
- **failures stay local**: a stack whose passes or compilation raise is left
  to the framework with the error as its reason (no bisection).

A unit's phase functions are named by their object code's symbol
(`bs_<key>`), so kernel records are the same whichever plan or process
compiled them. Phases generic over extents are still shared across the units
of one process (`lower_kernels`' memo of generic phases).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp, StringAttr
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from brainslug.dialects import loop, nn
from brainslug.plan.capture import NODE_ATTR
from brainslug.runtime import cache

KERNEL_NAME = "bs.unit"
"""The name a stack's kernel has in a cached record (the stack's own name on load)."""


def standalone(stack: nn.StackOp) -> ModuleOp:
    """A module whose graph function runs a copy of `stack` alone, on arguments
    of its input types."""
    types = [v.type for v in stack.inputs]
    block = Block(arg_types=types)
    copy = stack.clone()
    for i, arg in enumerate(block.args):
        copy.operands[i] = arg
    block.add_op(copy)
    block.add_op(func.ReturnOp(*copy.results))
    fn = func.FuncOp("forward", FunctionType.from_lists(types, [r.type for r in copy.results]),
                     Region(block))
    return ModuleOp([fn])


def family_key(module: ModuleOp) -> str:
    """What `standalone` modules that likely share generic phases have in
    common: their layers and the shapes of their results but for the last dim
    (DenseNet's dense layers of one block, which differ in their input
    channels and number of `cat` pieces). A family is compiled in one process,
    so that each of its phases is compiled once (`fork_map` hands out work)."""
    stack = next(op for op in module.walk() if isinstance(op, nn.StackOp))
    layers = ",".join(op.name for op in stack.body.block.ops)
    shapes = ";".join(str(r.type.get_shape()[:-1]) for r in stack.results  # type: ignore[attr-defined]
                      if hasattr(r.type, "get_shape"))
    return f"{layers}|{shapes}"


def structure_key(module: ModuleOp, name: str) -> str:
    """What a `standalone` module is up to the stack's name, the framework's
    layer names (`bs.node`) and SSA names: equal for stacks that compile to the
    same kernel. Each op's name, operands (numbered in order of definition),
    attributes, properties and result types, and its regions' block argument
    types, in order; the texts of attributes and types are made once per
    process (`_text`): 3 times quicker than printing the module."""
    numbers: dict[SSAValue, int] = {}
    out: list[str] = []
    stack_name = StringAttr(name)

    def attrs(d: dict[str, Attribute]) -> str:
        return ",".join(f"{k}=" + ("" if k == NODE_ATTR else "bs.unit" if v == stack_name
                                   else _text(v)) for k, v in sorted(d.items()))

    def visit(op: Operation) -> None:
        out.append(f"{op.name}(" + ",".join(str(numbers.get(v, -1)) for v in op.operands)
                   + f"){{{attrs(op.properties)}}}[{attrs(op.attributes)}]->"
                   + ",".join(_text(r.type) for r in op.results))
        for r in op.results:
            numbers[r] = len(numbers)
        for region in op.regions:
            out.append("{")
            for block in region.blocks:
                out.append("^(" + ",".join(_text(a.type) for a in block.args) + ")")
                for a in block.args:
                    numbers[a] = len(numbers)
                for o in block.ops:
                    visit(o)
            out.append("}")

    for op in module.ops:
        visit(op)
    return "\n".join(out)


def _text(attr: Attribute) -> str:
    """An attribute's or type's text (one stack after another has the same ones)."""
    try:
        return _cached_text(attr)
    except TypeError:  # (not hashable)
        return str(attr)


@functools.lru_cache(maxsize=1 << 14)
def _cached_text(attr: Attribute) -> str:
    return str(attr)


@dataclass
class UnitResult:
    """What compiling one stack gave: its kernel record (kernel named
    `KERNEL_NAME`, phases named by symbol), the kernel-cache key of each
    phase's object code, the object code this process has for them, or why
    the stack stays in the framework."""

    record: dict[str, Any] | None = None
    unit_keys: dict[str, str] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    compiled: int = 0
    fallback: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Per compile step (`compile_profile`): empty for a stack from the cache."""

    def to_json(self) -> str:
        return json.dumps({"record": self.record, "unit_keys": self.unit_keys,
                           "fallback": self.fallback})

    @classmethod
    def from_json(cls, blob: bytes) -> UnitResult | None:
        try:
            d = json.loads(blob)
            return cls(d["record"], dict(d["unit_keys"]), fallback=d["fallback"])
        except (ValueError, KeyError, TypeError):
            return None


class UnitCompiler:
    """Takes standalone stack modules through the pipeline after bs-form-stacks
    and LLVM, for one CPU target. One instance per plan: it keeps the generic
    phases lowered so far (shared by later units of the same process)."""

    def __init__(self, target: Any, passes: Callable[[], list[ModulePass]]):
        self.target = target
        self.passes = passes
        """The passes after bs-form-stacks, bs-lower-to-llvm last."""
        self._pipeline: str | None = None
        self.backend = target.backend
        self.generic: dict[str, str] = {}
        """Generic phase key -> the name of the function that computes it."""
        self.symbol_of: dict[str, tuple[str, str]] = {}
        """Phase function name -> (its symbol, its kernel-cache key)."""

    def cache_key(self, structure: str) -> str:
        """The stack cache's key of a stack: its structure, the target and the
        passes (by their reprs, which name their options)."""
        if self._pipeline is None:
            self._pipeline = ";".join(repr(p) for p in self.passes())
        return cache.key("stack-unit", self.target.fingerprint() or "", self.target.name,
                         self.target.cpu, self._pipeline, structure)

    def compile(self, module: ModuleOp, name: str) -> UnitResult:
        """Lowers the stack `name` of standalone `module` (changed in place) and
        compiles its phases (object code from the kernel cache where it is)."""
        from brainslug.ir.compile_time import gc_paused
        from brainslug.ir.context import make_context
        from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
        from brainslug.lowering.to_llvm import lower_kernels
        from brainslug.plan.compile_profile import StepTimer
        from brainslug.plan.stacks import stack_launches
        from brainslug.runtime.abi import kernel_record
        from brainslug.runtime.jit import OPT_LEVEL

        step = StepTimer()
        ctx = make_context()
        for p in self.passes():
            if isinstance(p, LowerToLLVMPass):
                with gc_paused(), step("LLVM IR built (llvmlite)"):
                    lower_kernels(module, self.backend.params(), shared=self.generic)
            else:
                with step(p.name):
                    p.apply(ctx, module)
        fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
        launch_of, fallback = stack_launches(fn)
        if name not in launch_of:
            return UnitResult(fallback=fallback.get(name) or "no loop lowering",
                              seconds=step.seconds)
        infos = [op for op in module.ops if isinstance(op, loop.KernelInfoOp)]
        (info,) = infos
        record = kernel_record(info)
        tm = self.backend.target_machine(jit=True)
        fingerprint = f"{self.backend.fingerprint()};O{OPT_LEVEL}"
        result = UnitResult(seconds=step.seconds)
        with step("LLVM IR text"):
            units = list(self.backend.phase_units(module, str(tm.target_data)))
        for phase, text in units:
            k = cache.key(fingerprint, text)
            sym = f"bs_{k[:32]}"
            self.symbol_of[phase] = (sym, k)
            data = cache.load(k)
            if data is None:
                with step("LLVM optimization + code generation"):
                    data = self.backend.compile_object(self.backend.named(text, sym), OPT_LEVEL)
                cache.store(k, data)
                result.compiled += 1
            result.objects[sym] = data
        phases = []
        for p in record["phases"]:
            sym, k = self.symbol_of[p]
            phases.append(sym)
            result.unit_keys[sym] = k
        record["phases"] = phases
        record["kernel"] = KERNEL_NAME
        result.record = record
        return result


def renamed(record: dict[str, Any], kernel: str) -> dict[str, Any]:
    """A unit's kernel record with its kernel named `kernel`."""
    return {**record, "kernel": kernel}

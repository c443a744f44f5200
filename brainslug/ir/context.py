"""The xDSL context with every dialect BrainSlug uses, and text helpers."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.dialects.llvm import LLVM
from xdsl.dialects.math import Math
from xdsl.dialects.memref import MemRef
from xdsl.dialects.scf import Scf
from xdsl.ir import Dialect
from xdsl.parser import Parser


def brainslug_dialects() -> list[Dialect]:
    from brainslug.dialects.loop import Loop
    from brainslug.dialects.nn import NN
    from brainslug.dialects.simd import SIMD

    return [NN, Loop, SIMD]


def upstream_dialects() -> list[Dialect]:
    return [Builtin, Func, Arith, Math, MemRef, Scf, LLVM]


def make_context() -> Context:
    """A context with the upstream dialects BrainSlug reuses and its own three."""
    ctx = Context()
    for d in (*upstream_dialects(), *brainslug_dialects()):
        ctx.load_dialect(d)
    return ctx


def parse_module(text: str, name: str = "<string>", ctx: Context | None = None) -> ModuleOp:
    """Parse and verify a module (for tests and bs-opt; frontends build IR directly)."""
    module = Parser(ctx or make_context(), text, name=name).parse_module()
    module.verify()
    return module

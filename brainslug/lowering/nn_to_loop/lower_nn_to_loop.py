"""The bs-lower-nn-to-loop pass: every `nn.stack` becomes a kernel of loop nests.

The stack is replaced by a `loop.launch` of a new `func.func` marked `bs.kernel`
whose memref arguments are the stack's inputs followed by its outputs. A stack
with a layer that has no loop lowering stays an `nn.stack` and is reported with
the reason in a `bs.fallback` attribute; the runtime then runs its layers in the
framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.dialects import loop, nn
from brainslug.ir.compile_time import gc_paused
from brainslug.lowering.nn_to_loop.builder import UnsupportedLayer
from brainslug.lowering.nn_to_loop.stack import lower_stack


@dataclass
class LowerStack(RewritePattern):
    """Replaces an `nn.stack` by a `loop.launch` of its kernel, or marks its fallback."""

    piece_tables: bool = False

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.StackOp, rewriter: PatternRewriter, /):
        if "bs.fallback" in op.attributes:
            return
        name = op.stack_name_value
        try:
            kernel = lower_stack(op, name, self.piece_tables)
        except UnsupportedLayer as e:
            op.attributes["bs.fallback"] = StringAttr(str(e))
            rewriter.notify_op_modified(op)
            return
        module = op.get_toplevel_object()
        assert isinstance(module, ModuleOp)
        fn = op.parent_op()
        while fn is not None and not isinstance(fn, func.FuncOp):
            fn = fn.parent_op()
        assert fn is not None
        rewriter.insert(kernel, InsertPoint.after(fn))
        launch = loop.LaunchOp(name, list(op.inputs), [r.type for r in op.outputs],
                               {"bs.stack": StringAttr(name)})
        rewriter.replace(op, launch)


@dataclass(frozen=True)
class LowerNNToLoopPass(ModulePass):
    """Lower each nn.stack to a bs.kernel function called by loop.launch."""

    name = "bs-lower-nn-to-loop"

    piece_tables: bool = False
    """A `cat` reads a run of like stack inputs as one buffer (`loop.pieces`),
    so that its code is the same whatever the run's length (a CPU target's
    bs-lower-to-llvm finds the pieces through the slot array)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            PatternRewriteWalker(LowerStack(self.piece_tables),
                                 apply_recursively=False).rewrite_module(op)

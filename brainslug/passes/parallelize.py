"""bs-parallelize: mark the outer dimensions of every top-level nest or tile as parallel.

On x86 the runtime splits the collapsed outer dimensions across its thread pool;
on CUDA they become the grid. Nests inside a tile run on the tile's thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from brainslug.dialects import loop, loop_kernels
from brainslug.ir.compile_time import gc_paused


class MarkParallel(RewritePattern):
    """Collapse all dimensions of a top-level nest/tile into the parallel range
    (the vector dimension, if any, already lives in its simd.loop)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: func.FuncOp, rewriter: PatternRewriter, /):
        if not loop_kernels.is_kernel(op):
            return
        for child in op.body.block.ops:
            if isinstance(child, loop.NestOp | loop.TileOp) and child.parallel is None:
                if child.ivs:
                    child.parallel = IntegerAttr(len(child.ivs), i64)
                    rewriter.notify_op_modified(child)


@dataclass(frozen=True)
class ParallelizePass(ModulePass):
    """Mark the outermost parallel loops of each kernel phase."""

    name = "bs-parallelize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            PatternRewriteWalker(MarkParallel(), apply_recursively=False).rewrite_module(op)

"""bs-reorder: loop interchange so the innermost nest dimension runs along memory.

The dimension that indexes the contiguous (last) axis of the nest's first store
moves innermost; the others keep their order. NCHW nests end in W, NHWC nests
(generated in logical N, C, H, W order) end in C.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region
from xdsl.ir.affine import AffineDimExpr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from brainslug.dialects import loop


def contiguous_dim(nest: loop.NestOp) -> int | None:
    """Position of the nest iv that the first store's last index is, if any."""
    store = next((o for o in nest.body.block.ops if isinstance(o, loop.StoreOp)), None)
    if store is None:
        return None
    last = store.map.data.results[-1]
    if not isinstance(last, AffineDimExpr):
        return None
    iv = store.indices[last.position]
    ivs = nest.ivs
    return ivs.index(iv) if iv in ivs else None


def permute_nest(nest: loop.NestOp, order: list[int]) -> loop.NestOp:
    """A copy of `nest` with its dimensions in `order` (positions of the old ivs)."""
    lower, upper = nest.lower_bounds(), nest.upper_bounds()
    old = nest.ivs
    block = Block(arg_types=[old[i].type for i in order])
    for new_arg, i in zip(block.args, order, strict=True):
        new_arg.name_hint = old[i].name_hint
    new = loop.NestOp([lower[i] for i in order], [upper[i] for i in order], Region(block))
    new.attributes |= nest.attributes
    new.parallel = nest.parallel
    for i, new_arg in zip(order, block.args, strict=True):
        old[i].replace_all_uses_with(new_arg)
    for op in list(nest.body.block.ops):
        op.detach()
        block.add_op(op)
    return new


class InterchangeToContiguous(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        pos = contiguous_dim(op)
        n = len(op.ivs)
        if pos is None or pos == n - 1:
            return
        order = [i for i in range(n) if i != pos] + [pos]
        rewriter.replace(op, permute_nest(op, order))


@dataclass(frozen=True)
class ReorderPass(ModulePass):
    """Move each nest's contiguous dimension innermost."""

    name = "bs-reorder"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(InterchangeToContiguous(), apply_recursively=False).rewrite_module(op)

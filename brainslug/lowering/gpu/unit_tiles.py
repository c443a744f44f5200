"""bs-gpu-unit-tiles: a depth-first tile too large for a block's shared memory
cut to one point of its tiled dims, where its scratch is sized by its steps
(run by the nvptx lowering before it lowers the phases).

One point may fit in shared memory (block mode), and a thread that runs a
tile on its own (serial mode) out of its local memory is best off with the
smallest tile (the most parallelism). A tile of step s bounds its nests by
`[iv, min(iv + s, ub))` and indexes its scratch with `index - iv`: with step 1
the same body covers every point once. A tile with a halo keeps its steps: its
producer's bounds are not of that form.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import DenseArrayBase, IndexType, IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from brainslug.dialects import loop, loop_kernels
from brainslug.lowering.gpu.analysis import block_phase


class UnitTile(RewritePattern):
    """Gives a kernel's tile that does not run in block mode step 1 in every
    dim, one-point scratch dims and `iv + 1` for each `iv + step`, where each
    scratch buffer's leading dims are the steps."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, tile: loop.TileOp, rewriter: PatternRewriter, /):
        if not loop_kernels.is_kernel(tile.parent_op()) or block_phase(tile):
            return
        steps = tile.steps
        block = tile.body.block
        if all(s == 1 for s in steps) or any(
            isinstance(op, memref.AllocaOp)
            and list(op.memref.type.get_shape()[: len(steps)]) != list(steps)  # type: ignore[attr-defined]
            for op in block.ops
        ):
            return
        ivs = list(block.args)
        for op in list(block.ops):
            if (
                isinstance(op, arith.AddiOp)
                and op.lhs in ivs
                and isinstance(c := op.rhs.owner, arith.ConstantOp)
                and isinstance(c.value, IntegerAttr)
                and c.value.value.data == steps[ivs.index(op.lhs)]
            ):
                one = rewriter.insert(arith.ConstantOp(IntegerAttr(1, IndexType())), InsertPoint.before(op))
                op.operands[1] = one.result
                rewriter.notify_op_modified(op)
            elif isinstance(op, memref.AllocaOp):
                t = op.memref.type
                shape = list(t.get_shape())
                unit = [1] * len(steps) + shape[len(steps) :]
                rewriter.replace(op, memref.AllocaOp.get(t.element_type, shape=unit))
        tile.step = DenseArrayBase.from_list(i64, [1] * len(steps))
        rewriter.notify_op_modified(tile)


@dataclass(frozen=True)
class GPUUnitTilesPass(ModulePass):
    """Cuts each depth-first tile of a kernel that does not fit in a block's
    shared memory to one point of its tiled dims (where it has no halo)."""

    name = "bs-gpu-unit-tiles"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(UnitTile(), apply_recursively=False).rewrite_module(op)

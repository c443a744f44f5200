"""The default pipeline: every BrainSlug pass in order."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from brainslug.pipeline.target import (
    conv_chain_bytes,
    is_gpu,
    l1_cache_bytes,
    l2_cache_bytes,
    tile_budget,
    vector_lanes,
    window_tile_budget,
)

PREFETCH_TILES = True
"""Whether compiled convolutions' depth-first tiles prefetch the next tile's
prologue input (bs-prefetch-tiles, on a CPU)."""


def default_passes(target: str = "x86-64", cpu: str = "host", lower: bool = True,
                   compute: bool = False) -> list[ModulePass]:
    """The passes of the default pipeline; `lower=False` stops before LLVM.

    With `compute`, channels-last convolutions are compiled, each in a stack
    with its pointwise epilogue: a second bs-fuse after bs-reorder merges a convolution with its
    epilogue (both then run in memory order), bs-register-tile blocks it
    in registers for the target's vector width, and bs-block-reduction sums
    its input channels in chunks whose weights stay in L1, and on a CPU
    bs-prefetch-tiles makes a tile's sum prefetch the next tile's prologue
    input."""
    from brainslug.lowering.nn_to_loop import LowerNNToLoopPass
    from brainslug.passes.dedup_kernels import DedupKernelsPass
    from brainslug.passes.fuse import FusePass
    from brainslug.passes.lane_blocks import LaneBlocksPass
    from brainslug.passes.merge_siblings import MergeSiblingsPass
    from brainslug.passes.parallelize import ParallelizePass
    from brainslug.passes.prefetch_tiles import PrefetchTilesPass
    from brainslug.passes.reorder import ReorderPass
    from brainslug.passes.tile_depth_first import TileDepthFirstPass
    from brainslug.passes.vectorize import VectorizePass

    # on a GPU a tile is a block, its scratch shared memory: more, smaller tiles
    tiling = TileDepthFirstPass(cache=tile_budget(target), split=is_gpu(target),
                                window_cache=window_tile_budget(target),
                                item_pairs=not is_gpu(target))
    passes: list[ModulePass] = [
        form_stacks_pass(target, compute),
        LowerNNToLoopPass(piece_tables=not is_gpu(target)),
        # identical stacks (DenseNet's bottleneck BN-ReLU, 58 of them over 4
        # shapes) are lowered once
        DedupKernelsPass(),
        FusePass(overlap="tile"),
        ReorderPass(),
        *([FusePass(overlap="tile")] if compute else []),
        tiling,
        VectorizePass(),
        *(register_tiling(target, cpu) if compute else []),
        # on a CPU, pools and means over rows read several adjacent vectors a step
        *([] if is_gpu(target) else [LaneBlocksPass(vector_lanes(target, cpu))]),
        *([PrefetchTilesPass()] if compute and PREFETCH_TILES and not is_gpu(target) else []),
        MergeSiblingsPass(),
        ParallelizePass(),
        DedupKernelsPass(),
    ]
    if lower:
        from brainslug.lowering.lower_to_llvm import LowerToLLVMPass

        passes.append(LowerToLLVMPass(target=target, cpu=cpu))
    return passes


def form_stacks_pass(target: str = "x86-64", compute: bool = False,
                     chains: bool = True) -> ModulePass:
    """The pipeline's bs-form-stacks: with `compute`, convolutions start stacks
    with their epilogues and, on a CPU, their prologues, and with `chains`
    chain depth-first into the depthwise convolutions after them (a plan that
    times each convolution alone has none, but the same prologues: its
    kernels are then the final plan's where no chain forms)."""
    from brainslug.passes.form_stacks import FormStacksPass

    cpu = compute and not is_gpu(target)
    return FormStacksPass(conv_epilogues=compute,
                          conv_chains=conv_chain_bytes(target) if cpu and chains else 0,
                          conv_prologues=cpu)


def register_tiling(target: str, cpu: str) -> list[ModulePass]:
    """bs-register-tile for the target's vector width and register file
    (AVX-512: 32 registers of 16 lanes, and FMAs that take a broadcast memory
    operand; AVX2: 16 of 8), then on a CPU bs-block-reduction for its L1."""
    from brainslug.passes.block_reduction import BlockReductionPass
    from brainslug.passes.register_tile import RegisterTilePass

    lanes = vector_lanes(target, cpu)
    chunk = 0 if is_gpu(target) else l1_cache_bytes() * 2 // 3
    passes: list[ModulePass] = [RegisterTilePass(
        lanes=lanes, registers=32 if lanes == 16 else 16, cache=tile_budget(target),
        broadcast_operands=lanes == 16)]
    if chunk:
        passes.append(BlockReductionPass(lanes=lanes, cache=chunk, l2=l2_cache_bytes()))
    return passes


@dataclass(frozen=True)
class DefaultPipelinePass(ModulePass):
    """bs-form-stacks, bs-lower-nn-to-loop, bs-dedup-kernels, bs-fuse, bs-reorder,
    bs-tile-depth-first, bs-vectorize, (on a CPU) bs-lane-blocks, bs-merge-siblings,
    bs-parallelize, bs-dedup-kernels and bs-lower-to-llvm, in that order."""

    name = "default"
    target: str = "x86-64"
    cpu: str = "host"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for p in default_passes(self.target, self.cpu):
            p.apply(ctx, op)
            op.verify()

"""BrainSlug's passes, registered by their public `bs-opt` names."""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _form_stacks():
    from brainslug.passes.form_stacks import FormStacksPass

    return FormStacksPass


def _lower_nn_to_loop():
    from brainslug.lowering.nn_to_loop import LowerNNToLoopPass

    return LowerNNToLoopPass


def _fuse():
    from brainslug.passes.fuse import FusePass

    return FusePass


def _reorder():
    from brainslug.passes.reorder import ReorderPass

    return ReorderPass


def _tile():
    from brainslug.passes.tile_depth_first import TileDepthFirstPass

    return TileDepthFirstPass


def _vectorize():
    from brainslug.passes.vectorize import VectorizePass

    return VectorizePass


def _register_tile():
    from brainslug.passes.register_tile import RegisterTilePass

    return RegisterTilePass


def _block_reduction():
    from brainslug.passes.block_reduction import BlockReductionPass

    return BlockReductionPass


def _lane_blocks():
    from brainslug.passes.lane_blocks import LaneBlocksPass

    return LaneBlocksPass


def _prefetch_tiles():
    from brainslug.passes.prefetch_tiles import PrefetchTilesPass

    return PrefetchTilesPass


def _merge_siblings():
    from brainslug.passes.merge_siblings import MergeSiblingsPass

    return MergeSiblingsPass


def _parallelize():
    from brainslug.passes.parallelize import ParallelizePass

    return ParallelizePass


def _dedup():
    from brainslug.passes.dedup_kernels import DedupKernelsPass

    return DedupKernelsPass


def _gpu_unit_tiles():
    from brainslug.lowering.gpu.unit_tiles import GPUUnitTilesPass

    return GPUUnitTilesPass


def _lower_to_llvm():
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass

    return LowerToLLVMPass


def _default():
    from brainslug.pipeline.default import DefaultPipelinePass

    return DefaultPipelinePass


ALL_PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "bs-form-stacks": _form_stacks,
    "bs-lower-nn-to-loop": _lower_nn_to_loop,
    "bs-fuse": _fuse,
    "bs-reorder": _reorder,
    "bs-tile-depth-first": _tile,
    "bs-vectorize": _vectorize,
    "bs-register-tile": _register_tile,
    "bs-block-reduction": _block_reduction,
    "bs-lane-blocks": _lane_blocks,
    "bs-prefetch-tiles": _prefetch_tiles,
    "bs-merge-siblings": _merge_siblings,
    "bs-parallelize": _parallelize,
    "bs-dedup-kernels": _dedup,
    "bs-gpu-unit-tiles": _gpu_unit_tiles,
    "bs-lower-to-llvm": _lower_to_llvm,
    "default": _default,
}

PASS_SUMMARIES: dict[str, str] = {
    "bs-form-stacks": "group memory-bound layers into nn.stack regions; drop dropout/identity",
    "bs-lower-nn-to-loop": "turn each nn.stack into a kernel of loop nests called by loop.launch",
    "bs-fuse": "merge nests, inline elementwise producers, read cat operands in place",
    "bs-reorder": "interchange nest dims so the innermost runs along contiguous memory",
    "bs-tile-depth-first": "tile chains of nests so each tile's intermediates stay in cache",
    "bs-vectorize": "turn the innermost dim into a simd.loop of W lanes with a masked tail",
    "bs-register-tile": "block contractions (convolutions) in registers: columns x vectors "
    "{lanes=16 registers=32 max-vectors=4 cache=524288 broadcast-operands=false}",
    "bs-block-reduction": "split register-blocked channel sums into chunks whose weights stay "
    "in L1, run over bands of rows {lanes=16 cache=32768 band-bytes=65536}",
    "bs-prefetch-tiles": "register-blocked sums of depth-first tiles prefetch the next tile's "
    "prologue input into L2",
    "bs-merge-siblings": "merge independent adjacent nests over the same domain (cat pieces)",
    "bs-parallelize": "mark the outer parallel dims of each top-level nest for threads/grid",
    "bs-dedup-kernels": "let stacks with identical kernels share one compiled kernel",
    "bs-gpu-unit-tiles": "cut tiles too large for GPU shared memory to one point (in nvptx lowering)",
    "bs-lower-to-llvm": "lower kernels to the llvm dialect {target=x86-64|nvptx cpu=host|sm_90}",
    "default": "the whole pipeline, in the order above {target=x86-64 cpu=host}",
}

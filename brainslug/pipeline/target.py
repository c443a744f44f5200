"""What the driver knows about a target, handed to the passes as options:
passes never read the machine.

- The scratch budget of a depth-first tile (bs-tile-depth-first's `cache`):
  half of the core's L2 on a CPU (read from sysfs here), a share of a
  multiprocessor's shared memory on a GPU.
- The weight chunk of a blocked channel sum (bs-block-reduction's `cache`):
  two thirds of the core's L1 data cache, the rest for inputs and sums; and
  the weights under which a sum stays whole (its `l2`): the core's L2.
- The vector width W: bs-lower-to-llvm's backend binds it from its `cpu`
  option (AVX-512: 16 lanes, AVX2: 8; on a GPU the lanes are threads).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from brainslug.runtime.aligned import aligned_empty

GPU_TARGETS = ("nvptx", "nvptx64", "cuda")

GPU_TILE_BUDGET = 16 * 1024
"""Bytes of scratch bs-tile-depth-first gives a tile on the GPU (its `cache`):
with 256 threads per block, 2048 threads per SM need 8 blocks, i.e. at most
(228 - 8) / 8 = 27 KiB each on an H100 and (164 - 8) / 8 = 19 KiB on an A100
(1 KiB per block is reserved), so 16 KiB keeps the occupancy of both at its
maximum while a 3x3/2 pool on a 112-wide map still gets tiles of 17 output
rows (one halo row per 34 computed: 3 % recomputed)."""


def _cache_bytes(level: int, default: int) -> int:
    """Per-core size of this machine's data (or unified) cache at `level`
    (sysfs), `default` if it can't be read."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(base.glob("index*")):
            if (idx / "level").read_text().strip() == str(level) and (
                    idx / "type").read_text().strip() != "Instruction":
                text = (idx / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1], 1)
                return int(text.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return default


@functools.cache
def l2_cache_bytes() -> int:
    """Per-core L2 size of this machine (sysfs), 1 MiB if it can't be read."""
    return _cache_bytes(2, 1 << 20)


@functools.cache
def l1_cache_bytes() -> int:
    """Per-core L1 data cache size of this machine (sysfs), 32 KiB if it can't
    be read."""
    return _cache_bytes(1, 32 << 10)


def is_gpu(target: str) -> bool:
    return target in GPU_TARGETS


def tile_budget(target: str) -> int:
    """Bytes one depth-first tile's scratch may fill on `target`."""
    return GPU_TILE_BUDGET if is_gpu(target) else l2_cache_bytes() // 2


def window_tile_budget(target: str) -> int:
    """Bytes a depth-first tile may fill along a windowed dim on `target`,
    where each tile recomputes its halo: the whole L2 on a CPU (efficientnet_b0's
    5×5 depthwise chains at 14×14 and 7×7, tiled in half the L2, computed their
    expand rows 1.9 and 2.6 times: batch 8 took 0.89 of the time with the
    whole L2, batch 1 0.95), the tile budget on a GPU (shared memory)."""
    return GPU_TILE_BUDGET if is_gpu(target) else l2_cache_bytes()


def conv_chain_bytes(target: str) -> int:
    """bs-form-stacks `conv-chains`: the bytes per batch item over which a
    convolution's result chains depth-first into the depthwise convolution
    that reads it. A quarter of the tile budget: with `ITEM_TILES` tiles per
    item the threads still share an item at batch 1 (MobileNet's blocks at
    28×28 and 14×14 chain too)."""
    return tile_budget(target) // 4


def vector_lanes(target: str, cpu: str = "host") -> int:
    """f32 lanes of one machine vector (W) on `target`: what bs-register-tile
    blocks by (AVX-512: 16, AVX2: 8; on a GPU, 32 threads of a warp)."""
    if is_gpu(target):
        return 32
    from brainslug.lowering.backends.x86 import X86Backend

    return X86Backend(cpu).lanes


def conv_weight_block(out_channels: int, lanes: int, max_vectors: int = 4,
                      three: bool = False) -> int:
    """Output channels per block of a compiled convolution's packed weight:
    V vectors of `lanes`, V in 1, 2, 4 up to `max_vectors` (and 3 where
    `three`: a pointwise convolution, whose register block of 8 columns × 3
    vectors feeds each broadcast input to 3 FMAs), the V that pads the
    channels least (the larger on a tie); 0 when one block holds them all
    (the weight then stays HWIO). 96 channels on 16 lanes: blocks of 32 (three
    full ones), not of 64 (the second half empty); pointwise, of 48. 144
    channels pointwise: blocks of 48, not 9 blocks of 16 (a register block of
    one vector loads a weight vector per FMA). 33 to 40 channels on 16 lanes
    (with taps too) stay HWIO: bs-register-tile takes them in one block of 3
    vectors whose last is half a vector (`<8 x float>`), where 3 packed blocks
    of one vector each broadcast every input 3 times and the last wastes
    half its FMA. 3x3 at batch 8, 2 threads, against the library, packed ->
    HWIO: 20->36 at 28x28 0.92-0.99 -> 1.33-1.37, 24->40 stride 2 at 56x56
    0.94-1.17 -> 1.37-1.49, 40->40 at 28x28 0.88-1.03 -> 1.08-1.10; but
    48->48 0.83-0.92 -> 0.81-0.84, so 41-48 channels keep their blocks."""
    if 3 <= max_vectors and 2 * lanes < out_channels <= 2 * lanes + lanes // 2:
        return 0
    best = 0
    for v in (4, 3, 2, 1):
        if v > max_vectors or (v == 3 and not three):
            continue
        block = v * lanes
        waste = -(-out_channels // block) * block - out_channels
        if not best or waste < (-(-out_channels // best) * best - out_channels):
            best = block
    return best if out_channels > best else 0


def block_weights(hwio: np.ndarray, block: int) -> np.ndarray:
    """An HWIO convolution weight blocked by `block` output channels,
    `[ceil(O/B), KH, KW, I, B]`, zeros past O (the layout `nn.conv2d` takes for
    a compiled channels-last convolution)."""
    kh, kw, i, o = hwio.shape
    blocks = -(-o // block)
    padded = np.zeros((kh, kw, i, blocks * block), dtype=hwio.dtype)
    padded[..., :o] = hwio
    out = aligned_empty((blocks, kh, kw, i, block), hwio.dtype)
    out[...] = padded.reshape(kh, kw, i, blocks, block).transpose(3, 0, 1, 2, 4)
    return out

"""Buffers whose data starts on a cache line, for the arrays that kernels read
with full-vector loads.

NumPy's allocator aligns data to 16 bytes only: a packed weight or a scratch
buffer from `np.empty` starts 16, 32 or 48 bytes into a 64-byte line about
three times in four, and then every 64-byte (AVX-512) vector load of it spans
two lines. PyTorch's CPU allocator aligns to 64 already.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALIGN = 64
"""Byte alignment of buffers handed to kernels (a cache line, an AVX-512 vector)."""


def aligned_empty(shape: Sequence[int], dtype: np.dtype | type = np.float32,
                  align: int = ALIGN) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is `align`-aligned."""
    dt = np.dtype(dtype)
    count = math.prod(shape)
    n = max(count, 1) * dt.itemsize
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].view(dt)[:count].reshape(tuple(shape))


def aligned_copy(a: np.ndarray, align: int = ALIGN) -> np.ndarray:
    """`a` as a C-contiguous array whose data is `align`-aligned (`a` itself
    where it already is one)."""
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    out = aligned_empty(a.shape, a.dtype, align)
    out[...] = a
    return out

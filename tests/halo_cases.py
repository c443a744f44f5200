"""Overlapping pooling windows after an elementwise producer, on a 29x23 map:
the cases of the halo-tile tests (CPU pipeline and GPU emulator)."""

from __future__ import annotations

import torch.nn.functional as F

HALO_POOLS = {
    # name: (nn op and attributes, output size, reference)
    "max3s2p1": ('nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, '
                 'padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false',
                 (15, 12), lambda t: F.max_pool2d(t, 3, 2, 1)),
    "max3s1p1": ('nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 1, 1>, '
                 'padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false',
                 (29, 23), lambda t: F.max_pool2d(t, 3, 1, 1)),
    "max4s2ceil": ('nn.max_pool2d %r {kernel = array<i64: 4, 4>, strides = array<i64: 2, 2>, '
                   'padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = true',
                   (14, 11), lambda t: F.max_pool2d(t, 4, 2, 0, ceil_mode=True)),
    "avg3s2p1_nopad": ('nn.avg_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, '
                       'padding = array<i64: 1, 1, 1, 1>, ceil_mode = false, '
                       'count_include_pad = false',
                       (15, 12), lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False)),
}

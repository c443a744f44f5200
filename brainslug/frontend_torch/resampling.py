"""PyTorch's bilinear resampling tables, computed at optimize() as its CPU
kernel computes them (`upsample_bilinear2d`: `area_pixel_compute_scale`,
`area_pixel_compute_source_index`, `guard_index_and_lambda`), in float32.

The source index `scale * (i + 0.5) - 0.5` is rounded once, as a fused
multiply-add rounds it: against this PyTorch's output, tables rounded once
differ by at most 4.8e-7 on 7 -> 17 and 2.4e-7 on 20 -> 7 (N(0, 1) input),
tables rounded twice by 1.3e-6 and 1.1e-6. The sums are not bit for bit
PyTorch's, whose summation order varies with the shape;
`tests/test_bilinear.py` holds them to PyTorch's accuracy against float64.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_RUNS = 4
"""The most runs of affine reads per resampled dim (`nn.linear_pieces`); each
pair of a row run and a column run is a nest of its own."""


def scale_of(n_in: int, n_out: int, align_corners: bool, scale_factor: float | None) -> np.float32:
    """The input step per output point, as `area_pixel_compute_scale<float>`."""
    f32 = np.float32
    if align_corners:
        return f32(n_in - 1) / f32(n_out - 1) if n_out > 1 else f32(0)
    if scale_factor is not None and scale_factor > 0:
        return f32(1.0 / scale_factor)
    return f32(n_in) / f32(n_out)


def linear_table(n_in: int, n_out: int, align_corners: bool,
                 scale_factor: float | None) -> tuple[list[int], list[int], np.ndarray]:
    """The two input points of each output point along one dim, and their
    weights (2 x n_out: lambda0, lambda1)."""
    f32 = np.float32
    first, second = [], []
    weights = np.zeros((2, n_out), dtype=np.float32)
    scale = scale_of(n_in, n_out, align_corners, scale_factor)
    for i in range(n_out):
        if n_in == n_out:
            first.append(i)
            second.append(i)
            weights[:, i] = (1.0, 0.0)
            continue
        if align_corners:
            src = f32(scale * f32(i))
        else:  # one rounding of scale * (i + 0.5) - 0.5, exact in float64
            src = f32(np.float64(scale) * np.float64(f32(i) + f32(0.5)) - 0.5)
            src = max(src, f32(0))
        k = min(int(np.floor(src)), n_in - 1)
        lam = min(max(f32(src - f32(k)), f32(0)), f32(1))
        first.append(k)
        second.append(k + 1 if k < n_in - 1 else k)
        weights[:, i] = (f32(1) - lam, lam)
    return first, second, weights


def apply_tables(x: torch.Tensor, rows: tuple[list[int], list[int], np.ndarray],
                 cols: tuple[list[int], list[int], np.ndarray]) -> torch.Tensor:
    """Bilinear resampling of the last two dims of `x` by the tables, in x's dtype."""
    (r0, r1, rw), (c0, c1, cw) = rows, cols
    rw_t, cw_t = torch.from_numpy(rw).to(x.dtype), torch.from_numpy(cw).to(x.dtype)

    def along_w(r: list[int]) -> torch.Tensor:
        xr = x[..., r, :]
        return xr[..., c0] * cw_t[0] + xr[..., c1] * cw_t[1]

    return along_w(r0) * rw_t[0, :, None] + along_w(r1) * rw_t[1, :, None]

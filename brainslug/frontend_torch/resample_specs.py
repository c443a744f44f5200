"""`F.interpolate` / `nn.Upsample` as layers: nearest resampling as an index
map (`nn.resize_nearest`), bilinear as PyTorch's tables and weights
(`nn.resize_bilinear`). Builders of `op_specs.INTERPOLATE`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import nn
from brainslug.frontend_torch import resampling
from brainslug.frontend_torch.graph_builder import Unmapped
from brainslug.runtime.aligned import aligned_copy

if TYPE_CHECKING:
    from brainslug.frontend_torch.op_specs import Call


def nearest_map(src: Sequence[int], n: int) -> tuple[int, int, int] | None:
    """(scale, offset, divisor) with `src[i] == (scale*i + offset) // divisor`
    for every output point i of a dim of n input points, or None."""
    m = len(src)
    cands = [(1, 0, 1), (n, 0, m), (2 * n, n, 2 * m)]
    if n % m == 0:
        cands += [(n // m, o, 1) for o in range(n // m)]
    for s, o, q in cands:
        g = math.gcd(s, o, q)
        if all((s * i + o) // q == v for i, v in enumerate(src)):
            return s // g, o // g, q // g
    return None


def interpolate(c: Call) -> Operation:
    """Nearest-neighbour `F.interpolate` / `nn.Upsample`: the index map that
    PyTorch's own kernel computes, asked of it at optimize() on input coded
    with each point's flat index, where that map is periodic."""
    x = c.tensor("input")
    mode = c["mode"]
    if c.args.get("antialias"):
        raise Unmapped(f"interpolation mode {mode!r} with antialias")
    if mode == "bilinear":
        return _bilinear(c, x)
    if mode not in ("nearest", "nearest-exact"):
        raise Unmapped(f"interpolation mode {mode!r}")
    shape, out = c.b.logical_shape_of(x), c.b.logical_shape(c.node)
    spatial = shape[2:]
    if math.prod(spatial) >= 2**24:
        raise Unmapped("nearest resampling of more than 2^24 points per channel")
    size = c["size"]
    if any(isinstance(v, fx.Node) for v in (size if isinstance(size, list | tuple) else [size])):
        # computed from shapes (`size=x.shape[-2:]`): the traced result's
        # extents, which the plan keeps for every batch size
        if any(d < 0 for d in out[2:]):
            raise Unmapped("an interpolation size that varies with the batch size")
        size = tuple(out[2:])
    coded = torch.arange(math.prod(spatial), dtype=torch.float32).reshape(1, 1, *spatial)
    src = torch.nn.functional.interpolate(
        coded, size=size, scale_factor=c["scale_factor"], mode=mode,
        recompute_scale_factor=c["recompute_scale_factor"])[0, 0].long()
    maps = [(1, 0, 1)] * len(shape)
    for k in range(len(spatial)):
        line = src[tuple(slice(None) if j == k else 0 for j in range(len(spatial)))]
        idx = line.div(math.prod(spatial[k + 1:]), rounding_mode="floor") % spatial[k]
        found = nearest_map(idx.tolist(), spatial[k])
        if found is None or len(idx) != out[k + 2]:
            raise Unmapped(f"nearest resampling of {spatial[k]} points to {len(idx)} is "
                           "not a periodic index map")
        maps[k + 2] = found
    order = c.b.order(x)
    phys = [maps[k] for k in order]
    return nn.ResizeNearestOp(x, c.b.result_type(c.node, order).get_shape(),
                              [m[0] for m in phys], [m[1] for m in phys],
                              [m[2] for m in phys])


def _bilinear(c: Call, x: SSAValue) -> Operation:
    """Bilinear `F.interpolate` of a 4-D tensor: PyTorch's tables and weights
    (`resampling.linear_table`), checked at optimize() against its own kernel."""
    shape, out = c.b.logical_shape_of(x), c.b.logical_shape(c.node)
    if len(shape) != 4:
        raise Unmapped(f"bilinear resampling of a rank-{len(shape)} tensor")
    align = bool(c["align_corners"])
    sf = c["scale_factor"]
    if c["recompute_scale_factor"] or sf is None:
        sfs: list[float | None] = [None, None]
    else:
        sfs = [float(v) for v in sf] if isinstance(sf, list | tuple) else [float(sf)] * 2
    tables = [resampling.linear_table(shape[k], out[k], align, sfs[k - 2]) for k in (2, 3)]
    for k, (first, second, _) in zip((2, 3), tables, strict=True):
        if len(nn.linear_pieces(first, second, shape[k])) > resampling.MAX_RUNS:
            raise Unmapped(f"bilinear resampling of {shape[k]} points to {out[k]}: its "
                           f"index table is not affine in {resampling.MAX_RUNS} runs")
    probe = torch.randn(1, 2, *shape[2:], generator=torch.Generator().manual_seed(0))
    by = {"size": tuple(out[2:])} if sfs[0] is None else {"scale_factor": tuple(sfs)}
    ref = torch.nn.functional.interpolate(probe, mode="bilinear", align_corners=align, **by)
    ours = resampling.apply_tables(probe.double(), *tables)
    if ref.shape != ours.shape or not torch.allclose(ours.float(), ref, rtol=1e-5, atol=1e-5):
        raise Unmapped("bilinear weights that differ from PyTorch's")
    dims = [c.b.axis(x, 2), c.b.axis(x, 3)]
    if dims[0] > dims[1]:
        raise Unmapped("bilinear resampling of a tensor stored with W before H")
    weights = [c.b.param(torch.from_numpy(aligned_copy(w)), f"{c.node.name}.{what}_weights")
               for (_, _, w), what in zip(tables, ("row", "col"), strict=True)]
    return nn.ResizeBilinearOp(x, *weights, dims, [*tables[0][0], *tables[0][1]],
                               [*tables[1][0], *tables[1][1]])

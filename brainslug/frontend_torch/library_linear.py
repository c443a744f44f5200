"""`PackedLinear`: a library linear layer with an MKL-prepacked weight.

What Inductor's freezing does for a float32 linear layer on CPU, as an eager
module: the weight is packed once for MKL's GEMM
(``torch.ops.mkl._mkl_reorder_linear_weight``) and calls run
``torch.ops.mkl._mkl_linear`` on it, so the per-call packing inside
``F.linear``'s ``sgemm`` goes away. That packing costs in proportion to the
weight, the product in proportion to the rows too, so the gain is where rows
are few: on 2 cores, 24% of a 197×768 by 768×3072 product (ViT-B/16's MLP at
batch 1), 12% at 392 rows, 4% at 1576; from about 1500 rows on the packed
product can be slower (6% at 6272×192 by 192×768).

- **Where.** Calls of `MIN_ROWS` to `MAX_ROWS` rows (the product of the
  input's leading dims) run packed; others run ``F.linear``. The weight is
  packed on the first such call.
- **Accuracy.** The packed GEMM sums each output in MKL's own order. From 16
  rows on its largest error against float64 is the library's own (ratio 1.00
  on ViT-B's shapes, and bit for bit with 768 inputs on an Intel Xeon and an
  AMD EPYC Zen 4, not with 9); below 16 rows
  ``F.linear`` takes a more accurate path (the packed one was up to 3.9×
  worse there).
- **Memory.** MKL's packed weight is 2.2 (ViT-B) to 4 (ConvNeXt-T's small
  layers) times the weight; `packed_bytes` says how much, and
  `optimize(..., pack_linear=False)` keeps the plain layers.
- **Weight updates** are noticed as in `PackedConv2d` (`WeightWatch`): any
  change repacks on the next call; ``repack()`` after edits through ``.data``
  that touch none of the sampled elements.
- Feature-detected: without MKL, its ops, or when a trial call fails, the
  module runs ``F.linear``; ``packed`` and ``reason`` say why. Gradients,
  other dtypes and devices run ``F.linear`` too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from brainslug.frontend_torch.linear_bias import LinearWithoutBias
from brainslug.frontend_torch.weight_watch import WeightWatch

MIN_ROWS = 16
"""Rows (the product of the input's leading dims) from which the packed GEMM
runs; fewer run ``F.linear``, whose small-row path sums more accurately."""
MAX_ROWS = 1024
"""Rows up to which the packed GEMM runs: beyond, its gain is a few percent at
best and it lost up to 7% on ConvNeXt-T's and Swin-T's shapes (at batch 8 the
whole models ran 4% and 2% slower packed at every row count)."""
PACK_ROWS = 256
"""The row count MKL packs the weight for. The packed layout serves any row
count, but its speed depends on this: on 2 cores, 768→3072 at 197 rows ran
4.09 ms packed for 16 rows, 2.79 ms for 256, 5.41 ms for 4096 (`F.linear`
4.09 ms); 256 was within 5% of the best of 128–1024 on every ViT, Swin and
head shape tried, at 16 to 25088 rows."""


@functools.cache
def _detect_support() -> tuple[bool, str]:
    """(usable, reason): MKL's packed linear works in this process."""
    if not torch.backends.mkl.is_available():
        return False, "MKL is not available in this torch build"
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(MIN_ROWS + 3, 13, generator=gen)
        w, b = torch.randn(7, 13, generator=gen), torch.randn(7, generator=gen)
        with torch.no_grad():
            pw = torch.ops.mkl._mkl_reorder_linear_weight(w, x.shape[0])
            y = torch.ops.mkl._mkl_linear(x, pw, w, b, x.shape[0])
    except Exception as e:  # any failure means: not usable here
        return False, f"trial MKL call failed: {type(e).__name__}: {str(e)[:200]}"
    if not torch.allclose(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5):
        return False, "trial MKL call gave wrong results"
    return True, "MKL prepacked weights"


class PackedLinear(nn.Module):
    """`linear` (an ``nn.Linear``) with an MKL-prepacked weight; see the module
    doc. It shares ``linear.weight``/``linear.bias`` (the same Parameter
    objects), so it sees updates made to the original module."""

    packed: bool
    reason: str

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"PackedLinear wraps an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_parameter("weight", linear.weight)
        self.register_parameter("bias", linear.bias)
        self.packed, self.reason = self._check_packable()
        self._reset_cache()

    def _check_packable(self) -> tuple[bool, str]:
        ok, why = _detect_support()
        if not ok:
            return False, why
        for what, t in (("weight", self.weight), ("bias", self.bias)):
            if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
                return False, f"{what} is {t.dtype} on {t.device} (float32 CPU only)"
        return True, why

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, packed={self.packed}")

    def _reset_cache(self) -> None:
        self._pack: torch.Tensor | None = None
        self._watch = WeightWatch()

    def repack(self) -> None:
        """Drop the packed weight; the next call packs the current weight."""
        self._reset_cache()

    def packed_bytes(self) -> int:
        """Bytes of the packed weight (0 before the first packed call)."""
        pw = self._pack
        return 0 if pw is None else pw.numel() * pw.element_size()

    def _packed_weight(self, w: torch.Tensor) -> torch.Tensor | None:
        """The packed `w`, None when it can't be packed."""
        if self._pack is None or self._watch.changed(w):
            if w.dtype != torch.float32 or not w.is_cpu or w.is_mkldnn:
                return None
            with torch.no_grad():
                self._pack = torch.ops.mkl._mkl_reorder_linear_weight(w.detach(), PACK_ROWS)
            self._watch.remember(w)
        return self._pack

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's result; where it runs ``F.linear``, written into `out`
        if given (`linear_into`)."""
        params = self._parameters  # faster than Module.__getattr__ on the hot path
        w, b = params["weight"], params["bias"]
        rows = x.numel() // max(1, self.in_features)
        if (not self.packed or not MIN_ROWS <= rows <= MAX_ROWS or x.dim() < 2 or x.dtype != torch.float32
                or not x.is_cpu or x.is_mkldnn or x.shape[-1] != self.in_features
                or (torch.is_grad_enabled() and (
                    x.requires_grad or w.requires_grad  # type: ignore[union-attr]
                    or (b is not None and b.requires_grad)))):
            if out is not None:
                return linear_into(x, w, b, out)  # type: ignore[arg-type]
            return F.linear(x, w, b)  # type: ignore[arg-type]
        pw = self._packed_weight(w)  # type: ignore[arg-type]
        if pw is None:
            return F.linear(x, w, b)  # type: ignore[arg-type]
        return torch.ops.mkl._mkl_linear(x, pw, w, b, rows)

    # -- copies: the packed MKL tensor is not copied; a copy packs its own
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_pack", "_watch"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reset_cache()


def linear_into(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                out: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w, b)`` computed into `out` (contiguous, of the result's
    shape) by the GEMM call ``F.linear`` makes for a contiguous float32 input
    (``addmm`` with the bias, ``mm`` without, on the input's rows); other
    cases, and gradients, return ``F.linear``'s own result."""
    if (x.dim() < 2 or not x.is_contiguous() or x.dtype != torch.float32 or not x.is_cpu
            or (b is not None and b.dim() != 1) or (torch.is_grad_enabled() and (
                x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)))):
        return F.linear(x, w, b)
    rows = out.view(-1, w.shape[0])
    if b is None:
        torch.mm(x.view(-1, x.shape[-1]), w.t(), out=rows)
    else:
        torch.addmm(b, x.view(-1, x.shape[-1]), w.t(), out=rows)
    return out


class ArenaLinear(nn.Module):
    """A library linear layer whose result goes into its slot of the plan's
    arena (`use_arena`) instead of a new tensor: a result of tens of MB is
    otherwise fresh memory on every call, its pages faulted in as the GEMM
    writes them (ConvNeXt-T's first MLP layer at batch 8, 25088x384: 15.3 ms
    into a new tensor, 7.6 ms into one written before). The first call of
    each input shape checks the result bit for bit against the layer's own;
    a difference keeps that shape on the layer's own result."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear
        self._arena: Any = None
        self._slot: int | None = None
        self._reset_cache()

    def _reset_cache(self) -> None:
        self._same: dict[tuple[int, ...], bool] = {}

    def use_arena(self, arena: Any, slot: int | None) -> None:
        self._arena, self._slot = arena, slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self._modules["linear"]  # faster than Module.__getattr__ on the hot path
        if self._arena is None or self._slot is None or x.dim() < 2 or not x.is_cpu:
            return lin(x)
        shape = (*x.shape[:-1], lin.out_features)
        batch = int(x.shape[0])
        views = self._arena.views(batch)
        out = views.get((id(self), shape))
        if out is None:
            storage = self._arena.storage(batch)[self._slot]
            n = math.prod(shape)
            if n > storage.numel():  # not the plan's shape
                return lin(x)
            out = views[(id(self), shape)] = storage[:n].view(shape)
        same = self._same.get(shape)
        if same is False:
            return lin(x)
        y = lin(x, out=out) if isinstance(lin, PackedLinear) else \
            linear_into(x, lin.weight, lin.bias, out)
        if same is None:
            ref = lin(x)
            self._same[shape] = torch.equal(ref.view(torch.int32), y.view(torch.int32))
            return ref
        return y

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_same", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reset_cache()


def pack_graph_linears(gm: fx.GraphModule) -> list[str]:
    """Point every call_module node of `gm` that runs an ``nn.Linear`` at a
    `PackedLinear` sharing its parameters; the targets so redirected.

    As `pack_graph_convolutions`: the wrappers are new top-level attributes of
    `gm` (``bs_packed_<target>``), one per module, so modules `gm` shares with
    the user's model are left as they are."""
    made: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        held = gm.get_submodule(target)
        if isinstance(held, ArenaLinear) and type(held.linear) in (nn.Linear, LinearWithoutBias):
            held.linear = PackedLinear(held.linear)
            made[target] = target
            continue
        if type(held) not in (nn.Linear, LinearWithoutBias):
            continue
        if target not in made:
            name, k = "bs_packed_" + target.replace(".", "_"), 1
            while hasattr(gm, name):
                name, k = f"bs_packed_{target.replace('.', '_')}_{k}", k + 1
            gm.add_module(name, PackedLinear(gm.get_submodule(target)))  # type: ignore[arg-type]
            made[target] = name
        node.target = made[target]
    if made:
        gm.recompile()
    return list(made)

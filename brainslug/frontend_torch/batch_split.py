"""Values whose leading dim merges the batch with other dims, held split.

Window attention (timm's Swin, MaxViT, DaViT, GCViT; BoTNet's and HaloNet's
position attention; MobileViT's patches) reshapes a (B, H, W, C) map into
(B * windows, N, C), works on the windows, and reshapes back. A plan keeps the
batch as each value's own outermost dim (`reshape_map`), so the reshape, and
every layer between it and its reverse, ran in PyTorch.

`split_merged_batch` rewrites a traced graph so that each value of leading
extent B * f (f > 1 static, found by running the graph on meta tensors at
batch 1 and 2) is held as (B, f, ...): the same elements in the same memory
order. Layers that treat the merged dim as one dim take the split value as
it is, with their dim arguments moved one on: elementwise arithmetic and
broadcasts that leave the batch alone, linear layers and layer norms (they
fold leading dims), matmul, softmax, transpose and permute that keep the
batch first, chunks, slices, pads of trailing dims; reshapes and expands read
their target extents from the meta runs. Scaled-dot-product attention gets
its operands merged inside one library call (`attention`), so that PyTorch
picks its fused kernel as before. Any other reader gets the merged value
back (`flatten(0, 1)`, a view), so nothing is rewritten that isn't understood.

The rewrite is kept only where the new graph's shapes are the expected ones
at both batch sizes and its results equal the original graph's, bit for bit,
on a random input of batch 2: it runs the same PyTorch kernels on the same
elements.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn as tnn

from brainslug.frontend_torch.shapes import _meta_run

Shape = tuple[int, ...]


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attn_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`F.scaled_dot_product_attention` on operands whose first two dims hold a
    merged batch (rank 5): merged for the call (PyTorch's fused CPU kernels
    take rank 4), the result split again. A mask of rank 5 is merged too; a
    lower rank broadcasts as before."""
    b = query.shape[0]
    if attn_mask is not None and attn_mask.dim() == query.dim():
        attn_mask = attn_mask.flatten(0, 1)
    out = F.scaled_dot_product_attention(query.flatten(0, 1), key.flatten(0, 1),
                                         value.flatten(0, 1), attn_mask, *args, **kwargs)
    return out.unflatten(0, (b, -1))


def merged_shape(x: torch.Tensor, at: int = 0) -> torch.Size:
    """The shape of the value that `x` holds split: its dims `at` and `at + 1` as one."""
    s = x.shape
    return torch.Size((*s[:at], s[at] * s[at + 1], *s[at + 2:]))


def merged_size(x: torch.Tensor, dim: int, at: int = 0) -> int:
    """`size(dim)` of the value that `x` holds split at `at`."""
    return merged_shape(x, at)[dim]


_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.exp, torch.sigmoid,
    torch.tanh, torch.relu, torch.clamp, torch.where,
    F.gelu, F.relu, F.silu, F.sigmoid, F.tanh, F.hardswish, F.leaky_relu, F.dropout,
}
_ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "exp", "sigmoid", "tanh", "relu", "clamp",
    "contiguous", "clone", "float", "__add__", "__mul__", "__sub__", "__truediv__",
}
_ELEMENTWISE_MODULES = (tnn.Linear, tnn.Dropout, tnn.Identity, tnn.GELU, tnn.ReLU, tnn.SiLU,
                        tnn.Sigmoid, tnn.Tanh, tnn.Hardswish, tnn.LeakyReLU)
_ELEMENTWISE_MODULE_NAMES = {"DropPath", "LayerScale"}
"""timm's stochastic depth (the identity in eval) and layer scale (x * gamma,
gamma over the last dim), by class name: timm need not be imported."""

_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as",
                    "squeeze", "unsqueeze"}
_RESHAPE_FUNCTIONS = {torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze,
                      torch.unflatten}

_SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax, F.log_softmax, torch.log_softmax}
_MATMUL_FUNCTIONS = {operator.matmul, torch.matmul}
_BMM = {torch.bmm}

_DIM_METHODS: dict[str, tuple[int, str, int | None]] = {
    # name: (position of dim among the call's args, keyword, default)
    "softmax": (1, "dim", None), "log_softmax": (1, "dim", None),
    "chunk": (2, "dim", 0), "split": (2, "dim", 0),
    "sum": (1, "dim", None), "mean": (1, "dim", None), "amax": (1, "dim", None),
}


Held = tuple[int, int]
"""(dim, f): the dim of the original value that holds the batch times f, and f."""


_ATEN_RESHAPES = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze",
                  "unsqueeze"}
_ATEN_ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "exp", "silu", "gelu", "relu",
                     "sigmoid", "tanh", "hardswish", "dropout", "clone", "contiguous", "alias",
                     "clamp", "where"}


def _aten(n: fx.Node) -> str | None:
    """The ATen op's name (its packet's) where `n` calls one (a torch.export graph)."""
    t = n.target
    return t.overloadpacket.__name__ if n.op == "call_function" and isinstance(
        t, torch._ops.OpOverload) else None


def _torch_form(n: fx.Node) -> None:
    """An ATen call that has a torch form the rules read, made that call: the
    same op on the same arguments (torch.export graphs)."""
    name, args = _aten(n), n.args
    if name is None or n.kwargs and name not in ("scaled_dot_product_attention",):
        return
    methods = {"permute": "permute", "transpose": "transpose", "expand": "expand",
               "split_with_sizes": "split", "split": "split", "chunk": "chunk"}
    if name in _ATEN_RESHAPES:
        n.op, n.target = "call_method", "reshape"
    elif name in methods:
        n.op, n.target = "call_method", methods[name]
    elif name in ("mean", "sum", "amax") and len(args) <= 3:
        n.op, n.target = "call_method", name
    elif name in ("_softmax", "softmax") and len(args) >= 2:
        n.target, n.args = F.softmax, args[:2]
    elif name == "unbind":
        n.target = torch.unbind
    elif name == "linear":
        n.target = F.linear
    elif name == "layer_norm" and len(args) >= 2:
        n.target, n.args = F.layer_norm, args[:5]
    elif name in ("matmul", "bmm"):
        n.target = torch.matmul if name == "matmul" else torch.bmm
    elif name == "scaled_dot_product_attention":
        n.target = F.scaled_dot_product_attention
    elif name == "cat":
        n.target = torch.cat
    elif name == "sym_size":
        n.op, n.target = "call_method", "size"


class _Split:
    """The rewrite of one graph: which nodes hold a split value, and where."""

    def __init__(self, gm: fx.GraphModule, one: dict[str, Any], two: dict[str, Any]) -> None:
        self.graph = gm.graph
        self.modules = dict(gm.named_modules())
        self.shape: dict[str, Shape] = {}
        self.batch_dim: dict[str, Held] = {}  # tensors with one dim that follows the batch
        for name, (s1, _) in one.items():
            self.shape[name] = s1 = tuple(s1)
            s2 = tuple(two[name][0]) if name in two else None
            if s2 is None or len(s1) != len(s2):
                continue
            grown = [k for k in range(len(s1)) if s1[k] != s2[k]]
            if len(grown) == 1 and s2[grown[0]] == 2 * s1[grown[0]]:
                self.batch_dim[name] = (grown[0], s1[grown[0]])
        self.held: dict[fx.Node, Held] = {}
        self.held_tuples: dict[fx.Node, Held] = {}  # chunk, split, unbind: each element's
        self.made_split: set[fx.Node] = set()  # reshapes whose result is held split
        self.merges: list[fx.Node] = []  # flatten(at, at + 1) before a reader

    def h(self, a: Any) -> Held | None:
        return self.held.get(a) if isinstance(a, fx.Node) else None

    def rank(self, a: fx.Node) -> int:
        return len(self.shape[a.name])

    def run(self) -> int:
        """Rewrite the graph in place; the number of split results."""
        for n in list(self.graph.nodes):
            if n.op == "output":
                for a in list(n.all_input_nodes):
                    if self.h(a):
                        self._merge_input(n, a)
                continue
            if n.op not in ("call_function", "call_method", "call_module"):
                continue
            if n.op == "call_function" and n.target is operator.getitem \
                    and n.args[0] in self.held_tuples:
                self.held[n] = self.held_tuples[n.args[0]]
                continue
            inputs = [a for a in n.all_input_nodes if self.h(a)]
            if not inputs:
                if self.batch_dim.get(n.name, (0, 1))[1] > 1 and n.args \
                        and isinstance(n.args[0], fx.Node) and n.args[0].name in self.batch_dim:
                    if self._is_reshape(n):
                        self._reshape(n)
                    elif n.op == "call_method" and n.target == "repeat_interleave":
                        self._repeated(n)
                continue
            if not self._rewrite(n):
                for a in inputs:
                    self._merge_input(n, a)
        self._unsplit_merged_at_once()
        return len(self.held)

    def _unsplit_merged_at_once(self) -> None:
        """A reshape whose one reader takes its result merged stays the
        reshape it was (LeViT's batch norm over tokens, an LSTM over rows)."""
        for m in list(self.merges):
            src = m.args[0]
            if src in self.made_split and len(src.users) == 1:
                at, _ = self.held.pop(src)
                s = self.shape[src.name]
                src.args = (src.args[0], *s[:at], -1, *s[at + 1:])
                m.replace_all_uses_with(src)
                self.graph.erase_node(m)

    def _merge_input(self, n: fx.Node, a: fx.Node) -> None:
        at = self.held[a][0]
        with self.graph.inserting_before(n):
            merged = self.graph.call_method("flatten", (a, at, at + 1))
        n.replace_input_with(a, merged)
        self.merges.append(merged)

    def _is_reshape(self, n: fx.Node) -> bool:
        return bool(n.args) and isinstance(n.args[0], fx.Node) and (
            (n.op == "call_method" and n.target in _RESHAPE_METHODS)
            or (n.op == "call_function" and n.target in _RESHAPE_FUNCTIONS)
            or _aten(n) in _ATEN_RESHAPES)

    def _reshape(self, n: fx.Node) -> None:
        """`n` becomes a reshape to its extents from the meta runs, -1 for the
        batch, its result split where it merges the batch with more."""
        at, f = self.batch_dim[n.name]
        s = self.shape[n.name]
        n.op, n.target, n.kwargs = "call_method", "reshape", {}
        n.args = (n.args[0], *s[:at], -1, *((f,) if f > 1 else ()), *s[at + 1:])
        if f > 1:
            self.held[n] = (at, f)
            self.made_split.add(n)

    def _repeated(self, n: fx.Node) -> None:
        """`x.repeat_interleave(f, dim=b)` of the batch dim b of x: each sample
        f times, which is x with a dim of f after b, broadcast."""
        at, f = self.batch_dim[n.name]
        x = n.args[0]
        dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim")
        if self.batch_dim[x.name] != (at, 1) or not isinstance(dim, int) \
                or dim % self.rank(x) != at:
            return
        s = self.shape[x.name]
        with self.graph.inserting_before(n):
            grown = self.graph.call_method("unsqueeze", (x, at + 1))
        n.op, n.target, n.kwargs = "call_method", "expand", {}
        n.args = (grown, *s[:at], -1, f, *s[at + 1:])
        self.held[n] = (at, f)

    def _rewrite(self, n: fx.Node) -> bool:
        """Rewrite `n`, which reads split values; False where it can't."""
        saved = (n.op, n.target, n.args, n.kwargs)
        _torch_form(n)
        if self._rewrite_torch(n):
            return True
        n.op, n.target, n.args, n.kwargs = saved
        return False

    def _rewrite_torch(self, n: fx.Node) -> bool:
        if self._is_reshape(n) and self.h(n.args[0]) and n.name in self.batch_dim \
                and not any(self.h(a) for a in n.all_input_nodes if a is not n.args[0]):
            self._reshape(n)
            return True
        held = self._held_inputs(n)
        if held is None:
            return False
        at, f, r = held
        if n.op == "call_function" and n.target is getattr and n.args[1] == "shape":
            n.target, n.args = merged_shape, (n.args[0], at)
            return True
        if n.op == "call_method" and n.target == "size" and len(n.args) <= 2 and not n.kwargs:
            n.op, n.target = "call_function", merged_size if len(n.args) == 2 else merged_shape
            n.args = (n.args[0], n.args[1], at) if len(n.args) == 2 else (n.args[0], at)
            return True
        out = self._rewritten(n, at, f, r)
        if out is None:
            return False
        if n.name in self.shape:
            if self.batch_dim.get(n.name) != (out[0], f):
                return False
            self.held[n] = (out[0], f)
        else:
            self.held_tuples[n] = (out[0], f)
        return True

    def _held_inputs(self, n: fx.Node) -> tuple[int, int, int] | None:
        """(dim, f, original rank) of `n`'s split inputs, all alike; None where they differ."""
        kinds = {(*self.held[a], self.rank(a)) for a in n.all_input_nodes if self.h(a)}
        return kinds.pop() if len(kinds) == 1 else None

    def _rewritten(self, n: fx.Node, at: int, f: int, r: int) -> tuple[int] | None:
        """Rewrite `n` in place for split inputs held at `at`; (the dim its
        result holds the batch in,), or None where it can't."""
        op, target = n.op, n.target
        method = target if op == "call_method" else None
        function = target if op == "call_function" else None
        if function is operator.getitem:
            return self._getitem(n, at, r)
        if self._elementwise(n, at, r):
            return (at,)
        if method in _DIM_METHODS:
            return self._dims(n, *_DIM_METHODS[method], at, r)
        if function in _SOFTMAX_FUNCTIONS:
            return self._dims(n, 1, "dim", None, at, r)
        if method == "unbind" or function is torch.unbind:
            return self._dims(n, 1, "dim", 0, at, r, drops=True)
        if method == "transpose" or function is torch.transpose:
            d0 = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim0")
            d1 = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim1")
            if not all(isinstance(d, int) and -r <= d < r for d in (d0, d1)):
                return None
            perm = list(range(r))
            perm[d0 % r], perm[d1 % r] = perm[d1 % r], perm[d0 % r]
            return self._permuted(n, perm, at)
        if method == "permute" or function is torch.permute:
            dims = n.args[1:] if method else n.args[1:2]
            if len(dims) == 1 and isinstance(dims[0], list | tuple):
                dims = tuple(dims[0])
            if n.kwargs or len(dims) != r or not all(
                    isinstance(d, int) and -r <= d < r for d in dims):
                return None
            return self._permuted(n, [d % r for d in dims], at)
        if method == "expand":
            if n.name not in self.shape or self.rank(n) != r:
                return None
            s = self.shape[n.name]
            n.args, n.kwargs = (n.args[0], *s[:at], -1, -1, *s[at + 1:]), {}
            return (at,)
        if function in _MATMUL_FUNCTIONS or method == "matmul":
            return (at,) if self._matmul_operands(n, at, r) else None
        if function in _BMM or method == "bmm":
            if len(n.args) != 2 or n.kwargs or not all(self.h(a) for a in n.args):
                return None
            n.op, n.target = "call_function", torch.matmul
            return (at,)
        if function is F.scaled_dot_product_attention:
            return (at,) if self._attention(n, at, f) else None
        if _aten(n) in ("slice", "select"):
            return self._dims(n, 1, "dim", 0, at, r, drops=_aten(n) == "select")
        if function is F.pad or _aten(n) in ("constant_pad_nd", "pad"):
            pad = n.args[1] if len(n.args) > 1 else n.kwargs.get("pad")
            ok = isinstance(pad, list | tuple) and len(pad) // 2 <= r - at - 1
            return (at,) if ok else None
        if function in (torch.cat, torch.concat):
            xs = n.args[0] if n.args else n.kwargs.get("tensors")
            if not isinstance(xs, list | tuple) or not all(self.h(a) for a in xs):
                return None
            return self._dims(n, 1, "dim", 0, at, r)
        return None

    def _broadcasts(self, n: fx.Node, at: int, r: int) -> bool:
        """Whether every tensor operand of `n` that isn't split leaves the batch
        alone: a static tensor that doesn't reach back to dim `at` of the
        split ones (broadcasting aligns trailing dims), or reaches it with
        extent 1 there."""
        for a in n.all_input_nodes:
            if self.h(a) or a.name not in self.shape:
                continue  # (split alike, or not a tensor: a scalar)
            if a.name in self.batch_dim:
                return False
            s = self.shape[a.name]
            if len(s) > r - at or (len(s) == r - at and s[0] != 1):
                return False
        return True

    def _elementwise(self, n: fx.Node, at: int, r: int) -> bool:
        if n.op == "call_function" and n.target is F.linear:
            return at < r - 1 and self.h(n.args[0]) is not None and not any(
                a.name in self.batch_dim for a in n.all_input_nodes if a is not n.args[0])
        if n.op == "call_function" and n.target in _ELEMENTWISE_FUNCTIONS:
            return self._broadcasts(n, at, r)
        if n.op == "call_function" and n.target in (F.layer_norm, torch.layer_norm):
            shape = n.args[1] if len(n.args) > 1 else n.kwargs.get("normalized_shape")
            return isinstance(shape, list | tuple) and len(shape) < r - at \
                and self._broadcasts(n, at, r)
        if (n.op == "call_method" and n.target in _ELEMENTWISE_METHODS) \
                or _aten(n) in _ATEN_ELEMENTWISE:
            return self._broadcasts(n, at, r)
        if n.op == "call_method" and n.target == "expand_as":
            return len(n.args) == 2 and self.h(n.args[1]) == self.h(n.args[0])
        if n.op == "call_module":
            m = self.modules.get(str(n.target))
            if isinstance(m, tnn.LayerNorm):
                return len(m.normalized_shape) < r - at
            if isinstance(m, tnn.Softmax):
                return m.dim is not None and -r <= m.dim < 0 and m.dim % r > at
            if isinstance(m, tnn.Linear):
                return at < r - 1
            return isinstance(m, _ELEMENTWISE_MODULES) or \
                type(m).__name__ in _ELEMENTWISE_MODULE_NAMES
        return False

    def _dims(self, n: fx.Node, pos: int, key: str, default: int | None, at: int, r: int,
              drops: bool = False) -> tuple[int] | None:
        """Move `n`'s dim argument (an int or ints) past the split pair; None
        where it is missing or names the batch. The result holds the batch at
        `at`, one lower per dim before it that the call drops (`drops`, or
        a reduction without keepdim)."""
        given = n.args[pos] if len(n.args) > pos else n.kwargs.get(key, default)
        dims = given if isinstance(given, list | tuple) else (given,)
        if not dims or not all(isinstance(d, int) and -r <= d < r for d in dims):
            return None
        dims = tuple(d % r for d in dims)
        if at in dims:
            return None
        moved = [d + 1 if d > at else d for d in dims]
        new = tuple(moved) if isinstance(given, list | tuple) else moved[0]
        if len(n.args) > pos:
            n.args = (*n.args[:pos], new, *n.args[pos + 1:])
        else:
            n.kwargs = {**n.kwargs, key: new}
        keepdim = n.args[pos + 1] if len(n.args) > pos + 1 else n.kwargs.get("keepdim", False)
        reduces = n.op == "call_method" and n.target in ("sum", "mean", "amax")
        if drops or (reduces and not keepdim):
            return (at - sum(d < at for d in dims),)
        return (at,)

    def _permuted(self, n: fx.Node, perm: list[int], at: int) -> tuple[int]:
        """`n` becomes `permute` by `perm` (of the original dims) with the split
        pair kept together."""
        new: list[int] = []
        for d in perm:
            new += [at, at + 1] if d == at else [d + 1 if d > at else d]
        n.op, n.target, n.kwargs = "call_method", "permute", {}
        n.args = (n.args[0], tuple(new))
        return (perm.index(at),)

    def _matmul_operands(self, n: fx.Node, at: int, r: int) -> bool:
        if len(n.args) != 2 or n.kwargs or at > r - 3:
            return False
        for a in n.args:
            if not isinstance(a, fx.Node):
                return False
            if not self.h(a) and (a.name in self.batch_dim or a.name not in self.shape
                                  or len(self.shape[a.name]) > r - at - 1):
                return False
        return True

    def _attention(self, n: fx.Node, at: int, f: int) -> bool:
        q, k, v = (n.args[i] if len(n.args) > i else n.kwargs.get(name)
                   for i, name in enumerate(("query", "key", "value")))
        if at != 0 or not all(self.h(a) == (0, f) and self.rank(a) == 4 for a in (q, k, v)):
            return False
        mask = n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask")
        if isinstance(mask, fx.Node) and not self.h(mask) and (
                mask.name in self.batch_dim or mask.name not in self.shape
                or self.rank(mask) > 4 or (self.rank(mask) == 4 and self.shape[mask.name][0] != 1)):
            return False
        n.target = attention
        return True

    def _getitem(self, n: fx.Node, at: int, r: int) -> tuple[int] | None:
        """A basic index (ints, slices, a leading Ellipsis) that takes the
        batch dim whole: the split pair gets two entries. The result holds the
        batch one dim lower per int before it."""
        x, idx = n.args
        if not self.h(x):
            return None
        entries = idx if isinstance(idx, tuple) else (idx,)
        if not all(isinstance(i, int | slice) or i is Ellipsis for i in entries) or any(
                isinstance(i, slice) and any(isinstance(v, fx.Node)
                                             for v in (i.start, i.stop, i.step))
                for i in entries):
            return None
        if Ellipsis in entries:
            trailing = entries[1:]
            if entries[0] is not Ellipsis or Ellipsis in trailing or len(trailing) > r - at - 1:
                return None
            return (at,)
        if len(entries) > at:
            if entries[at] != slice(None):
                return None
            n.args = (x, (*entries[:at + 1], slice(None), *entries[at + 1:]))
        return (at - sum(isinstance(i, int) for i in entries[:at]),)


def _outputs_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            ((a == b) | (a.isnan() & b.isnan())).all())
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_outputs_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_outputs_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def split_merged_batch(gm: fx.GraphModule, example_shapes: Sequence[Sequence[int]]) -> int:
    """Rewrite `gm` (in place) so that values merging the batch with other
    dims are held split; the number of split values (0: `gm` unchanged, also
    where the rewrite could not be checked)."""
    if not any(s and s[0] == 0 for s in example_shapes):
        return 0
    try:
        one, two = _meta_run(gm, example_shapes, (1, 2))
    except Exception:
        return 0
    graph = copy.deepcopy(gm.graph)
    new = fx.GraphModule(gm, graph, type(gm).__name__)
    rewrite = _Split(new, one, two)
    if not any(f > 1 for _, f in rewrite.batch_dim.values()):
        return 0
    try:
        count = rewrite.run()
        graph.eliminate_dead_code()
        graph.lint()
        new.recompile()
    except Exception:
        return 0
    if not count or not _checked(gm, new, rewrite.held, example_shapes, (one, two)):
        return 0
    gm.graph = graph
    gm.recompile()
    return count


def _checked(gm: fx.GraphModule, new: fx.GraphModule, held: dict[fx.Node, Held],
             example_shapes: Sequence[Sequence[int]], runs: Sequence[dict[str, Any]]) -> bool:
    """Whether the rewritten graph's shapes are the expected ones at batch 1
    and 2 (`runs`: the original graph's), and its results on a random input
    of batch 2 are `gm`'s."""
    split = {n.name: h for n, h in held.items()}
    try:
        new_runs = _meta_run(new, example_shapes, (1, 2))
    except Exception:
        return False
    for batch, run, new_run in zip((1, 2), runs, new_runs, strict=True):
        for name, (s, _) in run.items():
            if name not in new_run:
                continue  # (a node the rewrite removed)
            at, f = split.get(name, (-1, 0))
            want = (*s[:at], batch, f, *s[at + 1:]) if f else tuple(s)
            if tuple(new_run[name][0]) != want:
                return False
    generator = torch.Generator().manual_seed(0)
    device = next((t.device for t in gm.parameters()), torch.device("cpu"))
    xs = [torch.randn([2 if d == 0 else d for d in shape], generator=generator).to(device)
          for shape in example_shapes]
    try:
        with torch.no_grad():
            return _outputs_equal(gm(*xs), new(*xs))
    except Exception:
        return False


__all__ = ["attention", "merged_shape", "merged_size", "split_merged_batch"]

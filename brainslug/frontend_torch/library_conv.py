"""`PackedConv2d`: a library convolution with oneDNN-prepacked weights.

What Inductor's freezing does for a convolution, as an eager module: the weight
is reordered once into the blocked layout oneDNN picks for the input shape
(``torch.ops.mkldnn._reorder_convolution_weight``) and every call runs
``torch.ops.mkldnn._convolution_pointwise`` (attr "none") on it, so the
per-call weight reorder of ``F.conv2d`` goes away.

- Feature-detected: when oneDNN, the ops, or a trial call on a tiny
  convolution fail (once per process), or the module's configuration is one
  the op does not take, the module runs ``F.conv2d`` with the semantics of the
  original ``nn.Conv2d``; ``packed`` and ``reason`` say which and why.
- Packed path only for float32 4-d CPU inputs when no gradient is needed
  (``torch.no_grad()``/``inference_mode``, or nothing requires grad); anything
  else runs ``F.conv2d``.
- Output layout: the packed op returns channels_last (NHWC strides) for any
  4-d input, also for an NCHW-contiguous one; ``keep_format=True`` copies the
  latter back to NCHW as eager does.
- Weight updates: the packed weights are snapshots, one per input shape. Each
  packed call checks, for a few microseconds, the weight's identity,
  ``_version`` (bumped by in-place ops on the parameter, ``load_state_dict``,
  optimizer steps), ``data_ptr()`` and a fingerprint of 64 sampled elements
  (writes through ``.data`` do not bump ``_version``); any change repacks. An
  edit through ``.data`` that touches none of the sampled elements is missed:
  call ``repack()`` after such edits. The bias is passed through unpacked, so
  bias updates need nothing.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Collection, Iterator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from brainslug.frontend_torch.fold import FoldedConv2d
from brainslug.frontend_torch.weight_watch import WeightWatch

CL = torch.channels_last
_MAX_SHAPES = 4  # packed weights kept per module (one per input shape seen)


PLAIN_CONVS = (nn.Conv2d, FoldedConv2d)
"""Module types whose forward is exactly `nn.Conv2d`'s (a folded batch norm's
convolution is one), which the wrappers here may run instead."""


@functools.cache
def _mkldnn_ops() -> tuple[Any, Any]:
    """(reorder, conv) ops; AttributeError/RuntimeError when torch lacks them."""
    mk = torch.ops.mkldnn
    return mk._reorder_convolution_weight.default, mk._convolution_pointwise.default


@functools.cache
def _detect_support() -> tuple[bool, str]:
    """(usable, reason): oneDNN packed convolution works in this process."""
    if not torch.backends.mkldnn.is_available():
        return False, "oneDNN (mkldnn) is not available in this torch build"
    if not torch.backends.mkldnn.enabled:
        return False, "oneDNN is disabled (torch.backends.mkldnn.enabled is False)"
    try:
        reorder, conv = _mkldnn_ops()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 7, 6, generator=gen).to(memory_format=torch.channels_last)
        w = torch.randn(6, 2, 3, 3, generator=gen)
        b = torch.randn(6, generator=gen)
        with torch.no_grad():
            pw = reorder(w, [1, 1], [2, 1], [1, 1], 2, list(x.shape))
            y = conv(x, pw, b, [1, 1], [2, 1], [1, 1], 2, "none", [], "")
            ref = F.conv2d(x, w, b, (2, 1), (1, 1), 1, 2)
    except Exception as e:  # any failure means: not usable here
        return False, f"trial oneDNN call failed: {type(e).__name__}: {str(e)[:200]}"
    if y.shape != ref.shape or not torch.allclose(y, ref, rtol=1e-5, atol=1e-5):
        return False, "trial oneDNN call gave wrong results"
    return True, "oneDNN prepacked weights"


def _resolve_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """Explicit symmetric padding of `conv`, None when there is none (odd 'same')."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        pads = []
        for d, k in zip(conv.dilation, conv.kernel_size, strict=True):
            total = d * (k - 1)
            if total % 2:
                return None
            pads.append(total // 2)
        return (pads[0], pads[1])
    return (int(conv.padding[0]), int(conv.padding[1]))


class PackedConv2d(nn.Module):
    """`conv` (an ``nn.Conv2d``) with oneDNN-prepacked weights; see the module doc.

    `weight`/`bias` replace the convolution's own (e.g. BN-folded ones); by
    default the module shares ``conv.weight``/``conv.bias`` (the same
    Parameter objects), so it sees updates made to the original module.
    """

    packed: bool
    reason: str

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, *, keep_format: bool = False,
                 act: str | None = None, add: bool = False) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"PackedConv2d wraps an nn.Conv2d, got {type(conv).__name__}")
        if act is not None and act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)} or None, got {act!r}")
        if add and act not in (None, "relu"):
            raise ValueError(f"with add=True, act must be 'relu' or None, got {act!r}")
        self.act, self.add = act, add
        self._attr, self._scalars = ACTIVATIONS[act] if act else ("none", [])
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.dilation = tuple(conv.dilation)
        self.groups = conv.groups
        self.padding: Any = conv.padding  # as given to F.conv2d (tuple or 'same'/'valid')
        self.padding_mode = conv.padding_mode
        self._reversed_padding = list(conv._reversed_padding_repeated_twice)
        self.keep_format = keep_format
        if weight is None:
            self.register_parameter("weight", conv.weight)
            self.register_parameter("bias", conv.bias)
        else:
            self.register_parameter("weight", nn.Parameter(weight.detach(), requires_grad=False))
            self.register_parameter("bias", None if bias is None else
                                    nn.Parameter(bias.detach(), requires_grad=False))
        if tuple(self.weight.shape) != tuple(conv.weight.shape):
            raise ValueError(f"weight shape {tuple(self.weight.shape)} does not match the "
                             f"convolution's {tuple(conv.weight.shape)}")
        self._pad = _resolve_padding(conv)
        self._pad_arg = list(self._pad or (0, 0))  # the op's int[] arguments
        self._stride_arg, self._dilation_arg = list(self.stride), list(self.dilation)
        self.packed, self.reason = self._check_packable()
        self._reset_cache()

    def _check_packable(self) -> tuple[bool, str]:
        ok, why = _detect_support()
        if not ok:
            return False, why
        if self.padding_mode != "zeros":
            return False, f"padding_mode={self.padding_mode!r} (the op pads with zeros only)"
        if self._pad is None:
            return False, "asymmetric 'same' padding"
        w = self.weight
        if w.dtype != torch.float32 or w.device.type != "cpu":
            return False, f"weight is {w.dtype} on {w.device} (float32 CPU only)"
        if self.bias is not None and (self.bias.dtype != torch.float32
                                      or self.bias.device.type != "cpu"):
            return False, f"bias is {self.bias.dtype} on {self.bias.device}"
        return True, why

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, packed={self.packed}"
                + (f", act={self.act}" if self.act else ""))

    # -- packed-weight snapshot ---------------------------------------------------------
    def _reset_cache(self) -> None:
        self._packs: dict[torch.Size, torch.Tensor] = {}
        self._watch = WeightWatch()  # the weight the packs came from

    def repack(self) -> None:
        """Drop the packed weights; the next call packs the current weight."""
        self._reset_cache()

    def release(self, batches: Collection[int] | None = None) -> None:
        """Drop the weights packed for inputs of these batch sizes (all if None)."""
        for shape in list(self._packs):
            if batches is None or shape[0] in batches:
                self._packs.pop(shape, None)

    def _packed_weight(self, w: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """The packed `w` for inputs of `shape`, None when `w` can't be packed."""
        if self._watch.changed(w):
            if w.dtype != torch.float32 or not w.is_cpu or w.is_mkldnn:
                return None
            self._packs.clear()
            self._watch.remember(w)
        pw = self._packs.get(shape)
        if pw is None:
            if len(self._packs) >= _MAX_SHAPES:
                self._packs.clear()
            reorder, _ = _mkldnn_ops()
            with torch.no_grad():
                pw = reorder(w.detach(), self._pad_arg, self._stride_arg, self._dilation_arg,
                             self.groups, list(shape))
            self._packs[shape] = pw
        return pw

    # -- forward ---------------------------------------------------------------------------
    def _fallback(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding, mode=self.padding_mode)
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                         self.groups)
        return activation(y if other is None else y + other, self.act)

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        """`act(conv(x))`, or `act(conv(x) + other)` with `add`."""
        params = self._parameters  # faster than Module.__getattr__ on the hot path
        w, b = params["weight"], params["bias"]
        if (not self.packed or x.dim() != 4 or x.dtype != torch.float32
                or not x.is_cpu or x.is_mkldnn
                or (torch.is_grad_enabled() and (
                    x.requires_grad or w.requires_grad  # type: ignore[union-attr]
                    or (b is not None and b.requires_grad)))):
            return self._fallback(x, other)
        pw = self._packed_weight(w, x.shape)  # type: ignore[arg-type]
        if pw is None:
            return self._fallback(x, other)
        if self.add:
            if (other is None or other.dtype != torch.float32 or not other.is_cpu
                    or other.requires_grad or not other.is_contiguous(memory_format=CL)):
                return self._fallback(x, other)
            try:  # the binary post-op; `other` must have the output's shape
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, other, pw, b, self._pad_arg, self._stride_arg, self._dilation_arg,
                    self.groups, "add", None, self.act, [], None if self.act is None else "")
            except RuntimeError:
                return self._fallback(x, other)
        y = _mkldnn_ops()[1](x, pw, b, self._pad_arg, self._stride_arg, self._dilation_arg,
                             self.groups, self._attr, self._scalars, "")
        if self.keep_format and x.is_contiguous() and not y.is_contiguous():
            y = y.contiguous()
        return y

    # -- copies ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # packed oneDNN tensors and the numpy view of the weight are not copied:
        # a copy packs its own weight on first use
        state = self.__dict__.copy()
        for k in ("_packs", "_watch"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reset_cache()


ACTIVATIONS: dict[str, tuple[str, list[float]]] = {
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
}
"""Activations a packed convolution applies as a oneDNN post-op: (attr, scalars)
of ``_convolution_pointwise``. The post-op takes the float32 result of the
convolution, so the output is the separate activation's bit for bit."""


def activation(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.hardtanh(y, 0.0, 6.0)
    return y


class ConvAct(nn.Module):
    """A convolution and the ReLU/ReLU6 that is its only user, as one module
    (`fuse_conv_activations`); `PackedConv2d` runs it as one oneDNN call."""

    def __init__(self, conv: nn.Conv2d, act: str) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        self.conv, self.act = conv, act

    def extra_repr(self) -> str:
        return f"act={self.act}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(self.conv(x), self.act)


class ConvAdd(nn.Module):
    """`act(conv(x) + other)`: a convolution whose only user is a residual add,
    and the ReLU after it if that is the add's only user (`fuse_conv_add`);
    `PackedConv2d(add=True)` runs it as one oneDNN call (binary post-op)."""

    def __init__(self, conv: nn.Conv2d, act: str | None) -> None:
        super().__init__()
        self.conv, self.act = conv, act

    def extra_repr(self) -> str:
        return f"act={self.act}"

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return activation(self.conv(x) + other, self.act)


_ADDS = (operator.add, operator.iadd, torch.add)


def _residual_add(node: fx.Node, conv: fx.Node) -> fx.Node | None:
    """The other operand when `node` is `conv + other` (or `other + conv`, `+=`)."""
    if node.kwargs or len(node.args) != 2:
        return None
    if not ((node.op == "call_function" and node.target in _ADDS)
            or (node.op == "call_method" and node.target in ("add", "add_"))):
        return None
    a, b = node.args
    other = b if a is conv else a if b is conv else None
    return other if isinstance(other, fx.Node) and other is not conv else None


def _activation_of(gm: fx.GraphModule, node: fx.Node, x: fx.Node) -> str | None:
    """"relu"/"relu6" when `node` applies that activation to `x` alone."""
    if not node.args or node.args[0] is not x or any(a is x for a in node.args[1:]):
        return None
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if type(m) is nn.ReLU:
            return "relu"
        if type(m) is nn.ReLU6 or (type(m) is nn.Hardtanh and (m.min_val, m.max_val) == (0, 6)):
            return "relu6"
        return None
    rest = list(node.args[1:]) + [v for k, v in node.kwargs.items() if k != "inplace"]
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu, torch.relu_) and not rest:
            return "relu"
        if node.target is F.relu6 and not rest:
            return "relu6"
        if node.target is F.hardtanh and [float(v) for v in rest] == [0.0, 6.0]:
            return "relu6"
    if node.op == "call_method" and node.target in ("relu", "relu_") and not rest:
        return "relu"
    return None


def _lone_convs(gm: fx.GraphModule, skip: Collection[str] = ()) -> Iterator[
        tuple[fx.Node, fx.Node]]:
    """(conv, user): the ``nn.Conv2d`` calls of one input that have one user, each
    looked at when reached (a fusion before it may have given it a new user: in
    `conv_a + conv_b` only the first conv fuses, and the second feeds it); the
    nodes named in `skip` (compiled by BrainSlug) are left alone."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(gm.get_submodule(str(node.target))) not in PLAIN_CONVS:
            continue
        if node.name in skip:
            continue
        if len(node.users) == 1 and len(node.args) == 1 and not node.kwargs:
            yield node, next(iter(node.users))


def _splice(gm: fx.GraphModule, prefix: str, conv: fx.Node, module: nn.Module,
            args: tuple[Any, ...], dead: list[fx.Node]) -> None:
    """Call `module` (a new attribute `<prefix>_<conv target>` of `gm`) on `args`
    in place of the nodes `dead` (the last of them first, the conv last)."""
    base = f"{prefix}_{str(conv.target).replace('.', '_')}"
    name, k = base, 1
    while hasattr(gm, name):
        name, k = f"{base}_{k}", k + 1
    gm.add_module(name, module)
    with gm.graph.inserting_after(dead[0]):
        new = gm.graph.call_module(name, args)
    dead[0].replace_all_uses_with(new)
    for node in dead:
        gm.graph.erase_node(node)


def _done(gm: fx.GraphModule, fused: list[str]) -> list[str]:
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused


def fuse_conv_activations(gm: fx.GraphModule, skip: Collection[str] = ()) -> list[str]:
    """Replace each ``nn.Conv2d`` call whose only user is a ReLU/ReLU6 of it, and
    that activation, by one call of a `ConvAct` (new top-level attributes
    ``bs_convact_<target>`` of `gm`; the convolution module is shared, not
    copied). With batch norms folded (``fold_batchnorm=True``), conv → BN →
    ReLU becomes this pattern. oneDNN's activation post-ops turn NaN into 0
    (PyTorch's ReLU keeps it), so `optimize` fuses them only where results
    may change anyway, with batch norms folded. Returns the fused conv targets."""
    fused = []
    for node, user in _lone_convs(gm, skip):
        act = _activation_of(gm, user, node)
        if act is not None:
            conv = gm.get_submodule(str(node.target))
            _splice(gm, "bs_convact", node, ConvAct(conv, act), (node.args[0],), [user, node])
            fused.append(str(node.target))
    return _done(gm, fused)


def fuse_conv_add(gm: fx.GraphModule, skip: Collection[str] = (),
                  relu: bool = True) -> list[str]:
    """Replace each ``nn.Conv2d`` call whose only user is a residual add (and,
    with `relu`, the ReLU after it if that is the add's only user) by one call
    of a `ConvAdd` (``bs_convadd_<target>``). The add runs as a oneDNN binary
    post-op, bit for bit ``conv(x) + other``; a ReLU post-op is not (oneDNN's
    turns NaN into 0). With batch norms folded, ResNet's conv3 → BN3 → add →
    ReLU becomes this pattern. Returns the fused targets."""
    fused = []
    for node, add in _lone_convs(gm, skip):
        other = _residual_add(add, node)
        if other is None:
            continue
        dead, act = [add, node], None
        if relu and len(add.users) == 1 and \
                _activation_of(gm, next(iter(add.users)), add) == "relu":
            dead, act = [next(iter(add.users)), add, node], "relu"
        conv = gm.get_submodule(str(node.target))
        _splice(gm, "bs_convadd", node, ConvAdd(conv, act), (node.args[0], other), dead)
        fused.append(str(node.target))
    return _done(gm, fused)


def pack_convolutions(module: nn.Module, **kwargs: Any) -> list[str]:
    """Replace every ``nn.Conv2d`` submodule of `module` (in place) by a
    `PackedConv2d` sharing its parameters; the names of those replaced."""
    done = []
    for name, child in list(module.named_modules()):
        for cname, c in list(child.named_children()):
            if type(c) in PLAIN_CONVS:
                setattr(child, cname, PackedConv2d(c, **kwargs))
                done.append(f"{name}.{cname}" if name else cname)
    return done


def pack_graph_convolutions(gm: fx.GraphModule, **kwargs: Any) -> list[str]:
    """Point every call_module node of `gm` that runs an ``nn.Conv2d`` at a
    `PackedConv2d` sharing its parameters; the conv targets so redirected.

    Only `gm` changes: the wrappers are new top-level attributes of `gm`
    (``bs_packed_<target>``), so modules `gm` shares with a user's model (fx
    graphs do share them) are left as they are. One wrapper per conv module,
    shared by all the nodes that call it.
    """
    made: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        conv = gm.get_submodule(target)
        act, add = None, False
        if type(conv) in (ConvAct, ConvAdd):
            conv, act, add = conv.conv, conv.act, type(conv) is ConvAdd
        if type(conv) not in PLAIN_CONVS:
            continue
        if target not in made:
            name, k = "bs_packed_" + target.replace(".", "_"), 1
            while hasattr(gm, name):
                name, k = f"bs_packed_{target.replace('.', '_')}_{k}", k + 1
            gm.add_module(name, PackedConv2d(conv, act=act, add=add, **kwargs))
            made[target] = name
        node.target = made[target]
    if made:
        gm.recompile()
    return list(made)

"""Opt-in folding of inference BatchNorm into the preceding convolution.

``conv -> bn`` becomes one convolution with, per output channel c,

    s[c] = gamma[c] / sqrt(running_var[c] + eps)
    w'[c] = w[c] * s[c]
    b'[c] = (b[c] - running_mean[c]) * s[c] + beta[c]

(gamma = 1, beta = 0 without affine; b = 0 without conv bias), computed in
float64 and cast back to the convolution's dtype (float32 here). That changes
the rounding against running conv and BN separately, so it is opt-in.

The folded convolution (`FoldedConv2d`) watches the parameters it was
folded from: after the model's weights change (`load_state_dict`, in place),
`refresh()` folds them again into the same tensors, which the plan calls
before each run, so results follow the model's weights.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from brainslug.frontend_torch.replaced_tensors import watch
from brainslug.frontend_torch.weight_watch import WeightWatch

_BN_SIGNATURE = inspect.signature(F.batch_norm)


def _get(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _fold(conv: nn.Conv2d, mean: torch.Tensor, var: torch.Tensor,
          gamma: torch.Tensor | None, beta: torch.Tensor | None,
          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of a convolution computing ``bn(conv(x))``, in
    float64, cast to the convolution's dtype."""
    d = torch.float64
    w = conv.weight.detach().to(d)
    root = torch.sqrt(var.detach().to(d) + eps)
    scale = gamma.detach().to(d) / root if gamma is not None else 1.0 / root
    bias = (conv.bias.detach().to(d) if conv.bias is not None
            else torch.zeros(w.shape[0], dtype=d, device=w.device))
    new_b = (bias - mean.detach().to(d)) * scale
    if beta is not None:
        new_b = new_b + beta.detach().to(d)
    new_w = w * scale.reshape(-1, 1, 1, 1)
    dtype = conv.weight.dtype
    return new_w.to(dtype).contiguous(), new_b.to(dtype)


class FoldedConv2d(nn.Conv2d):
    """A convolution computing ``bn(conv(x))`` with one weight and bias, folded
    from `conv` and the batch norm's tensors, which it watches (`refresh`)."""

    def __init__(self, conv: nn.Conv2d, mean: torch.Tensor, var: torch.Tensor,
                 gamma: torch.Tensor | None, beta: torch.Tensor | None, eps: float):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
                         conv.stride, conv.padding, conv.dilation, conv.groups,  # type: ignore[arg-type]
                         bias=True, padding_mode=conv.padding_mode, device="meta")
        # (a tuple, not attributes: the model's modules and tensors stay the model's)
        self._sources = (conv, mean, var, gamma, beta, eps)
        w, b = _fold(conv, mean, var, gamma, beta, eps)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = nn.Parameter(b, requires_grad=False)
        self._watches = [WeightWatch() for _ in range(6)]
        self._remember()
        self.train(conv.training)

    def _tensors(self) -> list[torch.Tensor | None]:
        conv, mean, var, gamma, beta, _ = self._sources
        return [conv.weight, conv.bias, mean, var, gamma, beta]

    def held_tensors(self) -> list[torch.Tensor]:
        """The batch norm's tensors it folds (`replaced_tensors`; the
        convolution is the model's own module)."""
        return [t for t in self._sources[1:5] if isinstance(t, torch.Tensor)]

    def rebind(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Fold `new` where it folded `old` (`refresh` sees the change)."""
        self._sources = tuple(new if s is old else s for s in self._sources)  # type: ignore[assignment]
        watch(new, self)

    def _remember(self) -> None:
        for seen, t in zip(self._watches, self._tensors(), strict=True):
            if t is not None:
                seen.remember(t)

    def refresh(self) -> bool:
        """Folds again if a source changed (in place: the plan keeps its
        pointers); True if it did."""
        if not any(t is not None and w.changed(t)
                   for w, t in zip(self._watches, self._tensors(), strict=True)):
            return False
        w, b = _fold(*self._sources)
        with torch.no_grad():
            self.weight.copy_(w)
            self.bias.copy_(b)
        self._remember()
        return True


def _bn_module_params(bn: nn.Module, assume_eval: bool) -> tuple[Any, ...] | None:
    if type(bn) is not nn.BatchNorm2d:
        return None
    if (bn.training and not assume_eval) or not bn.track_running_stats \
            or bn.running_mean is None or bn.running_var is None:
        return None
    return bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps


def _bn_functional_params(gm: fx.GraphModule, node: fx.Node) -> tuple[Any, ...] | None:
    """(mean, var, gamma, beta, eps) of an inference ``F.batch_norm`` whose
    statistics and affine parameters are attributes of `gm`, else None."""
    try:
        bound = _BN_SIGNATURE.bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    a = bound.arguments
    if a["training"] is not False or not isinstance(a["eps"], int | float):
        return None
    vals = []
    for key in ("running_mean", "running_var", "weight", "bias"):
        v = a[key]
        if v is None and key in ("weight", "bias"):
            vals.append(None)
        elif isinstance(v, fx.Node) and v.op == "get_attr":
            t = _get(gm, str(v.target))
            if not isinstance(t, torch.Tensor) or t.dim() != 1:
                return None
            vals.append(t)
        else:
            return None
    return (*vals, float(a["eps"]))


def fold_batchnorm(gm: fx.GraphModule, *,
                   assume_eval: bool = False) -> tuple[fx.GraphModule, list[str]]:
    """A copy of `gm` with every ``Conv2d -> BatchNorm2d`` pair folded into one
    ``Conv2d``, and the names of the BN nodes folded.

    A pair folds when the conv (a call_module of exactly ``nn.Conv2d``) has the
    BN as its only user, and the BN is a call_module of exactly
    ``nn.BatchNorm2d`` in eval mode with running statistics (affine or not),
    or ``F.batch_norm(..., training=False)`` on attributes of `gm`.
    `assume_eval=True` folds training-mode BN modules too, with their running
    statistics: for graphs that only ever run in inference.

    Neither `gm` nor the modules it shares with the user's model are changed:
    the copy has a new graph and references the same submodules except for the
    new folded convolutions.
    """
    graph = copy.deepcopy(gm.graph)
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in graph.nodes:
        if n.op in ("call_module", "get_attr"):
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    overrides: dict[str, nn.Module] = {}
    folded_names: list[str] = []

    def new_target(conv_target: str) -> str:
        # keep the conv's name unless another site calls it, or a parent of it is
        # itself an attribute of the graph (the copy would then write into it)
        prefixes = [t for t in calls if conv_target.startswith(t + ".")]
        if calls[conv_target] == 1 and not prefixes:
            return conv_target
        base = "bs_folded_" + conv_target.replace(".", "_")
        name, k = base, 1
        while name in modules or name in calls or name in overrides:
            name, k = f"{base}_{k}", k + 1
        return name

    for node in list(graph.nodes):
        if node.op == "call_module":
            if len(node.args) != 1 or node.kwargs:
                continue
            params = _bn_module_params(modules.get(str(node.target)), assume_eval)  # type: ignore[arg-type]
        elif node.op == "call_function" and node.target is F.batch_norm:
            params = _bn_functional_params(gm, node)
        else:
            continue
        if params is None:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = modules.get(str(src.target))
        if type(conv) is not nn.Conv2d or src.kwargs or len(src.args) != 1:
            continue
        mean, var, gamma, beta, eps = params
        if mean.shape[0] != conv.out_channels:
            continue
        target = new_target(str(src.target))
        overrides[target] = FoldedConv2d(conv, mean, var, gamma, beta, eps)
        src.target = target
        node.replace_all_uses_with(src)
        graph.erase_node(node)
        folded_names.append(node.name)
    for n in list(graph.nodes):  # statistics only the folded F.batch_norm read
        if n.op == "get_attr" and not n.users:
            graph.erase_node(n)
    root: dict[str, Any] = {}
    for n in graph.nodes:
        if n.op in ("call_module", "get_attr"):
            t = str(n.target)
            root[t] = overrides[t] if t in overrides else _get(gm, t)
    new = fx.GraphModule(root, graph, class_name=type(gm).__name__)
    new.training = gm.training  # the attribute only: .train() would reach shared modules
    new.meta = dict(getattr(gm, "meta", {}))
    return new, folded_names

"""Eager PyTorch with the library calls a plan makes, as a bit-for-bit reference.

A plan runs a convolution it leaves to the library as `PackedConv2d` (oneDNN
on a prepacked weight) and a linear layer as `PackedLinear` (MKL on a packed
weight). Those sum in the library's own order, which may differ from the
per-call path of eager `F.conv2d`/`F.linear` by an ulp: on an Intel Xeon they
agreed bit for bit on the tests' shapes, on an AMD EPYC (Zen 4) they do not.
A test of what BrainSlug compiles around such layers compares against the
model with the same library calls.
"""

from __future__ import annotations

import copy

from torch import nn

from brainslug.frontend_torch.library_conv import PackedConv2d, pack_convolutions
from brainslug.frontend_torch.library_linear import PackedLinear


def with_plan_libraries(model: nn.Module, opt: nn.Module) -> nn.Module:
    """A copy of `model` whose convolutions and linear layers run as the library
    calls of `opt` (`model` optimized) do: packed where `opt` packs them (a
    channels-last plan's convolutions, the linear modules of an fx graph)."""
    ref = copy.deepcopy(model)
    if any(isinstance(m, PackedConv2d) for m in opt.modules()):
        pack_convolutions(ref)
    if any(isinstance(m, PackedLinear) for m in opt.modules()):
        for child in list(ref.modules()):
            for name, c in list(child.named_children()):
                if type(c) is nn.Linear:
                    setattr(child, name, PackedLinear(c))
    return ref

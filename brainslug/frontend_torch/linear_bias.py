"""A linear layer's bias added by the stack after it, not by the GEMM.

`F.linear(x, w, b)` on CPU is `addmm`: PyTorch first copies the bias,
broadcast, into every row of the output, and the GEMM then reads that output
back to add its products (beta = 1). Both are full passes over the output.
ConvNeXt-T's first MLP layer at batch 8 (25088×96 by 96×384) ran 17.7 ms with
its bias and 14.6 ms without on 2 cores. Where the layer's result goes
straight into layers BrainSlug compiles (GELU, a residual add, a permute), the
layer runs without its bias and `+ bias` joins the next stack, which reads the
product anyway.

The bias is then added once after the whole sum instead of before the GEMM's
blocks of the input dim are added to it: the same sum in another order, as
accurate (bitwise equal where the GEMM does not block the input dim: up to
384 inputs in MKL on this machine).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn


class LinearWithoutBias(nn.Linear):
    """`linear` without its bias: the same weight Parameter, `bias` None."""

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_parameter("weight", linear.weight)
        self.register_parameter("bias", None)


def _compiled_reader(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether fx node `n` is a pointwise layer or a permute (what BrainSlug
    compiles into the stack after a linear layer)."""
    if n.op == "call_module":
        m = modules.get(str(n.target))
        return type(m).__name__ == "Permute" or isinstance(
            m, nn.GELU | nn.ReLU | nn.SiLU | nn.Dropout | nn.Identity)
    if n.op == "call_function":
        return n.target in (F.gelu, F.relu, F.silu, torch.relu, operator.add, operator.mul,
                            torch.add, torch.mul, F.dropout, torch.permute)
    return n.op == "call_method" and n.target in ("permute", "add", "mul", "relu")


def split_linear_biases(gm: fx.GraphModule) -> list[str]:
    """Each `nn.Linear` with a bias whose result only compiled layers read
    becomes `LinearWithoutBias` (a new top-level attribute of `gm`) plus
    `operator.add` of the bias; the modules so split."""
    modules = dict(gm.named_modules())
    made: dict[str, str] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        target = str(node.target)
        linear = modules.get(target)
        if type(linear) is not nn.Linear or linear.bias is None or not node.users:
            continue
        if linear.weight.device.type != "cpu" or not all(
                _compiled_reader(u, modules) for u in node.users):
            continue
        if target not in made:
            name, k = "bs_no_bias_" + target.replace(".", "_"), 1
            while hasattr(gm, name):
                name, k = f"bs_no_bias_{target.replace('.', '_')}_{k}", k + 1
            gm.add_module(name, LinearWithoutBias(linear))
            made[target] = name
        with gm.graph.inserting_after(node):
            product = gm.graph.call_module(made[target], node.args)
        with gm.graph.inserting_after(product):
            bias = gm.graph.get_attr(f"{target}.bias")
        with gm.graph.inserting_after(bias):
            out: Any = gm.graph.call_function(operator.add, (product, bias))
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
    if made:
        gm.recompile()
    return list(made)

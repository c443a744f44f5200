"""Reference execution of single `nn` layers with PyTorch's functional ops.

The executor uses it for the layers that stay library calls when no framework
frontend supplies its own (bs-opt inputs, tests) and for stacks that fell
back. Arrays come and go as numpy arrays or torch tensors, whichever came in.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from xdsl.ir import Operation

from brainslug.dialects import nn


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise RuntimeError(
            "running library layers without a framework frontend needs torch "
            "(pip install 'brainslug[torch]')"
        ) from e
    return torch


def _nchw(t, layout: str):
    return t.permute(0, 3, 1, 2) if layout == "NHWC" and t.dim() == 4 else t


def _back(t, layout: str):
    t = t.permute(0, 2, 3, 1) if layout == "NHWC" and t.dim() == 4 else t
    return t.contiguous()


def _pad_input(F, x, padding):
    top, left, bottom, right = padding
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom)), (0, 0)


class _TorchFloats:
    """The float methods of `nn_to_loop.Emitter` that the logistic formulas use,
    on float32 torch tensors (each op rounds once, as in the compiled code)."""

    def __init__(self, torch):
        self.t = torch

    def f(self, v: float):
        return self.t.tensor(v, dtype=self.t.float32)

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def div(self, a, b):
        return a / b

    def cmp(self, pred: str, a, b):
        return {"olt": self.t.lt, "ogt": self.t.gt, "oge": self.t.ge}[pred](a, b)

    def select(self, c, a, b):
        return self.t.where(c, a, b)

    def min0(self, x, hi: float):
        return self.select(self.cmp("ogt", x, self.f(hi)), self.f(hi), x)


@functools.cache
def _libm_expf() -> Any:
    """libm's expf (what the compiled code and TensorFlow's scalar path call)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("m")
    try:
        fn = (ctypes.CDLL(name) if name else ctypes.CDLL(None)).expf
    except (AttributeError, OSError):  # pragma: no cover - no C libm
        import math

        return math.exp
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def _eigen_logistic(torch, x):
    """TensorFlow's CPU sigmoid (`impl = "eigen"`): Eigen's packet formula, and its
    scalar formula on the last numel % 8 elements (see nn_to_loop)."""
    from brainslug.lowering.nn_to_loop.eigen import (
        EIGEN_LOGISTIC,
        EIGEN_PACKET,
        FLT_MIN,
        eigen_logistic,
    )

    x = x.to(torch.float32).contiguous()
    y = eigen_logistic(_TorchFloats(torch), x).reshape(-1).clone()
    xs = x.reshape(-1)
    for k in range(xs.numel() - xs.numel() % EIGEN_PACKET, xs.numel()):
        v = float(xs[k])
        e = torch.tensor(_libm_expf()(v if not v > EIGEN_LOGISTIC["exp_hi"] else
                                      EIGEN_LOGISTIC["exp_hi"]), dtype=torch.float32)
        e = torch.where(e < FLT_MIN, torch.zeros_like(e), e)
        y[k] = e / (1.0 + e)
    return y.reshape(x.shape)


def eval_layer(op: Operation, args: list[Any]) -> Any:
    """The layer's result as a torch tensor (inputs are torch tensors)."""
    torch = _torch()
    F = torch.nn.functional
    x = args[0] if args else None
    if isinstance(op, nn.Conv2dOp):
        lay = op.layout_value
        w = args[1] if lay == "NCHW" else args[1].permute(3, 2, 0, 1)
        b = args[2] if op.bias is not None else None
        xi, pad = _pad_input(F, _nchw(x, lay), op.padding_values)
        y = F.conv2d(xi, w, b, op.strides_values, pad, op.dilation_values, op.groups_value)
        return _back(y, lay)
    if isinstance(op, nn.LinearOp):
        return F.linear(x, args[1], args[2] if op.bias is not None else None)
    if isinstance(op, nn.BatchNormOp):
        lay = op.layout_value
        named = dict(zip(("input", "weight", "bias", "running_mean", "running_var"),
                         (op.input, op.weight, op.bias, op.running_mean, op.running_var),
                         strict=True))
        vals = {k: args[list(op.operands).index(v)] if v is not None else None
                for k, v in named.items()}
        y = F.batch_norm(_nchw(x, lay), vals["running_mean"], vals["running_var"],
                         vals["weight"], vals["bias"], False, 0.0, op.eps_value)
        return _back(y, lay)
    if isinstance(op, nn.MaxPool2dOp):
        lay = op.layout_value
        xi = _nchw(x, lay)
        skip = op.nan_value == "skip"
        if skip:
            # TensorFlow's MaxPool: NaN never wins (as -inf), and the max starts at
            # -FLT_MAX; of equal values PyTorch's kernel keeps the first, as it does
            xi = torch.where(torch.isnan(xi), float("-inf"), xi)
        t, l_, b_, r = op.padding_values
        if (t, l_) != (b_, r):
            xi = F.pad(xi, (l_, r, t, b_), value=float("-inf"))
            pad = (0, 0)
        else:
            pad = (t, l_)
        y = F.max_pool2d(xi, op.kernel_values, op.strides_values, pad, op.dilation_values,
                         op.ceil_mode_value)
        if skip:
            y = y.clamp_min(float(np.finfo(np.float32).min))
        return _back(y, lay)
    if isinstance(op, nn.AvgPool2dOp):
        lay = op.layout_value
        t, l_, b_, r = op.padding_values
        if (t, l_) != (b_, r):
            raise NotImplementedError("asymmetric avg_pool2d padding in the reference")
        y = F.avg_pool2d(_nchw(x, lay), op.kernel_values, op.strides_values, (t, l_),
                         op.ceil_mode_value, op.count_include_pad_value,
                         op.divisor_override_value)
        return _back(y, lay)
    if isinstance(op, nn.AdaptiveAvgPool2dOp):
        lay = op.layout_value
        return _back(F.adaptive_avg_pool2d(_nchw(x, lay), op.output_size_values), lay)
    if isinstance(op, nn.SigmoidOp | nn.SiluOp) and op.impl_value == "eigen":
        s = _eigen_logistic(torch, x)
        return s if isinstance(op, nn.SigmoidOp) else x * s
    unary = {
        nn.ReluOp: F.relu, nn.SigmoidOp: torch.sigmoid, nn.TanhOp: torch.tanh,
        nn.SiluOp: F.silu, nn.HardswishOp: F.hardswish, nn.HardsigmoidOp: F.hardsigmoid,
        nn.IdentityOp: lambda v: v, nn.DropoutOp: lambda v: v,
    }
    if type(op) in unary:
        return unary[type(op)](x)
    if isinstance(op, nn.GeluOp):
        return F.gelu(x, approximate=op.approximate_value)
    if isinstance(op, nn.ClampOp):
        return torch.clamp(x, op.min_value, op.max_value)
    if isinstance(op, nn.L2NormalizeOp):
        return F.normalize(x, 2.0, op.axis_value, op.eps_value)
    if isinstance(op, nn.PowOp):
        return torch.pow(x, op.exponent_value)
    if isinstance(op, nn.RollOp):
        dims = [k for k, s in enumerate(op.shifts_values) if s]
        return torch.roll(x, [op.shifts_values[k] for k in dims], dims) if dims else x.clone()
    if isinstance(op, nn.ResizeBilinearOp):
        dh, dw = op.dims.get_values()
        rw, cw = args[1], args[2]
        (r0, r1), (c0, c1) = op.tables
        xh = [x.index_select(dh, torch.tensor(r)) for r in (r0, r1)]
        shape = [1] * x.dim()

        def w(t: torch.Tensor, k: int) -> torch.Tensor:
            s = list(shape)
            s[k] = -1
            return t.reshape(s)

        t = [v.index_select(dw, torch.tensor(c0)) * w(cw[0], dw)
             + v.index_select(dw, torch.tensor(c1)) * w(cw[1], dw) for v in xh]
        return t[0] * w(rw[0], dh) + t[1] * w(rw[1], dh)
    if isinstance(op, nn.ResizeNearestOp):
        for k, (s, o, q) in enumerate(op.maps):
            if (s, o, q) != (1, 0, 1):
                m = op.results[0].type.get_shape()[k]
                idx = (torch.arange(m) * s + o).div(q, rounding_mode="floor")
                x = x.index_select(k, idx)
        return x.contiguous()
    if isinstance(op, nn.LeakyReluOp):
        return F.leaky_relu(x, op.negative_slope_value)
    if isinstance(op, nn.AddOp):
        return args[0] + args[1]
    if isinstance(op, nn.MulOp):
        return args[0] * args[1]
    if isinstance(op, nn.SubOp):
        return args[0] - args[1]
    if isinstance(op, nn.DivOp):
        return args[0] / args[1]
    if isinstance(op, nn.AddcmulOp):
        return torch.addcmul(*args)
    if isinstance(op, nn.CatOp):
        return torch.cat(args, op.axis_value)
    if isinstance(op, nn.FlattenOp):
        return torch.flatten(x, *op.normalized_dims)
    if isinstance(op, nn.ReshapeOp):
        shape = list(op.results[0].type.get_shape())
        if shape and shape[0] < 0:
            shape[0] = x.shape[0]
        return x.reshape(shape)
    if isinstance(op, nn.GroupNormOp):
        w, b = (args[1:] + [None, None])[:2] if op.weight is not None else (
            None, args[1] if op.bias is not None else None)
        y = F.group_norm(x.movedim(op.axis_value, 1), op.groups_value, w, b, op.eps_value)
        return y.movedim(1, op.axis_value).contiguous()
    if isinstance(op, nn.PadOp):
        counts = [c for lo, hi in zip(reversed(op.low_values), reversed(op.high_values),
                                      strict=True) for c in (lo, hi)]
        return F.pad(x, counts, value=op.value_value)
    if isinstance(op, nn.PermuteOp):
        return x.permute(*op.dims_values).contiguous()
    if isinstance(op, nn.MeanOp):
        return x.mean(list(op.dims_values), keepdim=op.keepdim_value)
    if isinstance(op, nn.SumOp):
        return x.sum(list(op.dims_values), keepdim=op.keepdim_value)
    if isinstance(op, nn.SoftmaxOp):
        if op.impl_value == "eigen":  # TensorFlow's: the max skips NaN, a NaN sums as +inf
            axis = op.axis_value
            e = torch.exp(x - x.nan_to_num(nan=float("-inf"), posinf=float("inf"))
                          .amax(axis, keepdim=True))
            s = torch.where(e.isnan(), float("inf"), e).sum(axis, keepdim=True)
            return e * (1.0 / s)
        return torch.softmax(x, op.axis_value)
    if isinstance(op, nn.StackOp):
        env = dict(zip(op.body.block.args, args, strict=True))
        for inner in op.body.block.ops:
            if isinstance(inner, nn.YieldOp):
                return tuple(env[v] for v in inner.values)
            env[inner.results[0]] = eval_layer(inner, [env[v] for v in inner.operands])
    raise NotImplementedError(f"no reference for {op.name}")


def run_layer(op: Operation, args: list[Any]) -> list[Any]:
    """Library callback of the executor: numpy in, numpy out; torch in, torch out."""
    torch = _torch()
    as_numpy = any(isinstance(a, np.ndarray) for a in args)
    targs = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
    with torch.no_grad():
        out = eval_layer(op, targs)
    outs = list(out) if isinstance(out, tuple) else [out]
    return [o.numpy() if as_numpy else o for o in outs]

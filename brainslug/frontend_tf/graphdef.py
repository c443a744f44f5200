"""Capture a `tf.function` as `nn` IR in NHWC, from its frozen graph.

The concrete function for NHWC float32 inputs of the given shape (the batch
left open) is frozen (variables become constants) and its operations are
walked in graph order. Operations whose inputs are all constants are folded by
running them once in TensorFlow, so batch-norm's `rsqrt(var + eps) * gamma`
becomes one constant and `x * inv + (beta - mean * inv)` maps to `nn.mul` and
`nn.add` with exactly TensorFlow's arithmetic. Convolutions and matrix
products run as the same raw TensorFlow ops with the same attributes; every
other operation runs as itself (the node re-imported into a small function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, f32, i1, i32, i64
from xdsl.ir import Attribute, Region

from brainslug.dialects import nn
from brainslug.dialects.nn.pooling import MaxPoolNaN
from brainslug.frontend_tf.capture import Capture, Piece, _Builder
from brainslug.frontend_tf.keras_layers import LAYOUT, Unmapped, same_padding, tf_mean
from brainslug.plan.capture import NODE_ATTR, value_name

_ELEM: dict[tf.dtypes.DType, Attribute] = {tf.float32: f32, tf.int32: i32, tf.int64: i64,
                                           tf.bool: i1}
ALIASES = ("Identity", "Snapshot", "StopGradient", "PreventGradient")


def is_tf_function(f: Any) -> bool:
    """A `tf.function` (polymorphic) or a concrete function."""
    return hasattr(f, "get_concrete_function") or _is_concrete(f)


def _is_concrete(f: Any) -> bool:
    return hasattr(f, "graph") and hasattr(f, "structured_outputs")


def frozen_function(f: Any, shape: Sequence[int]) -> Any:
    """The concrete function of `f` for inputs of `shape`, variables frozen."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    if _is_concrete(f):
        cf = f
    else:
        spec = tf.TensorSpec([None if d == 0 else d for d in shape], tf.float32)
        cf = f.get_concrete_function(spec)
    return convert_variables_to_constants_v2(cf)


def _type(t: tf.Tensor) -> TensorType:
    elem = _ELEM.get(t.dtype)
    if elem is None or t.shape.rank is None:
        raise Unmapped(f"tensor {t.name} of {t.dtype.name}, rank {t.shape.rank}")
    dims = [nn.DYN if d is None else int(d) for d in t.shape.as_list()]
    return nn.make_tensor(dims) if elem == f32 else TensorType(elem, dims)


def op_runner(op: tf.Operation) -> Callable[..., Any]:
    """A callable that runs the node of `op` on new inputs (built on first use)."""
    fn: list[Callable[..., Any]] = []

    def run(*args: Any) -> Any:
        if not fn:
            fn.append(_build_runner(op))
        return fn[0](*args)

    return run


def _build_runner(op: tf.Operation) -> Callable[..., Any]:
    gd = tf.compat.v1.GraphDef()
    names = []
    for k, t in enumerate(op.inputs):
        ph = gd.node.add()
        ph.name, ph.op = f"bs_in{k}", "Placeholder"
        ph.attr["dtype"].type = t.dtype.as_datatype_enum
        names.append(ph.name)
    node = gd.node.add()
    node.CopyFrom(op.node_def)
    del node.input[:]
    node.input.extend(names)
    node.name = "bs_op"
    outs = [f"bs_op:{i}" for i in range(len(op.outputs))]

    def body(*args: Any) -> Any:
        return tf.graph_util.import_graph_def(
            gd, input_map={f"bs_in{k}:0": a for k, a in enumerate(args)}, return_elements=outs,
            name="")

    specs = [tf.TensorSpec(t.shape, t.dtype) for t in op.inputs]
    fn = tf.compat.v1.wrap_function(body, specs)
    if len(op.outputs) == 1:
        return lambda *a: fn(*a)[0]
    return lambda *a: list(fn(*a))


def _attr(op: tf.Operation, name: str, default: Any = None) -> Any:
    try:
        v = op.get_attr(name)
    except ValueError:
        return default
    return v.decode() if isinstance(v, bytes) else v


class _GraphBuilder:
    """Maps the operations of a frozen graph."""

    def __init__(self, b: _Builder):
        self.b = b
        self.consts: dict[str, np.ndarray] = {}      # tensor name -> value
        self.names: dict[str, str] = {}              # tensor name -> piece name
        self.deferred: dict[str, tuple[str, tuple[int, int, int, int]]] = {}

    def const(self, t: tf.Tensor) -> np.ndarray | None:
        return self.consts.get(t.name)

    def value(self, t: tf.Tensor) -> str:
        name = self.names.get(t.name)
        if name is None:
            raise Unmapped(f"operand {t.name} is not a tensor known to BrainSlug")
        return name

    def param(self, a: np.ndarray, name: str) -> Any:
        a = np.ascontiguousarray(a, dtype=np.float32)
        return self.b.param(a.reshape(1) if a.ndim == 0 else a, name)


def _emit(gb: _GraphBuilder, op: tf.Operation) -> str:
    """The piece of a float32 operation with an `nn` counterpart, or Unmapped."""
    b = gb.b
    t = op.type
    name = op.name
    ins = list(op.inputs)
    run = op_runner(op)
    if t in ("Relu", "Relu6", "Sigmoid", "Tanh"):
        x = gb.value(ins[0])
        v = b.values[x]
        if t == "Sigmoid":
            o = nn.SigmoidOp(v, "eigen")  # TensorFlow's CPU kernel (Eigen's logistic)
        else:
            # Relu and Relu6 as TensorFlow's kernels compute them (+0 for -0)
            o = nn.ReluOp(v, "eigen") if t == "Relu" else nn.TanhOp(v) if t == "Tanh" \
                else nn.ClampOp(v, 0.0, 6.0, impl="eigen")
        return b.emit(name, o, [x], run)
    if t in ("AddV2", "Add", "Mul", "BiasAdd", "Sub"):
        if t == "BiasAdd" and _attr(op, "data_format", "NHWC") != "NHWC":
            raise Unmapped("BiasAdd in NCHW")
        ctor = nn.MulOp if t == "Mul" else nn.AddOp
        vals, names = [], []
        for k, a in enumerate(ins):
            c = gb.const(a)
            if c is None:
                names.append(gb.value(a))
                vals.append(b.values[names[-1]])
                continue
            if t == "Sub":
                if k == 0:
                    raise Unmapped("constant minus tensor")
                c = -c  # x - c is x + (-c), exactly
            vals.append(gb.param(c, f"{name}.const{k}"))
        if t == "Sub" and len(names) == 2:
            raise Unmapped("tensor minus tensor")
        return b.emit(name, ctor(*vals), names, run)
    if t in ("Conv2D", "DepthwiseConv2dNative"):
        return _conv(gb, op, run)
    if t == "FusedBatchNormV3" or t == "FusedBatchNorm":
        if _attr(op, "is_training", True) or _attr(op, "data_format", "NHWC") != "NHWC":
            raise Unmapped("batch norm in training mode or NCHW")
        x = gb.value(ins[0])
        cs = [gb.const(a) for a in ins[1:5]]
        if any(c is None for c in cs):
            raise Unmapped("batch norm with non-constant statistics")
        scale, offset, mean, var = (gb.param(c, f"{name}.{k}") for k, c in zip(
            ("scale", "offset", "mean", "variance"), cs, strict=True))
        o = nn.BatchNormOp(b.values[x], scale, offset, mean, var,
                           eps=float(_attr(op, "epsilon")), layout=LAYOUT, impl="eigen")
        return b.emit(name, o, [x], _fbn(run, cs))
    if t in ("MaxPool", "AvgPool"):
        return _pool(gb, op, run)
    if t in ("Pad", "PadV2"):
        return _pad(gb, op, run)
    if t in ("Mean", "Max"):
        x = gb.value(ins[0])
        axes = gb.const(ins[1])
        if axes is None:
            raise Unmapped("reduction over non-constant axes")
        rank = ins[0].shape.rank
        axes = sorted({int(a) % rank for a in np.ravel(axes)})
        keep = bool(_attr(op, "keep_dims", False))
        if t == "Mean":
            return b.emit(name, tf_mean(b.values[x], axes, keep), [x], run)
        shape = b.values[x].type.get_shape()
        if axes != [1, 2] or rank != 4 or shape[1] < 0 or shape[2] < 0:
            raise Unmapped("max over other axes than H and W")
        hw = (shape[1], shape[2])
        # reduce_max propagates NaN (a window of -inf gives -inf): nan = "propagate"
        pool = nn.MaxPool2dOp(b.values[x], hw, hw, layout=LAYOUT)
        if keep:
            return b.emit(name, pool, [x], run)
        p = b.emit(f"{name}.pool", pool, [x], lambda v: tf.reduce_max(v, [1, 2], keepdims=True))
        return b.emit(name, nn.ReshapeOp(b.values[p], [nn.DYN, shape[3]]), [p], run)
    if t == "ConcatV2":
        axis = gb.const(ins[-1])
        if axis is None:
            raise Unmapped("concat along a non-constant axis")
        names = [gb.value(a) for a in ins[:-1]]
        vals = [b.values[n] for n in names]
        rank = len(vals[0].type.get_shape())
        return b.emit(name, nn.CatOp(vals, int(axis) % rank), names,
                      lambda *v: tf.concat(list(v), int(axis)))
    if t in ("Reshape", "Squeeze", "ExpandDims"):
        x = gb.value(ins[0])
        out = _type(op.outputs[0])
        return b.emit(name, nn.ReshapeOp(b.values[x], out), [x],
                      run if t != "Reshape" else _reshape_run(run, ins))
    if t == "Softmax":
        x = gb.value(ins[0])
        rank = ins[0].shape.rank
        return b.emit(name, nn.SoftmaxOp(b.values[x], rank - 1, impl="eigen"), [x], run)
    if t == "MatMul":
        w = gb.const(ins[1])
        if w is None or _attr(op, "transpose_a") or _attr(op, "transpose_b"):
            raise Unmapped("MatMul with a non-constant or transposed operand")
        x = gb.value(ins[0])
        wv = b.arg(nn.make_tensor(w.shape[::-1]), np.ascontiguousarray(w, np.float32),
                   f"{name}.weight")
        wt = tf.constant(w)
        return b.emit(name, nn.LinearOp(b.values[x], wv), [x], lambda v: tf.matmul(v, wt))
    raise Unmapped(f"op {t}")


def _fbn(run: Callable[..., Any], cs: list[np.ndarray]) -> Callable[[Any], Any]:
    consts = [tf.constant(c) for c in cs]
    return lambda v: run(v, *consts)[0]


def _reshape_run(run: Callable[..., Any], ins: list[tf.Tensor]) -> Callable[[Any], Any]:
    shape = tf.get_static_value(ins[1])
    if shape is None:
        return run
    s = [int(d) for d in shape]
    return lambda v: tf.reshape(v, s)


def _explicit(op: tf.Operation, x_shape: Sequence[int], k: Sequence[int], s: Sequence[int],
              dil: Sequence[int]) -> tuple[int, int, int, int]:
    pad = _attr(op, "padding")
    if pad == "VALID":
        return (0, 0, 0, 0)
    if pad == "SAME":
        if x_shape[1] < 0 or x_shape[2] < 0:
            raise Unmapped("'SAME' padding of an unknown spatial size")
        t, bo = same_padding(x_shape[1], k[0], s[0], dil[0])
        le, r = same_padding(x_shape[2], k[1], s[1], dil[1])
        return (t, le, bo, r)
    if pad == "EXPLICIT":
        e = list(_attr(op, "explicit_paddings"))
        return (e[2], e[4], e[3], e[5])
    raise Unmapped(f"padding {pad}")


def _conv(gb: _GraphBuilder, op: tf.Operation, run: Callable[..., Any]) -> str:
    b = gb.b
    ins = list(op.inputs)
    if _attr(op, "data_format", "NHWC") != "NHWC":
        raise Unmapped("convolution in NCHW")
    w = gb.const(ins[1])
    if w is None:
        raise Unmapped("convolution with a non-constant filter")
    src = ins[0].name
    x, extra = gb.deferred[src] if src in gb.deferred else (gb.value(ins[0]), None)
    xv = b.values[x]
    shape = xv.type.get_shape()
    s = tuple(_attr(op, "strides"))[1:3]
    dil = tuple(_attr(op, "dilations", [1, 1, 1, 1]))[1:3]
    k = w.shape[:2]
    pad = extra if extra is not None else _explicit(op, shape, k, s, dil)
    wc = np.ascontiguousarray(w, np.float32)
    wt = tf.constant(wc)
    if op.type == "Conv2D":
        cin = shape[3]
        groups = cin // w.shape[2]
        wv = b.arg(nn.make_tensor(wc.shape), wc, f"{op.name}.filter")
        raw = tf.raw_ops.Conv2D
    else:
        groups = shape[3]
        dw = (*k, 1, w.shape[2] * w.shape[3])  # the same element order as (KH, KW, C, M)
        wv = b.arg(nn.make_tensor(dw), wc.reshape(dw), f"{op.name}.filter")
        raw = tf.raw_ops.DepthwiseConv2dNative
    conv = nn.Conv2dOp(xv, wv, None, strides=s, padding=pad, dilation=dil, groups=groups,
                       layout=LAYOUT)
    padding = "EXPLICIT" if extra is not None else _attr(op, "padding")
    explicit = ([0, 0, pad[0], pad[2], pad[1], pad[3], 0, 0] if extra is not None
                else list(_attr(op, "explicit_paddings", [])))
    strides, dilations = [1, *s, 1], [1, *dil, 1]

    def conv_run(v: Any) -> Any:
        return raw(input=v, filter=wt, strides=strides, padding=padding,
                   explicit_paddings=explicit, dilations=dilations, data_format="NHWC")

    return b.emit(op.name, conv, [x], conv_run)


def _pool(gb: _GraphBuilder, op: tf.Operation, run: Callable[..., Any]) -> str:
    b = gb.b
    if _attr(op, "data_format", "NHWC") != "NHWC":
        raise Unmapped("pooling in NCHW")
    x = gb.value(op.inputs[0])  # a zero Pad never folds into a pool (`_pad_blocker`)
    xv = b.values[x]
    ks, ss = list(_attr(op, "ksize")), list(_attr(op, "strides"))
    if ks[0] != 1 or ks[3] != 1 or ss[0] != 1 or ss[3] != 1:
        raise Unmapped("pooling over the batch or the channels")
    k, s = tuple(ks[1:3]), tuple(ss[1:3])
    pad = _explicit(op, xv.type.get_shape(), k, s, (1, 1))
    if op.type == "MaxPool":
        # TensorFlow's MaxPool skips NaN (see MaxPoolNaN.SKIP)
        o = nn.MaxPool2dOp(xv, k, s, pad, layout=LAYOUT, nan=MaxPoolNaN.SKIP)
    else:
        o = nn.AvgPool2dOp(xv, k, s, pad, count_include_pad=False, layout=LAYOUT)
    return b.emit(op.name, o, [x], run)


def _pad(gb: _GraphBuilder, op: tf.Operation, run: Callable[..., Any]) -> str:
    """A constant Pad (or PadV2) that did not fold into its readers: `nn.pad`,
    which its reader loads through (a max pool's padded zeros are values)."""
    ins = list(op.inputs)
    consts = [gb.const(a) for a in ins[1:]]
    if any(c is None for c in consts):
        raise Unmapped("padding by non-constant amounts or with a non-constant value")
    p = np.asarray(consts[0]).reshape(-1, 2)
    value = float(np.asarray(consts[1], np.float32)) if op.type == "PadV2" else 0.0
    if p.shape[0] != ins[0].shape.rank or p[0].any():
        raise Unmapped("padding of the batch")
    x = gb.value(ins[0])
    tensors = [tf.constant(c) for c in consts]
    o = nn.PadOp(gb.b.values[x], [int(v) for v in p[:, 0]], [int(v) for v in p[:, 1]], value)
    return gb.b.emit(op.name, o, [x], lambda v: run(v, *tensors))


def fold_constants(graph: Any) -> dict[str, np.ndarray]:
    """Values of every tensor computed from constants alone (one TensorFlow run)."""
    const: set[str] = set()
    wanted: list[str] = []
    values: dict[str, np.ndarray] = {}
    for op in graph.get_operations():
        if op.type == "Const":
            values[op.outputs[0].name] = tf.get_static_value(op.outputs[0])
            const.add(op.outputs[0].name)
            continue
        if op.type in ("Placeholder", "NoOp") or not op.inputs or op.control_inputs \
                or op._is_stateful or any(a.name not in const for a in op.inputs):
            continue
        for o in op.outputs:
            const.add(o.name)
            wanted.append(o.name)
    if not wanted:
        return values
    try:
        ops = {t.rsplit(":", 1)[0] for t in wanted}
        for op in graph.get_operations():
            if op.name in ops:
                outs = _run_eagerly(op, [values[a.name] for a in op.inputs])
                for o, v in zip(op.outputs, outs, strict=True):
                    values[o.name] = np.asarray(v)
        return values
    except Exception:  # an op that raw_ops can't call: one session run instead
        pass
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(graph.as_graph_def(), name="")
    with tf.compat.v1.Session(graph=g) as sess:
        for n, v in zip(wanted, sess.run(wanted), strict=True):
            values[n] = np.asarray(v)
    return values


def _run_eagerly(op: tf.Operation, args: list[np.ndarray]) -> list[Any]:
    """`op` on constant arguments through `tf.raw_ops` (its attributes as given)."""
    fn = getattr(tf.raw_ops, op.type)
    kwargs: dict[str, Any] = {}
    inferred: set[str] = set()
    it = iter(args)
    for arg in op.op_def.input_arg:
        if arg.number_attr or arg.type_list_attr:
            n = (op.get_attr(arg.number_attr) if arg.number_attr
                 else len(op.get_attr(arg.type_list_attr)))
            kwargs[arg.name] = [next(it) for _ in range(n)]
            inferred |= {arg.number_attr, arg.type_list_attr}
        else:
            kwargs[arg.name] = next(it)
        inferred.add(arg.type_attr)
    for attr in op.op_def.attr:
        if attr.name not in inferred:
            kwargs[attr.name] = op.get_attr(attr.name)
    out = fn(**kwargs)
    return list(out) if len(op.outputs) > 1 else [out]


def _fold_pad(gb: _GraphBuilder, op: tf.Operation) -> bool:
    """Defers a zero Pad whose every reader is a VALID NHWC convolution."""
    if op.type != "Pad":
        return False
    p = gb.const(op.inputs[1])
    src = gb.names.get(op.inputs[0].name)
    if p is None or src is None or p.shape != (4, 2) or p[0].any() or p[3].any():
        return False
    users = op.outputs[0].consumers()
    pads = (int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1]))
    if not users or any(_pad_blocker(u, op.outputs[0]) for u in users):
        return False
    gb.deferred[op.outputs[0].name] = (src, pads)
    return True


def _pad_blocker(u: tf.Operation, t: tf.Tensor) -> bool:
    """Whether zero padding `t` can't move into reader `u`, anything but a VALID
    NHWC convolution. (Not into a max pool, even of non-negative values: its
    padded zeros beat a window of NaN, which TensorFlow's MaxPool skips.)"""
    if _attr(u, "data_format", "NHWC") != "NHWC" or _attr(u, "padding") != "VALID" \
            or u.inputs[0].name != t.name:
        return True
    return u.type not in ("Conv2D", "DepthwiseConv2dNative")


def capture_function(f: Any, shape: Sequence[int]) -> Capture:
    """Build the graph function `@forward` of a tf.function for inputs of `shape`."""
    fn = frozen_function(f, shape)
    graph = fn.graph
    inputs = [t for t in fn.inputs if t.dtype == tf.float32]
    if len(inputs) != 1 or len(fn.inputs) != 1:
        raise Unmapped(f"{len(fn.inputs)} function inputs (BrainSlug takes one float32)")
    (x,) = inputs
    want = tuple(shape[1:])
    got = tuple(x.shape.as_list()[1:])
    if len(got) != len(want) or any(g is not None and g != w
                                    for g, w in zip(got, want, strict=True)):
        raise ValueError(f"shape {list(shape)} does not fit the function's input "
                         f"{['N' if d is None else d for d in x.shape.as_list()]}")
    b = _Builder()
    gb = _GraphBuilder(b)
    gb.names[x.name] = b.input(value_name(x.op.name), nn.make_tensor((nn.DYN, *want)))
    gb.consts = fold_constants(graph)
    for op in graph.get_operations():
        if op.type in ("Placeholder", "NoOp") or not op.outputs:
            continue
        if all(o.name in gb.consts for o in op.outputs):
            continue
        if op.type in ALIASES and len(op.inputs) == 1 or op.type == "IdentityN":
            for a, o in zip(op.inputs, op.outputs, strict=False):
                for table in (gb.names, gb.deferred):
                    if a.name in table:
                        table[o.name] = table[a.name]  # type: ignore[index]
            continue
        if _fold_pad(gb, op):
            continue
        mark = len(list(b.block.ops))
        try:
            used = _used_outputs(op, fn.outputs)
            if used != [0] or op.outputs[0].dtype != tf.float32:
                raise Unmapped(f"op {op.type} with outputs {used} used")
            y = _emit(gb, op)
            declared = _type(op.outputs[0])
            if b.values[y].type != declared:
                raise Unmapped(f"inferred {b.values[y].type}, TensorFlow says {declared}")
            gb.names[op.outputs[0].name] = y
        except Exception as e:
            from brainslug.frontend_tf.capture import _drop_since

            _drop_since(b, mark)
            reason = str(e) if isinstance(e, Unmapped) else f"{type(e).__name__}: {e}"
            _library(gb, op, reason, _used_outputs(op, fn.outputs))
    outs = [_output(gb, t) for t in fn.outputs]
    b.block.add_op(func.ReturnOp(*[b.values[o] for o in outs]))
    fop = func.FuncOp("forward", ([a.type for a in b.block.args],
                                  [b.values[o].type for o in outs]), Region(b.block))
    return Capture(ModuleOp([fop]), b.args, b.pieces, [gb.names[x.name]], outs, b.reasons,
                   sorted(n for n in gb.deferred))


def _output(gb: _GraphBuilder, t: tf.Tensor) -> str:
    if t.name in gb.names:
        return gb.names[t.name]
    raise Unmapped(f"output {t.name} is a constant or not computed from the input")


def _used_outputs(op: tf.Operation, outputs: Sequence[tf.Tensor]) -> list[int]:
    final = {t.name for t in outputs}
    return [k for k, o in enumerate(op.outputs) if o.consumers() or o.name in final]


def _library(gb: _GraphBuilder, op: tf.Operation, reason: str, used: list[int]) -> None:
    """The op runs as itself; constant operands are bound as TensorFlow constants."""
    b = gb.b
    names, feed = [], []
    for a in op.inputs:
        if a.name in gb.deferred:
            src, p = gb.deferred.pop(a.name)
            _materialize_pad(gb, a, src, p)
        if a.name in gb.consts:
            feed.append(tf.constant(gb.consts[a.name]))
        else:
            names.append(gb.value(a))
            feed.append(None)
    runner = op_runner(op)

    def run(*vals: Any) -> Any:
        it = iter(vals)
        r = runner(*[next(it) if c is None else c for c in feed])
        if len(op.outputs) == 1:
            return r
        return r[used[0]] if len(used) == 1 else [r[k] for k in used]

    types = [_type(op.outputs[k]) for k in used]
    outs = b.library(op.name, names, types, run, f"tf.{op.type}", reason)
    for o, n in zip([op.outputs[k] for k in used], outs, strict=True):
        gb.names[o.name] = n


def _materialize_pad(gb: _GraphBuilder, t: tf.Tensor, src: str,
                     p: tuple[int, int, int, int]) -> None:
    b = gb.b
    op = nn.LibraryOp("tf.pad", [b.values[src]], [_type(t)])
    name = b.fresh(t.op.name)
    op.attributes[NODE_ATTR] = StringAttr(name)
    b.block.add_op(op)
    b.values[name] = op.results[0]
    pads = [[0, 0], [p[0], p[2]], [p[1], p[3]], [0, 0]]
    b.pieces[name] = Piece(name, [src], lambda v: tf.pad(v, pads), "tf.pad")
    gb.names[t.name] = name


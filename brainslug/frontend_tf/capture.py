"""Capture a Keras 3 model as `nn` IR in NHWC.

The model's functional graph (Functional, or the graph a built Sequential
wraps) is walked in topological order. Every Keras node becomes one or more
*pieces* (`keras_layers` maps each kind of layer): an `nn` op in the graph
function together with the TensorFlow computation of the same value
(`Piece.run`), which the plan uses when the piece stays in TensorFlow
(convolutions, dense layers, stacks that did not compile). Layers without an exact `nn` counterpart become `nn.library` pieces
that call the Keras operation itself. Weights that stacks read (batch-norm
statistics, biases, constants) are snapshotted as float32 numpy arrays and
bound to function arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Block, Operation, Region, SSAValue

from brainslug.dialects import nn
from brainslug.frontend_tf.keras_layers import KerasNode, Unmapped, map_node, zero_pad
from brainslug.plan.capture import NODE_ATTR, value_name
from brainslug.runtime.aligned import aligned_copy

Run = Callable[..., Any]


@dataclass
class Piece:
    """One value of the plan: `run(*inputs)` computes it in TensorFlow."""

    name: str
    inputs: list[str]
    run: Run
    callee: str = ""


@dataclass
class Capture:
    """The IR of a Keras model and what ties it to TensorFlow."""

    module: ModuleOp
    # per IR function argument: the value name of a model input, or a bound array
    arg_sources: list[str | np.ndarray]
    pieces: dict[str, Piece]
    inputs: list[str]
    outputs: list[str]
    library_reasons: dict[str, str] = field(default_factory=dict)
    folded_padding: list[str] = field(default_factory=list)


def tensor_type(shape: Sequence[int | None]) -> TensorType:
    """The `nn` type of a Keras shape; dim 0 is the batch, always dynamic."""
    return nn.make_tensor([nn.DYN if k == 0 or d is None or d < 0 else int(d)
                           for k, d in enumerate(shape)])


class _Builder:
    """Emits pieces into the graph function's block."""

    def __init__(self, conv_block: int = 0) -> None:
        self.conv_block = conv_block
        """Output channels per block of a compiled convolution's packed weight."""
        self.block = Block()
        self.args: list[str | np.ndarray] = []
        self.values: dict[str, SSAValue] = {}
        self.pieces: dict[str, Piece] = {}
        self.reasons: dict[str, str] = {}
        self.names: set[str] = set()
        # a folded ZeroPadding2D: its name -> (its input, (top, left, bottom, right))
        self.deferred: dict[str, tuple[str, tuple[int, int, int, int]]] = {}
        # id of a Keras tensor -> the nodes that read it
        self.consumers: dict[int, list[Any]] = {}
        self.model_outputs: set[int] = set()

    def fresh(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def arg(self, t: TensorType, source: str | np.ndarray, name: str) -> SSAValue:
        v = self.block.insert_arg(t, len(self.block.args))
        v.name_hint = value_name(name)
        # (kernels read parameters with full-vector loads: a cache line each)
        self.args.append(aligned_copy(source) if isinstance(source, np.ndarray) else source)
        return v

    def param(self, array: np.ndarray, name: str) -> SSAValue:
        return self.arg(nn.make_tensor(array.shape), array, name)

    def input(self, name: str, t: TensorType) -> str:
        name = self.fresh(name)
        self.values[name] = self.arg(t, name, name)
        return name

    def emit(self, name: str, op: Operation, inputs: Sequence[str], run: Run) -> str:
        """Adds `op` (whose activation operands are `inputs`) as piece `name`."""
        name = self.fresh(name)
        op.attributes[NODE_ATTR] = StringAttr(name)
        self.block.add_op(op)
        op.results[0].name_hint = value_name(name)
        self.values[name] = op.results[0]
        self.pieces[name] = Piece(name, list(inputs), run, op.name)
        return name

    def library(self, name: str, inputs: Sequence[str], types: Sequence[TensorType],
                run: Run, callee: str, reason: str) -> list[str]:
        name = self.fresh(name)
        op = nn.LibraryOp(callee, [self.values[i] for i in inputs], list(types))
        op.attributes[NODE_ATTR] = StringAttr(name)
        self.block.add_op(op)
        self.reasons[name] = reason
        if len(types) == 1:
            op.results[0].name_hint = value_name(name)
            self.values[name] = op.results[0]
            self.pieces[name] = Piece(name, list(inputs), run, callee)
            return [name]
        self.pieces[name] = Piece(name, list(inputs), run, callee)
        outs = []
        for k, r in enumerate(op.results):
            sub = self.fresh(f"{name}#{k}")
            r.name_hint = value_name(sub)
            self.values[sub] = r
            self.pieces[sub] = Piece(sub, [name], lambda t, k=k: t[k], "getitem")
            outs.append(sub)
        return outs


# ---------------------------------------------------------------------- graph


def functional_graph(model: Any, shape: Sequence[int]) -> Any:
    """The Functional graph of `model` for inputs of `shape` (0 = any batch)."""
    batch_shape = (None, *[int(d) for d in shape[1:]])
    if isinstance(model, keras.Sequential):
        if not model.built or getattr(model, "_functional", None) is None:
            model.build(batch_shape)
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise Unmapped("a Sequential model without a functional graph")
        return fn
    if not hasattr(model, "_nodes_by_depth"):
        raise Unmapped(f"{type(model).__name__} is a subclassed model, not a functional graph")
    return model


def capture(model: Any, shape: Sequence[int], conv_block: int = 0) -> Capture:
    """Build the graph function `@forward` of a Keras model; with `conv_block`,
    convolutions with more output channels take their weights blocked by that
    many (the order BrainSlug's kernels read them)."""
    g = functional_graph(model, shape)
    ins = list(g.inputs)
    if len(ins) != 1:
        raise Unmapped(f"{len(ins)} model inputs (BrainSlug takes one)")
    b = _Builder(conv_block)
    kin = ins[0]
    want = tuple(shape[1:])
    got = tuple(kin.shape[1:])
    if len(want) != len(got) or any(
            g_ is not None and g_ != w for g_, w in zip(got, want, strict=True)):
        raise ValueError(f"shape {list(shape)} does not fit the model's input "
                         f"{['N' if d is None else d for d in kin.shape]}")
    if None in got:  # re-trace the same layers on an input of the given size
        g = keras.models.clone_model(g, input_tensors=keras.Input(batch_shape=(None, *want)),
                                     clone_function=lambda layer: layer)
        kin = g.inputs[0]
    in_name = b.input(kin.name or "input", tensor_type((None, *want)))
    b.model_outputs = {id(t) for t in g.outputs}
    outputs = _walk(b, g, [in_name])
    b.block.add_op(func.ReturnOp(*[b.values[o] for o in outputs]))
    fn = func.FuncOp("forward", ([a.type for a in b.block.args],
                                 [b.values[o].type for o in outputs]), Region(b.block))
    return Capture(ModuleOp([fn]), b.args, b.pieces, [in_name], outputs, b.reasons,
                   sorted(b.deferred))


def _walk(b: _Builder, g: Any, in_names: Sequence[str]) -> list[str]:
    """Emit the nodes of functional graph `g` whose inputs are `in_names`; the
    names of its outputs. Nested functional models are inlined."""
    by_id = {id(t): n for t, n in zip(g.inputs, in_names, strict=True)}
    depth_keys = sorted(g._nodes_by_depth, reverse=True)
    for depth in depth_keys:
        for node in g._nodes_by_depth[depth]:
            if node.operation and not node.is_input:
                for t in node.arguments.keras_tensors:
                    b.consumers.setdefault(id(t), []).append(node)
    for depth in depth_keys:
        for node in g._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            kts = list(node.arguments.keras_tensors)
            if any(id(t) not in by_id for t in kts):
                continue
            names = [by_id[id(t)] for t in kts]
            outs = list(node.outputs)
            sub = _inner_graph(node.operation, len(kts), len(outs))
            if sub is not None:
                b.model_outputs |= {id(t) for t in sub.outputs}
                names = [_materialize(b, n) for n in names]
                for t, y in zip(outs, _walk(b, sub, names), strict=True):
                    by_id[id(t)] = y
                continue
            nd = KerasNode(b, node, names)
            mark = len(list(b.block.ops))
            try:
                if len(outs) != 1:
                    raise Unmapped(f"{len(outs)} outputs")
                if outs[0].dtype != "float32":
                    raise Unmapped(f"dtype {outs[0].dtype}")
                y = map_node(nd)
                if y in b.deferred:
                    by_id[id(outs[0])] = y
                    continue
                declared = tensor_type(outs[0].shape)
                got_t = b.values[y].type
                if got_t != declared:
                    raise Unmapped(f"inferred {got_t}, Keras says {declared}")
                by_id[id(outs[0])] = y
            except Exception as e:  # the node runs in Keras
                reason = str(e) if isinstance(e, Unmapped) else f"{type(e).__name__}: {e}"
                _drop_since(b, mark)
                ys = _library(b, node, kts, names, outs, reason)
                for t, y in zip(outs, ys, strict=True):
                    by_id[id(t)] = y
    return [by_id[id(t)] for t in g.outputs]


def _inner_graph(op: Any, n_in: int, n_out: int) -> Any:
    """The functional graph of a nested model that can be inlined, else None."""
    if not isinstance(op, keras.Model):
        return None
    g = getattr(op, "_functional", None) if isinstance(op, keras.Sequential) else op
    if g is None or not hasattr(g, "_nodes_by_depth"):
        return None
    if len(g.inputs) != n_in or len(g.outputs) != n_out:
        return None
    return g


def _materialize(b: _Builder, name: str) -> str:
    """A folded ZeroPadding2D as a TensorFlow piece, for a reader that is not mapped."""
    if name not in b.deferred or name in b.values:
        return name
    src, p = b.deferred[name]
    n, h, w, c = b.values[src].type.get_shape()
    t = tensor_type((None if n < 0 else n, h + p[0] + p[2], w + p[1] + p[3], c))
    op = nn.LibraryOp("tf.pad", [b.values[src]], [t])
    op.attributes[NODE_ATTR] = StringAttr(name)
    b.block.add_op(op)
    b.values[name] = op.results[0]
    b.pieces[name] = Piece(name, [src], lambda x: zero_pad(x, p), "tf.pad")
    b.reasons[name] = "zero padding read by a layer that runs in Keras (nn has no pad op)"
    return name


def _drop_since(b: _Builder, mark: int) -> None:
    """Erase the ops (and pieces) a failed mapping emitted after op number `mark`."""
    for op in reversed(list(b.block.ops)[mark:]):
        name = op.attributes[NODE_ATTR].data if NODE_ATTR in op.attributes else None
        if name is not None:
            b.pieces.pop(name, None)
            b.values.pop(name, None)
            b.reasons.pop(name, None)
        op.detach()
        op.erase()


def _library(b: _Builder, node: Any, kts: list[Any], names: list[str], outs: list[Any],
             reason: str) -> list[str]:
    """An `nn.library` piece that calls the Keras operation of `node`."""
    op = node.operation
    training = isinstance(op, keras.layers.Layer) and getattr(op, "_call_has_training_arg",
                                                              False)
    ids = [id(t) for t in kts]

    def run(*ts: Any) -> Any:
        args, kwargs = node.arguments.fill_in(dict(zip(ids, ts, strict=True)))
        if training:
            kwargs = {**kwargs, "training": False}
        r = op(*args, **kwargs)
        return r if len(outs) == 1 else list(keras.tree.flatten(r))

    names = [_materialize(b, n) for n in names]
    types = [tensor_type(t.shape) for t in outs]
    callee = f"keras.{type(op).__name__}"
    return b.library(op.name, names, types, run, callee, reason)

"""Runs a compiled graph function: kernel launches and library calls, in order.

`compile_graph(module)` runs the default pipeline on a module whose graph
function holds `nn` layers, JIT-compiles the kernels and returns a
`CompiledGraph`. Calling it with arrays (numpy or torch CPU tensors, float32,
C-contiguous) runs the graph: each `loop.launch` calls its kernel on the
arrays by pointer, and every other layer (convolutions, linear, fallbacks) is
handed to a library callback, by default the framework-free reference in
`brainslug.testing.reference`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import loop, loop_kernels

Library = Callable[[Operation, list[Any]], list[Any]]


def graph_function(module: ModuleOp, name: str | None = None) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and not loop_kernels.is_kernel(op) and op.body.blocks:
            if name is None or op.sym_name.data == name:
                return op
    raise ValueError(f"no graph function {name or ''} in the module".replace("  ", " "))


def resolve_shape(t: TensorType, batch: int | None) -> tuple[int, ...]:
    shape = []
    for e in t.get_shape():
        if e < 0:
            if batch is None:
                raise ValueError("a dynamic extent needs a batched input")
            shape.append(batch)
        else:
            shape.append(e)
    return tuple(shape)


def _empty_like_framework(shape: tuple[int, ...], like: Any) -> Any:
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.empty(shape, dtype=torch.float32)
    return np.empty(shape, dtype=np.float32)


@dataclass
class CompiledGraph:
    """A graph function with its compiled kernels."""

    module: ModuleOp
    function: func.FuncOp
    kernels: Any
    library: Library | None = None
    steps: list[tuple[Operation, list[SSAValue]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.steps = [
            (op, list(op.operands))
            for op in self.function.body.block.ops
            if not isinstance(op, func.ReturnOp)
        ]
        self.inputs = list(self.function.body.block.args)
        self.outputs = list(self.function.body.block.last_op.operands)

    def __call__(self, *args: Any) -> list[Any]:
        if len(args) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} inputs, got {len(args)}")
        env: dict[SSAValue, Any] = {}
        batch = None
        for v, a in zip(self.inputs, args, strict=True):
            t = v.type
            assert isinstance(t, TensorType)
            shape = t.get_shape()
            if shape and shape[0] < 0 and batch is None:
                batch = int(a.shape[0])
            env[v] = a
        for v, a in zip(self.inputs, args, strict=True):
            want = resolve_shape(v.type, batch)
            if tuple(a.shape) != want:
                raise ValueError(f"input {v.name_hint or ''} has shape {tuple(a.shape)}, "
                                 f"expected {want}")
        for op, operands in self.steps:
            ins = [env[v] for v in operands]
            if isinstance(op, loop.LaunchOp):
                outs = [
                    _empty_like_framework(resolve_shape(r.type, batch), ins[0] if ins else None)
                    for r in op.results
                ]
                self.kernels[op.callee_name](list(ins) + outs)
            else:
                lib = self.library or _reference_library()
                outs = lib(op, ins)
            for r, o in zip(op.results, outs, strict=True):
                env[r] = o
        return [env[v] for v in self.outputs]


def _reference_library() -> Library:
    from brainslug.testing.reference import run_layer

    return run_layer


def compile_graph(
    module: ModuleOp,
    *,
    library: Library | None = None,
    target: str = "x86-64",
    cpu: str = "host",
    function: str | None = None,
    passes: Sequence[Any] | None = None,
) -> CompiledGraph:
    """Run the default pipeline on `module` (in place) and JIT its kernels."""
    from brainslug.ir.context import make_context
    from brainslug.lowering.backends import x86
    from brainslug.pipeline.default import default_passes
    from brainslug.runtime.jit import compile_kernels

    ctx = make_context()
    for p in passes if passes is not None else default_passes(target, cpu):
        p.apply(ctx, module)
    module.verify()
    kernels = compile_kernels(module, x86.X86Backend(cpu))
    return CompiledGraph(module, graph_function(module, function), kernels, library)

"""The kernel of one `nn.stack`: each layer in order, lowered through `LOWERINGS`."""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import nn
from brainslug.lowering.nn_to_loop import (
    batch_norm,
    conv_linear,
    data_movement,
    elementwise,
    pooling,
    reductions,
)
from brainslug.lowering.nn_to_loop.builder import KernelBuilder, LayerLowering, UnsupportedLayer
from brainslug.lowering.nn_to_loop.data_movement import lower_copy

LOWERINGS: dict[type[Operation], LayerLowering] = {
    **elementwise.LOWERINGS,
    **batch_norm.LOWERINGS,
    **pooling.LOWERINGS,
    **reductions.LOWERINGS,
    **data_movement.LOWERINGS,
    **conv_linear.LOWERINGS,
}
"""The lowering of each layer type that has one."""


def lower_stack(stack: nn.StackOp, name: str, piece_tables: bool = False) -> func.FuncOp:
    """The kernel of `stack`: memref arguments for its inputs, then its outputs
    (`piece_tables`: see `KernelBuilder.piece_tables`)."""
    yielded = list(stack.yield_op.values)
    for v in (*stack.inputs, *yielded):
        if any(e < 0 for e in v.type.get_shape()[1:]):
            raise UnsupportedLayer("only the batch (dim 0) may be dynamic")
    kb = KernelBuilder(name, [v.type for v in stack.inputs], [v.type for v in yielded])
    kb.piece_tables = piece_tables
    buf: dict[SSAValue, SSAValue] = dict(zip(stack.body.block.args, kb.inputs, strict=True))
    for outer, a, arg in zip(stack.inputs, stack.body.block.args, kb.inputs, strict=True):
        arg.name_hint = outer.name_hint or a.name_hint
    # each value's first yield writes straight into that output
    dest: dict[SSAValue, SSAValue] = {}
    copies: list[tuple[SSAValue, SSAValue]] = []
    for v, o in zip(yielded, kb.outputs, strict=True):
        if v in dest or v in buf:
            copies.append((v, o))
        else:
            dest[v] = o
    for op in stack.body.block.ops:
        if isinstance(op, nn.YieldOp):
            continue
        r = op.results[0]
        lowering = LOWERINGS.get(type(op))
        if lowering is None:
            raise UnsupportedLayer(f"{op.name} has no loop lowering")
        out = dest.get(r) or kb.alloc(r.type, r.name_hint)
        lowering(kb, op, buf, out)
        buf[r] = out
    for v, o in copies:
        lower_copy(kb, buf[v], o)
    return kb.finish()

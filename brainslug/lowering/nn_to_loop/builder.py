"""The kernel of one stack as it is built: its function, buffers and nests.

`KernelBuilder` holds the kernel function and appends buffers and `loop.nest`s to
it; `Emitter` appends the scalar ops of one nest or reduce body. The layout
helpers map logical (N, C, H, W) indices to a buffer's physical ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xdsl.dialects import arith, func, math, memref
from xdsl.dialects.builtin import (
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineConstantExpr, AffineDimExpr, AffineExpr, AffineMap

from brainslug.dialects import loop, loop_kernels

NEG_INF = float("-inf")


class UnsupportedLayer(Exception):
    """The layer has no loop lowering; the stack runs in the framework."""


def memref_of(t: TensorType) -> MemRefType:
    return MemRefType(t.element_type, t.get_shape())


def layout_map(layout: str | None, rank: int) -> AffineMap:
    """Logical (N, C, H, W) ivs to physical indices."""
    if layout == "NHWC" and rank == 4:
        return AffineMap(4, 0, (AffineDimExpr(0), AffineDimExpr(2), AffineDimExpr(3), AffineDimExpr(1)))
    return AffineMap.identity(rank)


def logical_shape(shape: Sequence[int], layout: str | None) -> list[int]:
    if layout == "NHWC" and len(shape) == 4:
        n, h, w, c = shape
        return [n, c, h, w]
    return list(shape)


def d(i: int) -> AffineExpr:
    return AffineDimExpr(i)


def cst(v: int) -> AffineExpr:
    return AffineConstantExpr(v)


class KernelBuilder:
    """Builds the kernel function of one stack."""

    def __init__(self, name: str, inputs: Sequence[TensorType], outputs: Sequence[TensorType]):
        arg_types = [memref_of(t) for t in (*inputs, *outputs)]
        self.block = Block(arg_types=arg_types)
        self.func = func.FuncOp(name, (arg_types, []), Region(self.block))
        loop_kernels.mark_kernel(self.func)
        self.inputs = list(self.block.args[: len(inputs)])
        self.outputs = list(self.block.args[len(inputs) :])
        for k, o in enumerate(self.outputs):
            o.name_hint = "out" if len(self.outputs) == 1 else f"out{k}"
        self.piece_tables = False
        """A `cat` reads runs of like stack inputs through `loop.pieces`."""
        self.batch: SSAValue | None = None
        for a in self.block.args:
            if a.type.get_shape() and a.type.get_shape()[0] < 0:
                zero = self.top(arith.ConstantOp(IntegerAttr(0, IndexType())))
                self.batch = self.top(memref.DimOp(a, zero))
                self.batch.name_hint = "batch"
                break

    # ------------------------------------------------------------------ building

    def top(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # type: ignore[return-value]

    def extent(self, e: int) -> loop.Bound:
        if e >= 0:
            return e
        if self.batch is None:
            raise UnsupportedLayer("a dynamic extent other than the batch")
        return self.batch

    def alloc(self, t: TensorType | MemRefType, name: str | None = None) -> SSAValue:
        shape = t.get_shape()
        dyn = [self.extent(e) for e in shape if e < 0]
        mt = MemRefType(f32, shape)
        v = self.top(memref.AllocOp(dyn, [], mt))
        if name:
            v.name_hint = name
        return v

    def nest(self, extents: Sequence[int], body: Callable[[Emitter, list[SSAValue]], None]) -> None:
        upper = [self.extent(e) for e in extents]
        n = loop.NestOp([0] * len(upper), upper)
        names = "nchw" if len(upper) == 4 else "ijklmopq"
        for a, name in zip(n.body.block.args, names, strict=False):
            a.name_hint = name
        em = Emitter(n.body.block, self)
        body(em, list(n.body.block.args))
        em.emit(loop.YieldOp())
        self.block.add_op(n)

    def finish(self) -> func.FuncOp:
        self.block.add_op(func.ReturnOp())
        return self.func


class Emitter:
    """Appends scalar ops to a nest or reduce body."""

    def __init__(self, block: Block, kernel: KernelBuilder):
        self.block = block
        self.kernel = kernel

    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # type: ignore[return-value]

    def f(self, v: float) -> SSAValue:
        return self.emit(arith.ConstantOp(FloatAttr(v, f32)))

    def i(self, v: int) -> SSAValue:
        return self.emit(arith.ConstantOp(IntegerAttr(v, IndexType())))

    def load(self, buf: SSAValue, idx: Sequence[SSAValue], amap: AffineMap | None = None,
             pad: float | None = None) -> SSAValue:
        return self.emit(loop.LoadOp(buf, idx, amap, pad))

    def store(self, v: SSAValue, buf: SSAValue, idx: Sequence[SSAValue],
              amap: AffineMap | None = None) -> None:
        self.emit(loop.StoreOp(v, buf, idx, amap))

    def add(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.AddfOp(a, b))

    def sub(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.SubfOp(a, b))

    def mul(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.MulfOp(a, b))

    def div(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.DivfOp(a, b))

    def fma(self, a: SSAValue, b: SSAValue, c: SSAValue) -> SSAValue:
        """`a * b + c`, rounded once."""
        return self.emit(math.FmaOp(a, b, c))

    def cmp(self, pred: str, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.CmpfOp(a, b, pred))

    def select(self, c: SSAValue, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.emit(arith.SelectOp(c, a, b))

    def max0(self, x: SSAValue, lo: float) -> SSAValue:
        """x < lo ? lo : x (NaN stays NaN, like the frameworks' clamp)."""
        c = self.f(lo)
        return self.select(self.cmp("olt", x, c), c, x)

    def min0(self, x: SSAValue, hi: float) -> SSAValue:
        c = self.f(hi)
        return self.select(self.cmp("ogt", x, c), c, x)

    def reduce(self, kind: str, init: float, extents: Sequence[loop.Bound],
               body: Callable[[Emitter, list[SSAValue]], SSAValue],
               lower: Sequence[loop.Bound] | None = None, contract: bool = False,
               names: Sequence[str] = ("kh", "kw", "k2", "k3")) -> SSAValue:
        r = loop.ReduceOp(kind, init, list(lower or [0] * len(extents)), list(extents),
                          contract=contract)
        for a, name in zip(r.body.block.args, names, strict=False):
            a.name_hint = name
        em = Emitter(r.body.block, self.kernel)
        v = body(em, list(r.body.block.args))
        em.emit(loop.YieldOp(v))
        return self.emit(r)

    def index(self, op_cls: Callable[[SSAValue, SSAValue], Operation], a: SSAValue,
              b: SSAValue) -> SSAValue:
        return self.emit(op_cls(a, b))

    def to_f32(self, v: SSAValue) -> SSAValue:
        i = self.emit(arith.IndexCastOp(v, i64))
        return self.emit(arith.SIToFPOp(i, f32))


Formula = Callable[[Emitter, SSAValue], SSAValue]
"""The scalar formula of an elementwise layer: its result from its input value."""

Buffers = Mapping[SSAValue, SSAValue]
"""The buffer (kernel argument or allocation) of each value of the stack."""

LayerLowering = Callable[[KernelBuilder, Any, Buffers, SSAValue], None]
"""Appends the nests of one layer: `(kb, op, buffers, out)`, `out` its result's buffer."""

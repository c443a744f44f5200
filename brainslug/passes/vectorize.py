"""bs-vectorize: the innermost nest dimension becomes a `simd.loop` of W lanes.

Values that depend on the lane dimension become `!simd.vec`; uniform values stay
scalar and are broadcast where they meet vectors. A nest is left scalar when a
store would not involve the lane dimension (lanes would collide), when a load
indexes with a computed lane-varying value, or when a reduction's bounds vary
across lanes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, math
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from brainslug.analysis.nests import value_operands
from brainslug.dialects import loop, simd
from brainslug.ir.compile_time import gc_paused

_FLOAT_BINARY = {
    arith.AddfOp: simd.AddfOp,
    arith.SubfOp: simd.SubfOp,
    arith.MulfOp: simd.MulfOp,
    arith.DivfOp: simd.DivfOp,
}
_INT_BINARY = {
    arith.AddiOp: simd.AddiOp,
    arith.SubiOp: simd.SubiOp,
    arith.MuliOp: simd.MuliOp,
    arith.DivSIOp: simd.DivsiOp,
    arith.FloorDivSIOp: simd.FloordivsiOp,
    arith.RemSIOp: simd.RemsiOp,
    arith.MinSIOp: simd.MinsiOp,
    arith.MaxSIOp: simd.MaxsiOp,
    arith.AndIOp: simd.AndiOp,
    arith.OrIOp: simd.OriOp,
}
_MATH = {
    math.ExpOp: "exp",
    math.LogOp: "log",
    math.TanhOp: "tanh",
    math.ErfOp: "erf",
    math.SqrtOp: "sqrt",
}
_PASS_THROUGH = (arith.IndexCastOp,)


class NotVectorizable(Exception):
    """The nest stays scalar; the message says why."""


def _varying_values(body: Block, lane: SSAValue) -> set[SSAValue]:
    """Values of `body` (and nested regions) that differ between lanes."""
    varying: set[SSAValue] = {lane}

    def visit(block: Block) -> None:
        for op in block.ops:
            for r in op.regions:
                for b in r.blocks:
                    visit(b)
            nested = any(
                o in varying for x in op.walk() if x is not op for o in value_operands(x)
            )
            if nested or any(o in varying for o in value_operands(op)):
                varying.update(op.results)

    visit(body)
    return varying


@dataclass
class _Vectorizer:
    lane: SSAValue
    varying: set[SSAValue]
    mapping: dict[SSAValue, SSAValue]
    splats: dict[tuple[int, SSAValue], SSAValue]

    def get(self, v: SSAValue) -> SSAValue:
        return self.mapping.get(v, v)

    def vector(self, v: SSAValue, block: Block) -> SSAValue:
        """`v` as a vector: the mapped value, an iota for the lane iv, or a splat."""
        key = (id(block), v)
        if v is self.lane:
            if key not in self.splats:
                iota = simd.IotaOp(self.get(v))
                block.add_op(iota)
                self.splats[key] = iota.result
            return self.splats[key]
        m = self.get(v)
        if isinstance(m.type, simd.VecType):
            return m
        if key not in self.splats:
            sp = simd.SplatOp(m)
            block.add_op(sp)
            self.splats[key] = sp.result
        return self.splats[key]

    def indices(self, op: Operation, idx) -> list[SSAValue]:
        out = []
        used = op.map.data.used_dims()
        for k, i in enumerate(idx):
            if k in used and i in self.varying and i is not self.lane:
                raise NotVectorizable(f"{op.name} indexes with a computed lane-varying value")
            out.append(self.get(i))
        return out

    def block(self, src: Block, dst: Block) -> None:
        for op in src.ops:
            self.op(op, dst)

    def op(self, op: Operation, dst: Block) -> None:
        is_varying = any(r in self.varying for r in op.results) or (
            isinstance(op, loop.StoreOp | loop.YieldOp)
        )
        if not is_varying:
            new = op.clone(value_mapper=self.mapping)
            dst.add_op(new)
            for a, b in zip(op.results, new.results, strict=True):
                self.mapping[a] = b
            return
        new_val: SSAValue | None = None
        t = type(op)
        if isinstance(op, loop.LoadOp):
            ld = simd.LoadOp(op.buffer, self.indices(op, op.indices), op.map.data, op.pad_value)
            dst.add_op(ld)
            new_val = ld.result
        elif isinstance(op, loop.InBoundsOp):
            ib = simd.InBoundsOp(
                [self.get(e) if isinstance(e, SSAValue) else e for e in op.extent_bounds()],
                self.indices(op, op.indices),
                op.map.data,
            )
            dst.add_op(ib)
            new_val = ib.result
        elif isinstance(op, loop.StoreOp):
            used = op.map.data.used_dims()
            if not any(k in used for k, i in enumerate(op.indices) if i is self.lane):
                raise NotVectorizable("a store does not involve the lane dimension")
            val = self.vector(op.value, dst)
            dst.add_op(simd.StoreOp(val, op.buffer, self.indices(op, op.indices), op.map.data))
            return
        elif isinstance(op, loop.YieldOp):
            vals = [self.vector(v, dst) for v in op.values]
            dst.add_op(loop.YieldOp(*vals))
            return
        elif isinstance(op, loop.ReduceOp):
            for b in (*op.lower_bounds(), *op.upper_bounds()):
                if isinstance(b, SSAValue) and b in self.varying:
                    raise NotVectorizable("a reduction's bounds vary across lanes")
            red = loop.ReduceOp(
                op.kind_name,
                op.init_value,
                [self.get(b) if isinstance(b, SSAValue) else b for b in op.lower_bounds()],
                [self.get(b) if isinstance(b, SSAValue) else b for b in op.upper_bounds()],
                result_type=simd.vec(op.result.type),
                contract=op.contracts,
            )
            for a, b in zip(op.body.block.args, red.body.block.args, strict=True):
                self.mapping[a] = b
                b.name_hint = a.name_hint
            self.block(op.body.block, red.body.block)
            dst.add_op(red)
            new_val = red.result
        elif t in _FLOAT_BINARY or t in _INT_BINARY:
            ctor = _FLOAT_BINARY.get(t) or _INT_BINARY[t]
            new = ctor(self.vector(op.operands[0], dst), self.vector(op.operands[1], dst))
            new.attributes |= op.attributes
            dst.add_op(new)
            new_val = new.result
        elif isinstance(op, arith.NegfOp):
            new = simd.NegfOp(self.vector(op.operand, dst))
            dst.add_op(new)
            new_val = new.result
        elif isinstance(op, math.FmaOp):
            new = simd.FmaOp(*(self.vector(v, dst) for v in op.operands))
            dst.add_op(new)
            new_val = new.result
        elif t in _MATH:
            new = simd.MathOp(_MATH[t], self.vector(op.operands[0], dst))
            new.attributes |= op.attributes  # e.g. which framework's function (bs.impl)
            dst.add_op(new)
            new_val = new.result
        elif isinstance(op, arith.CmpfOp | arith.CmpiOp):
            names = (
                arith.CMPF_COMPARISON_OPERATIONS
                if isinstance(op, arith.CmpfOp)
                else arith.CMPI_COMPARISON_OPERATIONS
            )
            pred = names[op.predicate.value.data]
            ctor = simd.CmpfOp if isinstance(op, arith.CmpfOp) else simd.CmpiOp
            new = ctor(pred, self.vector(op.lhs, dst), self.vector(op.rhs, dst))
            dst.add_op(new)
            new_val = new.result
        elif isinstance(op, arith.SelectOp):
            new = simd.SelectOp(
                self.vector(op.cond, dst),
                self.vector(op.lhs, dst),
                self.vector(op.rhs, dst),
            )
            dst.add_op(new)
            new_val = new.result
        elif isinstance(op, arith.SIToFPOp):
            new = simd.SIToFPOp(self.vector(op.input, dst))
            dst.add_op(new)
            new_val = new.result
        elif isinstance(op, _PASS_THROUGH):
            new_val = self.vector(op.operands[0], dst)
        else:
            raise NotVectorizable(f"no lane-wise form of {op.name}")
        self.mapping[op.results[0]] = new_val


def vectorize_nest(nest: loop.NestOp) -> loop.NestOp:
    """A new nest whose innermost dimension is a simd.loop (raises NotVectorizable)."""
    ivs = nest.ivs
    if not ivs:
        raise NotVectorizable("a nest without dimensions")
    lane = ivs[-1]
    lower, upper = nest.lower_bounds(), nest.upper_bounds()
    outer = loop.NestOp(lower[:-1], upper[:-1], parallel=None)
    outer.attributes |= nest.attributes
    for old, new in zip(ivs[:-1], outer.body.block.args, strict=True):
        new.name_hint = old.name_hint
    mapping = dict(zip(ivs[:-1], outer.body.block.args, strict=True))
    lane_loop = simd.LoopOp(lower[-1], upper[-1])
    lane_loop.iv.name_hint = lane.name_hint
    mapping[lane] = lane_loop.iv
    vec = _Vectorizer(lane, _varying_values(nest.body.block, lane), mapping, {})
    inner = lane_loop.body.block
    for op in nest.body.block.ops:
        if isinstance(op, loop.YieldOp):
            continue
        vec.op(op, inner)
    inner.add_op(loop.YieldOp())
    outer.body.block.add_op(lane_loop)
    outer.body.block.add_op(loop.YieldOp())
    return outer


def vectorize_row_reductions(nest: loop.NestOp, rewriter: PatternRewriter) -> bool:
    """Where the nest's innermost dim has extent 1 (a row statistic, as layer
    norm's mean), vectorize its one-dim `add`/`max` reductions along their own
    iv instead: each becomes a `simd.reduce_loop`. Whether any did."""
    lo, hi = nest.lower_bounds()[-1], nest.upper_bounds()[-1]
    if not (isinstance(lo, int) and isinstance(hi, int) and hi - lo == 1):
        return False
    done = False
    for red in list(nest.body.block.ops):
        if not (isinstance(red, loop.ReduceOp) and len(red.ivs) == 1
                and len(red.accumulators) == 1 and not red.contracts):
            continue
        (k,) = red.ivs
        rl = simd.ReduceLoopOp(red.kind_name, red.init_value, red.lower_bounds()[0],
                               red.upper_bounds()[0])
        rl.attributes |= red.attributes  # how its lanes combine (`loop.LANE_ORDER`, ...)
        rl.iv.name_hint = k.name_hint
        vec = _Vectorizer(k, _varying_values(red.body.block, k), {k: rl.iv}, {})
        try:
            body = rl.body.block
            for op in red.body.block.ops:
                if isinstance(op, loop.YieldOp):
                    body.add_op(loop.YieldOp(vec.vector(op.values[0], body)))
                else:
                    vec.op(op, body)
        except NotVectorizable:
            continue
        rewriter.replace(red, rl)
        done = True
    return done


def _is_innermost(nest: loop.NestOp) -> bool:
    return not any(isinstance(o, loop.NestOp | simd.LoopOp) for o in nest.walk() if o is not nest)


class VectorizeNest(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: loop.NestOp, rewriter: PatternRewriter, /):
        if not _is_innermost(op) or not op.ivs:
            return
        if vectorize_row_reductions(op, rewriter):
            return
        try:
            new = vectorize_nest(op)
        except NotVectorizable as e:
            if "bs.scalar" not in op.attributes:
                op.attributes["bs.scalar"] = StringAttr(str(e))
                rewriter.notify_op_modified(op)
            return
        rewriter.replace(op, new)


@dataclass(frozen=True)
class VectorizePass(ModulePass):
    """Vectorize the innermost dimension of every innermost loop.nest."""

    name = "bs-vectorize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        with gc_paused():
            PatternRewriteWalker(VectorizeNest(), apply_recursively=False).rewrite_module(op)


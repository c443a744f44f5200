"""The op lowerings of `GPUPhaseEmitter`: each simd value is the scalar of one
lane (a thread), and math functions call libdevice."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f32
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import simd
from brainslug.lowering import loop_to_llvm as scalar
from brainslug.lowering.gpu.emitter import GPUPhaseEmitter
from brainslug.lowering.gpu.nvvm import MATH_FUNCTIONS
from brainslug.lowering.phase_emitter import LaneState, OpLowering, PhaseEmitter
from brainslug.lowering.simd_to_llvm import _binary as lane_binary


def _loop(em: GPUPhaseEmitter, op: simd.LoopOp) -> None:
    b = em.b
    (lb,), (ub,) = em.domain(op)
    saved, saved_offset = em.lane, em.lane_offset
    if em.serial:
        start, step = lb, 1
        em.lane_offset = 0
    else:
        start, step = b.iadd(lb, em.sreg("tid.x")), em.sreg("ntid.x")
        em.lane_offset = em.sreg("tid.x")

    def body(w: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
        em.lane = LaneState(op.iv, w, None)
        em.values[op.iv] = w
        em.emit_block(op.body.block)
        return []

    b.loop(start, ub, step, body)
    em.lane, em.lane_offset = saved, saved_offset


def _reduce_loop(em: GPUPhaseEmitter, op: simd.ReduceLoopOp) -> None:
    """A row reduction in the thread that needs it: one point at a time, in
    order (the lanes of the CPU form are not spread across threads)."""
    b = em.b
    (lb,), (ub,) = em.domain(op)
    saved, saved_offset = em.lane, em.lane_offset
    em.lane_offset = 0

    def body(k: SSAValue, carried: list[SSAValue]) -> list[SSAValue]:
        em.lane = LaneState(op.iv, k, None)
        em.values[op.iv] = k
        (v,) = em.emit_block(op.body.block)
        return [scalar.reduce_step(em, op.kind_name, carried[0], v)]

    _, (acc,) = b.loop(lb, ub, 1, body, [b.const(op.init_value, f32)])
    em.values[op.result] = acc
    em.lane, em.lane_offset = saved, saved_offset


def _same(em: GPUPhaseEmitter, op: Operation) -> None:
    em.values[op.results[0]] = em.ival(op.operands[0])


def _iota(em: GPUPhaseEmitter, op: simd.IotaOp) -> None:
    lane = em.lane
    if lane is not None and op.base is lane.iv:
        em.values[op.result] = em.ival(op.base)  # already this thread's point
    else:
        em.values[op.result] = em.b.iadd(em.ival(op.base), em.lane_offset)


def _negf(em: GPUPhaseEmitter, op: simd.NegfOp) -> None:
    em.values[op.result] = em.b.add(llvm.FNegOp(em.value(op.input)))


def math_call(em: PhaseEmitter, fn: str, x: SSAValue) -> SSAValue:
    if fn == "sqrt":
        return em.b.intrinsic("llvm.sqrt", [x])
    if fn == "abs":
        return em.b.intrinsic("llvm.fabs", [x])
    if (name := MATH_FUNCTIONS.get(fn)) is None:
        raise NotImplementedError(f"bs-lower-to-llvm{{target=nvptx}}: no GPU function for {fn}")
    return em.b.call(name, [x], f32)


def _simd_math(em: GPUPhaseEmitter, op: simd.MathOp) -> None:
    em.values[op.result] = math_call(em, op.fn_name, em.value(op.input))


_SCALAR_MATH = {
    scalar.xmath.ExpOp: "exp",
    scalar.xmath.LogOp: "log",
    scalar.xmath.SqrtOp: "sqrt",
    scalar.xmath.AbsFOp: "abs",
    scalar.xmath.TanhOp: "tanh",
    scalar.xmath.ErfOp: "erf",
}


def _scalar_math(em: GPUPhaseEmitter, op: Operation) -> None:
    em.values[op.results[0]] = math_call(em, _SCALAR_MATH[type(op)], em.value(op.operands[0]))


def _cmpf(em: GPUPhaseEmitter, op: simd.CmpfOp) -> None:
    em.values[op.result] = em.b.add(
        llvm.FCmpOp(em.value(op.lhs), em.value(op.rhs), op.predicate_name)
    )


def _cmpi(em: GPUPhaseEmitter, op: simd.CmpiOp) -> None:
    em.values[op.result] = em.b.icmp(op.predicate_name, em.ival(op.lhs), em.ival(op.rhs))


def _select(em: GPUPhaseEmitter, op: simd.SelectOp) -> None:
    em.values[op.result] = em.b.add(
        llvm.SelectOp(em.value(op.cond), em.value(op.lhs), em.value(op.rhs))
    )


def _sitofp(em: GPUPhaseEmitter, op: simd.SIToFPOp) -> None:
    em.values[op.result] = em.b.add(llvm.SIToFPOp(em.value(op.input), f32))


def _store(em: GPUPhaseEmitter, op: simd.StoreOp) -> None:
    """This thread's point, where the guard (if any) holds."""
    if op.guard is None:
        scalar._store(em, op)  # type: ignore[arg-type]
    else:
        em.b.if_then(em.value(op.guard), lambda: scalar._store(em, op))  # type: ignore[arg-type]


def _prefetch(em: GPUPhaseEmitter, op: simd.PrefetchOp) -> None:
    """Nothing: a hint, which a thread's scalar access has no use for."""


def _reduce(em: GPUPhaseEmitter, op: simd.ReduceOp) -> None:
    raise NotImplementedError("bs-lower-to-llvm{target=nvptx}: simd.reduce across threads")


GPU_LOWERINGS: dict[type[Operation], OpLowering] = {
    simd.LoopOp: _loop,
    simd.ReduceLoopOp: _reduce_loop,
    # one scalar access at this thread's point (padded: clamped address + select)
    simd.LoadOp: scalar._load,
    simd.StoreOp: _store,
    simd.PrefetchOp: _prefetch,
    simd.InBoundsOp: scalar._in_bounds,
    simd.SplatOp: _same,
    simd.IotaOp: _iota,
    **{
        t: lane_binary  # the same llvm ops, on scalars
        for t in (
            simd.AddfOp,
            simd.SubfOp,
            simd.MulfOp,
            simd.DivfOp,
            simd.AddiOp,
            simd.SubiOp,
            simd.MuliOp,
            simd.DivsiOp,
            simd.RemsiOp,
            simd.AndiOp,
            simd.OriOp,
            simd.FloordivsiOp,
            simd.MinsiOp,
            simd.MaxsiOp,
        )
    },
    simd.NegfOp: _negf,
    simd.FmaOp: scalar.lower_fma,  # (on this thread's scalars)
    simd.MathOp: _simd_math,
    **{t: _scalar_math for t in _SCALAR_MATH},
    simd.CmpfOp: _cmpf,
    simd.CmpiOp: _cmpi,
    simd.SelectOp: _select,
    simd.SIToFPOp: _sitofp,
    simd.ReduceOp: _reduce,
}  # type: ignore[dict-item]
"""What differs from the CPU lowering: simd ops on one lane, and math functions
(the nvptx backend lays this table over `LOOP_LOWERINGS` and `SIMD_LOWERINGS`)."""

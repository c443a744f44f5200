"""Lowering of the `simd` dialect inside a phase on the CPU (`SIMD_LOWERINGS`, a
table of `phase_emitter.TargetParams.lowerings`).

A `simd.loop` runs its body on full chunks of W lanes without masks, then once
more on the last partial chunk with an active-lane mask. Memory accesses are
classified from their affine maps: when the lane iv appears only in the last
result with coefficient 1 the access is a contiguous vector load/store (masked
where needed); otherwise it is a gather/scatter with per-lane offsets. A padded
load masks out the lanes whose point lies outside the buffer, so those lanes
never touch memory and read the pad value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, llvm
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, StringAttr, VectorType, f32, i1, i32, i64
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineExpr
from xdsl.ir.affine.affine_expr import AffineDimExpr

from brainslug.analysis.generic_phases import WHOLE_CHUNKS
from brainslug.analysis.ranges import inside_dims
from brainslug.dialects import loop, simd
from brainslug.lowering import pieces_to_llvm
from brainslug.lowering.llvm_builder import ICMP, IVal, type_suffix
from brainslug.lowering.loop_to_llvm import (
    lower_fma,
    pad_select,
    reduce_step,
)
from brainslug.lowering.nn_to_loop.aten_vec import GELU_ERF_SCALE, MATH_IMPL, ONEDNN, SUBNORMAL_GRID
from brainslug.lowering.phase_emitter import Buffer, LaneState, OpLowering, PhaseEmitter


@dataclass(frozen=True)
class Lin:
    """`scalar + coef * lane`: an index that is affine in the lane number."""

    scalar: IVal
    coef: int


LaneIndex = Lin | SSAValue
"""A per-lane index: affine in the lane, or a vector of i64."""


# ---------------------------------------------------------------------------- simd.loop


def _loop(em: PhaseEmitter, op: simd.LoopOp) -> None:
    saved_lanes = em.lanes
    em.lanes *= op.num_vectors  # a register block: each value spans V vectors
    try:
        _chunks(em, op)
    finally:
        em.lanes = saved_lanes


def _fixed_span(op: simd.LoopOp) -> int | None:
    """ub - lb where the upper bound is `arith.addi lb, constant` (a register
    block of channels that the blocks divide): whole chunks need no tail."""
    (lb,), (ub,) = op.lower_bounds(), op.upper_bounds()
    if not isinstance(ub, SSAValue) or not isinstance(ub.owner, arith.AddiOp):
        return None
    for base, step in ((ub.owner.lhs, ub.owner.rhs), (ub.owner.rhs, ub.owner.lhs)):
        if base == lb and isinstance(step.owner, arith.ConstantOp) and isinstance(
                value := step.owner.value, IntegerAttr):
            return value.value.data
    return None


def _chunks(em: PhaseEmitter, op: simd.LoopOp) -> None:
    b, w_lanes = em.b, em.lanes
    (lb,), (ub,) = em.domain(op)
    saved = em.lane

    def chunk(w: IVal, mask: SSAValue | None) -> list[SSAValue]:
        em.lane = LaneState(op.iv, w, mask)
        em.values[op.iv] = w
        em.emit_block(op.body.block)
        return []

    def tail(w: IVal) -> None:
        left = b.isub(ub, w)
        if isinstance(left, int):
            mask = b.const_vector(
                [lane < left for lane in range(w_lanes)], VectorType(i1, [w_lanes])
            )
        else:
            mask = b.add(
                llvm.ICmpOp(b.iota(w_lanes), b.splat(left, w_lanes), IntegerAttr(ICMP["slt"], i64))
            )
        chunk(w, mask)

    static = isinstance(lb, int) and isinstance(ub, int)
    if static and ub - lb < w_lanes:
        if ub > lb:
            tail(lb)
    else:
        last, _ = b.loop(lb, b.isub(ub, w_lanes), w_lanes, lambda w, c: chunk(w, None), pred="sle")
        span = _fixed_span(op)
        sites = em.sig.bounds.get(id(op)) if em.sig is not None else None
        whole = (static and (ub - lb) % w_lanes == 0) or (
            span is not None and span % w_lanes == 0
            and (sites is None or all(p is None for p in (*sites[0], *sites[1])))) or (
            em.sig is not None and id(op) in em.sig.whole
            and WHOLE_CHUNKS * op.num_vectors % w_lanes == 0
        )
        if not whole:
            b.if_then(b.icmp("slt", last, ub), lambda: tail(last))
    em.lane = saved


def _reduce_loop(em: PhaseEmitter, op: simd.ReduceLoopOp) -> None:
    """A vector accumulator over the whole chunks, the tail chunk's inactive
    lanes replaced by the identity (0 or -inf), then one horizontal combine."""
    b, w_lanes = em.b, em.lanes
    (lb,), (ub,) = em.domain(op)
    vt = VectorType(f32, [w_lanes])
    kind = op.kind_name
    saved = em.lane
    identity = b.splat(b.const(0.0 if kind == "add" else float("-inf"), f32), w_lanes)

    def chunk(w: IVal, mask: SSAValue | None, acc: SSAValue) -> SSAValue:
        em.lane = LaneState(op.iv, w, mask)
        em.values[op.iv] = w
        (v,) = em.emit_block(op.body.block)
        if mask is not None:
            v = b.call(f"bs.select.{type_suffix(vt)}", [mask, v, identity], vt)
        return reduce_step(em, kind, acc, v)

    init = b.splat(b.const(op.init_value, f32), w_lanes)
    static = isinstance(lb, int) and isinstance(ub, int)
    if static and ub - lb < w_lanes:
        last, acc = lb, init
    else:
        last, (acc,) = b.loop(lb, b.isub(ub, w_lanes), w_lanes,
                              lambda w, c: [chunk(w, None, c[0])], [init], pred="sle")
    if not (static and (ub - lb) % w_lanes == 0):
        left = b.isub(ub, last)
        if isinstance(left, int):
            mask = b.const_vector([lane < left for lane in range(w_lanes)],
                                  VectorType(i1, [w_lanes]))
        else:
            mask = b.add(llvm.ICmpOp(b.iota(w_lanes), b.splat(left, w_lanes),
                                     IntegerAttr(ICMP["slt"], i64)))
        acc = chunk(last, mask, acc)  # an empty tail is all masked: the identity
    em.lane = saved
    if op.attributes.get(loop.LANE_ORDER) == StringAttr(loop.HALVES) and not (
            static and ub - lb < w_lanes):
        em.values[op.result] = b.call(f"bs.reduce_halves.{kind}.{type_suffix(vt)}", [acc], f32)
        return
    every = b.const(1, VectorType(i1, [w_lanes]))
    em.values[op.result] = b.call(f"bs.reduce.{kind}.{type_suffix(vt)}", [acc, every], f32)


# ---------------------------------------------------------------------------- lanes


def _lane(em: PhaseEmitter) -> LaneState:
    if em.lane is None:
        raise ValueError("simd op outside a simd.loop")
    return em.lane


def vec_index(em: PhaseEmitter, x: LaneIndex) -> SSAValue:
    """The lanes of an index as a vector of i64."""
    if isinstance(x, SSAValue):
        return x
    b = em.b
    base = b.splat(b.ssa(x.scalar), em.lanes)
    if x.coef == 0:
        return base
    return b.add(llvm.AddOp(base, b.iota(em.lanes, x.coef)))


def lane_affine(
    em: PhaseEmitter, e: AffineExpr, dims: Sequence[IVal], lane_dims: set[int]
) -> LaneIndex:
    """Evaluates `e` where the dims in `lane_dims` are the lane iv (w + l in lane l)."""
    if not any(isinstance(x, AffineDimExpr) and x.position in lane_dims for x in e.dfs()):
        return Lin(em.affine(e, dims), 0)
    if isinstance(e, AffineDimExpr):
        return Lin(dims[e.position], 1)
    assert isinstance(e, AffineBinaryOpExpr), f"unsupported affine expression {e}"
    b = em.b
    lhs = lane_affine(em, e.lhs, dims, lane_dims)
    rhs = lane_affine(em, e.rhs, dims, lane_dims)
    if e.kind == AffineBinaryOpKind.Add and isinstance(lhs, Lin) and isinstance(rhs, Lin):
        return Lin(b.iadd(lhs.scalar, rhs.scalar), lhs.coef + rhs.coef)
    if e.kind == AffineBinaryOpKind.Mul and isinstance(lhs, Lin) and isinstance(rhs, Lin):
        if rhs.coef == 0 and isinstance(rhs.scalar, int):
            return Lin(b.imul(lhs.scalar, rhs.scalar), lhs.coef * rhs.scalar)
        if lhs.coef == 0 and isinstance(lhs.scalar, int):
            return Lin(b.imul(lhs.scalar, rhs.scalar), rhs.coef * lhs.scalar)
    lv, rv = vec_index(em, lhs), vec_index(em, rhs)
    match e.kind:
        case AffineBinaryOpKind.Add:
            return b.add(llvm.AddOp(lv, rv))
        case AffineBinaryOpKind.Mul:
            return b.add(llvm.MulOp(lv, rv))
        case AffineBinaryOpKind.FloorDiv:
            return b.idiv_floor(lv, rv)  # type: ignore[return-value]
        case AffineBinaryOpKind.CeilDiv:
            zero = b.const(0, lv.type)
            q = b.idiv_floor(b.add(llvm.SubOp(zero, lv)), rv)
            return b.add(llvm.SubOp(zero, q))  # type: ignore[arg-type]
        case AffineBinaryOpKind.Mod:
            return b.imod_floor(lv, rv)  # type: ignore[return-value]


def lane_indices(
    em: PhaseEmitter, indices: Sequence[SSAValue], results: Sequence[AffineExpr]
) -> list[LaneIndex]:
    """The per-lane indices of an access whose map has these results."""
    lane = _lane(em)
    lane_dims = {i for i, x in enumerate(indices) if x is lane.iv}
    dims = [em.ival(x) for x in indices]
    return [lane_affine(em, e, dims, lane_dims) for e in results]


def lane_bounds(em: PhaseEmitter, idx: Sequence[LaneIndex], extents: Sequence[IVal]) -> SSAValue:
    """Per-lane `0 <= idx < extent` for all indices, as a vector of i1."""
    b = em.b
    uniform = em.in_bounds(
        [x.scalar for x in idx if isinstance(x, Lin) and x.coef == 0],
        [e for x, e in zip(idx, extents, strict=True) if isinstance(x, Lin) and x.coef == 0],
    )
    vt = VectorType(i1, [em.lanes])
    if uniform is False:
        return b.const(0, vt)
    cond: SSAValue | None = None
    for x, e in zip(idx, extents, strict=True):
        if isinstance(x, Lin) and x.coef == 0:
            continue
        ext = b.splat(b.ssa(e), em.lanes)
        cond = b.and_(
            cond, b.add(llvm.ICmpOp(vec_index(em, x), ext, IntegerAttr(ICMP["ult"], i64)))
        )
    if uniform is not True:
        cond = b.and_(cond, b.splat(uniform, em.lanes))
    return b.const(1, vt) if cond is None else cond


@dataclass
class Access:
    """Where the lanes of a simd.load/simd.store go."""

    buf: Buffer
    idx: list[LaneIndex]
    contiguous: IVal | None
    """Offset of lane 0 when the lanes are consecutive elements."""

    def offsets(self, em: PhaseEmitter) -> SSAValue:
        b = em.b
        if all(isinstance(x, Lin) for x in self.idx):
            base: IVal = 0
            coef: IVal = 0
            for x, s in zip(self.idx, self.buf.strides, strict=True):
                assert isinstance(x, Lin)
                base = b.iadd(base, b.imul(x.scalar, s))
                coef = b.iadd(coef, b.imul(x.coef, s))
            if isinstance(coef, int):
                return vec_index(em, Lin(base, coef))
            step = b.add(llvm.MulOp(b.iota(em.lanes), b.splat(coef, em.lanes)))
            return b.add(llvm.AddOp(b.splat(b.ssa(base), em.lanes), step))
        off: SSAValue | None = None
        for x, s in zip(self.idx, self.buf.strides, strict=True):
            term = b.add(llvm.MulOp(vec_index(em, x), b.splat(b.ssa(s), em.lanes)))
            off = term if off is None else b.add(llvm.AddOp(off, term))
        assert off is not None
        return off


def access(em: PhaseEmitter, op: simd.LoadOp | simd.StoreOp) -> Access:
    buf = em.buffer(op.buffer)
    idx = lane_indices(em, op.indices, em.map_results(op))
    contiguous = None
    if all(isinstance(x, Lin) for x in idx) and all(x.coef == 0 for x in idx[:-1]):  # type: ignore[union-attr]
        last = idx[-1]
        assert isinstance(last, Lin)
        if last.coef == 1:
            contiguous = em.offset(buf, [x.scalar for x in idx])  # type: ignore[union-attr]
    return Access(buf, idx, contiguous)


# ---------------------------------------------------------------------------- memory


def _load(em: PhaseEmitter, op: simd.LoadOp) -> None:
    b, lane = em.b, _lane(em)
    acc = access(em, op)
    vt = em.llvm_type(op.result.type)
    assert isinstance(vt, VectorType)
    mask = lane.mask
    padded = op.pad is not None and id(op) not in em.inside
    if padded and _pad_row_load(em, op, acc, vt, mask):
        return
    if padded:
        check = [k for k, inside in enumerate(inside_dims(op)) if not inside]
        mask = b.and_(mask, lane_bounds(em, [acc.idx[k] for k in check],
                                        [acc.buf.dims[k] for k in check]))
        passthru = b.const(op.pad_value, vt)  # type: ignore[arg-type]
    else:
        passthru = b.add_undef(vt)
    if acc.buf.pieces is not None:
        last = acc.idx[-1]
        chunk = None if acc.contiguous is None else (last.scalar, acc.contiguous)  # type: ignore[union-attr]
        em.values[op.result] = pieces_to_llvm.load_lanes(
            em, acc.buf, chunk, lambda: (vec_index(em, last), acc.offsets(em)),
            mask, passthru, vt)
        return
    if acc.contiguous is not None:
        # no `inbounds`: a padded access may point outside the buffer (masked off)
        ptr = b.gep(acc.buf.ptr, acc.contiguous, acc.buf.elem, inbounds=not padded)
        if mask is None:
            em.values[op.result] = b.load(ptr, vt)
            return
        parts = []
        for width, start in _machine_parts(em):  # (a <48 x i1> mask legalizes lane by lane)
            pt = vt if width == em.lanes else VectorType(vt.element_type, [width])
            whole = width == em.lanes
            parts.append(b.intrinsic(
                f"llvm.masked.load.{type_suffix(pt)}.p0",
                [ptr if not start else b.gep(ptr, start, acc.buf.elem, inbounds=not padded),
                 b.const(4, i32), mask if whole else b.lanes_of(mask, start, width),
                 passthru if whole else b.lanes_of(passthru, start, width)],
                pt,
                mangle=False,
            ))
        em.values[op.result] = b.concat(parts)
        return
    mask = mask if mask is not None else b.const(1, VectorType(i1, [em.lanes]))
    em.values[op.result] = b.call(
        f"bs.gather.{type_suffix(vt)}", [acc.buf.ptr, acc.offsets(em), mask, passthru], vt
    )


def _machine_parts(em: PhaseEmitter) -> list[tuple[int, int]]:
    """(lanes, first lane) of the machine vectors a masked access of `em.lanes`
    is made of: one where the lanes are a power of two, else one per vector of
    the target (a register block of 3 vectors)."""
    width = em.scope.target.lanes
    lanes = em.lanes
    if not lanes & (lanes - 1) or lanes % width:
        return [(lanes, 0)]
    return [(width, start) for start in range(0, lanes, width)]


def _pad_row_load(em: PhaseEmitter, op: simd.LoadOp, acc: Access, vt: VectorType,
                  mask: SSAValue | None) -> bool:
    """A padded contiguous load whose point is the same for all lanes (a
    channels-last pixel: only the channel follows the lane) reads a row of pad
    values where the pixel lies outside: a select of addresses, not a mask per
    load, so the load folds into its FMA and the row's condition leaves the
    loop over the window's columns (a depthwise convolution's taps). On x86
    and f32 only (as `loop.load`'s pad rows); False where it does not apply."""
    if (acc.contiguous is None or acc.buf.pieces is not None or vt.element_type != f32
            or em.scope.target.name != "x86-64"):
        return False
    check = [k for k, inside in enumerate(inside_dims(op)) if not inside]
    idx = [acc.idx[k] for k in check]
    if not all(isinstance(x, Lin) and x.coef == 0 for x in idx):
        return False
    b = em.b
    inb = em.in_bounds([x.scalar for x in idx],  # type: ignore[union-attr]
                       [acc.buf.dims[k] for k in check])
    if inb is False:
        em.values[op.result] = b.const(op.pad_value, vt)  # type: ignore[arg-type]
        return True
    # (no `inbounds`: the point may lie outside the buffer; then its address is unused)
    ptr = b.gep(acc.buf.ptr, acc.contiguous, acc.buf.elem, inbounds=inb is True)
    if inb is not True:
        ptr = pad_select(em, op.pad_value, em.lanes, inb, ptr)
    if mask is None:
        em.values[op.result] = b.load(ptr, vt)
    else:
        em.values[op.result] = b.intrinsic(
            f"llvm.masked.load.{type_suffix(vt)}.p0",
            [ptr, b.const(4, i32), mask, b.add_undef(vt)], vt, mangle=False)
    return True


CACHE_LINE = 64
"""Bytes per cache line: `simd.prefetch` issues one `llvm.prefetch` per line."""


def _prefetch(em: PhaseEmitter, op: simd.PrefetchOp) -> None:
    """One `llvm.prefetch` (read, data) per cache line of the lanes' elements,
    where they are consecutive; nothing otherwise (it is a hint)."""
    acc = access(em, op)  # type: ignore[arg-type]
    if acc.contiguous is None or acc.buf.pieces is not None:
        return
    b = em.b
    # no `inbounds`: a prefetch may point past the buffer (it never faults)
    ptr = b.gep(acc.buf.ptr, acc.contiguous, acc.buf.elem, inbounds=False)
    per_line = CACHE_LINE // (acc.buf.elem.bitwidth // 8)  # type: ignore[attr-defined]
    locality = op.locality.value.data
    for k in range(0, em.lanes, per_line):
        line = b.gep(ptr, k, acc.buf.elem, inbounds=False)
        b.add(llvm.CallIntrinsicOp("llvm.prefetch.p0", [
            line, b.const(0, i32), b.const(locality, i32), b.const(1, i32)], []))


def _store(em: PhaseEmitter, op: simd.StoreOp) -> None:
    b, lane = em.b, _lane(em)
    acc = access(em, op)
    if acc.buf.pieces is not None:
        raise NotImplementedError("bs-lower-to-llvm: a store into loop.pieces (read-only)")
    v = em.value(op.value)
    mask = lane.mask
    if op.guard is not None:  # (a uniform condition: a mask of it, no branch)
        mask = b.and_(mask, b.splat(em.value(op.guard), em.lanes))
    if acc.contiguous is not None:
        ptr = b.gep(acc.buf.ptr, acc.contiguous, acc.buf.elem)
        if mask is None:
            b.store(v, ptr)
            return
        for width, start in _machine_parts(em):  # (a <48 x i1> mask legalizes lane by lane)
            part = v if width == em.lanes else b.lanes_of(v, start, width)
            at = ptr if not start else b.gep(ptr, start, acc.buf.elem)
            # (by its mangled name: xDSL's `llvm.masked_store` declares one
            # unmangled intrinsic, which a second vector width then mismatches)
            b.add(llvm.CallIntrinsicOp(
                f"llvm.masked.store.{type_suffix(part.type)}.p0",
                [part, at, b.const(4, i32),
                 mask if width == em.lanes else b.lanes_of(mask, start, width)], []))
        return
    mask = mask if mask is not None else b.const(1, VectorType(i1, [em.lanes]))
    b.call(f"bs.scatter.{type_suffix(v.type)}", [v, acc.buf.ptr, acc.offsets(em), mask], None)


def _in_bounds(em: PhaseEmitter, op: simd.InBoundsOp) -> None:
    idx = lane_indices(em, op.indices, em.map_results(op))
    em.values[op.result] = lane_bounds(em, idx, em.extents(op))


# ---------------------------------------------------------------------------- lane values


def _splat(em: PhaseEmitter, op: simd.SplatOp) -> None:
    em.values[op.result] = em.b.splat(em.value(op.input), em.lanes)


def _iota(em: PhaseEmitter, op: simd.IotaOp) -> None:
    em.values[op.result] = vec_index(em, Lin(em.ival(op.base), 1))


_FLOAT = {
    simd.AddfOp: llvm.FAddOp,
    simd.SubfOp: llvm.FSubOp,
    simd.MulfOp: llvm.FMulOp,
    simd.DivfOp: llvm.FDivOp,
}
_INT = {
    simd.AddiOp: llvm.AddOp,
    simd.SubiOp: llvm.SubOp,
    simd.MuliOp: llvm.MulOp,
    simd.DivsiOp: llvm.SDivOp,
    simd.RemsiOp: llvm.SRemOp,
    simd.AndiOp: llvm.AndOp,
    simd.OriOp: llvm.OrOp,
}


def _binary(em: PhaseEmitter, op: Operation) -> None:
    b = em.b
    lhs, rhs = em.value(op.operands[0]), em.value(op.operands[1])
    t = type(op)
    if t is simd.MulfOp and SUBNORMAL_GRID in op.attributes:
        em.values[op.results[0]] = b.call(f"bs.mul_subnormal.{type_suffix(lhs.type)}",
                                          [lhs, rhs], lhs.type)
    elif (cls := _FLOAT.get(t) or _INT.get(t)) is not None:
        em.values[op.results[0]] = b.add(cls(lhs, rhs))
    elif t is simd.FloordivsiOp:
        em.values[op.results[0]] = b.idiv_floor(lhs, rhs)  # type: ignore[assignment]
    else:
        name = "llvm.smin" if t is simd.MinsiOp else "llvm.smax"
        em.values[op.results[0]] = b.intrinsic(name, [lhs, rhs])


def _negf(em: PhaseEmitter, op: simd.NegfOp) -> None:
    em.values[op.result] = em.b.add(llvm.FNegOp(em.value(op.input)))


_MATH_INTRINSICS = ("exp", "log", "sqrt")


def _gelu_erf_operand(v: SSAValue) -> SSAValue | None:
    """`s` where `v` is `s * splat(f32(sqrt 1/2))`: oneDNN computes GELU's erf from
    s itself, which the rounded product no longer determines."""
    mul = v.owner
    if not isinstance(mul, simd.MulfOp):
        return None
    for s, c in ((mul.lhs, mul.rhs), (mul.rhs, mul.lhs)):
        splat = c.owner
        cst = splat.operands[0].owner if isinstance(splat, simd.SplatOp) else None
        if isinstance(cst, arith.ConstantOp) and isinstance(cst.value, FloatAttr) \
                and cst.value.value.data == GELU_ERF_SCALE:
            return s
    return None


def _math(em: PhaseEmitter, op: simd.MathOp) -> None:
    """`llvm.exp`/`llvm.log`/`llvm.sqrt` (libm per lane), else the helper
    `bs.<fn>`, or `bs.<fn>_<impl>` for an op that names the function whose
    rounding it reproduces in its `MATH_IMPL` attribute (`exp_sleef_u10`:
    PyTorch's vector exp; `exp_libm`: expf per lane, none for all-NaN vectors;
    `erf_onednn`: oneDNN's GELU erf, called on GELU's input s)."""
    x = em.value(op.input)
    fn = str(op.fn_name)
    if isinstance(impl := op.attributes.get(MATH_IMPL), StringAttr):
        fn = f"{fn}_{impl.data}"
        fn = em.scope.target.helper_variants.get(fn, fn)
        if impl.data == ONEDNN:
            if (s := _gelu_erf_operand(op.input)) is None:
                fn = str(op.fn_name)  # not GELU's erf(s * sqrt 1/2): libm per lane
            else:
                x = em.value(s)
    if fn in _MATH_INTRINSICS:
        em.values[op.result] = em.b.intrinsic(f"llvm.{fn}", [x])
    else:
        em.values[op.result] = em.b.call(f"bs.{fn}.{type_suffix(x.type)}", [x], x.type)


def _cmpf(em: PhaseEmitter, op: simd.CmpfOp) -> None:
    lhs, rhs = em.value(op.lhs), em.value(op.rhs)
    em.values[op.result] = em.b.call(
        f"bs.fcmp.{op.predicate_name}.{type_suffix(lhs.type)}",
        [lhs, rhs],
        VectorType(i1, [em.lanes]),
    )


def _cmpi(em: PhaseEmitter, op: simd.CmpiOp) -> None:
    lhs, rhs = em.value(op.lhs), em.value(op.rhs)
    em.values[op.result] = em.b.icmp(op.predicate_name, lhs, rhs)


def _select(em: PhaseEmitter, op: simd.SelectOp) -> None:
    c, lhs, rhs = em.value(op.cond), em.value(op.lhs), em.value(op.rhs)
    em.values[op.result] = em.b.call(f"bs.select.{type_suffix(lhs.type)}", [c, lhs, rhs], lhs.type)


def _sitofp(em: PhaseEmitter, op: simd.SIToFPOp) -> None:
    vt = VectorType(f32, [em.lanes])
    em.values[op.result] = em.b.add(llvm.SIToFPOp(em.value(op.input), vt))


def _reduce(em: PhaseEmitter, op: simd.ReduceOp) -> None:
    b, lane = em.b, _lane(em)
    v = em.value(op.input)
    mask = lane.mask if lane.mask is not None else b.const(1, VectorType(i1, [em.lanes]))
    em.values[op.result] = b.call(f"bs.reduce.{op.kind_name}.{type_suffix(v.type)}", [v, mask], f32)


SIMD_LOWERINGS: dict[type[Operation], OpLowering] = {
    simd.LoopOp: _loop,
    simd.ReduceLoopOp: _reduce_loop,
    simd.LoadOp: _load,
    simd.StoreOp: _store,
    simd.PrefetchOp: _prefetch,
    simd.InBoundsOp: _in_bounds,
    simd.SplatOp: _splat,
    simd.IotaOp: _iota,
    **{t: _binary for t in (*_FLOAT, *_INT, simd.FloordivsiOp, simd.MinsiOp, simd.MaxsiOp)},
    simd.NegfOp: _negf,
    simd.FmaOp: lower_fma,
    simd.MathOp: _math,
    simd.CmpfOp: _cmpf,
    simd.CmpiOp: _cmpi,
    simd.SelectOp: _select,
    simd.SIToFPOp: _sitofp,
    simd.ReduceOp: _reduce,
}  # type: ignore[dict-item]
"""Lowering of each simd op."""

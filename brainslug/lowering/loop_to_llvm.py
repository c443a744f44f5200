"""Lowering of scalar `arith`/`math`/`memref` ops and the `loop` dialect's ops
inside a phase (`LOOP_LOWERINGS`, a table of `phase_emitter.TargetParams.lowerings`).

Index arithmetic is folded while its operands are known constants. A padded
scalar load clamps its address to element 0 when the point is out of bounds and
selects the pad value, so it never reads outside the buffer. `loop.reduce max`
propagates NaN like PyTorch: `acc = (v > acc || isnan(v)) ? v : acc`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from xdsl.dialects import arith, func, llvm, memref
from xdsl.dialects import math as xmath
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    VectorType,
    f32,
    i1,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, BlockArgument, Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineDimExpr,
    AffineExpr,
)

from brainslug.analysis.ranges import inside_dims, value_range
from brainslug.dialects import loop, simd
from brainslug.lowering import pieces_to_llvm
from brainslug.lowering.llvm_builder import PTR, IVal
from brainslug.lowering.phase_emitter import Buffer, LaneState, OpLowering, PhaseEmitter


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


_FLOAT_BIN: dict[type[Operation], type[llvm.AbstractFloatArithOp]] = {
    arith.AddfOp: llvm.FAddOp,
    arith.SubfOp: llvm.FSubOp,
    arith.MulfOp: llvm.FMulOp,
    arith.DivfOp: llvm.FDivOp,
}
_INT_BIN: dict[type[Operation], type[Operation]] = {
    arith.AddiOp: llvm.AddOp,
    arith.SubiOp: llvm.SubOp,
    arith.MuliOp: llvm.MulOp,
    arith.DivSIOp: llvm.SDivOp,
    arith.RemSIOp: llvm.SRemOp,
    arith.AndIOp: llvm.AndOp,
    arith.OrIOp: llvm.OrOp,
    arith.XOrIOp: llvm.XOrOp,
}
_INT_FOLD: dict[type[Operation], Callable[[int, int], int]] = {
    arith.DivSIOp: _trunc_div,
    arith.RemSIOp: lambda a, b: a - b * _trunc_div(a, b),
}
_MATH_INTR = {
    xmath.ExpOp: "llvm.exp",
    xmath.LogOp: "llvm.log",
    xmath.SqrtOp: "llvm.sqrt",
    xmath.AbsFOp: "llvm.fabs",
}
"""Called by mangled name: xDSL translates llvm.intr.exp & co. without a type
suffix, so scalar and vector uses in one module would clash."""
_MATH_LIBM = {xmath.TanhOp: "tanhf", xmath.ErfOp: "erff"}


def _constant(em: PhaseEmitter, op: arith.ConstantOp) -> None:
    v, t = op.value, op.result.type
    if isinstance(t, IndexType) and isinstance(v, IntegerAttr):
        em.values[op.result] = v.value.data
    elif isinstance(v, IntegerAttr | FloatAttr):
        em.values[op.result] = em.b.const(v.value.data, t)
    else:
        raise NotImplementedError(f"bs-lower-to-llvm: constant {v}")


def _float_bin(em: PhaseEmitter, op: Operation) -> None:
    cls = _FLOAT_BIN[type(op)]
    em.values[op.results[0]] = em.b.add(cls(em.value(op.operands[0]), em.value(op.operands[1])))


def lower_fma(em: PhaseEmitter, op: xmath.FmaOp | simd.FmaOp) -> None:
    """`a * b + c` rounded once (`llvm.fma`), on scalars or vectors."""
    em.values[op.results[0]] = em.b.intrinsic("llvm.fma", [em.value(v) for v in op.operands])


def _int_bin(em: PhaseEmitter, op: Operation) -> None:
    b = em.b
    lhs, rhs = em.ival(op.operands[0]), em.ival(op.operands[1])
    res = op.results[0]
    if isinstance(res.type, IndexType):
        t = type(op)
        if isinstance(lhs, int) and isinstance(rhs, int) and t in _INT_FOLD:
            em.values[res] = _INT_FOLD[t](lhs, rhs)
            return
        fold = {
            arith.AddiOp: b.iadd,
            arith.SubiOp: b.isub,
            arith.MuliOp: b.imul,
            arith.FloorDivSIOp: b.idiv_floor,
            arith.MinSIOp: b.imin,
            arith.MaxSIOp: b.imax,
        }.get(t)
        if fold is not None:
            em.values[res] = fold(lhs, rhs)
            return
    lv, rv = b.ssa(lhs), b.ssa(rhs)
    match op:
        case arith.FloorDivSIOp():
            em.values[res] = b.idiv_floor(lv, rv)
        case arith.MinSIOp():
            em.values[res] = b.intrinsic("llvm.smin", [lv, rv])
        case arith.MaxSIOp():
            em.values[res] = b.intrinsic("llvm.smax", [lv, rv])
        case _:
            em.values[res] = b.add(_INT_BIN[type(op)](lv, rv))


_MINMAXF = {
    arith.MaximumfOp: "llvm.maximum",
    arith.MinimumfOp: "llvm.minimum",
    arith.MaxnumfOp: "llvm.maxnum",
    arith.MinnumfOp: "llvm.minnum",
}


def _minmaxf(em: PhaseEmitter, op: Operation) -> None:
    em.values[op.results[0]] = em.b.intrinsic(
        _MINMAXF[type(op)], [em.value(op.operands[0]), em.value(op.operands[1])]
    )


def _negf(em: PhaseEmitter, op: arith.NegfOp) -> None:
    em.values[op.result] = em.b.add(llvm.FNegOp(em.value(op.operand)))


def _cmpf(em: PhaseEmitter, op: arith.CmpfOp) -> None:
    pred = op.predicate.value.data
    em.values[op.result] = em.b.add(
        llvm.FCmpOp(em.value(op.lhs), em.value(op.rhs), IntegerAttr(pred, i64))
    )


def _cmpi(em: PhaseEmitter, op: arith.CmpiOp) -> None:
    pred = arith.CMPI_COMPARISON_OPERATIONS[op.predicate.value.data]
    em.values[op.result] = em.b.icmp(pred, em.ival(op.lhs), em.ival(op.rhs))


def _select(em: PhaseEmitter, op: arith.SelectOp) -> None:
    em.values[op.result] = em.b.add(
        llvm.SelectOp(em.value(op.cond), em.value(op.lhs), em.value(op.rhs))
    )


def _int_width(t: Attribute) -> int:
    return 64 if isinstance(t, IndexType) else t.width.data  # type: ignore[attr-defined]


def _index_cast(em: PhaseEmitter, op: arith.IndexCastOp) -> None:
    src, dst = _int_width(op.input.type), _int_width(op.result.type)
    if src == dst:
        em.values[op.result] = em.ival(op.input)
        return
    v, t = em.value(op.input), em.llvm_type(op.result.type)
    em.values[op.result] = em.b.add(llvm.TruncOp(v, t) if src > dst else llvm.SExtOp(v, t))


def _sitofp(em: PhaseEmitter, op: arith.SIToFPOp) -> None:
    em.values[op.result] = em.b.add(llvm.SIToFPOp(em.value(op.input), op.result.type))


def _math(em: PhaseEmitter, op: Operation) -> None:
    x = em.value(op.operands[0])
    if (name := _MATH_INTR.get(type(op))) is not None:
        em.values[op.results[0]] = em.b.intrinsic(name, [x])
    else:
        em.values[op.results[0]] = em.b.call(_MATH_LIBM[type(op)], [x], f32)


def _dim(em: PhaseEmitter, op: memref.DimOp) -> None:
    d = em.ival(op.index)
    if not isinstance(d, int):
        raise NotImplementedError("bs-lower-to-llvm: memref.dim needs a constant index")
    em.values[op.result] = em.buffer(op.source).dims[d]


def _alloca(em: PhaseEmitter, op: memref.AllocaOp) -> None:
    t = op.memref.type
    assert isinstance(t, MemRefType)
    b = em.b
    # allocas go to the entry block, so their sizes must be known there
    top = em.scope.block
    for x in op.dynamic_sizes:
        if not isinstance(em.values.get(x), int) and x.owner.parent_block() is not top:  # type: ignore[union-attr]
            raise NotImplementedError(
                "bs-lower-to-llvm: memref.alloca sizes must be constants or defined "
                "at the kernel's top level"
            )
    saved, b.block = b.block, b.entry
    sizes = iter(op.dynamic_sizes)
    sites = em.sig.allocas.get(id(op)) if em.sig is not None else None
    dims: list[IVal] = [em.ival(next(sizes)) if s < 0 else s for s in t.get_shape()]
    if sites is not None:  # a generic phase's static dims are its parameters
        dims = [d if p is None else em.param(p) for d, p in zip(dims, sites, strict=True)]
    count = b.ssa(math.prod(d for d in dims if isinstance(d, int)))
    for d in dims:
        if not isinstance(d, int):
            count = b.ssa(b.imul(count, d))
    ptr = b.add(llvm.AllocaOp(count, t.element_type, alignment=64))
    # llvmlite types the alloca (float*) and then rejects vector stores through
    # it; a no-op cast makes it an opaque `ptr` like every other buffer's
    ptr = b.add(llvm.BitcastOp(ptr, PTR))
    em.bufs[op.memref] = em._describe(ptr, dims, t.element_type)
    b.block = saved


def _skip(em: PhaseEmitter, op: Operation) -> None:
    pass


def _nested(em: PhaseEmitter, op: loop.NestOp | loop.TileOp) -> None:
    """A nest or tile inside a phase: plain sequential loops."""
    lbs, ubs = em.domain(op)
    steps = list(op.steps) if isinstance(op, loop.TileOp) else [1] * len(lbs)

    def body(ivs: list[IVal], carried: list[SSAValue]) -> list[SSAValue]:
        for x, v in zip(op.ivs, ivs, strict=True):
            em.values[x] = v
        em.emit_block(op.body.block)
        return carried

    em.loops(lbs, ubs, steps, body)


def reduce_step(em: PhaseEmitter, kind: str, acc: SSAValue, v: SSAValue) -> SSAValue:
    """One step of a `loop.reduce`; `max` propagates NaN like PyTorch."""
    b = em.b
    if kind == "add":
        return b.add(llvm.FAddOp(acc, v))
    if isinstance(acc.type, VectorType):
        return b.call(f"bs.fmax.v{em.lanes}f32", [acc, v], acc.type)
    take = b.add(
        llvm.OrOp(
            b.add(llvm.FCmpOp(v, acc, "ogt")),
            b.add(llvm.FCmpOp(v, v, "uno")),
        )
    )
    return b.add(llvm.SelectOp(take, v, acc))


def contracted_products(op: loop.ReduceOp) -> list[Operation | None]:
    """Per yielded value, the product a*b that accumulates as fma(a, b, acc)
    (with `contract`), else None."""
    term = op.body.block.last_op
    assert isinstance(term, loop.YieldOp)
    return [v.owner if op.contracts and isinstance(v.owner, arith.MulfOp | simd.MulfOp)
            else None for v in term.values]


def reduce_loops(em: PhaseEmitter, op: loop.ReduceOp, lbs: list[IVal], ubs: list[IVal]
                 ) -> list[SSAValue]:
    """The loops of a `loop.reduce` over the box `lbs`..`ubs`: its results."""
    parts, last = _vector_parts(em, op)
    if parts > 1:
        return _reduce_loops_in_parts(em, op, lbs, ubs, parts, last)
    inits = [em.b.const(op.init_value, em.llvm_type(r.type)) for r in op.accumulators]
    kind, products = op.kind_name, contracted_products(op)

    def body(ivs: list[IVal], carried: list[SSAValue]) -> list[SSAValue]:
        for x, v in zip(op.ivs, ivs, strict=True):
            em.values[x] = v
        values = em.emit_block(op.body.block)
        out = []
        for acc, v, prod in zip(carried, values, products, strict=True):
            if prod is None:
                out.append(reduce_step(em, kind, acc, v))
            else:
                a, c = em.value(prod.operands[0]), em.value(prod.operands[1])
                out.append(em.b.intrinsic("llvm.fma", [a, c, acc]))
        return out

    return em.loops(lbs, ubs, [1] * len(lbs), body, inits, op.unrolled_from)


def _vector_parts(em: PhaseEmitter, op: loop.ReduceOp) -> tuple[int, int]:
    """(V, lanes of the last part) where the reduction is a register block's of
    V vectors whose lanes together are no power of two (V = 3: 48 lanes), or
    whose last vector has at most half its lanes active in its only chunk (24
    channels in 2 vectors: 16 + 8), and its body reads no vector from outside;
    else (1, 0). LLVM legalizes a loop-carried `<48 x float>` in 128-bit
    pieces (the loop fills with inserts and spills), while three `<16 x float>`
    accumulators, joined after the loop, compile clean; and a last part of 8
    lanes is a `<8 x float>` FMA, which on a CPU whose 512-bit FMAs take both
    256-bit halves (Zen 4) costs half of a full vector's."""
    block = op.parent_op()
    while block is not None and not isinstance(block, simd.LoopOp):
        block = block.parent_op()
    if block is None or em.lane is None or (v := block.num_vectors) <= 1 or em.lanes % v:
        return 1, 0
    width = em.lanes // v
    last = width
    (lb,), (ub,) = block.lower_bounds(), block.upper_bounds()
    if isinstance(lb, int) and isinstance(ub, int) and 0 < ub - lb <= em.lanes:
        tail = ub - lb - (v - 1) * width  # the active lanes of the last vector
        if 0 < tail <= width // 2:
            last = max(4, 1 << (tail - 1).bit_length())
    if last == width and not em.lanes & (em.lanes - 1):
        return 1, 0
    if not all(isinstance(r.type, simd.VecType) for r in op.accumulators):
        return 1, 0
    inside = set(op.body.walk())
    for inner in inside:
        for x in inner.operands:
            if isinstance(x.type, simd.VecType) and x.owner not in inside \
                    and not (isinstance(x, BlockArgument) and x.block.parent_op() in inside):
                return 1, 0
    return v, last


def _reduce_loops_in_parts(em: PhaseEmitter, op: loop.ReduceOp, lbs: list[IVal],
                           ubs: list[IVal], parts: int, last: int) -> list[SSAValue]:
    """`reduce_loops` with each accumulator carried as `parts` vectors, the
    last of `last` lanes: the body is emitted once per part, on its lanes, and
    the parts are joined after the loops (a narrow last part widened, its
    extra lanes inactive)."""
    lane = em.lane
    assert lane is not None
    whole, b = em.lanes, em.b
    width = whole // parts
    widths = [width] * (parts - 1) + [last]
    kind, products = op.kind_name, contracted_products(op)
    starts = [b.iadd(lane.w, p * width) for p in range(parts)]
    masks = [None if lane.mask is None else b.lanes_of(lane.mask, p * width, widths[p])
             for p in range(parts)]
    try:
        inits = []
        for r in op.accumulators:
            for p in range(parts):
                em.lanes = widths[p]
                inits.append(b.const(op.init_value, em.llvm_type(r.type)))

        def body(ivs: list[IVal], carried: list[SSAValue]) -> list[SSAValue]:
            for x, v in zip(op.ivs, ivs, strict=True):
                em.values[x] = v
            steps: list[list[SSAValue | tuple[SSAValue, SSAValue]]] = []
            for p in range(parts):
                em.lanes = widths[p]
                em.lane = LaneState(lane.iv, starts[p], masks[p])
                em.values[lane.iv] = starts[p]
                values = em.emit_block(op.body.block)
                steps.append([v if prod is None else (em.value(prod.operands[0]),
                                                      em.value(prod.operands[1]))
                              for v, prod in zip(values, products, strict=True)])
            # accumulator by accumulator, all parts of each: a broadcast operand
            # is then used at once by every part (not held across the others)
            out = []
            for k in range(len(products)):
                for p in range(parts):
                    acc, step = carried[k * parts + p], steps[p][k]
                    out.append(b.intrinsic("llvm.fma", [*step, acc]) if isinstance(step, tuple)
                               else reduce_step(em, kind, acc, step))
            return out

        results = em.loops(lbs, ubs, [1] * len(lbs), body, inits, op.unrolled_from)
    finally:
        em.lanes, em.lane = whole, lane
        em.values[lane.iv] = lane.w
    if last < width:  # (the last part's lanes repeated up to a full vector)
        for k in range(len(op.accumulators)):
            r = results[k * parts + parts - 1]
            results[k * parts + parts - 1] = b.add(llvm.ShuffleVectorOp(
                r, r, DenseArrayBase.from_list(i32, [j % last for j in range(width)]),
                VectorType(r.type.element_type, [width])))  # type: ignore[attr-defined]
    return [b.concat(results[k * parts:(k + 1) * parts]) for k in range(len(op.accumulators))]


def _reduce(em: PhaseEmitter, op: loop.ReduceOp) -> None:
    lbs, ubs = em.domain(op)
    for r, v in zip(op.accumulators, reduce_loops(em, op, lbs, ubs), strict=True):
        em.values[r] = v


def _load(em: PhaseEmitter, op: loop.LoadOp) -> None:
    b = em.b
    buf, idx = em.scalar_access(op)
    t = em.llvm_type(op.result.type)
    if buf.pieces is not None:
        em.values[op.result] = _pieces_load(em, op, buf, idx, t)
        return
    off = em.offset(buf, idx)
    if op.pad is None or id(op) in em.inside:
        em.values[op.result] = b.load(b.gep(buf.ptr, off, buf.elem), t)
        return
    pad = b.const(op.pad_value, t)  # type: ignore[arg-type]
    check = [k for k, inside in enumerate(inside_dims(op)) if not inside]
    inb = em.in_bounds([idx[k] for k in check], [buf.dims[k] for k in check])
    if inb is False:
        em.values[op.result] = pad
    elif inb is True:
        em.values[op.result] = b.load(b.gep(buf.ptr, off, buf.elem), t)
    elif em.scope.target.name == "x86-64" and t == f32:
        # an out-of-bounds point reads constant memory holding the pad value: a
        # select of addresses, so a broadcast of the value folds into the load
        row = _pad_row(em, op, buf, check)
        if row is None:
            # (no `inbounds`: the point may lie outside the buffer; then its address is unused)
            addr = b.gep(buf.ptr, off, buf.elem, inbounds=False)
            ptr = pad_select(em, op.pad_value, None, inb, addr)
        else:
            # the channel index selects within a row of pad values: the select
            # depends on the pixel and tap alone, and leaves the reduction over
            # channels (a padded convolution's inner loop)
            span, head_e, tail_e = row
            dims = [em.ival(x) for x in op.indices]
            head = b.gep(buf.ptr, em.offset(buf, [*idx[:-1], em.affine(head_e, dims)]),
                         buf.elem, inbounds=False)
            base = pad_select(em, op.pad_value, span, inb, head)
            ptr = b.gep(base, em.affine(tail_e, dims), buf.elem, inbounds=False)
        em.values[op.result] = b.load(ptr, t)
    else:
        # clamp the address so that an out-of-bounds point reads element 0
        safe = b.add(llvm.SelectOp(inb, b.ssa(off), b.const(0)))
        v = b.load(b.gep(buf.ptr, safe, buf.elem), t)
        em.values[op.result] = b.add(llvm.SelectOp(inb, v, pad))


def pad_select(em: PhaseEmitter, value: float, length: int | None, inside: SSAValue,
               ptr: SSAValue) -> SSAValue:
    """`ptr` where `inside`, else the address of constant memory holding the
    f32 pad `value`: a cell, or a row of `length` of them (`bs.padcell`,
    `bs.padrow`), so a padded load is a select of addresses, not of values."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    name = f"bs.padcell.{bits:08x}" if length is None else f"bs.padrow.{bits:08x}.{length}"
    return em.b.call(name, [inside, ptr], PTR)


PAD_ROW_MAX = 16384
"""Floats in the longest row of pad values a padded load selects into."""


def _terms(e: AffineExpr) -> list[AffineExpr]:
    """The summands of `e`."""
    if isinstance(e, AffineBinaryOpExpr) and e.kind == AffineBinaryOpKind.Add:
        return [*_terms(e.lhs), *_terms(e.rhs)]
    return [e]


def _pad_row(em: PhaseEmitter, op: loop.LoadOp, buf: Buffer, check: list[int]
             ) -> tuple[int, AffineExpr, AffineExpr] | None:
    """A padded load whose checked dims are all but the last (contiguous) one,
    where the last index has a summand that is a reduction's iv with static
    bounds (a convolution's input channel; those bounds are part of the
    generic phase key, so every shape sharing the code has them): the length
    of a row of pad values that covers that iv, at most `PAD_ROW_MAX`, the
    rest of the index (the head, added before the select) and the iv (the
    tail, added after it). Else None."""
    last = len(buf.dims) - 1
    if not check or check[-1] != last - 1 or buf.strides[last] != 1:
        return None
    terms = _terms(em.map_results(op)[last])
    for k, e in enumerate(terms):
        if not isinstance(e, AffineDimExpr):
            continue
        iv = op.indices[e.position]
        if not isinstance(iv.owner, Block) or not isinstance(iv.owner.parent_op(), loop.ReduceOp):
            continue
        span = value_range(iv)
        if span is None or span[0] < 0 or not 1 < span[1] + 1 <= PAD_ROW_MAX:
            return None
        rest = terms[:k] + terms[k + 1:]
        head: AffineExpr = rest[0] if rest else AffineConstantExpr(0)
        for r in rest[1:]:
            head = head + r
        return span[1] + 1, head, e
    return None


def _pieces_load(em: PhaseEmitter, op: loop.LoadOp, buf: Buffer, idx: list[IVal],
                 t: Attribute) -> SSAValue:
    """A scalar load from `loop.pieces` (a point outside reads a clamped one,
    then takes the pad value)."""
    b = em.b
    inb: SSAValue | bool = True
    if op.pad is not None:
        check = [k for k, inside in enumerate(inside_dims(op)) if not inside]
        inb = em.in_bounds([idx[k] for k in check], [buf.dims[k] for k in check])
        if inb is False:
            return b.const(op.pad_value, t)  # type: ignore[arg-type]
    if inb is not True:
        idx = [b.add(llvm.SelectOp(inb, b.ssa(i), b.const(0))) for i in idx]
    v = b.load(pieces_to_llvm.address(em, buf, idx), t)
    if inb is True:
        return v
    return b.add(llvm.SelectOp(inb, v, b.const(op.pad_value, t)))  # type: ignore[arg-type]


def _store(em: PhaseEmitter, op: loop.StoreOp) -> None:
    buf, idx = em.scalar_access(op)
    if buf.pieces is not None:
        raise NotImplementedError("bs-lower-to-llvm: a store into loop.pieces (read-only)")
    em.b.store(em.value(op.value), em.b.gep(buf.ptr, em.offset(buf, idx), buf.elem))


def _in_bounds(em: PhaseEmitter, op: loop.InBoundsOp) -> None:
    dims = [em.ival(x) for x in op.indices]
    idx = [em.affine(e, dims) for e in em.map_results(op)]
    inb = em.in_bounds(idx, em.extents(op))
    em.values[op.result] = em.b.const(int(inb), i1) if isinstance(inb, bool) else inb


LOOP_LOWERINGS: dict[type[Operation], OpLowering] = {
    arith.ConstantOp: _constant,
    **{t: _float_bin for t in _FLOAT_BIN},
    **{t: _int_bin for t in (*_INT_BIN, arith.FloorDivSIOp, arith.MinSIOp, arith.MaxSIOp)},
    **{t: _minmaxf for t in _MINMAXF},
    arith.NegfOp: _negf,
    xmath.FmaOp: lower_fma,
    arith.CmpfOp: _cmpf,
    arith.CmpiOp: _cmpi,
    arith.SelectOp: _select,
    arith.IndexCastOp: _index_cast,
    arith.SIToFPOp: _sitofp,
    **{t: _math for t in (*_MATH_INTR, *_MATH_LIBM)},
    memref.DimOp: _dim,
    memref.AllocaOp: _alloca,
    memref.AllocOp: _skip,
    func.ReturnOp: _skip,
    loop.NestOp: _nested,
    loop.TileOp: _nested,
    loop.ReduceOp: _reduce,
    loop.LoadOp: _load,
    loop.StoreOp: _store,
    loop.InBoundsOp: _in_bounds,
}  # type: ignore[dict-item]

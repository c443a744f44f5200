"""The x86 backend's lowering of `loop.reduce`: the window and padding cases.

- A register block's chunk of one row of taps whose row lies wholly outside
  the image (the first and last rows of a 3×3 sum chunked by rows of taps):
  every column sums the same 0·w products, so one column's sum stands for all
  (`_reads_inside`, `_one_column`).
- A reduction whose body reads a padded channels-last window (a depthwise
  convolution's taps, a pool's) runs in two versions: unchecked where the
  block's whole window lies inside the image, checked elsewhere
  (`_window_inside`).
"""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineDimExpr, AffineExpr

from brainslug.analysis.ranges import inside_dims
from brainslug.analysis.windows import defined_in, linear_in, never_inside
from brainslug.dialects import loop, simd
from brainslug.lowering.llvm_builder import IVal
from brainslug.lowering.loop_to_llvm import contracted_products, reduce_loops
from brainslug.lowering.phase_emitter import PhaseEmitter

FEW_CHANNELS = 4
"""A window of scalar (broadcast) loads runs in two versions only where each
tap sums at most this many channels (a stem's RGB): its pad-row select, once
per pixel and tap, is then a large share of the work. Batch 8, new/old:
MobileNet's 3×3/2 stem 0.70 (batch 1: 0.52), ResNet's 7×7/2 stem 0.86-0.95;
resnet50's 3×3 convolutions, whose taps sum 16 or more channels, 0.99-1.02
(so they keep one version, and their compile time)."""


def _lane_loop(op: Operation) -> simd.LoopOp | None:
    """The `simd.loop` around `op`, if any."""
    lane = op.parent_op()
    while lane is not None and not isinstance(lane, simd.LoopOp):
        lane = lane.parent_op()
    return lane


def _window_inside(em: PhaseEmitter, op: loop.ReduceOp, lbs: list[IVal], ubs: list[IVal]
                   ) -> tuple[SSAValue | bool, list[int]]:
    """(whether every point of the padded loads of `op`'s body lies inside
    its buffer over the whole box `lbs`..`ubs`, those loads' ids) for the
    vector loads whose checked indices are the same in every lane (a
    channels-last window: the pixel is checked, not the channel) and, where
    each tap sums `FEW_CHANNELS` at most, the scalar ones; their checked
    indices must be linear in the reduction's ivs. A linear index takes its
    least and greatest values at the box's corners, so those are checked."""
    b = em.b
    ivs = {iv: k for k, iv in enumerate(op.ivs)}
    lane = _lane_loop(op)
    first, last = op.lower_bounds()[-1], op.upper_bounds()[-1]
    few_channels = (isinstance(first, int) and isinstance(last, int)
                    and last - first <= FEW_CHANNELS)
    lane_iv = lane.iv if lane is not None else None
    # (load, its map's results, its checked dims, the positions of the taps)
    found: list[tuple[Operation, tuple[AffineExpr, ...], list[int], set[int]]] = []
    for ld in op.body.walk():
        if not isinstance(ld, simd.LoadOp | loop.LoadOp) or ld.pad is None or (
                isinstance(ld, loop.LoadOp) and not few_channels):
            continue
        if any(x not in ivs and defined_in(x, op) for x in ld.indices):
            continue
        results = em.map_results(ld)
        checked = [k for k, inside in enumerate(inside_dims(ld)) if not inside]
        box = {p for p, x in enumerate(ld.indices) if x in ivs}
        lanes = {p for p, x in enumerate(ld.indices) if x is lane_iv}
        if not any(lanes & results[k].used_dims() or not linear_in(results[k], box)
                   for k in checked):
            found.append((ld, results, checked, box))
    if not found or never_inside(op, [(ld, checked) for ld, _, checked, _ in found]):
        return False, []
    cond: SSAValue | bool = True
    for ld, results, checked, box in found:
        buf = em.buffer(ld.buffer)
        for k in checked:
            e = results[k]
            used = sorted(box & e.used_dims())
            corners = []
            for bits in range(1 << len(used)):
                # (`e` does not use the lane; the taps take the corner's values below)
                dims: list[IVal] = [0 if x is lane_iv or p in box else em.ival(x)
                                    for p, x in enumerate(ld.indices)]
                for j, p in enumerate(used):
                    d = ivs[ld.indices[p]]
                    dims[p] = b.isub(ubs[d], 1) if bits >> j & 1 else lbs[d]
                corners.append(em.affine(e, dims))
            inb = em.in_bounds(corners, [buf.dims[k]] * len(corners))
            if inb is False:
                return False, []
            if inb is not True:
                cond = inb if cond is True else b.and_(cond, inb)  # type: ignore[arg-type]
    return cond, [id(ld) for ld, _, _, _ in found]


def _padded_factor(op: loop.ReduceOp, product: Operation
                   ) -> tuple[loop.LoadOp | simd.LoadOp, SSAValue] | None:
    """(the factor of `product` that is a zero-padded load of `op`'s body,
    through a `simd.splat`; the other factor), if there is one."""
    for k, f in enumerate(product.operands):
        ld = f.owner
        if isinstance(ld, simd.SplatOp):
            ld = ld.operands[0].owner
        if (isinstance(ld, loop.LoadOp | simd.LoadOp) and ld.pad is not None
                and ld.pad.value.data == 0.0 and defined_in(ld.results[0], op)):
            return ld, product.operands[1 - k]
    return None


def _reads_inside(em: PhaseEmitter, op: loop.ReduceOp, lbs: list[IVal], ubs: list[IVal]
                  ) -> SSAValue | bool | None:
    """For a contraction whose products (a register block's columns) share
    their other factor (the weight row): whether some product's zero-padded
    factor may lie inside its buffer, by its indices that the reduction's box
    does not move. Where none does (a 3×3 sum's chunk of one row of taps, the
    row above or below the image), every column sums the same 0·w products.
    None where this does not apply."""
    if op.kind_name != loop.ReduceKind.ADD or not op.contracts:
        return None
    products = contracted_products(op)
    if not products or any(p is None for p in products):
        return None
    fixed = {iv: lb for iv, lb, ub in zip(op.ivs, lbs, ubs, strict=True)
             if isinstance(lb, int) and isinstance(ub, int) and ub - lb == 1}
    moving = set(op.ivs) - set(fixed)
    lane = _lane_loop(op)
    if lane is not None:
        moving.add(lane.iv)
    some: SSAValue | bool = False
    shared: SSAValue | None = None
    for product in products:
        found = _padded_factor(op, product)  # type: ignore[arg-type]
        if found is None or (shared is not None and found[1] is not shared):
            return None
        ld, shared = found
        results = em.map_results(ld)
        still = {p for p, x in enumerate(ld.indices) if x in moving}
        # (a bare iv, such as the batch, is checked only for want of a proof)
        uniform = [k for k, inside in enumerate(inside_dims(ld))
                   if not inside and not results[k].used_dims() & still
                   and not isinstance(results[k], AffineDimExpr)]
        if not uniform:
            return None
        dims: list[IVal] = [0 if p in still else fixed[x] if x in fixed else em.ival(x)
                            for p, x in enumerate(ld.indices)]
        buf = em.buffer(ld.buffer)
        inb = em.in_bounds([em.affine(results[k], dims) for k in uniform],
                           [buf.dims[k] for k in uniform])
        if inb is True:
            return True
        if inb is not False:
            some = inb if some is False else em.b.add(llvm.OrOp(some, inb))  # type: ignore[arg-type]
    return some


def _one_column(em: PhaseEmitter, op: loop.ReduceOp, lbs: list[IVal], ubs: list[IVal]
                ) -> list[SSAValue]:
    """The sum of `op`'s first product, for every accumulator: where each
    product's padded factor reads only padding (`_reads_inside`), the columns
    sum the same products in the same order, so one column's sum is each
    one's, bit for bit (0 where the weights are finite, NaN where one is not).
    The other columns' loads are dead code."""
    b = em.b
    product = contracted_products(op)[0]
    assert product is not None

    def body(ivs: list[IVal], carried: list[SSAValue]) -> list[SSAValue]:
        for x, v in zip(op.ivs, ivs, strict=True):
            em.values[x] = v
        em.emit_block(op.body.block)
        a, c = em.value(product.operands[0]), em.value(product.operands[1])
        return [b.intrinsic("llvm.fma", [a, c, carried[0]])]

    init = b.const(op.init_value, em.llvm_type(op.accumulators[0].type))
    (acc,) = em.loops(lbs, ubs, [1] * len(lbs), body, [init], op.unrolled_from)
    return [acc] * len(op.accumulators)


def windowed_reduce(em: PhaseEmitter, op: loop.ReduceOp) -> None:
    """The x86 backend's lowering of `loop.reduce`. Where a register block's
    padded factors lie wholly outside the image for this iteration
    (`_reads_inside`: the first and last rows of a 3×3 sum chunked by rows of
    taps), one column's sum stands for all (`_one_column`). A reduction whose
    body reads a padded channels-last window (a depthwise convolution's taps,
    a pool's) runs in two versions: where the whole window lies inside the
    image (each index checked at the box's corners), its loads take no
    padding checks; else they do. The interior blocks of a row then load and
    FMA only."""
    lbs, ubs = em.domain(op)
    reads = _reads_inside(em, op, lbs, ubs)
    if reads is None or reads is True:
        _windowed_reduce(em, op, lbs, ubs)
        return
    b = em.b
    if reads is False:
        for r, v in zip(op.accumulators, _one_column(em, op, lbs, ubs), strict=True):
            em.values[r] = v
        return
    types = [em.llvm_type(r.type) for r in op.accumulators]
    work, padding, done = b.new_block(), b.new_block(), b.new_block(types)
    b.add(llvm.CondBrOp(reads, work, [], padding, []))
    b.block = work
    _windowed_reduce(em, op, lbs, ubs)
    b.add(llvm.BrOp(done, *[em.values[r] for r in op.accumulators]))
    b.block = padding
    b.add(llvm.BrOp(done, *_one_column(em, op, lbs, ubs)))
    b.block = done
    for r, v in zip(op.accumulators, done.args, strict=True):
        em.values[r] = v


def _windowed_reduce(em: PhaseEmitter, op: loop.ReduceOp, lbs: list[IVal], ubs: list[IVal]
                     ) -> None:
    inside, ids = _window_inside(em, op, lbs, ubs)

    def interior() -> list[SSAValue]:
        em.inside.update(ids)
        try:
            return reduce_loops(em, op, lbs, ubs)
        finally:
            em.inside.difference_update(ids)

    if not ids or inside is False:
        results = reduce_loops(em, op, lbs, ubs)
    elif inside is True:
        results = interior()
    else:
        b = em.b
        types = [em.llvm_type(r.type) for r in op.accumulators]
        inner, border, merge = b.new_block(), b.new_block(), b.new_block(types)
        b.add(llvm.CondBrOp(inside, inner, [], border, []))
        b.block = inner
        b.add(llvm.BrOp(merge, *interior()))
        b.block = border
        b.add(llvm.BrOp(merge, *reduce_loops(em, op, lbs, ubs)))
        b.block = merge
        results = list(merge.args)
    for r, v in zip(op.accumulators, results, strict=True):
        em.values[r] = v

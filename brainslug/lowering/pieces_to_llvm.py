"""Reads of `loop.pieces` buffers: like kernel arguments side by side along
their last dim, found through the kernel's slot array.

An index `c` along the last dim is in piece `c / width` at `c % width` (the
width is a number in the code, so the division is a multiply and shifts);
the piece's data pointer is the slot `stride * (c / width)` after the first
piece's. A lane chunk that lies in one piece (always, where the chunks start
at multiples of the lane count: widths are multiples of 16) is one vector
load; one that straddles two pieces, or lanes at other strides, go through
`bs.pieces_gather` (lane by lane). Nothing writes such a buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import llvm
from xdsl.dialects.builtin import VectorType, i1, i32, i64
from xdsl.ir import SSAValue

from brainslug.lowering.llvm_builder import PTR, IVal
from brainslug.lowering.phase_emitter import Buffer, PhaseEmitter, Pieces


def _pieces(buf: Buffer) -> Pieces:
    assert buf.pieces is not None
    return buf.pieces


def _split(em: PhaseEmitter, buf: Buffer, c: IVal) -> tuple[IVal, IVal]:
    """(piece, index in the piece) of index `c` along the last dim (c >= 0)."""
    width = _pieces(buf).width
    if isinstance(c, int):
        return c // width, c % width
    b = em.b
    p = b.add(llvm.UDivOp(b.ssa(c), b.const(width)))
    return p, b.isub(c, b.imul(p, width))


def _piece_pointer(em: PhaseEmitter, buf: Buffer, piece: IVal) -> SSAValue:
    b = em.b
    tab = _pieces(buf)
    return b.load(b.gep(tab.slots, b.imul(piece, tab.stride), i64), PTR, align=8)


def _row(em: PhaseEmitter, buf: Buffer, idx: Sequence[IVal]) -> IVal:
    """The offset in a piece of index `idx[:-1]`, at its last-dim index 0."""
    off: IVal = 0
    for i, s in zip(idx[:-1], buf.strides[:-1], strict=True):
        off = em.b.iadd(off, em.b.imul(i, s))
    return off


def address(em: PhaseEmitter, buf: Buffer, idx: Sequence[IVal]) -> SSAValue:
    """The address of one element (every index in bounds)."""
    piece, at = _split(em, buf, idx[-1])
    base = _piece_pointer(em, buf, piece)
    return em.b.gep(base, em.b.iadd(_row(em, buf, idx), at), buf.elem)


def load_lanes(em: PhaseEmitter, buf: Buffer, idx: Sequence[SSAValue | tuple[IVal, int]],
               mask: SSAValue | None, passthru: SSAValue, vt: VectorType) -> SSAValue:
    """A vector load; `idx` per dim: `(scalar, coef)` where the index is
    `scalar + coef * lane`, else a vector of i64. Masked-off lanes give
    `passthru` and read nothing."""
    b, lanes = em.b, em.lanes
    tab = _pieces(buf)
    if all(isinstance(x, tuple) and x[1] == 0 for x in idx[:-1]) and \
            isinstance(last := idx[-1], tuple) and last[1] == 1:
        c = last[0]
        scalars = [x[0] for x in idx[:-1]]  # type: ignore[index]
        piece, at = _split(em, buf, b.imax(c, 0))
        # the chunk lies in one piece: one load (else lane by lane)
        fits = b.and_(b.icmp("ult", c, buf.dims[-1]),
                      b.icmp("ule", b.iadd(at, lanes), tab.width))
        one, many, join = b.new_block(), b.new_block(), b.new_block([vt])
        b.add(llvm.CondBrOp(fits, one, [], many, []))
        b.block = one
        # (no `inbounds` under a mask: a padded row may lie outside the piece)
        ptr = b.gep(_piece_pointer(em, buf, piece),
                    b.iadd(_row(em, buf, [*scalars, 0]), at), buf.elem, inbounds=mask is None)
        if mask is None:
            v = b.load(ptr, vt)
        else:
            v = b.intrinsic(f"llvm.masked.load.v{lanes}f32.p0",
                            [ptr, b.const(4, i32), mask, passthru], vt, mangle=False)
        b.add(llvm.BrOp(join, v))
        b.block = many
        b.add(llvm.BrOp(join, _gather(em, buf, idx, mask, passthru, vt)))
        b.block = join
        return join.args[0]
    return _gather(em, buf, idx, mask, passthru, vt)


def _vector(em: PhaseEmitter, x: SSAValue | tuple[IVal, int]) -> SSAValue:
    b = em.b
    if isinstance(x, SSAValue):
        return x
    scalar, coef = x
    base = b.splat(b.ssa(scalar), em.lanes)
    return base if coef == 0 else b.add(llvm.AddOp(base, b.iota(em.lanes, coef)))


def _gather(em: PhaseEmitter, buf: Buffer, idx: Sequence[SSAValue | tuple[IVal, int]],
            mask: SSAValue | None, passthru: SSAValue, vt: VectorType) -> SSAValue:
    b, lanes = em.b, em.lanes
    tab = _pieces(buf)
    row: SSAValue | None = None
    for x, s in zip(idx[:-1], buf.strides[:-1], strict=True):
        term = b.add(llvm.MulOp(_vector(em, x), b.splat(b.ssa(s), lanes)))
        row = term if row is None else b.add(llvm.AddOp(row, term))
    if row is None:
        row = b.const(0, VectorType(i64, [lanes]))
    m = mask if mask is not None else b.const(1, VectorType(i1, [lanes]))
    return b.call(f"bs.pieces_gather.v{lanes}f32",
                  [tab.slots, b.const(tab.stride), b.const(tab.width), _vector(em, idx[-1]),
                   row, m, passthru], vt)


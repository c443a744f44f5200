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

from collections.abc import Callable, Sequence

from xdsl.dialects import llvm
from xdsl.dialects.builtin import VectorType, i1, i32, i64
from xdsl.ir import SSAValue

from brainslug.lowering.llvm_builder import PTR, IVal
from brainslug.lowering.phase_emitter import Buffer, PhaseEmitter, Pieces


def _pieces(buf: Buffer) -> Pieces:
    assert buf.pieces is not None
    return buf.pieces


def _piece(em: PhaseEmitter, buf: Buffer, c: IVal) -> IVal:
    """The piece of index `c` (>= 0) along the last dim."""
    width = _pieces(buf).width
    if isinstance(c, int):
        return c // width
    return em.b.add(llvm.UDivOp(em.b.ssa(c), em.b.const(width)))


def _in_piece(em: PhaseEmitter, buf: Buffer, piece: IVal, offset: IVal) -> SSAValue:
    """The address of the element at `offset` (as `em.offset` counts it in the
    whole buffer, with a piece's strides) in piece `piece`."""
    b = em.b
    tab = _pieces(buf)
    base = b.load(b.gep(tab.slots, b.imul(piece, tab.stride), i64), PTR, align=8)
    return b.gep(base, b.isub(offset, b.imul(piece, tab.width)), buf.elem, inbounds=False)


def address(em: PhaseEmitter, buf: Buffer, idx: Sequence[IVal]) -> SSAValue:
    """The address of one element (every index in bounds)."""
    return _in_piece(em, buf, _piece(em, buf, idx[-1]), em.offset(buf, idx))


def load_lanes(em: PhaseEmitter, buf: Buffer, chunk: tuple[IVal, IVal] | None,
               lanes_at: Callable[[], tuple[SSAValue, SSAValue]],
               mask: SSAValue | None, passthru: SSAValue, vt: VectorType) -> SSAValue:
    """A vector load. `chunk`: where the lanes are consecutive along the last
    dim, the first lane's (last-dim index, `em.offset`); `lanes_at` gives every
    lane's (last-dim index, offset) as vectors of i64 (built where they are
    needed). Masked-off lanes give `passthru` and read nothing."""
    b = em.b
    if chunk is None:
        return _gather(em, buf, *lanes_at(), mask, passthru, vt)
    c, offset = chunk
    piece = _piece(em, buf, b.imax(c, 0))
    at = b.isub(c, b.imul(piece, _pieces(buf).width))
    # the chunk lies in one piece: one load (else lane by lane)
    fits = b.and_(b.icmp("ult", c, buf.dims[-1]),
                  b.icmp("ule", b.iadd(at, em.lanes), _pieces(buf).width))
    one, many, join = b.new_block(), b.new_block(), b.new_block([vt])
    b.add(llvm.CondBrOp(fits, one, [], many, []))
    b.block = one
    ptr = _in_piece(em, buf, piece, offset)
    if mask is None:
        v = b.load(ptr, vt)
    else:
        v = b.intrinsic(f"llvm.masked.load.v{em.lanes}f32.p0",
                        [ptr, b.const(4, i32), mask, passthru], vt, mangle=False)
    b.add(llvm.BrOp(join, v))
    b.block = many
    b.add(llvm.BrOp(join, _gather(em, buf, *lanes_at(), mask, passthru, vt)))
    b.block = join
    return join.args[0]


def _gather(em: PhaseEmitter, buf: Buffer, index: SSAValue, offsets: SSAValue,
            mask: SSAValue | None, passthru: SSAValue, vt: VectorType) -> SSAValue:
    b = em.b
    tab = _pieces(buf)
    m = mask if mask is not None else b.const(1, VectorType(i1, [em.lanes]))
    return b.call(f"bs.pieces_gather.v{em.lanes}f32",
                  [tab.slots, b.const(tab.stride), b.const(tab.width), index, offsets, m,
                   passthru], vt)

"""IEEE results in the subnormal range without a subnormal value in the FPU.

A multiply whose operand or result is subnormal takes a microcode path on
current x86 cores (a vector multiply about 15 times slower on this host, an AVX-512 Xeon). Swin's
shifted-window attention is full of them: its mask adds -100, so softmax's
exps are about 1e-44, and so are the quotients. The functions here compute
the same values as the plain operations (round to nearest even, no flushing)
on the grid of the subnormals as integers: a float below 2**-126 is an
integer multiple of 2**-149, and that integer is its bit pattern (up to
2**24 - 1, the integer also gives the normal floats of the lowest binades).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)

SMALLEST_NORMAL_BITS = 0x00800000
"""Bits of 2**-126: a non-negative float's bits below this are a subnormal's."""


def _const(vt: ir.VectorType, v: float | int) -> ir.Constant:
    return ir.Constant(vt, [v] * vt.count)


def _intrinsic(b: ir.IRBuilder, name: str, args: list[ir.Value]) -> ir.Value:
    ftype = ir.FunctionType(args[0].type, [a.type for a in args])
    fn = b.module.globals.get(name) or ir.Function(b.module, ftype, name)
    return b.call(fn, args)


BARRIER_LANES = 8
"""Lanes per empty `asm` that `_opaque` passes a vector through: one ymm
register, on AVX2 and AVX-512 alike (a register block of 64 lanes is split)."""


def _opaque(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """`v`, which LLVM can't see through: a lane chosen so that a multiply stays
    normal is not folded back into a select after the multiply (which would
    run it on the subnormal lanes after all)."""
    n = v.type.count
    if n <= BARRIER_LANES or n % BARRIER_LANES:
        pieces = [v]
    else:
        mask = ir.VectorType(I32, BARRIER_LANES)
        pieces = [b.shuffle_vector(v, v, ir.Constant(mask, list(range(k, k + BARRIER_LANES))))
                  for k in range(0, n, BARRIER_LANES)]
    pieces = [b.call(ir.InlineAsm(ir.FunctionType(p.type, [p.type]), "", "=v,0"), [p])
              for p in pieces]
    while len(pieces) > 1:
        pairs = []
        for a, c in zip(pieces[::2], pieces[1::2], strict=True):
            width = a.type.count * 2
            pairs.append(b.shuffle_vector(a, c, ir.Constant(ir.VectorType(I32, width),
                                                            list(range(width)))))
        pieces = pairs
    return pieces[0]


def _when_any(b: ir.IRBuilder, mask: ir.Value, usual: Callable[[], ir.Value],
              rare: Callable[[], ir.Value]) -> ir.Value:
    """`usual()` for a vector where no lane of `mask` is set, else `rare()`: a
    branch, so that the usual vector pays one test."""
    n = mask.type.count
    any_set = b.icmp_unsigned("!=", b.bitcast(mask, ir.IntType(n)), ir.Constant(ir.IntType(n), 0))
    fn = b.block.function
    usual_block, rare_block, done = (fn.append_basic_block(name)
                                     for name in ("usual", "rare", "either"))
    b.cbranch(any_set, rare_block, usual_block)
    results = []
    for block, make in ((usual_block, usual), (rare_block, rare)):
        b.position_at_end(block)
        results.append((make(), b.block))
        b.branch(done)
    b.position_at_end(done)
    result = b.phi(results[0][0].type)
    for value, block in results:
        result.add_incoming(value, block)
    return result


def _pow2(b: ir.IRBuilder, e: ir.Value, vt: ir.VectorType) -> ir.Value:
    """2**e for integer lanes e in [-126, 127], from its exponent bits."""
    it = ir.VectorType(I32, vt.count)
    return b.bitcast(b.shl(b.add(e, _const(it, 0x7F)), _const(it, 23)), vt)


def _from_grid(b: ir.IRBuilder, t: ir.Value, vt: ir.VectorType) -> ir.Value:
    """The float t * 2**-149 for integral t in [0, 2**24): its bits are t."""
    return b.bitcast(b.fptosi(t, ir.VectorType(I32, vt.count)), vt)


def ldexp_sleef(b: ir.IRBuilder, u: ir.Value, q: ir.Value) -> ir.Value:
    """u * 2**(q >> 1) * 2**(q - (q >> 1)), Sleef's `vldexp2`: exact where the
    result is a normal float (a subnormal one takes the slow microcode path)."""
    it = q.type
    half = b.ashr(q, _const(it, 1))
    return b.fmul(b.fmul(u, _pow2(b, half, u.type)), _pow2(b, b.sub(q, half), u.type))


def ldexp_rounded(b: ir.IRBuilder, u: ir.Value, q: ir.Value) -> ir.Value:
    """u * 2**q rounded once, for u in [0.5, 2) (or NaN) and integer lanes q,
    as Sleef's `vldexp2` computes it (u * 2**(q >> 1) * 2**(q - (q >> 1))),
    bit for bit. Where some q < -125 the result may be subnormal, and a branch
    takes those vectors: for q >= -151 the result is round-to-nearest-even of
    the exact u * 2**(q + 149) on the integer grid; below that (and for NaN's
    clamped q) the caller's cut-off applies, and the lane computes u alone.
    Other vectors multiply as Sleef does."""
    vt = u.type
    it = q.type

    def sleef(qv: ir.Value) -> ir.Value:
        return ldexp_sleef(b, u, qv)

    low = b.icmp_signed("<", q, _const(it, -125))

    def on_grid() -> ir.Value:
        normal = sleef(_opaque(b, b.select(low, _const(it, 0), q)))
        grid = b.and_(low, b.icmp_signed(">", q, _const(it, -152)))
        shift = b.select(grid, b.add(q, _const(it, 149)), _const(it, 0))
        scaled = b.select(grid, b.fmul(u, _pow2(b, shift, vt)), _const(vt, 0.0))
        t = _intrinsic(b, f"llvm.roundeven.v{vt.count}f32", [scaled])
        return b.select(grid, _from_grid(b, t, vt), normal)

    return _when_any(b, low, lambda: sleef(q), on_grid)


def _mul_on_grid(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """x * y rounded once, for 0 <= x < 2**-102 and y in [2**-24, 2**24]:
    M = x * 2**149 exactly (from x's bits where x is subnormal), then the
    exact product M * y = hi + lo (an FMA gives lo), rounded to the integer
    grid (or, at 2**23 and above, a normal float: hi scaled back)."""
    vt = x.type
    it = ir.VectorType(I32, vt.count)
    bits = b.bitcast(x, it)
    subnormal = b.icmp_signed("<", bits, _const(it, SMALLEST_NORMAL_BITS))
    normal_x = _opaque(b, b.select(subnormal, _const(vt, 1.0), x))
    m = b.select(subnormal, b.sitofp(bits, vt),
                 b.fmul(b.fmul(normal_x, _const(vt, 2.0 ** 100)), _const(vt, 2.0 ** 49)))
    hi = b.fmul(m, y)
    lo = _intrinsic(b, f"llvm.fma.v{vt.count}f32", [m, y, b.fneg(hi)])
    floor = _intrinsic(b, f"llvm.floor.v{vt.count}f32", [hi])
    tie = b.fcmp_ordered("==", b.fsub(hi, floor), _const(vt, 0.5))
    nearest = _intrinsic(b, f"llvm.roundeven.v{vt.count}f32", [hi])
    up = b.and_(tie, b.fcmp_ordered(">", lo, _const(vt, 0.0)))
    down = b.and_(tie, b.fcmp_ordered("<", lo, _const(vt, 0.0)))
    t = b.select(up, b.fadd(floor, _const(vt, 1.0)), b.select(down, floor, nearest))
    on_grid = b.fcmp_ordered("<", hi, _const(vt, 2.0 ** 23))
    t = b.select(on_grid, t, _const(vt, 0.0))
    # (a lane on the grid scales 2**30 instead: hi * 2**-149 would be subnormal)
    normal_hi = _opaque(b, b.select(on_grid, _const(vt, 2.0 ** 30), hi))
    scaled_back = b.fmul(b.fmul(normal_hi, _const(vt, 2.0 ** -100)), _const(vt, 2.0 ** -49))
    return b.select(on_grid, _from_grid(b, t, vt), scaled_back)


def mul_subnormal(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    """`bs.mul_subnormal.vNf32(x, y)`: x * y, the same IEEE product as `fmul`.
    Lanes where |x| < 2**-102 and y is in [2**-24, 2**24] (there the product
    may be subnormal: softmax's quotient e * (1 / sum) of a masked row) are
    computed by `_mul_on_grid` when any lane is such; the others by `fmul`
    with 1 in those lanes, so no operand or result in the FPU is subnormal
    (where y is out of that range, a plain `fmul` gives the same value)."""
    x, y = fn.args
    vt = x.type
    it = ir.VectorType(I32, vt.count)
    bits = b.bitcast(x, it)
    magnitude = b.and_(bits, _const(it, 0x7FFFFFFF))
    y_ok = b.and_(b.fcmp_ordered(">=", y, _const(vt, 2.0 ** -24)),
                  b.fcmp_ordered("<=", y, _const(vt, 2.0 ** 24)))
    # |x| in (0, 2**-102): a zero multiplies in the FPU as it is
    tiny = b.and_(b.icmp_unsigned("<", b.sub(magnitude, _const(it, 1)),
                                  _const(it, 0x0C800000 - 1)), y_ok)
    plain = b.fmul(_opaque(b, b.select(tiny, _const(vt, 1.0), x)), y)

    def on_grid() -> ir.Value:
        # the other lanes compute 0 * 1 there: no subnormal y reaches the FPU either
        x_grid = b.bitcast(b.select(tiny, magnitude, _const(it, 0)), vt)
        product = _mul_on_grid(b, x_grid, _opaque(b, b.select(tiny, y, _const(vt, 1.0))))
        sign = b.and_(bits, _const(it, -0x80000000))
        return b.select(tiny, b.bitcast(b.or_(b.bitcast(product, it), sign), vt), plain)

    return _when_any(b, tiny, lambda: plain, on_grid)

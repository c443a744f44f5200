"""Sleef's `tanhf_u10` in vector code: PyTorch's `Vectorized<float>::tanh`.

PyTorch's AVX-512 and AVX2 builds compute a vector's tanh with
`Sleef_tanhf16_u10` (`Sleef_tanhf8_u10`): GELU's tanh form, and every kernel
that calls `Vectorized::tanh`. Sleef works in double-float arithmetic (a value
is an unevaluated sum hi + lo of two floats, src/libm/df.h, in its FMA
variant): exp(|x|) as a double-float, then (e - 1/e) / (e + 1/e), rounded to
one float at the end. Every step here is the same IEEE operation in the same
order (no fast-math flags, so LLVM neither reassociates nor contracts), so the
result is Sleef's bit for bit; `tests/test_vector_math.py` compares it with
the function PyTorch ships on every float32 input below the cut-off.
"""

from __future__ import annotations

import struct

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)

DF = tuple[ir.Value, ir.Value]
"""A double-float (hi, lo)."""


def _f32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


TANH_CUTOFF = _f32(8.664339742)
"""Above this |x| (or where the double-float result is NaN), tanh is +-1."""

SLEEF_EXPK2F = {
    "r_ln2": _f32(1.442695040888963407359924681001892137426645954152985934135449406931),
    "l2u": _f32(0.693145751953125),
    "l2l": _f32(1.428606765330187045e-06),
    "poly": tuple(_f32(c) for c in (0.1980960224e-3, 0.1394256484e-2, 0.8333456703e-2,
                                    0.4166637361e-1)),
    "c3": _f32(0.166666659414234244790680580464),
}
"""The constants of Sleef's `expk2f` (exp of a double-float): 1/ln 2, ln 2 in two
parts, the degree-3 polynomial (highest power first) and the x**3 coefficient
that it is added to in double-float."""


class _Ops:
    """IEEE float operations on vectors of one type, and Sleef's double-float
    arithmetic (df.h, with FMA) built from them."""

    def __init__(self, b: ir.IRBuilder, vt: ir.VectorType) -> None:
        self.b, self.vt = b, vt

    def k(self, v: float) -> ir.Constant:
        return ir.Constant(self.vt, [v] * self.vt.count)

    def add(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fadd(x, y)

    def sub(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fsub(x, y)

    def mul(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fmul(x, y)

    def fma(self, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        """x * y + z, rounded once."""
        name = f"llvm.fma.v{self.vt.count}f32"
        fn = self.b.module.globals.get(name) or ir.Function(
            self.b.module, ir.FunctionType(self.vt, [self.vt] * 3), name)
        return self.b.call(fn, [x, y, z])

    def fmapn(self, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        """x * y - z, rounded once (Sleef's `vfmapn`, `vfmsub`)."""
        return self.fma(x, y, self.b.fneg(z))

    def fmanp(self, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        """z - x * y, rounded once (Sleef's `vfmanp`, `vfnmadd`)."""
        return self.fma(self.b.fneg(x), y, z)

    def rec(self, x: ir.Value) -> ir.Value:
        return self.b.fdiv(self.k(1.0), x)

    # double-float arithmetic, named as in df.h

    def add2_df_f(self, x: DF, y: ir.Value) -> DF:
        """`dfadd2_vf2_vf2_vf`: x + y for any magnitudes."""
        rx = self.add(x[0], y)
        v = self.sub(rx, x[0])
        ry = self.add(self.sub(x[0], self.sub(rx, v)), self.sub(y, v))
        return rx, self.add(ry, x[1])

    def add2_df_df(self, x: DF, y: DF) -> DF:
        """`dfadd2_vf2_vf2_vf2`: x + y for any magnitudes."""
        rx = self.add(x[0], y[0])
        v = self.sub(rx, x[0])
        ry = self.add(self.sub(x[0], self.sub(rx, v)), self.sub(y[0], v))
        return rx, self.add(ry, self.add(x[1], y[1]))

    def add_f_df(self, x: ir.Value, y: DF) -> DF:
        """`dfadd_vf2_vf_vf2`: x + y where |x| >= |y|."""
        rx = self.add(x, y[0])
        return rx, self.add(self.add(self.sub(x, rx), y[0]), y[1])

    def add_df_df(self, x: DF, y: DF) -> DF:
        """`dfadd_vf2_vf2_vf2`: x + y where |x| >= |y|."""
        rx = self.add(x[0], y[0])
        return rx, self.add(self.add(self.add(self.sub(x[0], rx), y[0]), x[1]), y[1])

    def mul_df_f(self, x: DF, y: ir.Value) -> DF:
        """`dfmul_vf2_vf2_vf`."""
        rx = self.mul(x[0], y)
        return rx, self.fma(x[1], y, self.fmapn(x[0], y, rx))

    def mul_df_df(self, x: DF, y: DF) -> DF:
        """`dfmul_vf2_vf2_vf2`."""
        rx = self.mul(x[0], y[0])
        return rx, self.fma(x[0], y[1], self.fma(x[1], y[0], self.fmapn(x[0], y[0], rx)))

    def squ_df(self, x: DF) -> DF:
        """`dfsqu_vf2_vf2`."""
        rx = self.mul(x[0], x[0])
        return rx, self.fma(self.add(x[0], x[0]), x[1], self.fmapn(x[0], x[0], rx))

    def rec_df(self, d: DF) -> DF:
        """`dfrec_vf2_vf2`: 1 / d."""
        qx = self.rec(d[0])
        return qx, self.mul(qx, self.fmanp(d[1], qx, self.fmanp(d[0], qx, self.k(1.0))))

    def div_df(self, n: DF, d: DF) -> DF:
        """`dfdiv_vf2_vf2_vf2`: n / d."""
        t = self.rec(d[0])
        qx = self.mul(n[0], t)
        u = self.fmapn(t, n[0], qx)
        qy = self.fmanp(d[1], t, self.fmanp(d[0], t, self.k(1.0)))
        return qx, self.fma(qx, qy, self.fma(n[1], t, u))


def _expk2f_of_nonnegative(o: _Ops, y: ir.Value) -> DF:
    """Sleef's `expk2f((y, 0))` for y >= 0 up to `TANH_CUTOFF`: q = rint(y / ln 2),
    s = y - q ln 2 in double-float, 1 + s + s**2 (1/2 + s (c3 + s p(s))), then
    both parts times 2**q (exact for these q). Lanes beyond the cut-off (or
    NaN) compute something finite or NaN that the caller replaces."""
    c = SLEEF_EXPK2F
    b, vt = o.b, o.vt
    n = vt.count
    # Sleef's cvtps2dq: to nearest even; clamped (NaN to 0) so that the integer
    # is defined in every lane, which changes no lane the caller keeps
    r = b.call(o.b.module.globals.get(f"llvm.roundeven.v{n}f32") or ir.Function(
        b.module, ir.FunctionType(vt, [vt]), f"llvm.roundeven.v{n}f32"), [o.mul(y, o.k(c["r_ln2"]))])
    r = b.select(b.fcmp_unordered("<", r, o.k(0.0)), o.k(0.0), r)
    r = b.select(b.fcmp_ordered(">", r, o.k(64.0)), o.k(64.0), r)
    it = ir.VectorType(I32, n)
    q = b.fptosi(r, it)
    qf = b.sitofp(q, vt)
    s = o.add2_df_f((y, o.k(0.0)), o.mul(qf, o.k(-c["l2u"])))
    s = o.add2_df_f(s, o.mul(qf, o.k(-c["l2l"])))
    poly = c["poly"]
    u = o.k(poly[0])
    for coef in poly[1:]:
        u = o.fma(u, s[0], o.k(coef))
    t = o.add2_df_f(o.mul_df_f(s, u), o.k(c["c3"]))
    t = o.add2_df_f(o.mul_df_df(s, t), o.k(0.5))
    t = o.add2_df_df(s, o.mul_df_df(o.squ_df(s), t))
    t = o.add_f_df(o.k(1.0), t)
    # Sleef's vldexp2: two multiplies by powers of 2, exact here (0 <= q <= 64)
    half = b.ashr(q, ir.Constant(it, [1] * n))
    p1 = b.bitcast(b.shl(b.add(half, ir.Constant(it, [127] * n)), ir.Constant(it, [23] * n)), vt)
    p2 = b.bitcast(b.shl(b.add(b.sub(q, half), ir.Constant(it, [127] * n)),
                         ir.Constant(it, [23] * n)), vt)
    return o.mul(o.mul(t[0], p1), p2), o.mul(o.mul(t[1], p1), p2)


def sleef_tanhf_u10(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Sleef's `tanhf_u10` on a vector of f32, bit for bit: e = exp(|x|) and its
    reciprocal in double-float, (e - 1/e) / (e + 1/e), hi + lo; 1 beyond
    `TANH_CUTOFF` (and where that is NaN: |x| = inf), x's sign put back; NaN
    stays NaN (all bits set, as Sleef's mask gives)."""
    vt = x.type
    o = _Ops(b, vt)
    it = ir.VectorType(I32, vt.count)
    bits = b.bitcast(x, it)
    sign = b.and_(bits, ir.Constant(it, [-0x80000000] * vt.count))
    y = b.bitcast(b.and_(bits, ir.Constant(it, [0x7FFFFFFF] * vt.count)), vt)
    d = _expk2f_of_nonnegative(o, y)
    e = o.rec_df(d)
    d = o.div_df(o.add_df_df(d, (b.fneg(e[0]), b.fneg(e[1]))), o.add_df_df(d, e))
    r = o.add(d[0], d[1])
    one = b.or_(b.fcmp_ordered(">", y, o.k(TANH_CUTOFF)), b.fcmp_unordered("uno", r, r))
    r = b.select(one, o.k(1.0), r)
    r = b.xor(b.bitcast(r, it), sign)
    nan = b.fcmp_unordered("uno", x, x)
    return b.bitcast(b.select(nan, ir.Constant(it, [-1] * vt.count), r), vt)

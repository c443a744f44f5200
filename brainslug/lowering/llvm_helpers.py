"""Definitions of the target-independent `bs.*` helpers in llvmlite IR.

The lowering calls a helper wherever the xDSL `llvm` dialect has no op for what
it needs (vector compares and selects, gathers, lane reductions). After
`convert_module` the helpers are declarations; `define_helpers` gives each a
body (internal, `alwaysinline`, so LLVM's O3 inlines them). Every helper
computes exactly what the equivalent scalar C code does: no fast-math flags.

Helpers, for a vector type `vN<T>` of N lanes:

- `bs.fcmp.<pred>.vNf32(a, b) -> <N x i1>`: `fcmp <pred>` (arith.cmpf predicates)
- `bs.select.vN<T>(<N x i1> c, a, b)`: lane-wise select
- `bs.fmax.vNf32(acc, v)`: `(v > acc || isnan(v)) ? v : acc`, the max-reduction step
- `bs.reduce.add.vNf32(v, <N x i1> m) -> float`: active lanes summed in lane order
- `bs.reduce.max.vNf32(v, <N x i1> m) -> float`: active lanes folded with the max step
- `bs.reduce_halves.<add|max>.vNf32(v) -> float`: lane i combined with lane i + N/2,
  then i + N/4, ... down to lane 0, as PyTorch's `vec_reduce_all` combines a vector
- `bs.gather.vNf32(ptr p, <N x i64> off, <N x i1> m, passthru)`: p[off] where m
- `bs.scatter.vNf32(v, ptr p, <N x i64> off, <N x i1> m)`: p[off] = v where m
- `bs.pieces_gather.vNf32(ptr slots, i64 stride, i64 width, <N x i64> c, <N x i64> off,
  <N x i1> m, passthru)`: lane i reads `piece[off - width * (c / width)]` of
  piece `c / width` (c: the last-dim index, off: the offset with a piece's
  strides), whose data pointer is at `slots[stride * (c / width)]`, where m
  (a `loop.pieces` buffer; `pieces_to_llvm`)
- `bs.<fn>.vNf32(v)` with fn in `lane_functions`: a scalar function per lane
  (`bs.exp_libm`: libm's expf per lane, skipped when every lane is NaN)
- `bs.exp_sleef_u10.vNf32(v)`: Sleef's `expf_u10` (PyTorch's vector exp), in vector code
- `bs.exp_sleef_u10_normal.vNf32(v)`: the same for arguments >= -87 (normal results)
- `bs.exp_sleef_u10_scalef.vNf32(v)`: the same with AVX-512's `vscalefps` (16k lanes)
- `bs.mul_subnormal.vNf32(x, y)`: `fmul`'s product, where it or x is subnormal computed
  on the integer grid of the subnormals (`llvm_subnormal`)
- `bs.tanh_sleef_u10.vNf32(v)`: Sleef's `tanhf_u10` (PyTorch's vector tanh), in vector
  code (`llvm_sleef_tanh`)
- `bs.erf_aten.vNf32(v)`: PyTorch's own `Vectorized<float>::erf`, in vector code
- `bs.padcell.<hex>(i1 inside, ptr p) -> ptr`: `p` when inside, else the address
  of a constant float whose bits are <hex> (a padded load reads it instead of
  selecting its value, so a broadcast still folds into the load)
- `bs.padrow.<hex>.<n>(i1 inside, ptr p) -> ptr`: `p` when inside, else the
  address of a constant row of n floats whose bits are <hex> (a padded load
  whose channels stay inside selects its row once for all of them)
- `bs.erf_onednn.vNf32(s)`: erf(s / sqrt 2) as oneDNN's GELU computes it, from s
  (a backend gives its table lookup: `lookup_per_lane` or a permute)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from llvmlite import ir

from brainslug.lowering.llvm_sleef_tanh import sleef_tanhf_u10
from brainslug.lowering.llvm_subnormal import ldexp_rounded, ldexp_sleef, mul_subnormal

HelperBody = Callable[[ir.IRBuilder, ir.Function, list[str]], ir.Value | None]

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()

_FCMP = {
    "oeq": (True, "=="),
    "ogt": (True, ">"),
    "oge": (True, ">="),
    "olt": (True, "<"),
    "ole": (True, "<="),
    "one": (True, "!="),
    "ord": (True, "ord"),
    "ueq": (False, "=="),
    "ugt": (False, ">"),
    "uge": (False, ">="),
    "ult": (False, "<"),
    "ule": (False, "<="),
    "une": (False, "!="),
    "uno": (False, "uno"),
}


def fcmp(b: ir.IRBuilder, pred: str, x: ir.Value, y: ir.Value) -> ir.Value:
    """`fcmp pred x, y` for arith.cmpf predicate names, scalars or vectors."""
    if pred in ("false", "true"):
        t = ir.VectorType(I1, x.type.count) if isinstance(x.type, ir.VectorType) else I1
        return ir.Constant(
            t, [pred == "true"] * t.count if isinstance(t, ir.VectorType) else pred == "true"
        )
    ordered, op = _FCMP[pred]
    return b.fcmp_ordered(op, x, y) if ordered else b.fcmp_unordered(op, x, y)


def max_step(b: ir.IRBuilder, acc: ir.Value, v: ir.Value) -> ir.Value:
    """PyTorch's NaN-propagating max: `(v > acc || isnan(v)) ? v : acc`."""
    take = b.or_(b.fcmp_ordered(">", v, acc), b.fcmp_unordered("uno", v, v))
    return b.select(take, v, acc)


def splat(b: ir.IRBuilder, x: ir.Value, n: int) -> ir.Value:
    vt = ir.VectorType(x.type, n)
    v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
    return b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), [0] * n))


def declare(module: ir.Module, name: str, ftype: ir.FunctionType) -> ir.Function:
    if name in module.globals:
        return module.globals[name]  # type: ignore[return-value]
    return ir.Function(module, ftype, name)


def _lanes(fn: ir.Function) -> int:
    return fn.ftype.args[0].count


def _fcmp(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return fcmp(b, parts[2], *fn.args)


def _select(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return b.select(*fn.args)


def _fmax(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return max_step(b, *fn.args)


def _reduce(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    v, mask = fn.args
    n = _lanes(fn)
    if parts[2] == "add":
        # -0.0 is the exact identity of fadd; the intrinsic without reassoc is ordered
        live = b.select(mask, v, ir.Constant(v.type, [-0.0] * n))
        red = declare(
            b.module, f"llvm.vector.reduce.fadd.v{n}f32", ir.FunctionType(F32, [F32, v.type])
        )
        return b.call(red, [ir.Constant(F32, -0.0), live])
    live = b.select(mask, v, ir.Constant(v.type, [float("-inf")] * n))
    acc = ir.Constant(F32, float("-inf"))
    for lane in range(n):
        acc = max_step(b, acc, b.extract_element(live, ir.Constant(I32, lane)))
    return acc


def _reduce_halves(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    (v,) = fn.args
    n = _lanes(fn)
    step = n // 2
    while step:
        other = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n),
                                                   [lane ^ step for lane in range(n)]))
        v = b.fadd(v, other) if parts[2] == "add" else max_step(b, v, other)
        step //= 2
    return b.extract_element(v, ir.Constant(I32, 0))


def _lane_pointers(b: ir.IRBuilder, base: ir.Value, offsets: ir.Value) -> ir.Value:
    # not `inbounds`: masked-off lanes may point outside the buffer
    ptrs = b.gep(base, [offsets], inbounds=False, source_etype=F32)
    ptrs.type = ir.VectorType(PTR, offsets.type.count)  # llvmlite infers a scalar ptr
    return ptrs


def _gather(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    base, offsets, mask, passthru = fn.args
    n = offsets.type.count
    ptrs = _lane_pointers(b, base, offsets)
    intr = declare(
        b.module,
        f"llvm.masked.gather.v{n}f32.v{n}p0",
        ir.FunctionType(passthru.type, [ptrs.type, I32, mask.type, passthru.type]),
    )
    return b.call(intr, [ptrs, ir.Constant(I32, 4), mask, passthru])


def _pieces_gather(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    slots, stride, width, c, off, mask, passthru = fn.args
    n = c.type.count
    ptrs = ir.Constant(ir.VectorType(PTR, n), ir.Undefined)
    for lane in range(n):
        i = ir.Constant(I32, lane)
        on = b.extract_element(mask, i)
        # a masked-off lane reads (nothing at) the first piece's first element
        cl = b.select(on, b.extract_element(c, i), ir.Constant(I64, 0))
        ol = b.select(on, b.extract_element(off, i), ir.Constant(I64, 0))
        piece = b.udiv(cl, width)
        slot = b.gep(slots, [b.mul(piece, stride)], inbounds=True, source_etype=I64)
        base = b.load(slot, typ=PTR, align=8)
        at = b.sub(ol, b.mul(piece, width))
        ptrs = b.insert_element(ptrs, b.gep(base, [at], inbounds=False, source_etype=F32), i)
    intr = declare(
        b.module,
        f"llvm.masked.gather.v{n}f32.v{n}p0",
        ir.FunctionType(passthru.type, [ptrs.type, I32, mask.type, passthru.type]),
    )
    return b.call(intr, [ptrs, ir.Constant(I32, 4), mask, passthru])


def _scatter(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> None:
    value, base, offsets, mask = fn.args
    n = offsets.type.count
    ptrs = _lane_pointers(b, base, offsets)
    intr = declare(
        b.module,
        f"llvm.masked.scatter.v{n}f32.v{n}p0",
        ir.FunctionType(ir.VoidType(), [value.type, ptrs.type, I32, mask.type]),
    )
    b.call(intr, [value, ptrs, ir.Constant(I32, 4), mask])
    return None


def per_lane(scalar: str) -> HelperBody:
    """A helper body that calls the scalar function `scalar` (e.g. libm's tanhf) per lane."""

    def body(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
        (v,) = fn.args
        callee = declare(b.module, scalar, ir.FunctionType(F32, [F32]))
        out = ir.Constant(v.type, ir.Undefined)
        for lane in range(v.type.count):
            idx = ir.Constant(I32, lane)
            out = b.insert_element(out, b.call(callee, [b.extract_element(v, idx)]), idx)
        return out

    return body


def per_lane_unless_all_nan(scalar: str) -> HelperBody:
    """`per_lane(scalar)`, but a vector whose lanes are all NaN gives `v + v`
    without a call (what libm's expf returns for a NaN): a formula that feeds
    NaN to the lanes whose result it discards pays for the calls only where a
    lane is live."""
    lanes_body = per_lane(scalar)

    def body(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
        (v,) = fn.args
        n = v.type.count
        nan = b.bitcast(b.fcmp_unordered("uno", v, v), ir.IntType(n))
        all_nan = b.icmp_unsigned("==", nan, ir.Constant(ir.IntType(n), (1 << n) - 1))
        fast, slow, done = (fn.append_basic_block(k) for k in ("all_nan", "lanes", "done"))
        b.cbranch(all_nan, fast, slow)
        b.position_at_end(fast)
        quiet = b.fadd(v, v)
        b.branch(done)
        b.position_at_end(slow)
        called = lanes_body(b, fn, parts)
        slow_end = b.block
        b.branch(done)
        b.position_at_end(done)
        phi = b.phi(v.type)
        phi.add_incoming(quiet, fast)
        phi.add_incoming(called, slow_end)
        return phi

    return body


def _f32(v: float) -> float:
    """`v` rounded to float32 (Sleef's constants are float literals)."""
    return struct.unpack("f", struct.pack("f", v))[0]


SLEEF_EXPF = {
    "r_ln2": _f32(1.442695040888963407359924681001892137426645954152985934135449406931),
    "l2u": _f32(0.693145751953125),
    "l2l": _f32(1.428606765330187045e-06),
    "poly": tuple(_f32(c) for c in (
        0.000198527617612853646278381, 0.00139304355252534151077271,
        0.00833336077630519866943359, 0.0416664853692054748535156,
        0.166666671633720397949219, 0.5,
    )),
}
"""The float32 constants of Sleef's `xexpf` (src/libm/sleefsimdsp.c): 1/ln 2, ln 2 in
two parts (Cody-Waite) and the degree-6 polynomial, highest power first."""


def _vconst(vt: ir.VectorType, v: float | int) -> ir.Constant:
    return ir.Constant(vt, [v] * vt.count)


def _vcall(b: ir.IRBuilder, name: str, args: list[ir.Value], ret: ir.Type | None = None) -> ir.Value:
    """A call of the LLVM intrinsic `name` (declared on first use)."""
    ftype = ir.FunctionType(ret or args[0].type, [a.type for a in args])
    return b.call(declare(b.module, name, ftype), args)


def _fma(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """`x * y + z` rounded once (`vfmadd`)."""
    return _vcall(b, f"llvm.fma.v{x.type.count}f32", [x, y, z])


def _sleef_mantissa(b: ir.IRBuilder, d: ir.Value, qf: ir.Value) -> ir.Value:
    """Sleef's exp(d - q ln 2) for q = `qf`: s = d - q ln 2 in two fused steps,
    then 1 + (s*s * p(s) + s), every step of Horner's rule an FMA."""
    c = SLEEF_EXPF

    def k(v: float) -> ir.Constant:
        return _vconst(d.type, v)

    s = _fma(b, qf, k(-c["l2u"]), d)
    s = _fma(b, qf, k(-c["l2l"]), s)
    poly = c["poly"]
    u = k(poly[0])
    for coef in poly[1:]:
        u = _fma(b, u, s, k(coef))
    return b.fadd(k(1.0), _fma(b, b.fmul(s, s), u, s))


def sleef_expf_u10(b: ir.IRBuilder, d: ir.Value, normal: bool = False) -> ir.Value:
    """Sleef's `expf_u10` on a vector of f32, as PyTorch's `Vectorized<float>::exp`
    (`Sleef_expf16_u10`, AVX-512F; `expf8_u10` with AVX2) computes it, bit for bit.

    q = rint(d / ln 2) (one rounded multiply by 1/ln 2, then to nearest even);
    s = d - q ln 2 in two fused steps; u = 1 + (s*s * p(s) + s), every step of
    Horner's rule and the last multiply-add fused (Sleef's `vmla` is an FMA on
    these targets); u * 2**(q >> 1) * 2**(q - (q >> 1)) (`vldexp2`, exponent bits
    built directly); 0 for d < -104, +inf for d > 100. NaN stays NaN.
    Subnormal results are rounded on the integer grid (`ldexp_rounded`), in a
    branch; `normal` (every d >= -87, so every result normal) leaves it out.
    """
    vt = d.type
    n = vt.count
    it = ir.VectorType(I32, n)
    c = SLEEF_EXPF

    def k(v: float) -> ir.Constant:
        return _vconst(vt, v)

    # cvtps2dq rounds to nearest even; q is clamped to [-256, 256] (NaN to -256)
    # where Sleef's integer differs, which changes no result: those lanes are
    # 0, inf or NaN below
    r = _vcall(b, f"llvm.roundeven.v{n}f32", [b.fmul(d, k(c["r_ln2"]))])
    r = b.select(b.fcmp_unordered("<", r, k(-256.0)), k(-256.0), r)
    r = b.select(b.fcmp_ordered(">", r, k(256.0)), k(256.0), r)
    q = b.fptosi(r, it)
    qf = b.sitofp(q, vt)
    u = _sleef_mantissa(b, d, qf)
    # u * 2**half * 2**(q - half), subnormals on the integer grid
    if normal:  # d >= -87: no subnormal result, and no 0 below -104
        u = ldexp_sleef(b, u, q)
    else:
        u = ldexp_rounded(b, u, q)
        u = b.select(b.fcmp_ordered("<", d, k(-104.0)), k(0.0), u)
    return b.select(b.fcmp_ordered("<", k(100.0), d), k(float("inf")), u)


ROUNDING_MAGIC = 1.5 * 2.0**23
"""y + 1.5 * 2**23 - 1.5 * 2**23 is rint(y) (to nearest even) for |y| < 2**22."""

SCALEF_LANES = 16
"""Lanes of one `vscalefps` (AVX-512's zmm)."""


def _scalef(b: ir.IRBuilder, u: ir.Value, e: ir.Value) -> ir.Value:
    """u * 2**e (integral e), rounded once: AVX-512's `vscalefps`, 16 lanes at a time."""
    n = u.type.count
    v16 = ir.VectorType(F32, SCALEF_LANES)
    pieces = []
    for lo in range(0, n, SCALEF_LANES):
        idx = ir.Constant(ir.VectorType(I32, SCALEF_LANES), list(range(lo, lo + SCALEF_LANES)))
        part = [b.shuffle_vector(x, ir.Constant(x.type, None), idx) if n > SCALEF_LANES else x
                for x in (u, e)]
        pieces.append(_vcall(b, "llvm.x86.avx512.mask.scalef.ps.512",
                             [*part, ir.Constant(v16, None), ir.Constant(ir.IntType(16), -1),
                              ir.Constant(I32, 4)], v16))
    while len(pieces) > 1:  # concatenate pairs (an odd one with undef lanes)
        if len(pieces) % 2:
            pieces.append(ir.Constant(pieces[0].type, None))
        pieces = [b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, 2 * x.type.count),
                                                     list(range(2 * x.type.count))))
                  for x, y in zip(pieces[::2], pieces[1::2], strict=True)]
    whole = pieces[0]
    if whole.type.count != n:  # 48 lanes came out as 64
        whole = b.shuffle_vector(whole, ir.Constant(whole.type, None),
                                 ir.Constant(ir.VectorType(I32, n), list(range(n))))
    return whole


def sleef_expf_u10_scalef(b: ir.IRBuilder, d: ir.Value) -> ir.Value:
    """Sleef's `expf_u10` for d >= -87 (every result normal or +inf), bit for bit,
    in fewer steps with AVX-512 (a vector of 16k lanes): q = rint(d / ln 2) by
    adding and subtracting 1.5 * 2**23 (the same rounding to nearest even, no
    conversions or clamps), and u * 2**q by `vscalefps`, one rounding, where
    Sleef's two multiplies round only on overflow (to +inf, as this does). d is
    first lowered to 100, whose exp overflows as every larger d's does (and
    +inf's, which the rounding trick would turn into NaN). NaN stays NaN."""
    vt = d.type
    c = SLEEF_EXPF

    def k(v: float) -> ir.Constant:
        return _vconst(vt, v)

    d = b.select(b.fcmp_ordered(">", d, k(100.0)), k(100.0), d)
    qf = b.fsub(b.fadd(b.fmul(d, k(c["r_ln2"])), k(ROUNDING_MAGIC)), k(ROUNDING_MAGIC))
    u = _sleef_mantissa(b, d, qf)
    return _scalef(b, u, qf)


ATEN_ERF = {
    "p": _f32(0.3275911),
    "poly": tuple(_f32(c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736,
                                    0.254829592)),
}
"""The float32 constants of PyTorch's `Vectorized<float>::erf` (vec512_float.h,
vec256_float.h): Abramowitz and Stegun 7.1.26, t = 1 / (1 + p|x|) and the
degree-4 polynomial in t, highest power first."""


def _sign_bits(b: ir.IRBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(x's bits as integers, its sign bit alone)."""
    it = ir.VectorType(I32, x.type.count)
    bits = b.bitcast(x, it)
    return bits, b.and_(bits, _vconst(it, -0x80000000))


def aten_erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """PyTorch's `Vectorized<float>::erf` (AVX-512 and AVX2), bit for bit:
    sign(x) * (1 - t * r(t) * exp(-x*x)) with t = 1 / fma(p, |x|, 1), r by Horner's
    rule in FMAs, Sleef's `expf_u10` for the exp, and the last step
    `fma(-exp(-x*x) * t, r, 1)`."""
    vt = x.type
    c = ATEN_ERF
    bits, sign = _sign_bits(b, x)
    absx = b.bitcast(b.and_(bits, _vconst(bits.type, 0x7FFFFFFF)), vt)
    t = b.fdiv(_vconst(vt, 1.0), _fma(b, _vconst(vt, c["p"]), absx, _vconst(vt, 1.0)))
    poly = c["poly"]
    r = _vconst(vt, poly[0])
    for coef in poly[1:]:
        r = _fma(b, r, t, _vconst(vt, coef))
    # below -87 the exp's tiny result leaves y at 1: raised to -87 (NaN stays),
    # the exp is a normal float, with no subnormal path
    arg = b.fneg(b.fmul(x, x))
    arg = b.select(b.fcmp_ordered("<", arg, _vconst(vt, -87.0)), _vconst(vt, -87.0), arg)
    e = sleef_expf_u10(b, arg, normal=True)
    y = _fma(b, b.fmul(b.fneg(e), t), r, _vconst(vt, 1.0))
    return b.bitcast(b.xor(b.bitcast(y, bits.type), sign), vt)


def _hex_f32(words: str) -> tuple[float, ...]:
    return tuple(struct.unpack("f", struct.pack("I", int(w, 16)))[0] for w in words.split())


ONEDNN_GELU_ERF = {
    "idx_bias": 0xC21FFFFF - (1 << 32),
    "rbound": _hex_f32("40b15cee")[0],
    "poly": (  # degree 5 down to 0; entry i is interval i (0 is never selected)
        _hex_f32("""3cb7d80c 3c9b6050 3c978d11 3c92e850 3c8d058b 3c848454 3c6cd623 3c4c824b
                    3c2a7935 3be0b390 3b0651ac bb232f53 bbd42fa0 bc2c5366 bc492c9e bc2a7aa6
                    bbd55d04 ba823a76 3b102aa8 3ae25a7e 3a31f792 38b84375 3689bb5a 0 0"""),
        _hex_f32("""ba3d61db 39f097a3 3a5845dc 3ab1fa35 3b0cefb8 3b653ab6 3bcae527 3c221712
                    3c6c5840 3cc0a703 3d1dcc19 3d63656d 3d955907 3dbf9910 3dd53f69 3db7dcef
                    3d639ebe ba6ede48 bd22be69 bd041cf1 bc64f5ab bb097a32 b8ebf380 0 0"""),
        _hex_f32("""be081a19 be084570 be08639b be089837 be08f409 be09ab95 be0b66d0 be0e400a
                    be124df8 be1bde02 be2f19c9 be4931bf be685fbc be89c95f be96cbca be8044aa
                    be0550f2 3dcfd6a1 3e94c826 3e79345f 3decec91 3ca46568 3aa1e00a 0 0"""),
        _hex_f32("""b62173f4 3735e4cf 37f2ff89 388c23be 3917535c 39ab2ab0 3a60fadb 3af9b960
                    3b6e5491 3c0a4ec5 3ca5aa8c 3d2138d9 3d8737d4 3ddfb660 3e0f27ab 3d94004b
                    be0efdeb bf1d96c3 bf89db58 bf6d9897 bef69fb8 bdc4f8a8 bbde6422 0 0"""),
        _hex_f32("""3f4c422a 3f4c421f 3f4c4207 3f4c41cb 3f4c413b 3f4c3fad 3f4c3a2f 3f4c2d40
                    3f4c146a 3f4bc341 3f4ad08c 3f48f8cf 3f45fac7 3f404e07 3f3b980f 3f48dff3
                    3f78b21b 3fbb0704 40019c32 3fe536d6 3f81331e 3e6c8684 3c98f936 0 3f800000"""),
        _hex_f32("""a6f2cb94 32827792 3381cc0c 34523d4a 351ac44d 35f36d88 36ee8229 37b8a3bb
                    3867a213 3940033b 3a2a5a1d 3ae35863 3b7828f2 3c08b14b 3c515ed3 bb503236
                    bd8d8e5e be8abcd9 bf0c19a2 beccb328 3e176ced 3f470d99 3f7abb28 3f800000 0"""),
    ),
}
"""oneDNN's piecewise minimax GELU (`eltwise_gelu_erf` on AVX-512 cores,
src/cpu/x64/injectors/jit_uni_eltwise_injector.cpp, v3.x): erf(s/sqrt 2) is a
degree-5 polynomial in |s| on 25 intervals; the interval is
`clamp((bits(|s|) + idx_bias) >> 21, 1, 24)` (four per binade: two mantissa
bits), 23 (the constant 1) beyond `rbound`."""

TableLookup = Callable[[ir.IRBuilder, tuple[float, ...], ir.Value], ir.Value]
"""`(b, table of up to 32 floats, <N x i32> indices) -> <N x float>`: table[index] per lane."""


def lookup_per_lane(b: ir.IRBuilder, table: tuple[float, ...], idx: ir.Value) -> ir.Value:
    """`TableLookup` for any width: each lane extracted from a constant vector."""
    n = idx.type.count
    tv = ir.Constant(ir.VectorType(F32, len(table)), list(table))
    out = ir.Constant(ir.VectorType(F32, n), ir.Undefined)
    for lane in range(n):
        i = ir.Constant(I32, lane)
        out = b.insert_element(out, b.extract_element(tv, b.extract_element(idx, i)), i)
    return out


def onednn_gelu_erf(b: ir.IRBuilder, s: ir.Value, lookup: TableLookup) -> ir.Value:
    """erf(s / sqrt 2) as oneDNN's `gelu_erf` computes it on AVX-512 from `s` itself
    (`ONEDNN_GELU_ERF`): Horner's rule in FMAs on |s|, then s's sign put back.
    oneDNN's GELU is then `(s * (1 + erf)) * 0.5`. For |s| = inf the polynomial
    gives NaN (0 * inf), as oneDNN's does."""
    vt = s.type
    c = ONEDNN_GELU_ERF
    bits, sign = _sign_bits(b, s)
    it = bits.type
    abs_bits = b.and_(bits, _vconst(it, 0x7FFFFFFF))
    pos = b.bitcast(abs_bits, vt)
    idx = b.ashr(b.add(abs_bits, _vconst(it, c["idx_bias"])), _vconst(it, 21))
    idx = b.select(b.icmp_signed("<", idx, _vconst(it, 1)), _vconst(it, 1), idx)
    idx = b.select(b.icmp_signed(">", idx, _vconst(it, 24)), _vconst(it, 24), idx)
    idx = b.select(b.fcmp_ordered("<", _vconst(vt, c["rbound"]), pos), _vconst(it, 23), idx)
    poly = c["poly"]
    p = lookup(b, poly[0], idx)
    for coefs in poly[1:]:
        p = _fma(b, p, pos, lookup(b, coefs, idx))
    return b.bitcast(b.xor(b.bitcast(p, it), sign), vt)


def _exp_sleef_u10(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return sleef_expf_u10(b, fn.args[0])


def _exp_sleef_u10_normal(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return sleef_expf_u10(b, fn.args[0], normal=True)


def _exp_sleef_u10_scalef(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return sleef_expf_u10_scalef(b, fn.args[0])


def _tanh_sleef_u10(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return sleef_tanhf_u10(b, fn.args[0])


def _erf_aten(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return aten_erf(b, fn.args[0])


def _erf_onednn(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return onednn_gelu_erf(b, fn.args[0], lookup_per_lane)


def _padcell(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    bits = int(parts[2], 16)
    name = f"bs_pad_{parts[2]}"
    module = fn.module
    cell = module.globals.get(name)
    if cell is None:
        cell = ir.GlobalVariable(module, F32, name)
        cell.global_constant = True
        cell.linkage = "internal"
        cell.align = 4
        cell.initializer = ir.Constant(F32, struct.unpack("<f", struct.pack("<I", bits))[0])
    inside, p = fn.args
    return b.select(inside, p, b.bitcast(cell, PTR))


def _padrow(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    bits, n = int(parts[2], 16), int(parts[3])
    name = f"bs_padrow_{parts[2]}_{n}"
    module = fn.module
    row = module.globals.get(name)
    if row is None:
        typ = ir.ArrayType(F32, n)
        row = ir.GlobalVariable(module, typ, name)
        row.global_constant = True
        row.linkage = "internal"
        row.align = 64
        value = struct.unpack("<f", struct.pack("<I", bits))[0]
        row.initializer = ir.Constant(typ, [value] * n)
    inside, p = fn.args
    return b.select(inside, p, b.bitcast(row, PTR))


GENERIC_HELPERS: dict[str, HelperBody] = {
    "padcell": _padcell,
    "padrow": _padrow,
    "exp_sleef_u10": _exp_sleef_u10,
    "exp_sleef_u10_normal": _exp_sleef_u10_normal,
    "exp_sleef_u10_scalef": _exp_sleef_u10_scalef,
    "tanh_sleef_u10": _tanh_sleef_u10,
    "erf_aten": _erf_aten,
    "erf_onednn": _erf_onednn,
    "fcmp": _fcmp,
    "select": _select,
    "fmax": _fmax,
    "reduce": _reduce,
    "reduce_halves": _reduce_halves,
    "mul_subnormal": mul_subnormal,
    "gather": _gather,
    "pieces_gather": _pieces_gather,
    "scatter": _scatter,
}


def define_helpers(module: ir.Module, lane_functions: Mapping[str, HelperBody]) -> None:
    """Gives a body to every declared `bs.*` function of `module`."""
    bodies = {**GENERIC_HELPERS, **lane_functions}
    for fn in list(module.functions):
        if not fn.name.startswith("bs.") or fn.blocks:
            continue
        parts = fn.name.split(".")
        if (body := bodies.get(parts[1])) is None:
            raise ValueError(f"no definition for helper {fn.name}")
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        result = body(b, fn, parts)
        if result is None:
            b.ret_void()
        else:
            b.ret(result)

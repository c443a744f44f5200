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
- `bs.gather.vNf32(ptr p, <N x i64> off, <N x i1> m, passthru)`: p[off] where m
- `bs.scatter.vNf32(v, ptr p, <N x i64> off, <N x i1> m)`: p[off] = v where m
- `bs.<fn>.vNf32(v)` with fn in `lane_functions`: a scalar function per lane
  (`bs.exp_libm`: libm's expf per lane, skipped when every lane is NaN)
- `bs.exp_sleef_u10.vNf32(v)`: Sleef's `expf_u10` (PyTorch's vector exp), in vector code
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from llvmlite import ir

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


def sleef_expf_u10(b: ir.IRBuilder, d: ir.Value) -> ir.Value:
    """Sleef's `expf_u10` on a vector of f32, as PyTorch's `Vectorized<float>::exp`
    (`Sleef_expf16_u10`, AVX-512F; `expf8_u10` with AVX2) computes it, bit for bit.

    q = rint(d / ln 2) (one rounded multiply by 1/ln 2, then to nearest even);
    s = d - q ln 2 in two fused steps; u = 1 + (s*s * p(s) + s), every step of
    Horner's rule and the last multiply-add fused (Sleef's `vmla` is an FMA on
    these targets); u * 2**(q >> 1) * 2**(q - (q >> 1)) (`vldexp2`, exponent bits
    built directly); 0 for d < -104, +inf for d > 100. NaN stays NaN.
    """
    vt = d.type
    n = vt.count
    it = ir.VectorType(I32, n)
    c = SLEEF_EXPF

    def k(v: float) -> ir.Constant:
        return ir.Constant(vt, [v] * n)

    def ki(v: int) -> ir.Constant:
        return ir.Constant(it, [v] * n)

    def intrinsic(name: str, args: list[ir.Value], ret: ir.Type = vt) -> ir.Value:
        fn = declare(b.module, name, ir.FunctionType(ret, [a.type for a in args]))
        return b.call(fn, args)

    def fma(x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        return intrinsic(f"llvm.fma.v{n}f32", [x, y, z])

    # cvtps2dq rounds to nearest even; q is clamped to [-256, 256] (NaN to -256)
    # where Sleef's integer differs, which changes no result: those lanes are
    # 0, inf or NaN below
    r = intrinsic(f"llvm.roundeven.v{n}f32", [b.fmul(d, k(c["r_ln2"]))])
    r = b.select(b.fcmp_unordered("<", r, k(-256.0)), k(-256.0), r)
    r = b.select(b.fcmp_ordered(">", r, k(256.0)), k(256.0), r)
    q = b.fptosi(r, it)
    qf = b.sitofp(q, vt)
    s = fma(qf, k(-c["l2u"]), d)
    s = fma(qf, k(-c["l2l"]), s)
    poly = c["poly"]
    u = k(poly[0])
    for coef in poly[1:]:
        u = fma(u, s, k(coef))
    u = b.fadd(k(1.0), fma(b.fmul(s, s), u, s))
    half = b.ashr(q, ki(1))

    def pow2i(e: ir.Value) -> ir.Value:
        return b.bitcast(b.shl(b.add(e, ki(0x7F)), ki(23)), vt)

    u = b.fmul(b.fmul(u, pow2i(half)), pow2i(b.sub(q, half)))
    u = b.select(b.fcmp_ordered("<", d, k(-104.0)), k(0.0), u)
    return b.select(b.fcmp_ordered("<", k(100.0), d), k(float("inf")), u)


def _exp_sleef_u10(b: ir.IRBuilder, fn: ir.Function, parts: list[str]) -> ir.Value:
    return sleef_expf_u10(b, fn.args[0])


GENERIC_HELPERS: dict[str, HelperBody] = {
    "exp_sleef_u10": _exp_sleef_u10,
    "fcmp": _fcmp,
    "select": _select,
    "fmax": _fmax,
    "reduce": _reduce,
    "gather": _gather,
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

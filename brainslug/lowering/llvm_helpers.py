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
"""

from __future__ import annotations

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


GENERIC_HELPERS: dict[str, HelperBody] = {
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

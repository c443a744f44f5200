"""Products and exps whose results are subnormal, computed on the integer grid
(`llvm_subnormal`) with no subnormal value in the FPU: bit for bit the IEEE
results (numpy's float32 multiply, round to nearest even, no flushing), ties
and the edges of the grid included."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

llvm = pytest.importorskip("llvmlite.binding")
from llvmlite import ir  # noqa: E402

from brainslug.lowering.backends.x86 import X86Backend, _Attributes  # noqa: E402
from brainslug.lowering.llvm_helpers import define_helpers  # noqa: E402
from brainslug.lowering.llvm_subnormal import ldexp_rounded  # noqa: E402

TARGETS = [("host", 16), ("haswell", 8)]
"""AVX-512 vectors of 16 lanes, and AVX2's of 8 (the host runs both)."""


def _kernel(body, cpu: str, lanes: int) -> tuple[object, X86Backend]:
    """A compiled `f(x, y, out, n)` over n (a multiple of `lanes`) floats:
    out = body(x, y), for `cpu`."""
    backend = X86Backend(cpu)
    vt = ir.VectorType(ir.FloatType(), lanes)
    mod = ir.Module("grid")
    mod.triple = llvm.get_default_triple()
    i64 = ir.IntType(64)
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 3 + [i64]), "f")
    fn.attributes = _Attributes(backend.func_attributes(), set())
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    x = b.load(b.gep(fn.args[0], [i], source_etype=ir.FloatType()), typ=vt, align=4)
    y = b.load(b.gep(fn.args[1], [i], source_etype=ir.FloatType()), typ=vt, align=4)
    b.store(body(b, mod, x, y), b.gep(fn.args[2], [i], source_etype=ir.FloatType()), align=4)
    nxt = b.add(i, ir.Constant(i64, lanes))
    i.add_incoming(nxt, b.block)  # the body may end in another block than it began
    b.cbranch(b.icmp_signed("<", nxt, fn.args[3]), loop, done)
    b.position_at_end(done)
    b.ret_void()
    define_helpers(mod, {})
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(mod)),
                                        backend.target_machine(jit=True))
    engine.finalize_object()
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_int64)(engine.get_function_address("f"))
    return (engine, f, lanes), backend


def _run(kernel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    lanes = kernel[2]
    n = -(-len(x) // lanes) * lanes
    xs, ys = (np.resize(a, n).astype(np.float32) for a in (x, y))
    out = np.zeros(n, np.float32)
    kernel[1](xs.ctypes.data, ys.ctypes.data, out.ctypes.data, n)
    return out[:len(x)]


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize(("cpu", "lanes"), TARGETS)
def test_products_bit_for_bit(cpu: str, lanes: int) -> None:
    def mul(b, mod, x, y):
        name = f"bs.mul_subnormal.v{lanes}f32"
        fn = mod.globals.get(name) or ir.Function(
            mod, ir.FunctionType(x.type, [x.type, x.type]), name)
        return b.call(fn, [x, y])

    kernel, backend = _kernel(mul, cpu, lanes)
    if backend.lanes < lanes:
        pytest.skip(f"needs {lanes} lanes")
    rng = np.random.default_rng(0)
    n = 200_000
    subnormal = (rng.integers(0, 1 << 23, n).astype(np.uint32)).view(np.float32)
    tiny = (rng.integers(0x00800000, 0x0D000000, n).astype(np.uint32)).view(np.float32)
    x = np.concatenate([subnormal, tiny, -subnormal[:1000], rng.standard_normal(1000),
                        np.array([0.0, -0.0, np.nan, np.inf, 1e-45, 2.0 ** -102], np.float32)])
    x = x.astype(np.float32)
    y = np.concatenate([
        rng.uniform(2.0 ** -24, 1.0, len(x) // 2),            # softmax's 1 / sum
        2.0 ** rng.integers(-30, 30, len(x) // 4),            # powers of two: exact halves
        rng.uniform(-3, 3, len(x) - len(x) // 2 - len(x) // 4)]).astype(np.float32)
    y = rng.permutation(y)
    # ties on the grid: m * (k + 0.5) / m with y = 1/2 and odd subnormal x
    odd = (np.arange(1, 4000, 2, dtype=np.uint32)).view(np.float32)
    x = np.concatenate([x, odd, odd]).astype(np.float32)
    y = np.concatenate([y, np.full(len(odd), 0.5, np.float32),
                        np.full(len(odd), 0.75, np.float32)]).astype(np.float32)
    got = _run(kernel, x, y)
    with np.errstate(all="ignore"):
        want = x * y
    ok = _same_bits(got, want)
    assert ok.all(), f"{(~ok).sum()} differ: x={x[~ok][:4]} y={y[~ok][:4]} got={got[~ok][:4]} want={want[~ok][:4]}"
    assert ((want != 0) & (np.abs(want) < 2.0 ** -126)).sum() > n // 2  # the grid is covered


@pytest.mark.parametrize(("cpu", "lanes"), TARGETS)
def test_exp_scaling_bit_for_bit(cpu: str, lanes: int) -> None:
    """u * 2**q with u in [0.5, 2) and q from -151 to 10, as Sleef's two
    multiplies round it (numpy: u * 2**half * 2**(q - half))."""
    def ldexp(b, mod, u, qf):
        q = b.fptosi(qf, ir.VectorType(ir.IntType(32), lanes))
        return ldexp_rounded(b, u, q)

    kernel, backend = _kernel(ldexp, cpu, lanes)
    if backend.lanes < lanes:
        pytest.skip(f"needs {lanes} lanes")
    rng = np.random.default_rng(1)
    n = 100_000
    u = rng.uniform(0.5, 2.0, n).astype(np.float32)
    u[:64] = np.float32(1.5)  # ties at the grid's edges
    q = rng.integers(-151, 11, n)
    q[n // 2:] = rng.integers(-151, -120, n - n // 2)
    got = _run(kernel, u, q.astype(np.float32))
    half = q >> 1
    with np.errstate(all="ignore"):
        want = (u * np.ldexp(np.float32(1), half).astype(np.float32)).astype(np.float32) * \
            np.ldexp(np.float32(1), q - half).astype(np.float32)
    want = want.astype(np.float32)
    ok = _same_bits(got, want)
    assert ok.all(), f"{(~ok).sum()} differ: u={u[~ok][:4]} q={q[~ok][:4]} got={got[~ok][:4]}"
    assert ((want != 0) & (want < 2.0 ** -126)).sum() > n // 4

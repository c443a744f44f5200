"""tanh in vector code: Sleef's `tanhf_u10`, PyTorch's `Vectorized<float>::tanh`.

The reference is the Sleef function PyTorch itself ships (`Sleef_tanhf16_u10`
in libtorch_cpu), called through a small JIT wrapper. GELU's tanh form is
bit for bit PyTorch's (its vector body and its libm tail); `torch.tanh` is
MKL's, which the nn.tanh stack matches within 1 ULP.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from llvmlite import binding as llvm
from llvmlite import ir

from brainslug.ir.context import make_context, parse_module
from brainslug.lowering.backends.x86 import emit_asm
from brainslug.pipeline.default import default_passes
from brainslug.testing.executor import compile_graph

SPECIAL = np.array(
    [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.17e-38,
     8.6643, 8.6644, -8.6643, -8.6644, 9.0, -9.0, 0.5, -0.5, 1e-7, -1e-7, 3e38, -3e38,
     0.34657359, -0.34657359, 44.0, -44.0],
    np.float32,
)


def _sleef_tanh() -> ctypes._CFuncPtr | None:
    """`f(in, out, n)`: PyTorch's `Sleef_tanhf16_u10` on n floats (n a multiple of 16)."""
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    if not hasattr(lib, "Sleef_tanhf16_u10"):
        return None
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.add_symbol("Sleef_tanhf16_u10",
                    ctypes.cast(lib.Sleef_tanhf16_u10, ctypes.c_void_p).value)
    f32, i64 = ir.FloatType(), ir.IntType(64)
    vt = ir.VectorType(f32, 16)
    m = ir.Module("sleef_tanh")
    m.triple = llvm.get_process_triple()
    sleef = ir.Function(m, ir.FunctionType(vt, [vt]), "Sleef_tanhf16_u10")
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [ir.PointerType(), ir.PointerType(), i64]),
                     "apply")
    entry, body, done = (fn.append_basic_block() for _ in range(3))
    b = ir.IRBuilder(entry)
    b.branch(body)
    b.position_at_end(body)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    x = b.load(b.gep(fn.args[0], [i], source_etype=f32), typ=vt, align=4)
    b.store(b.call(sleef, [x]), b.gep(fn.args[1], [i], source_etype=f32), align=4)
    nxt = b.add(i, ir.Constant(i64, 16))
    i.add_incoming(nxt, body)
    b.cbranch(b.icmp_unsigned("<", nxt, fn.args[2]), body, done)
    b.position_at_end(done)
    b.ret_void()
    target = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten())
    mod = llvm.parse_assembly(str(m))
    engine = llvm.create_mcjit_compiler(mod, target)
    engine.finalize_object()
    apply = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        engine.get_function_address("apply"))
    apply.engine = engine  # keeps the code alive
    return apply


def _sleef(x: np.ndarray) -> np.ndarray:
    apply = _APPLY or pytest.skip("this PyTorch exports no Sleef_tanhf16_u10")
    flat = np.ascontiguousarray(x.reshape(-1))
    n = -(-flat.size // 16) * 16
    src = np.zeros(n, np.float32)
    src[:flat.size] = flat
    out = np.empty(n, np.float32)
    apply(src.ctypes.data, out.ctypes.data, n)
    return out[:flat.size].reshape(x.shape)


_APPLY = _sleef_tanh()


def _graph(layer: str, phys: list[int]) -> str:
    t = "tensor<?x" + "x".join(str(d) for d in phys[1:]) + "xf32>"
    return f"""
func.func @main(%x: {t}) -> {t} {{
  %r = nn.stack "s" (%x) : ({t}) -> {t} {{
  ^bb0(%a: {t}):
    %y = {layer} %a : {t} -> {t}
    nn.yield %y : {t}
  }}
  func.return %r : {t}
}}
"""


TANH = "nn.tanh"
GELU_TANH = 'nn.gelu %a {approximate = "tanh"} :'


def _stack(layer: str, phys: list[int]):
    text = _graph(TANH if layer == TANH else "nn.gelu", phys)
    if layer != TANH:
        text = text.replace("nn.gelu %a :", GELU_TANH)
    return compile_graph(parse_module(text))


def _equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def _values(n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    x = np.concatenate([rng.uniform(-10, 10, n // 2), rng.standard_normal(n - n // 2) * scale])
    x = rng.permutation(x).astype(np.float32)
    m = min(n, len(SPECIAL))
    x[rng.choice(n, m, replace=False)] = SPECIAL[:m]
    x[-min(n, 12):] = SPECIAL[:min(n, 12)]
    return x


def test_tanh_stack_is_sleefs_on_sampled_floats() -> None:
    """Every 251st float32 bit pattern (17 million, all binades, NaNs, infinities
    and subnormals): the stack's tanh equals PyTorch's Sleef function bit for bit."""
    bits = np.arange(0, 2**32, 251, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    n = x.size - x.size % 16
    x = x[:n].reshape(1, n)
    (out,) = _stack(TANH, [1, n])(x)
    ok = _equal(np.asarray(out), _sleef(x))
    assert ok.all(), f"{(~ok).sum()} differ, e.g. x={x[~ok][:4]}"


@pytest.mark.slow
def test_tanh_stack_is_sleefs_on_every_float() -> None:
    """All 2**32 inputs, in chunks of 2**28."""
    graph = _stack(TANH, [1, 2**28])
    for start in range(0, 2**32, 2**28):
        x = np.arange(start, start + 2**28, dtype=np.uint64).astype(np.uint32).view(np.float32)
        (out,) = graph(x.reshape(1, -1))
        ok = _equal(np.asarray(out).reshape(-1), _sleef(x))
        assert ok.all(), f"{(~ok).sum()} differ from {start:#x}, e.g. x={x[~ok][:4]}"


@pytest.mark.parametrize("batch", [1, 3])
def test_tanh_stack_within_an_ulp_of_torch(batch: int) -> None:
    """`torch.tanh` is MKL's vsTanh: the Sleef result differs from it by at most
    one ULP, in a few elements in a hundred; NaN and the signs of 0 and inf as
    PyTorch has them."""
    phys = [batch, 37, 13, 13]
    x = _values(int(np.prod(phys)), 3.0, np.random.default_rng(batch)).reshape(phys)
    (out,) = _stack(TANH, phys)(x)
    out = np.asarray(out)
    ref = torch.tanh(torch.from_numpy(x.copy())).numpy()
    assert (np.isnan(out) == np.isnan(ref)).all()
    fin = ~np.isnan(ref)
    ulps = np.abs(out[fin].view(np.int32).astype(np.int64) - ref[fin].view(np.int32))
    assert ulps.max() <= 1
    assert (ulps > 0).mean() < 0.05


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape", [[37, 13, 13], [13, 13, 37], [7, 1001], [5]])
def test_gelu_tanh_bit_for_bit(batch: int, shape: list[int]) -> None:
    """GELU's tanh form as PyTorch's `GeluKernelImpl` computes it on one thread:
    Sleef's tanh on its vectors and libm's `tanhf` on the last numel % 32
    elements, in NCHW, in channels-last data stored as NHWC, in ViT's
    [N, tokens, C], and tiny."""
    phys = [batch, *shape]
    x = _values(int(np.prod(phys)), 3.0, np.random.default_rng(7 * batch + len(shape)))
    x = x.reshape(phys)
    (out,) = _stack(GELU_TANH, phys)(x)
    out = np.asarray(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # with T threads each thread's chunk has its own tail
    try:
        ref = F.gelu(torch.from_numpy(x.copy()), approximate="tanh").numpy()
    finally:
        torch.set_num_threads(threads)
    ok = _equal(out, ref)
    assert ok.all(), f"{(~ok).sum()} differ, e.g. x={x[~ok][:4]} out={out[~ok][:4]} ref={ref[~ok][:4]}"


def test_tanh_stacks_call_no_tanhf_in_the_vector_body() -> None:
    """With numel a multiple of 32 for every batch (no scalar tail), tanh and
    GELU's tanh form are vector code: no call to libm's tanhf, which made 16 per
    vector before."""
    for layer in (TANH, GELU_TANH):
        text = _graph(TANH if layer == TANH else "nn.gelu", [1, 56, 56, 96])
        text = text if layer == TANH else text.replace("nn.gelu %a :", GELU_TANH)
        ctx = make_context()
        module = parse_module(text, ctx=ctx)
        for p in default_passes():
            p.apply(ctx, module)
        asm = emit_asm(module)
        assert "tanhf" not in asm and "call" not in asm, layer
        assert "vdivps" in asm and "vfmadd" in asm, layer

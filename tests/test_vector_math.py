"""PyTorch's vector math on x86: sigmoid and SiLU stacks bit for bit against eager
PyTorch (Sleef's expf_u10 in the vector body, libm's expf on the last numel % 32
elements), special values included, and no libm call left in the vector body."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainslug.ir.context import make_context, parse_module
from brainslug.lowering.backends.x86 import emit_asm
from brainslug.lowering.llvm_helpers import SLEEF_EXPF
from brainslug.pipeline.default import default_passes
from brainslug.testing.executor import compile_graph

SPECIAL = np.array(
    [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.17e-38,
     88.72, 88.73, 89.0, -88.72, -87.3, -87.4, -103.9, -104.0, -104.1, 99.9, 100.0, 100.1,
     -100.0, 16.6, -16.6, 0.5, -0.5, 1e-7, -1e-7, 3e38, -3e38],
    np.float32,
)


def _values(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random values over [-110, 110], denser near 0, with SPECIAL spread in and
    some in the last 31 elements (PyTorch's scalar tail)."""
    x = np.concatenate([rng.uniform(-110, 110, n // 2), rng.standard_normal(n - n // 2) * 8])
    x = rng.permutation(x).astype(np.float32)
    m = min(n, len(SPECIAL))
    x[rng.choice(n, m, replace=False)] = SPECIAL[:m]
    k = min(n, 12)
    x[-k:] = SPECIAL[:k]
    return x


def _torch_fn(name: str):
    return {"nn.sigmoid": torch.sigmoid, "nn.silu": F.silu}[name]


def _graph(name: str, phys: list[int]) -> str:
    """A stack of one layer on a tensor of shape [?, *phys[1:]] (as stored)."""
    t = "tensor<?x" + "x".join(str(d) for d in phys[1:]) + "xf32>"
    return f"""
func.func @main(%x: {t}) -> {t} {{
  %r = nn.stack "s" (%x) : ({t}) -> {t} {{
  ^bb0(%a: {t}):
    %y = {name} %a : {t} -> {t}
    nn.yield %y : {t}
  }}
  func.return %r : {t}
}}
"""


def _equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize("name", ["nn.sigmoid", "nn.silu"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bit_for_bit(name: str, batch: int, layout: str) -> None:
    c, h, w = 37, 13, 13
    rng = np.random.default_rng(batch)
    phys = [batch, h, w, c] if layout == "NHWC" else [batch, c, h, w]
    x = _values(int(np.prod(phys)), rng).reshape(phys)
    graph = compile_graph(parse_module(_graph(name, phys)))
    (out,) = graph(x)
    out = np.asarray(out)
    # PyTorch runs the layer on the tensor in memory order (channels-last stays so)
    t = torch.from_numpy(x)
    if layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
    ref = _torch_fn(name)(t)
    if layout == "NHWC":
        ref = ref.permute(0, 2, 3, 1)
    ref = ref.contiguous().numpy()
    ok = _equal(out, ref)
    assert ok.all(), f"{(~ok).sum()} differ, e.g. x={x[~ok][:4]} out={out[~ok][:4]} ref={ref[~ok][:4]}"


@pytest.mark.parametrize("name", ["nn.sigmoid", "nn.silu"])
@pytest.mark.parametrize("n", [5, 31, 32, 33, 16 * 37 + 7])
def test_flat_sizes_and_tail(name: str, n: int) -> None:
    """Rank-2 tensors: every size class of the tail, where Sleef and libm differ."""
    rng = np.random.default_rng(n)
    x = _values(n, rng)
    graph = compile_graph(parse_module(_graph(name, [1, n])))
    out = np.asarray(graph(x.reshape(1, n))[0]).reshape(n)
    ref = _torch_fn(name)(torch.from_numpy(x)).numpy()
    assert _equal(out, ref).all()


def test_pytorch_picks_the_exp_by_position() -> None:
    """PyTorch's sigmoid of the same value differs between its vector body (a
    tensor of 32) and its scalar tail (a tensor of 1) for some x: the tail tests
    above discriminate."""
    x = np.linspace(-20, 20, 2001, dtype=np.float32)
    body = torch.sigmoid(torch.from_numpy(np.repeat(x, 32))).numpy()[::32]
    tail = np.array([torch.sigmoid(torch.tensor([v]))[0].item() for v in x], np.float32)
    assert (body != tail).sum() > 10


def test_sleef_constants_are_float32() -> None:
    for v in (SLEEF_EXPF["r_ln2"], SLEEF_EXPF["l2u"], SLEEF_EXPF["l2l"], *SLEEF_EXPF["poly"]):
        assert float(np.float32(v)) == v


def test_silu_stack_calls_no_expf_in_the_vector_body() -> None:
    """With numel a multiple of 32 for every batch there is no scalar tail, and the
    BN + SiLU stack's exp is vector code: no call to libm's expf (the old
    lowering, `llvm.exp.v16f32`, made 16 calls per vector)."""
    t = "tensor<?x56x56x96xf32>"
    p = "tensor<96xf32>"
    text = f"""
func.func @main(%x: {t}, %g: {p}, %b: {p}, %m: {p}, %v: {p}) -> {t} {{
  %bn = nn.batch_norm %x weight %g bias %b mean %m var %v {{eps = 1.0e-05 : f64, layout = "NHWC"}} : ({t}, {p}, {p}, {p}, {p}) -> {t}
  %y = nn.silu %bn : {t} -> {t}
  func.return %y : {t}
}}
"""
    ctx = make_context()
    module = parse_module(text, ctx=ctx)
    for p in default_passes():
        p.apply(ctx, module)
    asm = emit_asm(module)
    assert "vfmadd" in asm
    assert "expf" not in asm


GELU_SPECIAL = np.array(
    [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.17e-38,
     5.54, 5.55, -5.54, -5.55, 13.0, -13.0, 0.5, -0.5, 1e-7, -1e-7, 3e38, -3e38, 1e20, -1e20],
    np.float32,
)


def _gelu_values(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random values over [-8, 8] and N(0, 3), with GELU_SPECIAL spread in and some
    at the end."""
    x = np.concatenate([rng.uniform(-8, 8, n // 2), rng.standard_normal(n - n // 2) * 3])
    x = rng.permutation(x).astype(np.float32)
    m = min(n, len(GELU_SPECIAL))
    x[rng.choice(n, m, replace=False)] = GELU_SPECIAL[:m]
    k = min(n, 12)
    x[-k:] = GELU_SPECIAL[:k]
    return x


def _gelu_graph(phys: list[int]) -> str:
    return _graph("nn.gelu", phys).replace("nn.gelu %a :", 'nn.gelu %a {approximate = "none"} :')


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape", [[37, 13, 13], [13, 13, 37], [197, 77], [5]])
def test_gelu_bit_for_bit_with_onednn(batch: int, shape: list[int]) -> None:
    """Exact GELU on contiguous tensors (NCHW, channels-last data stored as NHWC,
    ViT's [N, tokens, C], tiny) is oneDNN's in eager PyTorch: bit for bit,
    special values and the vector remainder included."""
    phys = [batch, *shape]
    rng = np.random.default_rng(batch * 1000 + len(shape))
    x = _gelu_values(int(np.prod(phys)), rng).reshape(phys)
    (out,) = compile_graph(parse_module(_gelu_graph(phys)))(x)
    out = np.asarray(out)
    ref = F.gelu(torch.from_numpy(x.copy())).numpy()
    ok = _equal(out, ref)
    assert ok.all(), f"{(~ok).sum()} differ, e.g. x={x[~ok][:4]} out={out[~ok][:4]} ref={ref[~ok][:4]}"


def _gelu_stack_asm() -> str:
    text = _gelu_graph([1, 56, 56, 96])
    ctx = make_context()
    module = parse_module(text, ctx=ctx)
    for p in default_passes():
        p.apply(ctx, module)
    return emit_asm(module)


def test_gelu_stack_calls_no_erff() -> None:
    """GELU's erf is vector code (oneDNN's polynomial, its coefficients looked up
    with vpermi2ps on AVX-512): no call to libm's erff, which made 16 per vector."""
    asm = _gelu_stack_asm()
    assert "erff" not in asm
    assert "vfmadd" in asm


@pytest.mark.parametrize("lanes", [16, 32, 64])
def test_table_lookup_of_a_register_block_is_per_16_lanes(lanes: int) -> None:
    """oneDNN's erf table lookup on a register block of several vectors: one
    vpermi2ps per 16 lanes, joined in lane order, equal to a lookup per lane."""
    import ctypes

    import llvmlite.binding as llvm
    from llvmlite import ir

    from brainslug.lowering.backends.x86 import X86Backend, _Attributes, _permute_lookup
    from brainslug.lowering.llvm_helpers import lookup_per_lane

    backend = X86Backend("host")
    if backend.lanes < 16:
        pytest.skip("needs AVX-512")
    table = tuple(float(k) * 1.5 - 7 for k in range(25))
    mod = ir.Module("lookup")
    mod.triple = llvm.get_default_triple()
    it = ir.VectorType(ir.IntType(32), lanes)
    for name, lookup in (("permute", _permute_lookup), ("per_lane", lookup_per_lane)):
        fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 2), name)
        fn.attributes = _Attributes(backend.func_attributes(), {"noinline"})
        b = ir.IRBuilder(fn.append_basic_block())
        idx = b.load(fn.args[0], typ=it, align=4)
        b.store(lookup(b, table, idx), fn.args[1], align=4)
        b.ret_void()
    text = str(mod)
    asm = backend.target_machine().emit_assembly(llvm.parse_assembly(text))
    permute_asm = asm[asm.index("permute:"):asm.index("per_lane:")]
    assert permute_asm.count("vpermi2ps") + permute_asm.count("vpermt2ps") == lanes // 16
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(text), backend.target_machine(jit=True))
    engine.finalize_object()
    idx = np.random.default_rng(lanes).integers(0, 25, lanes).astype(np.int32)
    outs = {}
    for name in ("permute", "per_lane"):
        out = np.zeros(lanes, np.float32)
        f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
            engine.get_function_address(name))
        f(idx.ctypes.data, out.ctypes.data)
        outs[name] = out
    np.testing.assert_array_equal(outs["permute"], np.array(table, np.float32)[idx])
    np.testing.assert_array_equal(outs["permute"], outs["per_lane"])


def _softmax_graph(rows: int, n: int) -> str:
    t = f"tensor<?x{rows}x{n}xf32>"
    return f"""
func.func @main(%x: {t}) -> {t} {{
  %r = nn.stack "s" (%x) : ({t}) -> {t} {{
  ^bb0(%a: {t}):
    %y = nn.softmax %a {{axis = 2 : i64}} : {t} -> {t}
    nn.yield %y : {t}
  }}
  func.return %r : {t}
}}
"""


@pytest.mark.parametrize("n", [49, 64])
def test_softmax_of_subnormal_exps_bit_for_bit(n: int) -> None:
    """Rows whose exps fall below 2**-126 (Swin's -100 mask): subnormal exps,
    sums and quotients bit for bit PyTorch's, at offsets from -86.5 to -104.5
    (each row's max is 0, so x - max spans the subnormal range and its
    edges). Sigmoid and SiLU round such exps away (1 + e == 1): only softmax
    shows them."""
    rng = np.random.default_rng(n)
    rows = 4001
    x = np.concatenate([np.linspace(-86.5, -104.5, rows * (n - 1), dtype=np.float32),
                        ]).reshape(rows, n - 1)
    x = rng.permuted(x, axis=1)
    x = np.concatenate([x, np.zeros((rows, 1), np.float32)], axis=1)  # the max
    x[::7, 3] = rng.uniform(-5, 0, x[::7, 3].shape)  # rows with a larger sum
    x[5, 5] = np.nan
    x = x.reshape(1, rows, n)
    graph = compile_graph(parse_module(_softmax_graph(rows, n)))
    out = np.asarray(graph(x)[0])
    ref = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    sub = (ref != 0) & (np.abs(ref) < 2.0 ** -126)
    assert sub.sum() > rows * n // 4  # the range is covered
    ok = _equal(out, ref)
    assert ok.all(), f"{(~ok).sum()} differ, e.g. x={x[~ok][:4]} out={out[~ok][:4]} ref={ref[~ok][:4]}"


@pytest.mark.parametrize("n", [7, 16, 33, 49, 197])
def test_softmax_bit_for_bit(n: int) -> None:
    """Rows of any length bit for bit PyTorch's softmax: its vector exp, and its
    row sums (and maxima) with a vector's lanes combined by halves (rows of 16
    or more) or in lane order (shorter rows), as `vec::reduce_all` does. Rows
    with NaN or +-inf too."""
    rng = np.random.default_rng(n)
    rows = 301
    x = (rng.standard_normal((rows, n)) * rng.uniform(0.1, 30, (rows, 1))).astype(np.float32)
    x[3, n // 2] = np.nan
    x[5, 0] = np.inf
    x[6, -1] = -np.inf
    x[7] = -np.inf
    x = x.reshape(1, rows, n)
    graph = compile_graph(parse_module(_softmax_graph(rows, n)))
    out = np.asarray(graph(x)[0])
    with np.errstate(all="ignore"):
        ref = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    ok = _equal(out, ref)
    assert ok.all(), f"{(~ok).sum()} differ, rows {np.nonzero(~ok)[1][:8]}"


@pytest.mark.parametrize("name", ["nn.sigmoid", "nn.silu"])
def test_exp_rounding_boundaries_bit_for_bit(name: str) -> None:
    """The exp's integer part q = rint(x / ln 2) (AVX-512: by adding 1.5 * 2**23)
    and its scaling (vscalefps) against PyTorch's Sleef, bit for bit: 2**20
    values over [-110, 110] and every float within 300 ulps of the half-integers
    of x / ln 2, where rint's ties and its neighbours lie."""
    rng = np.random.default_rng(7)
    ties = (np.arange(-160, 160) + 0.5) * np.log(2.0)
    near = [np.float32(t) for t in ties]
    steps = []
    for t in near:
        up, down = [t], [t]
        for _ in range(300):
            up.append(np.nextafter(up[-1], np.float32(np.inf)))
            down.append(np.nextafter(down[-1], np.float32(-np.inf)))
        steps += up + down[1:]
    x = np.concatenate([rng.uniform(-110, 110, 1 << 20).astype(np.float32),
                        np.array(steps, np.float32)])
    x = np.concatenate([x, np.zeros(-len(x) % 32, np.float32) + 1.5])  # no scalar tail
    n = len(x)
    graph = compile_graph(parse_module(_graph(name, [1, n])))
    out = np.asarray(graph(x.reshape(1, n))[0]).reshape(n)
    # PyTorch's vector body: pieces of 32000 (one thread's chunk, a multiple of 32)
    ref = np.concatenate([_torch_fn(name)(torch.from_numpy(x[i:i + 32000])).numpy()
                          for i in range(0, n, 32000)])
    ok = _equal(out, ref)
    assert ok.all(), f"{(~ok).sum()} differ, e.g. x={x[~ok][:4]} out={out[~ok][:4]} ref={ref[~ok][:4]}"


@pytest.mark.parametrize("lanes", [16, 32, 48, 64])
def test_scalef_exp_on_register_blocks(lanes: int) -> None:
    """The AVX-512 exp of normal results on a register block's value of any
    multiple of 16 lanes (48: three vscalefps), bit for bit the two-multiply
    exp's, NaN and +-inf included."""
    from test_subnormal_grid import _kernel, _run

    from brainslug.lowering.llvm_helpers import sleef_expf_u10, sleef_expf_u10_scalef

    rng = np.random.default_rng(lanes)
    x = np.concatenate([rng.uniform(-87, 110, 20000),
                        [np.nan, np.inf, 88.72, 88.73, 100.0, 100.5, -87.0, 0.0, -0.0]])
    x = x.astype(np.float32)
    got, _ = _kernel(lambda b, mod, v, w: sleef_expf_u10_scalef(b, v), "host", lanes)
    ref, _ = _kernel(lambda b, mod, v, w: sleef_expf_u10(b, v, normal=True), "host", 16)
    a, r = _run(got, x, x), _run(ref, x, x)
    assert _equal(a, r).all()

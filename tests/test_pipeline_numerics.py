"""Every optimizable layer and the usual fused chains, through the whole default
pipeline to x86 code, against PyTorch's own eager results on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from halo_cases import HALO_POOLS

from brainslug.ir.context import parse_module
from brainslug.testing.executor import compile_graph

C, H, W = 37, 13, 13
RNG = np.random.default_rng(1234)


def tensor(shape: list[int]) -> str:
    return "tensor<" + "x".join("?" if d < 0 else str(d) for d in shape) + "xf32>"


def phys(shape_nchw: list[int], layout: str) -> list[int]:
    n, c, h, w = shape_nchw
    return [n, h, w, c] if layout == "NHWC" else [n, c, h, w]


def run_graph(text: str, *inputs: np.ndarray) -> list[np.ndarray]:
    graph = compile_graph(parse_module(text))
    return [np.asarray(o) for o in graph(*inputs)]


def to_torch(x: np.ndarray, layout: str) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, 3, 1, 2) if layout == "NHWC" and t.dim() == 4 else t


def from_torch(t: torch.Tensor, layout: str) -> np.ndarray:
    if layout == "NHWC" and t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return t.contiguous().numpy()


def check(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(out - ref).max())
    assert err <= tol, f"max|d| = {err:.3e} > {tol:.1e}"


def rand(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 2).astype(np.float32)


UNARY = {
    "nn.relu": (F.relu, ""),
    "nn.sigmoid": (torch.sigmoid, ""),
    "nn.tanh": (torch.tanh, ""),
    "nn.silu": (F.silu, ""),
    "nn.hardswish": (F.hardswish, ""),
    "nn.hardsigmoid": (F.hardsigmoid, ""),
    "nn.gelu": (F.gelu, ' {approximate = "none"}'),
    "nn.gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), ' {approximate = "tanh"}'),
    "nn.clamp": (F.relu6, " {min = 0.0 : f64, max = 6.0 : f64}"),
    "nn.leaky_relu": (lambda x: F.leaky_relu(x, 0.1), " {negative_slope = 0.1 : f64}"),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("batch", [1, 3])
def test_unary(name: str, batch: int) -> None:
    fn, attrs = UNARY[name]
    op = name.split()[0]
    t = tensor([-1, C, H, W])
    text = f"""func.func @f(%x: {t}) -> {t} {{
      %y = {op} %x{attrs} : {t} -> {t}
      func.return %y : {t}
    }}"""
    x = rand(batch, C, H, W)
    x.flat[::97] = np.nan  # NaN propagates like the framework's
    (out,) = run_graph(text, x)
    ref = fn(torch.from_numpy(x)).numpy()
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    check(np.nan_to_num(out), np.nan_to_num(ref))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm(layout: str, batch: int, affine: bool) -> None:
    """Bit for bit PyTorch's kernel: beta = bias - mean * alpha and x * alpha +
    beta are each rounded once (fused multiply-adds)."""
    xt = tensor(phys([-1, C, H, W], layout))
    p = tensor([C])
    wb = "weight %w bias %b " if affine else ""
    wbt = f"{p}, {p}, " if affine else ""
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {xt} {{
      %y = nn.batch_norm %x {wb}mean %m var %v {{eps = 1.0e-3 : f64, layout = "{layout}"}} : ({xt}, {wbt}{p}, {p}) -> {xt}
      func.return %y : {xt}
    }}"""
    x = rand(*phys([batch, C, H, W], layout))
    x.flat[::89] = np.nan
    x.flat[5::97] = np.inf
    w, b, m = rand(C), rand(C), rand(C)
    v = np.abs(rand(C)) + 0.1
    (out,) = run_graph(text, x, w, b, m, v)
    ref = F.batch_norm(to_torch(x, layout), torch.from_numpy(m), torch.from_numpy(v),
                       torch.from_numpy(w) if affine else None,
                       torch.from_numpy(b) if affine else None, False, 0.0, 1e-3)
    assert np.array_equal(out, from_torch(ref, layout), equal_nan=True)


POOLS = [
    # kernel, stride, padding, dilation, ceil_mode
    (3, 2, 1, 1, False),
    (3, 2, 0, 1, True),
    (2, 2, 0, 1, False),
    (3, 1, 1, 2, False),
    (5, 3, 2, 1, True),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("cfg", POOLS)
def test_max_pool(layout: str, cfg) -> None:
    k, s, p, dil, ceil = cfg
    x = rand(*phys([3, C, H, W], layout))
    ref = F.max_pool2d(to_torch(x, layout), k, s, p, dil, ceil_mode=ceil)
    xt = tensor(phys([-1, C, H, W], layout))
    yt = tensor(phys([-1, *ref.shape[1:]], layout))
    text = f"""func.func @f(%x: {xt}) -> {yt} {{
      %y = nn.max_pool2d %x {{kernel = array<i64: {k}, {k}>, strides = array<i64: {s}, {s}>, padding = array<i64: {p}, {p}, {p}, {p}>, dilation = array<i64: {dil}, {dil}>, ceil_mode = {str(ceil).lower()}, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    (out,) = run_graph(text, x)
    check(out, from_torch(ref, layout))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("cfg", [(3, 2, 1, False), (3, 2, 1, True), (2, 2, 0, False),
                                 (3, 2, 0, True), (5, 3, 2, True)])
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool(layout: str, cfg, include_pad: bool) -> None:
    k, s, p, ceil = cfg
    x = rand(*phys([3, C, H, W], layout))
    ref = F.avg_pool2d(to_torch(x, layout), k, s, p, ceil_mode=ceil,
                       count_include_pad=include_pad)
    xt = tensor(phys([-1, C, H, W], layout))
    yt = tensor(phys([-1, *ref.shape[1:]], layout))
    text = f"""func.func @f(%x: {xt}) -> {yt} {{
      %y = nn.avg_pool2d %x {{kernel = array<i64: {k}, {k}>, strides = array<i64: {s}, {s}>, padding = array<i64: {p}, {p}, {p}, {p}>, ceil_mode = {str(ceil).lower()}, count_include_pad = {str(include_pad).lower()}, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    (out,) = run_graph(text, x)
    check(out, from_torch(ref, layout))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("size", [1, 5, 13])
def test_adaptive_avg_pool(layout: str, size: int) -> None:
    x = rand(*phys([3, C, H, W], layout))
    ref = F.adaptive_avg_pool2d(to_torch(x, layout), size)
    xt = tensor(phys([-1, C, H, W], layout))
    yt = tensor(phys([-1, C, size, size], layout))
    text = f"""func.func @f(%x: {xt}) -> {yt} {{
      %y = nn.adaptive_avg_pool2d %x {{output_size = array<i64: {size}, {size}>, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    (out,) = run_graph(text, x)
    check(out, from_torch(ref, layout))


@pytest.mark.parametrize("op,fn", [("nn.add", torch.add), ("nn.mul", torch.mul)])
@pytest.mark.parametrize("rhs_shape", [[-1, C, H, W], [1, C, 1, 1], [-1, C, 1, 1], [W]])
def test_binary_broadcast(op: str, fn, rhs_shape: list[int]) -> None:
    at, bt, yt = tensor([-1, C, H, W]), tensor(rhs_shape), tensor([-1, C, H, W])
    text = f"""func.func @f(%a: {at}, %b: {bt}) -> {yt} {{
      %y = {op} %a, %b : ({at}, {bt}) -> {yt}
      func.return %y : {yt}
    }}"""
    a = rand(3, C, H, W)
    b = rand(*[3 if d < 0 else d for d in rhs_shape])
    (out,) = run_graph(text, a, b)
    check(out, fn(torch.from_numpy(a), torch.from_numpy(b)).numpy())


@pytest.mark.parametrize("axis", [1, 3])
def test_cat(axis: int) -> None:
    shapes = [[-1, 5, H, W], [-1, 11, H, W], [-1, 21, H, W]] if axis == 1 else [
        [-1, H, W, 5], [-1, H, W, 11], [-1, H, W, 21]]
    out_shape = list(shapes[0])
    out_shape[axis] = 37
    ts = [tensor(s) for s in shapes]
    yt = tensor(out_shape)
    text = f"""func.func @f(%a: {ts[0]}, %b: {ts[1]}, %c: {ts[2]}) -> {yt} {{
      %y = nn.cat %a, %b, %c {{axis = {axis} : i64}} : ({", ".join(ts)}) -> {yt}
      func.return %y : {yt}
    }}"""
    xs = [rand(*[2 if d < 0 else d for d in s]) for s in shapes]
    (out,) = run_graph(text, *xs)
    check(out, np.concatenate(xs, axis=axis))


def test_flatten_reshape_mean_softmax() -> None:
    xt = tensor([-1, C, 5, 3])
    ft = tensor([-1, C * 15])
    rt = tensor([-1, 15, C])
    mt = tensor([-1, C])
    text = f"""func.func @f(%x: {xt}) -> ({ft}, {rt}, {mt}, {ft}) {{
      %f = nn.flatten %x {{start_dim = 1 : i64, end_dim = -1 : i64}} : {xt} -> {ft}
      %r = nn.reshape %x : {xt} -> {rt}
      %m = nn.mean %x {{dims = array<i64: 2, 3>, keepdim = false}} : {xt} -> {mt}
      %s = nn.softmax %f {{axis = 1 : i64}} : {ft} -> {ft}
      func.return %f, %r, %m, %s : {ft}, {rt}, {mt}, {ft}
    }}"""
    x = rand(3, C, 5, 3)
    f, r, m, s = run_graph(text, x)
    tx = torch.from_numpy(x)
    check(f, tx.flatten(1).numpy())
    check(r, tx.reshape(3, 15, C).numpy())
    check(m, tx.mean((2, 3)).numpy())
    check(s, torch.softmax(tx.flatten(1), 1).numpy())


# ---------------------------------------------------------------------- fused chains


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("batch", [1, 3])
def test_bn_relu_maxpool(layout: str, batch: int) -> None:
    xt = tensor(phys([-1, C, H, W], layout))
    yt = tensor(phys([-1, C, 7, 7], layout))
    p = tensor([C])
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {yt} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.relu %bn : {xt} -> {xt}
      %y = nn.max_pool2d %r {{kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    x = rand(*phys([batch, C, H, W], layout))
    w, b, m, v = rand(C), rand(C), rand(C), np.abs(rand(C)) + 0.1
    (out,) = run_graph(text, x, w, b, m, v)
    t = F.batch_norm(to_torch(x, layout), *map(torch.from_numpy, (m, v, w, b)), False, 0.0, 1e-5)
    ref = F.max_pool2d(F.relu(t), 3, 2, 1)
    check(out, from_torch(ref, layout))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cat_bn_relu(layout: str) -> None:
    parts = [5, 11, 21]
    axis = 1 if layout == "NCHW" else 3
    ts = [tensor(phys([-1, c, H, W], layout)) for c in parts]
    xt = tensor(phys([-1, C, H, W], layout))
    p = tensor([C])
    text = f"""func.func @f(%a: {ts[0]}, %b: {ts[1]}, %c: {ts[2]}, %w: {p}, %bb: {p}, %m: {p}, %v: {p}) -> {xt} {{
      %x = nn.cat %a, %b, %c {{axis = {axis} : i64}} : ({", ".join(ts)}) -> {xt}
      %bn = nn.batch_norm %x weight %w bias %bb mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.relu %bn : {xt} -> {xt}
      func.return %r : {xt}
    }}"""
    xs = [rand(*phys([3, c, H, W], layout)) for c in parts]
    w, b, m, v = rand(C), rand(C), rand(C), np.abs(rand(C)) + 0.1
    (out,) = run_graph(text, *xs, w, b, m, v)
    cat = torch.cat([to_torch(x, layout) for x in xs], 1)
    ref = F.relu(F.batch_norm(cat, *map(torch.from_numpy, (m, v, w, b)), False, 0.0, 1e-5))
    check(out, from_torch(ref, layout))


def test_add_relu_with_two_outputs() -> None:
    t = tensor([-1, C, H, W])
    text = f"""func.func @f(%a: {t}, %b: {t}) -> ({t}, {t}) {{
      %s = nn.add %a, %b : ({t}, {t}) -> {t}
      %r = nn.relu %s : {t} -> {t}
      func.return %s, %r : {t}, {t}
    }}"""
    a, b = rand(3, C, H, W), rand(3, C, H, W)
    s, r = run_graph(text, a, b)
    check(s, a + b)
    check(r, np.maximum(a + b, 0))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bn_relu6_avgpool(layout: str) -> None:
    xt = tensor(phys([-1, C, H, W], layout))
    yt = tensor(phys([-1, C, 6, 6], layout))
    p = tensor([C])
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {yt} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.clamp %bn {{min = 0.0 : f64, max = 6.0 : f64}} : {xt} -> {xt}
      %y = nn.avg_pool2d %r {{kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, ceil_mode = false, count_include_pad = true, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    x = rand(*phys([3, C, H, W], layout))
    w, b, m, v = rand(C), rand(C), rand(C), np.abs(rand(C)) + 0.1
    (out,) = run_graph(text, x, w, b, m, v)
    t = F.batch_norm(to_torch(x, layout), *map(torch.from_numpy, (m, v, w, b)), False, 0.0, 1e-5)
    ref = F.avg_pool2d(F.relu6(t), 2, 2)
    check(out, from_torch(ref, layout))


def test_maxpool_avgpool_tiled() -> None:
    xt, pt, yt = tensor([-1, C, H, W]), tensor([-1, C, 7, 7]), tensor([-1, C, 3, 3])
    text = f"""func.func @f(%x: {xt}) -> {yt} {{
      %p = nn.max_pool2d %x {{kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"}} : {xt} -> {pt}
      %y = nn.avg_pool2d %p {{kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, ceil_mode = false, count_include_pad = true, layout = "NCHW"}} : {pt} -> {yt}
      func.return %y : {yt}
    }}"""
    from brainslug.ir.context import make_context
    from brainslug.pipeline.default import default_passes

    module = parse_module(text)
    for p in default_passes(lower=False):
        p.apply(make_context(), module)
    assert "loop.tile" in str(module), "max_pool -> avg_pool should run depth-first"
    x = rand(3, C, H, W)
    (out,) = compile_graph(parse_module(text))(x)
    ref = F.avg_pool2d(F.max_pool2d(torch.from_numpy(x), 3, 2, 1), 2, 2)
    check(np.asarray(out), ref.numpy())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("pool", sorted(HALO_POOLS))
@pytest.mark.parametrize("act", ["relu", "hardswish"])
def test_halo_tiles(monkeypatch, layout: str, pool: str, act: str) -> None:
    """BN -> activation -> overlapping pool, with a cache budget so small that
    bs-tile-depth-first splits H into tiles with halos: every tile recomputes
    its overlap rows and fills the padding; results equal PyTorch's."""
    from brainslug.ir.context import make_context
    from brainslug.pipeline import target
    from brainslug.pipeline.default import default_passes

    h, w = 29, 23
    op, (oh, ow), ref_pool = HALO_POOLS[pool]
    # about 7 input rows of one channel (NCHW) or of all channels (NHWC)
    row = 4 * (2 * ow + 3) * (C if layout == "NHWC" else 1)
    monkeypatch.setattr(target, "l2_cache_bytes", lambda: 2 * 7 * row)
    xt = tensor(phys([-1, C, h, w], layout))
    yt = tensor(phys([-1, C, oh, ow], layout))
    p = tensor([C])
    text = f"""func.func @f(%x: {xt}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {yt} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "{layout}"}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
      %r = nn.{act} %bn : {xt} -> {xt}
      %y = {op}, layout = "{layout}"}} : {xt} -> {yt}
      func.return %y : {yt}
    }}"""
    module = parse_module(text)
    for ps in default_passes(lower=False):
        ps.apply(make_context(), module)
    ir = str(module)
    tiles = [ln for ln in ir.splitlines() if "loop.tile" in ln]
    assert len(tiles) == 1
    steps = [int(v) for v in tiles[0].split("step (")[1].split(")")[0].split(",")]
    assert len(steps) == (3 if layout == "NCHW" else 2) and 1 < steps[-1] < oh, tiles[0]
    assert "memref.alloc(%" not in ir, "the BN/activation buffer should be a tile scratch"
    fn = {"relu": F.relu, "hardswish": F.hardswish}[act]
    for batch in (1, 3):
        x = rand(*phys([batch, C, h, w], layout))
        x.flat[::1009] = np.nan  # propagates through every window that sees it
        wt, b, m, v = rand(C), rand(C), rand(C), np.abs(rand(C)) + 0.1
        (out,) = run_graph(text, x, wt, b, m, v)
        t = F.batch_norm(to_torch(x, layout), *map(torch.from_numpy, (m, v, wt, b)), False, 0.0,
                         1e-5)
        ref = from_torch(ref_pool(fn(t)), layout)
        assert np.isnan(ref).any() and np.array_equal(np.isnan(out), np.isnan(ref))
        check(np.nan_to_num(out), np.nan_to_num(ref))


def test_conv_and_linear_as_loops() -> None:
    """With include-compute, a whole network compiles without a framework."""
    from brainslug.passes.form_stacks import FormStacksPass
    from brainslug.pipeline.default import default_passes

    xt, wt, bt = tensor([-1, 8, 9, 9]), tensor([6, 4, 3, 3]), tensor([6])
    ct, ft, lw, lb, yt = (tensor([-1, 6, 5, 5]), tensor([-1, 150]), tensor([7, 150]),
                          tensor([7]), tensor([-1, 7]))
    text = f"""func.func @f(%x: {xt}, %w: {wt}, %b: {bt}, %lw: {lw}, %lb: {lb}) -> {yt} {{
      %c = nn.conv2d %x, %w, %b {{strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 2 : i64, layout = "NCHW"}} : ({xt}, {wt}, {bt}) -> {ct}
      %r = nn.relu %c : {ct} -> {ct}
      %f = nn.flatten %r {{start_dim = 1 : i64, end_dim = -1 : i64}} : {ct} -> {ft}
      %y = nn.linear %f, %lw, %lb : ({ft}, {lw}, {lb}) -> {yt}
      func.return %y : {yt}
    }}"""
    passes = [FormStacksPass(include_compute=True), *default_passes()[1:]]
    graph = compile_graph(parse_module(text), passes=passes)
    x, w, b, lwv, lbv = rand(2, 8, 9, 9), rand(6, 4, 3, 3), rand(6), rand(7, 150), rand(7)
    (out,) = graph(x, w, b, lwv, lbv)
    c = F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 1,
                        groups=2))
    ref = F.linear(c.flatten(1), torch.from_numpy(lwv), torch.from_numpy(lbv))
    err = float(np.abs(np.asarray(out) - ref.numpy()).max())
    assert err <= 1e-4 * max(1.0, float(ref.abs().max()))


def test_torch_tensors_by_pointer() -> None:
    t = tensor([-1, C, H, W])
    text = f"""func.func @f(%x: {t}) -> {t} {{
      %y = nn.relu %x : {t} -> {t}
      func.return %y : {t}
    }}"""
    graph = compile_graph(parse_module(text))
    x = torch.randn(3, C, H, W)
    (out,) = graph(x)
    assert isinstance(out, torch.Tensor)
    assert torch.equal(out, F.relu(x))

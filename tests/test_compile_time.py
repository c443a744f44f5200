"""Generic phases: kernels are generic over extents, so structurally identical
phases (within a kernel, across kernels and shapes) are lowered and compiled
once; plus the compile-time helpers. Numerics are checked against PyTorch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects import llvm

from brainslug.analysis.generic_phases import Canonicalizer, map_template
from brainslug.dialects import loop
from brainslug.ir.context import make_context, parse_module
from brainslug.pipeline.default import default_passes
from brainslug.testing.executor import compile_graph

RNG = np.random.default_rng(7)


def tensor(shape: list[int]) -> str:
    return "tensor<" + "x".join("?" if d < 0 else str(d) for d in shape) + "xf32>"


def rand(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 2).astype(np.float32)


def bn_params(c: int) -> list[np.ndarray]:
    w, b, m = rand(c), rand(c), rand(c)
    return [w, b, m, np.abs(rand(c)) + 0.1]


def ref_bn_relu(x: torch.Tensor, p: list[np.ndarray]) -> torch.Tensor:
    w, b, m, v = map(torch.from_numpy, p)
    return F.relu(F.batch_norm(x, m, v, w, b, False, 0.0, 1e-5))


def check(out: np.ndarray, ref: torch.Tensor) -> None:
    r = ref.numpy()
    assert out.shape == r.shape
    assert np.abs(out - r).max() <= 1e-5 * max(1.0, float(np.abs(r).max()))


def dense_block(c0: int, growth: int, layers: int, hw: int) -> str:
    """A DenseNet-like graph: each layer is cat -> BN -> ReLU -> conv (1x1) of
    all features so far, adding `growth` channels."""
    args = [f"%x: {tensor([-1, c0, hw, hw])}"]
    body = []
    feats = [("%x", c0)]
    for i in range(layers):
        c = sum(n for _, n in feats)
        t = tensor([-1, c, hw, hw])
        p = tensor([c])
        args += [f"%w{i}: {p}", f"%b{i}: {p}", f"%m{i}: {p}", f"%v{i}: {p}",
                 f"%k{i}: {tensor([growth, c, 1, 1])}"]
        if len(feats) > 1:
            ts = ", ".join(tensor([-1, n, hw, hw]) for _, n in feats)
            body.append(f"%cat{i} = nn.cat {', '.join(v for v, _ in feats)} {{axis = 1 : i64}} "
                        f": ({ts}) -> {t}")
            src = f"%cat{i}"
        else:
            src = feats[0][0]
        body.append(f"%bn{i} = nn.batch_norm {src} weight %w{i} bias %b{i} mean %m{i} var %v{i} "
                    f'{{eps = 1.0e-5 : f64, layout = "NCHW"}} : ({t}, {p}, {p}, {p}, {p}) -> {t}')
        body.append(f"%r{i} = nn.relu %bn{i} : {t} -> {t}")
        out = tensor([-1, growth, hw, hw])
        body.append(f"%y{i} = nn.conv2d %r{i}, %k{i} {{strides = array<i64: 1, 1>, "
                    f"padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, "
                    f'layout = "NCHW"}} : ({t}, {tensor([growth, c, 1, 1])}) -> {out}')
        feats.append((f"%y{i}", growth))
    last = feats[-1][0]
    lt = tensor([-1, growth, hw, hw])
    return (f"func.func @f({', '.join(args)}) -> {lt} {{\n  " + "\n  ".join(body)
            + f"\n  func.return {last} : {lt}\n}}")


def lowered(text: str):
    module = parse_module(text)
    ctx = make_context()
    for p in default_passes():
        p.apply(ctx, module)
    module.verify()
    return module


def phase_functions(module) -> list[str]:
    return [op.sym_name.data for op in module.ops
            if isinstance(op, llvm.FuncOp) and op.body.blocks]


def kernel_infos(module) -> list[loop.KernelInfoOp]:
    return [op for op in module.ops if isinstance(op, loop.KernelInfoOp)]


# ---------------------------------------------------------------------------- sharing


def bn_relu_graph(shapes: list[list[int]]) -> str:
    """Independent BN -> ReLU stacks on inputs of different shapes."""
    args, body, outs = [], [], []
    for i, s in enumerate(shapes):
        t, p = tensor(s), tensor([s[1]])
        args += [f"%x{i}: {t}", f"%w{i}: {p}", f"%b{i}: {p}", f"%m{i}: {p}", f"%v{i}: {p}"]
        body.append(f"%bn{i} = nn.batch_norm %x{i} weight %w{i} bias %b{i} mean %m{i} var %v{i} "
                    f'{{eps = 1.0e-5 : f64, layout = "NCHW"}} : ({t}, {p}, {p}, {p}, {p}) -> {t}')
        body.append(f"%r{i} = nn.relu %bn{i} : {t} -> {t}")
        outs.append((f"%r{i}", t))
    return (f"func.func @f({', '.join(args)}) -> ({', '.join(t for _, t in outs)}) {{\n  "
            + "\n  ".join(body)
            + f"\n  func.return {', '.join(v for v, _ in outs)} : {', '.join(t for _, t in outs)}\n}}")


SHAPES = [[-1, 37, 13, 13], [-1, 64, 7, 7], [-1, 19, 30, 30], [-1, 128, 5, 5]]


def test_stacks_of_other_shapes_share_phase_functions() -> None:
    module = lowered(bn_relu_graph(SHAPES))
    infos = kernel_infos(module)
    assert len(infos) == len(SHAPES)
    # one function for the per-channel alpha/beta phase, one for the elementwise one
    assert len(phase_functions(module)) == 2
    assert len({tuple(p.data for p in info.phases) for info in infos}) == 1
    # each kernel passes its own extents
    assert len({tuple(info.slots.get_values()) for info in infos}) == len(SHAPES)


@pytest.mark.parametrize("batch", [1, 3])
def test_shared_phases_compute_each_shape(batch: int) -> None:
    graph = compile_graph(parse_module(bn_relu_graph(SHAPES)))
    inputs, refs = [], []
    for s in SHAPES:
        x = rand(batch, *s[1:])
        p = bn_params(s[1])
        inputs += [x, *p]
        refs.append(ref_bn_relu(torch.from_numpy(x), p))
    for out, ref in zip(graph(*inputs), refs, strict=True):
        check(np.asarray(out), ref)


@pytest.mark.parametrize("batch", [1, 2])
def test_dense_block_parts_share_functions(batch: int) -> None:
    """The parts of cat consumers (one per cat operand, each reading it in place
    at its channel offset) share a few functions across layers."""
    c0, growth, layers, hw = 24, 8, 6, 9
    text = dense_block(c0, growth, layers, hw)
    module = lowered(text)
    parts = sum(len(info.phases) for info in kernel_infos(module))
    funcs = phase_functions(module)
    assert parts > 3 * len(funcs), (parts, funcs)
    assert len(funcs) <= 10

    graph = compile_graph(parse_module(text))
    x = rand(batch, c0, hw, hw)
    inputs = [x]
    params = []
    feats = [torch.from_numpy(x)]
    for i in range(layers):
        c = c0 + growth * i
        p = bn_params(c)
        k = rand(growth, c, 1, 1) * 0.2
        inputs += [*p, k]
        params.append((p, k))
    for p, k in params:
        y = F.conv2d(ref_bn_relu(torch.cat(feats, 1), p), torch.from_numpy(k))
        feats.append(y)
    (out,) = graph(*inputs)
    check(np.asarray(out), feats[-1])


def test_generic_and_exact_lowering_agree() -> None:
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    text = dense_block(16, 8, 3, 6)
    results = []
    for generic in (True, False):
        module = parse_module(text)
        ctx = make_context()
        for p in default_passes(lower=False):
            p.apply(ctx, module)
        LowerToLLVMPass(generic=generic).apply(ctx, module)
        module.verify()
        infos = kernel_infos(module)
        assert all((info.phase_args is not None) == generic for info in infos)
        kernels = compile_kernels(module, X86Backend())
        outs = []
        rng = np.random.default_rng(3)
        for info in infos:
            runner = kernels[info.kernel.data]
            bufs = []
            for t in list(info.buffers)[: runner.num_args]:
                shape = [2 if d < 0 else d for d in t.get_shape()]
                bufs.append(rng.standard_normal(shape).astype(np.float32))
            runner(bufs)
            outs.append([b.copy() for b in bufs])
        results.append(outs)
    for a, b in zip(*results, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------- keys


KEYED = """
func.func @k(%x: memref<?x{C}x{H}xf32>, %y: memref<?x{C}x{H}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x{C}x{H}xf32>
  loop.nest parallel 2 (%i, %c) = (0, {LO}) to (%n, {C}) {{
    simd.loop (%w) = (0) to ({H}) {{
      %v = simd.load %x[%i, %c, %w] map affine_map<(d0, d1, d2) -> (d0, d1 - {LO}, d2)> : memref<?x{C}x{H}xf32>
      simd.store %v, %y[%i, %c, %w] : memref<?x{C}x{H}xf32>
    }}
  }}
  func.return
}}
"""


def phase_key(generic: bool = True, **kw):
    module = parse_module(KEYED.format(**kw))
    fn = next(iter(module.ops))
    block = fn.body.block
    phase = next(op for op in block.ops if isinstance(op, loop.NestOp))
    return Canonicalizer(block, set(block.args), generic).phase(phase)


def test_keys_ignore_extents_and_offsets() -> None:
    a = phase_key(C=37, H=13, LO=5)
    b = phase_key(C=64, H=9, LO=32)
    assert a.key == b.key
    assert a.params == [5, 37, 13, -5] and b.params == [32, 64, 9, -32]
    assert len(a.buffers) == 2


CAT_LAST = """
func.func @k(%x: memref<?x{C}x{H}xf32>, %z: memref<?x{C}x{H}xf32>, %y: memref<?x{C}x{H2}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x{C}x{H}xf32>
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, {C}) {{
    simd.loop (%w) = (0) to ({H}) {{
      %v = simd.load %x[%i, %c, %w] : memref<?x{C}x{H}xf32>
      simd.store %v, %y[%i, %c, %w] : memref<?x{C}x{H2}xf32>
    }}
    simd.loop (%u) = ({H}) to ({H2}) {{
      %v = simd.load %z[%i, %c, %u] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - {H})> : memref<?x{C}x{H}xf32>
      simd.store %v, %y[%i, %c, %u] : memref<?x{C}x{H2}xf32>
    }}
  }}
  func.return
}}
"""


def cat_key(c: int, h: int):
    module = parse_module(CAT_LAST.format(C=c, H=h, H2=2 * h))
    block = next(iter(module.ops)).body.block
    phase = next(op for op in block.ops if isinstance(op, loop.NestOp))
    return Canonicalizer(block, set(block.args)).phase(phase)


def test_whole_chunk_loops_are_keyed() -> None:
    """Sibling simd.loops (merged cat pieces) whose extents are multiples of 16
    are keyed as such (their code has no masked tail); the extents stay
    parameters. A lone simd.loop is not: it shares one function whatever its
    extent."""
    a, b, c = cat_key(37, 32), cat_key(64, 48), cat_key(37, 13)
    assert a.key == b.key and "whole" in a.key
    assert len(a.whole) == 2 and not c.whole and c.key != a.key
    assert "whole" not in phase_key(C=37, H=32, LO=5).key


@pytest.mark.parametrize("h", [32, 13])
def test_whole_chunk_loops_lower_without_tail(h: int) -> None:
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    module = parse_module(CAT_LAST.format(C=7, H=h, H2=2 * h))
    LowerToLLVMPass().apply(make_context(), module)
    assert ("llvm.masked" in str(module)) == (h % 16 != 0)
    x, z = rand(3, 7, h), rand(3, 7, h)
    y = np.zeros((3, 7, 2 * h), np.float32)
    compile_kernels(module, X86Backend())["k"]([x, z, y])
    np.testing.assert_array_equal(y, np.concatenate([x, z], 2))


def test_keys_keep_equalities_and_special_values() -> None:
    # equal extents share a parameter, so the pattern of equalities is keyed
    assert phase_key(C=37, H=13, LO=5).key != phase_key(C=13, H=13, LO=5).key
    # 0 and 1 stay in the key (they fold away)
    assert phase_key(C=37, H=13, LO=5).key != phase_key(C=37, H=1, LO=5).key
    # exact keys keep every number
    assert phase_key(False, C=37, H=13, LO=5).key != phase_key(False, C=64, H=9, LO=32).key


def test_map_template_parameters_only_offsets() -> None:
    from xdsl.ir.affine import AffineExpr, AffineMap

    d0, d1 = AffineExpr.dimension(0), AffineExpr.dimension(1)
    amap = AffineMap(2, 0, (d0 * 2 + d1 - 1, (d0 + 3) // 4))
    text, consts = map_template(amap)
    assert consts == (-1, 3)  # the stride 2 and the divisor 4 stay in the key
    assert "2" in text and "4" in text


# ---------------------------------------------------------------------------- time


def test_dense_block_compiles_quickly() -> None:
    """A 12-layer dense block (78 cat parts) compiles in well under the time it
    took before phases were generic (generous bound for a shared machine)."""
    import os

    text = dense_block(32, 16, 12, 14)
    old = os.environ.get("BRAINSLUG_CACHE")
    os.environ["BRAINSLUG_CACHE"] = "0"
    try:
        t = time.perf_counter()
        compile_graph(parse_module(text))
        elapsed = time.perf_counter() - t
    finally:
        if old is None:
            del os.environ["BRAINSLUG_CACHE"]
        else:
            os.environ["BRAINSLUG_CACHE"] = old
    assert elapsed < 30, elapsed


def test_gc_paused_is_reentrant() -> None:
    import gc

    from brainslug.ir.compile_time import gc_paused

    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            pass
        objs = [[i] for i in range(10)]
        assert objs
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_nested_gc_paused_does_not_count_frozen_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """`gc.get_freeze_count` walks every frozen object: nested blocks don't
    ask it; what they create is frozen too until the outer block ends."""
    import gc

    from brainslug.ir.compile_time import gc_paused

    with gc_paused():
        monkeypatch.setattr(gc, "get_freeze_count", lambda: pytest.fail("counted"))
        frozen = len(gc.get_objects())
        with gc_paused():
            assert not gc.isenabled()
            objs = [[i] for i in range(100)]
        assert gc.isenabled() and objs
        assert len(gc.get_objects()) < frozen  # the nested block's objects are frozen
        monkeypatch.undo()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


# ---------------------------------------------------------------------------- shapes


class _Flatten(torch.nn.Module):
    """Conv, BN, a batch-dependent flatten and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3)
        self.bn = torch.nn.BatchNorm2d(5)
        self.fc = torch.nn.Linear(5 * 11 * 11, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.flatten(1)) + y.view(-1).sum()


class _DataDependent(torch.nn.Module):
    """An op without a meta kernel's static shape (nonzero): needs a real run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + torch.nonzero(x > 0).shape[0]


def _real_shapes(gm: torch.fx.GraphModule, shape: list[int]) -> dict:
    from brainslug.frontend_torch.shapes import tensor_meta

    a = tensor_meta(gm, [torch.randn([1 if d == 0 else d for d in shape])])
    if 0 not in shape:
        return a
    b = tensor_meta(gm, [torch.randn([2 if d == 0 else d for d in shape])])
    return {n: (tuple(-1 if x != y else x for x, y in zip(s, b[n][0], strict=True)), dt)
            for n, (s, dt) in a.items() if len(b[n][0]) == len(s)}


@pytest.mark.parametrize("shape", [[0, 3, 13, 13], [3, 3, 13, 13]])
def test_shapes_from_meta_tensors(shape: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Shape propagation runs on meta tensors (nothing computed, the model's
    parameters and statistics untouched) and finds what real runs find."""
    from brainslug.frontend_torch import shapes as shape_inference
    from brainslug.frontend_torch import tracing

    model = _Flatten().eval()
    gm = tracing.trace(model)
    ref = _real_shapes(gm, shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    real = shape_inference.tensor_meta
    def record(g: torch.fx.GraphModule, xs: list[torch.Tensor]) -> dict:
        # the graph runs on meta parameters; the model's own stay as they are
        calls.append({x.device.type for x in [*xs, *g.parameters()]})
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        return real(g, xs)

    monkeypatch.setattr(shape_inference, "tensor_meta", record)
    shapes = shape_inference.propagate_shapes(gm, [shape])
    assert shapes == ref
    assert shapes["fc"][0] == ((-1 if 0 in shape else 3), 7)
    assert calls and all(c == {"meta"} for c in calls)
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu" and torch.equal(v, before[k])


def test_shapes_fall_back_to_real_runs() -> None:
    from brainslug.frontend_torch import shapes as shape_inference
    from brainslug.frontend_torch import tracing

    gm = tracing.trace(_DataDependent())
    shape = [0, 4, 5, 5]
    assert shape_inference.propagate_shapes(gm, [shape]) == _real_shapes(gm, shape)


def test_meta_runs_are_reused_until_the_graph_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold optimize() asks for shapes and memory orders several times
    (conv="auto"'s candidates, trial plan and final plan): each question runs
    the graph on meta tensors once, and a graph or module that changes is run
    again."""
    import torchvision

    import brainslug.pytorch as brainslug
    from brainslug.frontend_torch import shapes as shape_inference
    from brainslug.frontend_torch import tracing

    runs: list[tuple[int, ...]] = []
    real = shape_inference._meta_run_uncached

    def counted(gm, shapes, batches, orders, channels_last, meta=None):
        runs.append(tuple(batches))
        return real(gm, shapes, batches, orders, channels_last, meta)

    monkeypatch.setattr(shape_inference, "_meta_run_uncached", counted)
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    m = torchvision.models.resnet18(weights=None).eval()
    opt = brainslug.optimize(m, [0, 3, 35, 37], conv="auto")
    # shapes at batch 1 and 2, orders channels-last (at most once more for the
    # graph the final plan rewrote: residual adds into its convolutions)
    assert runs.count((1, 2)) <= 2 and runs.count((2,)) <= 2 and len(runs) <= 4, runs
    x = torch.randn(2, 3, 35, 37)
    with torch.no_grad():
        assert (opt(x) - m(x)).abs().max().item() <= 1e-4 * max(1.0, m(x).abs().max().item())
    gm = tracing.trace(_Flatten().eval())
    first = shape_inference.propagate_shapes(gm, [[0, 3, 13, 13]])
    runs.clear()
    assert shape_inference.propagate_shapes(gm, [[0, 3, 13, 13]]) == first and runs == []
    gm.fc = torch.nn.Linear(gm.fc.in_features, 5)  # a module replaced under its name
    assert shape_inference.propagate_shapes(gm, [[0, 3, 13, 13]])["fc"][0] == (-1, 5)
    assert runs == [(1, 2)]


class _Norms(torch.nn.Module):
    """Batch norms of every rank and layout a meta run meets: channels-last
    and contiguous 4-D, 2-D and 3-D BatchNorm1d, one without running
    statistics, and a permuted (neither layout) input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.bn_free = torch.nn.BatchNorm2d(6, track_running_stats=False)
        self.bn1 = torch.nn.BatchNorm1d(6)
        self.bn_seq = torch.nn.BatchNorm1d(6)
        self.bn3 = torch.nn.BatchNorm3d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        y = self.bn_free(y) + self.bn(y.permute(0, 1, 3, 2)).permute(0, 1, 3, 2)
        seq = self.bn_seq(y.flatten(2))
        vol = self.bn3(y.unsqueeze(2))
        return self.bn1(y.mean((2, 3))) + seq.mean(2) + vol.mean((2, 3, 4))


@pytest.mark.parametrize("channels_last", [True, False])
def test_meta_batch_norms_match_pytorch(channels_last: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A meta run takes an eval batch norm's result as a tensor like its input
    (`_meta_batch_norm`) instead of PyTorch's slow decomposition: the shapes,
    dtypes and memory orders are the decomposition's, for every rank and
    layout; the permuted input runs the module."""
    from brainslug.frontend_torch import shapes as shape_inference
    from brainslug.frontend_torch import tracing

    gm = tracing.trace(_Norms().eval())
    taken: list[str] = []
    real = shape_inference._meta_batch_norm

    def spy(m, args, kwargs):  # type: ignore[no-untyped-def]
        out = real(m, args, kwargs)
        taken.append("shortcut" if out is not None else "module")
        return out

    monkeypatch.setattr(shape_inference, "_meta_batch_norm", spy)
    shapes = [[0, 3, 11, 9]]
    fast = shape_inference._meta_run_uncached(gm, shapes, (1, 2), False, channels_last)
    fast_orders = shape_inference._meta_run_uncached(gm, shapes, (2,), True, channels_last)
    assert "shortcut" in taken and "module" in taken, taken
    monkeypatch.setattr(shape_inference, "_meta_batch_norm", lambda m, args, kwargs: None)
    assert shape_inference._meta_run_uncached(gm, shapes, (1, 2), False, channels_last) == fast
    assert shape_inference._meta_run_uncached(gm, shapes, (2,), True, channels_last) == fast_orders


def test_meta_batch_norm_errors_are_pytorchs() -> None:
    """A batch norm given the wrong channel count still fails in the meta run
    (optimize() reports that the model does not run on the shape)."""
    from brainslug.frontend_torch import shapes as shape_inference
    from brainslug.frontend_torch import tracing

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 1), torch.nn.BatchNorm2d(6)).eval()
    with pytest.raises(RuntimeError):
        shape_inference._meta_run_uncached(tracing.trace(model), [[0, 3, 4, 4]], (1, 2), False, True)


class _AlikeStacks(torch.nn.Module):
    """Stacks (between library convolutions) that differ only in an attribute
    (a LeakyReLU's slope, a batch norm's eps) or in the order of operands."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(6, 6, 1) for _ in range(6))
        self.acts = torch.nn.ModuleList([torch.nn.LeakyReLU(0.1), torch.nn.LeakyReLU(0.2),
                                         torch.nn.LeakyReLU(0.1)])
        self.bns = torch.nn.ModuleList([torch.nn.BatchNorm2d(6, eps=1e-3),
                                        torch.nn.BatchNorm2d(6)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs[:3], self.acts, strict=True):
            x = act(conv(x))
        y = self.convs[3](x)
        z = self.convs[4](x)
        x = self.convs[5](torch.relu(y - z)) * self.convs[5](torch.relu(z - y))
        return self.bns[1](self.bns[0](x) + x)


@pytest.mark.parametrize("name", ["alike", "resnet18", "mobilenet_v3_small", "densenet121"])
def test_structure_keys_group_stacks_as_their_text_does(name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`structure_key` (built from ops, attributes and types) puts two stacks
    in one class exactly where the printed standalone modules agree up to the
    stack's name, layer names and SSA names (the key it replaced)."""
    import re

    import torchvision

    import brainslug.pytorch as brainslug
    from brainslug.plan import units

    ssa, node = re.compile(r"%[A-Za-z_0-9][\w$.-]*"), re.compile(r'bs\.node = "[^"]*"')

    def printed(module, stack):  # type: ignore[no-untyped-def]
        text = node.sub('bs.node = ""', str(module).replace(f'"{stack}"', '"bs.unit"'))
        names: dict[str, str] = {}
        return ssa.sub(lambda m: names.setdefault(m[0], f"%{len(names)}"), text)

    seen: list[tuple[str, str]] = []
    key = units.structure_key

    def both(module, stack):  # type: ignore[no-untyped-def]
        seen.append((printed(module, stack), key(module, stack)))
        return seen[-1][1]

    monkeypatch.setattr(units, "structure_key", both)
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    model = _AlikeStacks().eval() if name == "alike" else \
        torchvision.models.get_model(name, weights=None).eval()
    channels = 6 if name == "alike" else 3
    for conv in ("library", "brainslug"):
        brainslug.optimize(model, [0, channels, 40, 40], conv=conv)

    def classes(k: int) -> list[list[int]]:
        out: dict[str, list[int]] = {}
        for i, pair in enumerate(seen):
            out.setdefault(pair[k], []).append(i)
        return sorted(out.values())

    assert len(seen) > 10 and 1 < len(classes(0)) < len(seen)
    assert classes(1) == classes(0)


# ---------------------------------------------------------------------------- rolled runs


def cat_kernel(name: str, first: int, piece: int, pieces: int, h: int = 3) -> str:
    """A kernel that copies a first buffer of `first` lanes and `pieces` buffers
    of `piece` lanes each into one output, one sibling simd.loop per buffer
    (the shape of a merged `cat`), scaling each by 2."""
    total = first + piece * pieces
    args = [f"%a: memref<?x{h}x{first}xf32>"]
    args += [f"%p{k}: memref<?x{h}x{piece}xf32>" for k in range(pieces)]
    args.append(f"%y: memref<?x{h}x{total}xf32>")
    loops = [f"""    simd.loop (%w) = (0) to ({first}) {{
      %v = simd.load %a[%i, %j, %w] : memref<?x{h}x{first}xf32>
      %r = simd.mulf %v, %two : !simd.vec<f32>
      simd.store %r, %y[%i, %j, %w] : memref<?x{h}x{total}xf32>
    }}"""]
    for k in range(pieces):
        lo = first + piece * k
        loops.append(f"""    simd.loop (%w) = ({lo}) to ({lo + piece}) {{
      %v = simd.load %p{k}[%i, %j, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - {lo})> : memref<?x{h}x{piece}xf32>
      %r = simd.mulf %v, %two : !simd.vec<f32>
      simd.store %r, %y[%i, %j, %w] : memref<?x{h}x{total}xf32>
    }}""")
    body = "\n".join(loops)
    return f"""func.func @{name}({', '.join(args)}) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %a, %c0 : memref<?x{h}x{first}xf32>
  %f = arith.constant 2.0 : f32
  loop.nest parallel 2 (%i, %j) = (0, 0) to (%n, {h}) {{
    %two = simd.splat %f : f32
{body}
  }}
  func.return
}}"""


@pytest.mark.parametrize("batch", [1, 3])
def test_cat_pieces_roll_into_one_function(batch: int) -> None:
    """Kernels of 2 to 6 like pieces (37 lanes each: a masked tail per piece)
    after a first one share one phase function: the pieces run as a loop over
    a table of rows. Each computes its own concatenation."""
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    counts = [2, 3, 4, 6]
    text = "\n".join(cat_kernel(f"cat{n}", 13 + 2 * n, 37, n) for n in counts)
    module = parse_module(text)
    LowerToLLVMPass().apply(make_context(), module)
    module.verify()
    assert len(phase_functions(module)) == 1
    kernels = compile_kernels(module, X86Backend())
    for n in counts:
        first = rand(batch, 3, 13 + 2 * n)
        pieces = [rand(batch, 3, 37) for _ in range(n)]
        y = np.full((batch, 3, 13 + 2 * n + 37 * n), np.nan, np.float32)
        kernels[f"cat{n}"]([first, *pieces, y])
        np.testing.assert_array_equal(y, 2 * np.concatenate([first, *pieces], 2))


def test_runs_need_like_members() -> None:
    """Siblings that differ in more than buffers and numbers (another op)
    are not rolled together; a lone like pair is."""
    text = cat_kernel("k", 16, 16, 3).replace(
        "%r = simd.mulf %v, %two", "%r = simd.addf %v, %two", 2)  # first loop and piece 0
    module = parse_module(text)
    block = next(iter(module.ops)).body.block
    phase = next(op for op in block.ops if isinstance(op, loop.NestOp))
    sig = Canonicalizer(block, set(block.args), roll=True).phase(phase)
    (run,) = sig.runs
    assert len(run.ops) == 2 and run.params == [[32, 48, -32], [48, 64, -48]]
    assert not Canonicalizer(block, set(block.args)).phase(phase).runs


REDUCE = """
func.func @k(%x: memref<?x{K}xf32>, %y: memref<?xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x{K}xf32>
  loop.nest parallel 1 (%i) = (0) to (%n) {{
    %s = loop.reduce add (%k) = (0) to ({K}) init 0.0 : f32 -> f32 {{
      %v = loop.load %x[%i, %k] : memref<?x{K}xf32>
      loop.yield %v : f32
    }}
    loop.store %s, %y[%i] : f32, memref<?xf32>
  }}
  func.return
}}
"""


def test_long_reductions_are_parameters() -> None:
    """A reduction over 16 or more points (a convolution's input channels)
    has its bound as a parameter; a window's few taps stay in the key."""

    def key(k: int):
        module = parse_module(REDUCE.format(K=k))
        block = next(iter(module.ops)).body.block
        phase = next(op for op in block.ops if isinstance(op, loop.NestOp))
        return Canonicalizer(block, set(block.args)).phase(phase)

    assert key(37).key == key(70).key and key(37).params == [37]
    assert key(3).key != key(5).key  # (the buffer's dim is a parameter either way)


@pytest.mark.parametrize("k", [17, 70])
def test_long_reductions_compute_each_length(k: int) -> None:
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    module = parse_module(REDUCE.format(K=k))
    LowerToLLVMPass().apply(make_context(), module)
    x = rand(3, k)
    y = np.zeros(3, np.float32)
    compile_kernels(module, X86Backend())["k"]([x, y])
    np.testing.assert_allclose(y, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-4)


def test_bare_constant_map_results_stay_in_the_key() -> None:
    """A map result that is a constant (a fixed column of a register block's
    partial sums) is a position, not an offset: it is not a parameter."""
    from xdsl.ir.affine import AffineExpr, AffineMap

    d0 = AffineExpr.dimension(0)
    text, consts = map_template(AffineMap(1, 0, (d0 + 5, AffineExpr.constant(3))))
    assert consts == (5,) and "3" in text


BLOCK = """
func.func @k(%x: memref<?x{K}xf32>, %w: memref<{K}x{O}xf32>, %y: memref<?x{O}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x{K}xf32>
  loop.nest parallel 1 (%i) = (0) to (%n) {{
    simd.loop (%o) = (0) to ({O}){V} {{
      %a = loop.reduce add contract (%k) = (0) to ({K}) init 0.0 : f32 -> !simd.vec<f32> {{
        %xv = loop.load %x[%i, %k] : memref<?x{K}xf32>
        %wv = simd.load %w[%k, %o] : memref<{K}x{O}xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }}
      simd.store %a, %y[%i, %o] : memref<?x{O}xf32>
    }}
  }}
  func.return
}}
"""


def block_sig(k: int, o: int, vectors: int | None):
    text = BLOCK.format(K=k, O=o, V=f" vectors {vectors}" if vectors else "")
    block = next(iter(parse_module(text).ops)).body.block
    phase = next(op for op in block.ops if isinstance(op, loop.NestOp))
    return Canonicalizer(block, set(block.args)).phase(phase)


def test_register_block_channels_stay_in_the_key() -> None:
    """A register block's output channels (its simd.loop of V vectors) stay
    in the key, so LLVM knows its blocks and tail; its input channels, and a
    plain simd.loop's extent, are parameters."""
    assert block_sig(37, 53, 2).key == block_sig(70, 53, 2).key
    assert block_sig(37, 53, 2).key != block_sig(37, 80, 2).key
    assert "53" in block_sig(37, 53, 2).key
    assert block_sig(37, 53, None).key == block_sig(37, 80, None).key


@pytest.mark.parametrize("o", [53, 64])
def test_register_block_computes_each_width(o: int) -> None:
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    module = parse_module(BLOCK.format(K=37, O=o, V=" vectors 2"))
    LowerToLLVMPass().apply(make_context(), module)
    x, w = rand(3, 37), rand(37, o)
    y = np.zeros((3, o), np.float32)
    compile_kernels(module, X86Backend())["k"]([x, w, y])
    np.testing.assert_allclose(y, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)


INNER = """
func.func @k(%x: memref<?x{C}xf32>, %y: memref<?x{C}xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x{C}xf32>
  loop.nest parallel 1 (%i) = (0) to (%n) {{
    loop.nest (%k) = (0) to ({K}) {{
      %v = loop.load %x[%i, %k] : memref<?x{C}xf32>
      loop.store %v, %y[%i, %k] : f32, memref<?x{C}xf32>
    }}
  }}
  func.return
}}
"""


def test_inner_counts_do_not_split_keys() -> None:
    """A count of a nest inside the phase (a convolution's chunks of input
    channels) has a slot of its own: equal to a dim by chance, it keys the
    phase as any other count does (densenet121: 25 -> 19 convolution phases)."""
    def sig(c: int, k: int):
        module = parse_module(INNER.format(C=c, K=k))
        block = next(iter(module.ops)).body.block
        phase = next(op for op in block.ops if isinstance(op, loop.NestOp))
        return Canonicalizer(block, set(block.args)).phase(phase)

    assert sig(37, 5).key == sig(37, 37).key == sig(64, 9).key
    assert sig(37, 37).params == [37, 37]


@pytest.mark.parametrize("k", [5, 37])
def test_inner_counts_compute_each_count(k: int) -> None:
    from brainslug.lowering.backends.x86 import X86Backend
    from brainslug.lowering.lower_to_llvm import LowerToLLVMPass
    from brainslug.runtime.jit import compile_kernels

    module = parse_module(INNER.format(C=37, K=k))
    LowerToLLVMPass().apply(make_context(), module)
    x = rand(3, 37)
    y = np.zeros((3, 37), np.float32)
    compile_kernels(module, X86Backend())["k"]([x, y])
    np.testing.assert_array_equal(y[:, :k], x[:, :k])
    assert not y[:, k:].any()

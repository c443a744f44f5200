"""The on-disk kernel cache: a second compile of the same kernels (or of others
that share phases with them) loads machine code instead of running LLVM."""

from __future__ import annotations

import numpy as np
import pytest

from brainslug.ir.context import make_context, parse_module
from brainslug.lowering.backends.x86 import X86Backend
from brainslug.pipeline.default import default_passes
from brainslug.runtime import cache
from brainslug.runtime.jit import compile_kernels


def graph(c: int, hw: int, act: str = "nn.relu") -> str:
    t, p = f"tensor<?x{c}x{hw}x{hw}xf32>", f"tensor<{c}xf32>"
    return f"""func.func @f(%x: {t}, %w: {p}, %b: {p}, %m: {p}, %v: {p}) -> {t} {{
      %bn = nn.batch_norm %x weight %w bias %b mean %m var %v {{eps = 1.0e-5 : f64, layout = "NCHW"}} : ({t}, {p}, {p}, {p}, {p}) -> {t}
      %r = {act} %bn : {t} -> {t}
      func.return %r : {t}
    }}"""


def lowered(text: str):
    module = parse_module(text)
    ctx = make_context()
    for p in default_passes():
        p.apply(ctx, module)
    return module


def run(kernels, c: int, hw: int) -> np.ndarray:
    (runner,) = kernels.kernels.values()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    w, b, m = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(c)).astype(np.float32) + 0.5
    out = np.empty_like(x)
    runner([x, w, b, m, v, out])
    ref = np.maximum((x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5)
                     * w[:, None, None] + b[:, None, None], 0)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    return out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BRAINSLUG_CACHE", raising=False)
    return tmp_path


def objects(path) -> list:
    return sorted((path / "objects").glob("*.o")) if (path / "objects").exists() else []


def test_second_compile_hits(cache_dir) -> None:
    first = compile_kernels(lowered(graph(37, 13)), X86Backend())
    assert first.stats == {"compiled": 2, "cached": 0}
    assert len(objects(cache_dir)) == 2
    a = run(first, 37, 13)
    second = compile_kernels(lowered(graph(37, 13)), X86Backend())
    assert second.stats == {"compiled": 0, "cached": 2}
    np.testing.assert_array_equal(run(second, 37, 13), a)


def test_other_shapes_and_networks_share_entries(cache_dir) -> None:
    compile_kernels(lowered(graph(37, 13)), X86Backend())
    # other extents: the same generic phases
    other = compile_kernels(lowered(graph(64, 7)), X86Backend())
    assert other.stats == {"compiled": 0, "cached": 2}
    run(other, 64, 7)
    # another activation: the per-channel phase is shared, the elementwise one is new
    sig = compile_kernels(lowered(graph(37, 13, "nn.sigmoid")), X86Backend())
    assert sig.stats == {"compiled": 1, "cached": 1}


def test_target_is_part_of_the_key(cache_dir) -> None:
    compile_kernels(lowered(graph(37, 13)), X86Backend())
    haswell = X86Backend("haswell")
    assert haswell.fingerprint() != X86Backend().fingerprint()
    module = parse_module(graph(37, 13))
    ctx = make_context()
    for p in default_passes(cpu="haswell"):
        p.apply(ctx, module)
    k = compile_kernels(module, haswell)
    assert k.stats["cached"] == 0


def test_disabled(cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("BRAINSLUG_CACHE", "0")
    assert not cache.enabled()
    for _ in range(2):
        k = compile_kernels(lowered(graph(37, 13)), X86Backend())
        assert k.stats == {"compiled": 2, "cached": 0}
    assert objects(cache_dir) == []


def test_damaged_entries_are_misses(cache_dir) -> None:
    compile_kernels(lowered(graph(37, 13)), X86Backend())
    files = objects(cache_dir)
    assert files
    files[0].write_bytes(files[0].read_bytes()[:-7])  # truncated
    files[1].write_bytes(b"garbage")
    k = compile_kernels(lowered(graph(37, 13)), X86Backend())
    assert k.stats == {"compiled": 2, "cached": 0}
    run(k, 37, 13)
    # and they were rewritten
    k = compile_kernels(lowered(graph(37, 13)), X86Backend())
    assert k.stats == {"compiled": 0, "cached": 2}


def test_an_entry_under_another_key_is_a_miss(cache_dir) -> None:
    """A valid object stored under another entry's key (swapped files) is a
    miss, not the wrong code run (before: a segfault in llvmlite, or KeyError)."""
    compile_kernels(lowered(graph(37, 13)), X86Backend())
    a, b = objects(cache_dir)[:2]
    blob_a, blob_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(blob_b)
    b.write_bytes(blob_a)
    k = compile_kernels(lowered(graph(37, 13)), X86Backend())
    assert k.stats == {"compiled": 2, "cached": 0}
    run(k, 37, 13)
    assert cache.load(a.stem) is not None and a.read_bytes() == blob_a  # rewritten


def test_unwritable_directory_still_compiles(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(blocker / "sub"))
    monkeypatch.delenv("BRAINSLUG_CACHE", raising=False)
    k = compile_kernels(lowered(graph(37, 13)), X86Backend())
    assert k.stats["compiled"] == 2
    run(k, 37, 13)


def test_keys() -> None:
    assert cache.key("a", "b") == cache.key("a", "b")
    assert cache.key("a", "b") != cache.key("ab")
    assert "llvmlite=" in cache.versions()

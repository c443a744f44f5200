"""Benchmark of whole models: every contender in one process, checked, interleaved.

For each model: time optimize() cold (an empty kernel cache) and warm (a second
call), build the contenders (a failure is reported, never fatal), then for each
batch size check every contender's output against eager and time the ones that
pass, interleaved A B C A B C … after a warm-up (see `stats`).
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from brainslug.bench import contenders as cont
from brainslug.bench.stats import summarize, time_interleaved

BASELINE = "brainslug"
TOLERANCE = 1e-3
"""A contender fails when max|out - ref| > TOLERANCE * max(1, max|ref|)."""


@dataclass
class Row:
    model: str
    batch: int
    contender: str
    median_ms: float | None = None
    ratio_vs_brainslug_median: float | None = None
    ratio_vs_brainslug_min: float | None = None
    ratio_vs_brainslug_max: float | None = None
    max_abs_diff: float | None = None
    status: str = "ok"  # ok | FAILED (wrong output) | error (raised) | skipped
    note: str = ""
    setup_s: float | None = None  # building it plus its first call at this batch


@dataclass
class ModelResult:
    model: str
    hw: int
    rows: list[Row] = field(default_factory=list)
    optimize_cold_s: float | None = None
    optimize_warm_s: float | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ outputs


def as_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output (tensor, array, tuple/list/dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in as_tensors(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in as_tensors(v)]
    try:
        import numpy as np

        if isinstance(out, np.ndarray):
            return [torch.from_numpy(out)]
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"cannot compare an output of type {type(out).__name__}")


def compare(out: Any, ref: Any, tolerance: float = TOLERANCE) -> tuple[float, str | None]:
    """(max|out - ref| over all outputs, why it fails or None)."""
    outs, refs = as_tensors(out), as_tensors(ref)
    if len(outs) != len(refs):
        return math.nan, f"{len(outs)} outputs, eager has {len(refs)}"
    worst, why = 0.0, None
    for k, (o, r) in enumerate(zip(outs, refs, strict=True)):
        if tuple(o.shape) != tuple(r.shape):
            return math.nan, f"output {k} has shape {tuple(o.shape)}, eager {tuple(r.shape)}"
        d = (o.detach().float() - r.detach().float()).abs().max().item() if r.numel() else 0.0
        if not math.isfinite(d):
            return d, f"output {k} is not finite where eager's is"
        worst = max(worst, d)
        bound = tolerance * max(1.0, r.detach().abs().max().item() if r.numel() else 0.0)
        if d > bound and why is None:
            why = f"output {k}: max|Δ| {d:.3g} > {bound:.3g}"
    return worst, why


# ------------------------------------------------------------------- optimize


@contextmanager
def empty_kernel_cache() -> Iterator[str]:
    """BRAINSLUG_CACHE_DIR pointed at a new empty directory (removed afterwards)."""
    old = os.environ.get("BRAINSLUG_CACHE_DIR")
    tmp = tempfile.mkdtemp(prefix="brainslug-bench-cache-")
    os.environ["BRAINSLUG_CACHE_DIR"] = tmp
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("BRAINSLUG_CACHE_DIR", None)
        else:
            os.environ["BRAINSLUG_CACHE_DIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


# --------------------------------------------------------------------- bench


def bench_model(
    name: str,
    model: torch.nn.Module,
    hw: int,
    batches: Sequence[int],
    contenders: Sequence[str] | None = None,
    *,
    builders: Mapping[str, cont.Builder] | None = None,
    repeats: int = 20,
    warmup: int = 3,
    channels: int = 3,
    log: Callable[[str], None] = print,
    seed: int = 0,
) -> ModelResult:
    """Benchmarks one model; `builders` adds or replaces contenders by name.

    Contenders run in the order given; the table and the ratios are relative
    to "brainslug" when it is among them."""
    registry = {**cont.CONTENDERS, **(builders or {})}
    names = list(contenders) if contenders is not None else list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown contenders {unknown}; known: {sorted(registry)}")
    h = w = hw
    model = model.eval()
    result = ModelResult(name, hw)
    gen = torch.Generator().manual_seed(seed)
    ctx = cont.BuildContext([0, channels, h, w], torch.randn(2, channels, h, w, generator=gen))
    built: dict[str, cont.Contender] = {}
    build_s: dict[str, float] = {}
    dropped: dict[str, tuple[str, str]] = {}  # name -> (status, note), for every batch

    with empty_kernel_cache():
        if any(n.startswith("brainslug") for n in names):
            from brainslug.pytorch import optimize

            try:
                t0 = time.perf_counter()
                optimize(model, ctx.shape)
                result.optimize_cold_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                ctx.brainslug = optimize(model, ctx.shape).eval()
                result.optimize_warm_s = time.perf_counter() - t0
                log(
                    f"  optimize(): cold {result.optimize_cold_s:.2f} s (empty kernel cache), "
                    f"warm {result.optimize_warm_s:.2f} s"
                )
            except Exception as e:
                result.notes.append(f"optimize() failed: {_short(e)}")
                log(f"  optimize() failed: {_short(e)}")
        for n in names:
            t0 = time.perf_counter()
            try:
                if n == BASELINE and ctx.brainslug is None and result.notes:
                    raise RuntimeError(result.notes[-1])
                built[n] = registry[n](model, ctx)
                build_s[n] = time.perf_counter() - t0
            except cont.Skip as e:
                dropped[n] = ("skipped", str(e))
                log(f"  {n}: skipped: {e}")
            except Exception as e:
                dropped[n] = ("error", f"build failed: {_short(e)}")
                log(f"  {n}: build failed: {_short(e)}")

    with torch.no_grad():
        for batch in batches:
            x = torch.randn(batch, channels, h, w, generator=gen)
            ref = model(x)
            rows: dict[str, Row] = {}
            fns: dict[str, Callable[[], Any]] = {}
            for n in names:
                row = rows[n] = Row(name, batch, n)
                if n in dropped:
                    row.status, row.note = dropped[n]
                    continue
                c = built[n]
                row.note = c.note
                try:
                    xi = c.prepare(x)
                    t0 = time.perf_counter()
                    with c.compile_context():
                        out = c.run(xi)
                    row.setup_s = build_s.get(n, 0.0) + time.perf_counter() - t0
                    build_s[n] = 0.0  # the build counts towards the first batch only
                except Exception as e:
                    row.status, row.note = "error", f"run failed: {_short(e)}"
                    log(f"  {n} (batch {batch}): run failed: {_short(e)}")
                    continue
                diff, why = compare(out, ref)
                row.max_abs_diff = diff
                if why is not None:
                    row.status, row.note = "FAILED", why
                    log(f"  {n} (batch {batch}): FAILED the check against eager: {why}")
                    continue
                fns[n] = _bind(c.run, xi)
            times, errors = time_interleaved(fns, repeats, warmup)
            for n, msg in errors.items():
                rows[n].status, rows[n].note = "error", f"raised while timed: {msg}"
            for n, s in summarize(times, BASELINE).items():
                r = rows[n]
                r.median_ms = s.median_ms
                r.ratio_vs_brainslug_median = s.ratio_median
                r.ratio_vs_brainslug_min = s.ratio_min
                r.ratio_vs_brainslug_max = s.ratio_max
            result.rows += [rows[n] for n in names]
            log(format_table(result, batch, repeats, warmup))
    return result


def _bind(run: Callable[[Any], Any], x: Any) -> Callable[[], Any]:
    return lambda: run(x)


def run_benchmark(
    models: Sequence[str],
    batches: Sequence[int],
    contenders: Sequence[str] | None = None,
    *,
    repeats: int = 20,
    warmup: int = 3,
    hw: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Benchmarks torchvision models; returns the JSON document."""
    results = []
    for m in models:
        model, size = cont.load_model(m)
        size = hw or size
        log(f"== {m} ({size}x{size}) ==")
        results.append(
            bench_model(
                m, model, size, batches, contenders, repeats=repeats, warmup=warmup, log=log
            )
        )
        del model
        gc.collect()
    return to_json(results, repeats=repeats, warmup=warmup)


def to_json(results: Sequence[ModelResult], **meta: Any) -> dict[str, Any]:
    first = results[0] if results else None
    return {
        "results": [_finite(asdict(r)) for res in results for r in res.rows],
        "optimize_cold_s": first.optimize_cold_s if first else None,
        "optimize_warm_s": first.optimize_warm_s if first else None,
        "optimize": {
            res.model: {"cold_s": res.optimize_cold_s, "warm_s": res.optimize_warm_s}
            for res in results
        },
        "meta": environment() | meta,
    }


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf (an output that is not finite) as null: the file stays strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def environment() -> dict[str, Any]:
    import platform

    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------- table


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_table(result: ModelResult, batch: int, repeats: int, warmup: int) -> str:
    rows = [r for r in result.rows if r.batch == batch]
    title = (
        f"{result.model}  batch {batch}  ({result.hw}x{result.hw}, {repeats} interleaved "
        f"rounds after {warmup} warm-up)"
    )
    lines = [
        title,
        "-" * len(title),
        f"{'contender':24s} {'median ms':>10s}  {'ratio vs brainslug [min, max]':30s} "
        f"{'max|Δ|':>9s} {'setup s':>8s}",
    ]
    for r in rows:
        if r.median_ms is None:
            lines.append(
                f"{r.contender:24s} {r.status.upper() if r.status != 'ok' else '-':>10s}"
                f"  {r.note}"
                + (f"  (max|Δ| {r.max_abs_diff:.2e})" if r.max_abs_diff is not None else "")
            )
            continue
        ratio = (
            "-"
            if r.ratio_vs_brainslug_median is None
            else (
                f"{r.ratio_vs_brainslug_median:.2f} [{r.ratio_vs_brainslug_min:.2f}, "
                f"{r.ratio_vs_brainslug_max:.2f}]"
            )
        )
        lines.append(
            f"{r.contender:24s} {r.median_ms:10.3f}  {ratio:30s} "
            f"{_f(r.max_abs_diff, '9.2e')} {_f(r.setup_s, '8.2f')}"
        )
    lines.append(
        "ratio = contender time / brainslug time in the same round (> 1: brainslug "
        "faster); setup = build + first call at this batch (compiles lazily)"
    )
    return "\n".join(lines) + "\n"

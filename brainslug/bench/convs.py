"""Per-convolution GFLOP/s: BrainSlug's kernel against the library's (oneDNN),
each also as a fraction of the measured peak FMA rate (`brainslug.bench.peak`).

`conv_table(model, batch, threads)` collects the model's distinct `nn.Conv2d`
shapes (forward hooks on a random input), and times each shape alone on a
channels-last input: the library as PyTorch runs the module under no_grad, and
BrainSlug as `optimize(nn.Sequential(conv), ..., conv="brainslug")`, checked
against the library first. A BrainSlug number is only reported when the
optimized module ran the convolution itself (no library call, no fallback,
a plan at all); otherwise it is null and `note` says why.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import torch
from torch import nn

from brainslug.bench.peak import cpu_clock, others_cpu
from brainslug.bench.stats import summarize, time_interleaved

TOLERANCE = 1e-4
"""BrainSlug's output must be within TOLERANCE * max(1, max|ref|) of the library's."""
BUDGET_S = 0.3
"""Default seconds of timing per shape, both contenders together."""
BUSY = 0.1
"""A row is marked when other processes used more than this fraction of the CPUs."""
MIN_CALL_S = 0.002
"""A timed sample repeats the call until it takes at least this long."""


@dataclass
class ConvShape:
    """One distinct convolution: the module (first seen), its input and output."""

    module: nn.Conv2d
    input: tuple[int, int, int, int]
    output: tuple[int, int, int, int]
    count: int = 1

    @property
    def flops(self) -> int:
        """2 * multiply-adds (the bias is not counted)."""
        m = self.module
        n, k, ho, wo = self.output
        kh, kw = m.kernel_size
        return 2 * n * k * ho * wo * (m.in_channels // m.groups) * kh * kw

    def describe(self) -> str:
        """E.g. `N1 C64 H56 W56 -> K64 3x3/1 p1 g1` (` d2` with dilation, ` +bias`)."""
        m = self.module
        n, c, h, w = self.input
        kh, kw = m.kernel_size
        s = (f"N{n} C{c} H{h} W{w} -> K{m.out_channels} {kh}x{kw}/"
             f"{_pair(m.stride)} p{_pair(m.padding)} g{m.groups}")
        if tuple(m.dilation) != (1, 1):
            s += f" d{_pair(m.dilation)}"
        if m.padding_mode != "zeros":
            s += f" {m.padding_mode}"
        return s + (" +bias" if m.bias is not None else "")


def _pair(v: Any) -> str:
    if isinstance(v, str):
        return v
    a, b = v
    return f"{a}" if a == b else f"{a}x{b}"


def _key(m: nn.Conv2d, shape: tuple[int, ...]) -> tuple[Any, ...]:
    return (*shape, m.out_channels, *m.kernel_size, m.stride, str(m.padding), m.dilation,
            m.groups, m.bias is not None, m.padding_mode)


def collect_convs(model: nn.Module, x: torch.Tensor) -> list[ConvShape]:
    """The distinct Conv2d shapes `model` runs on `x`, in first-seen order, counted."""
    seen: dict[tuple[Any, ...], ConvShape] = {}

    def hook(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        shape = tuple(args[0].shape)
        k = _key(m, shape)
        if k in seen:
            seen[k].count += 1
        else:
            seen[k] = ConvShape(m, shape, tuple(out.shape))  # type: ignore[arg-type]

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def brainslug_conv(conv: nn.Conv2d, shape: tuple[int, ...], threads: int
                   ) -> tuple[Callable[[torch.Tensor], Any] | None, str]:
    """BrainSlug's module for `conv` alone, or None and why it is not BrainSlug's.
    The speed check is off: the kernel is measured even where it is slower."""
    import brainslug.pytorch as brainslug

    _, c, h, w = shape
    try:
        with mock.patch.dict(os.environ, {"BRAINSLUG_SPEED_CHECK": "0"}):
            opt = brainslug.optimize(nn.Sequential(conv).eval(), [0, c, h, w],
                                     conv="brainslug", threads=threads)
        text = brainslug.report(opt)
    except Exception as e:  # conv= not there yet, or BrainSlug failed
        return None, _first_line(e)
    if getattr(opt, "plan", None) is None:
        fallbacks = getattr(opt.info, "fallbacks", [])
        why = fallbacks[0][1] if fallbacks else "no plan"
        return None, f"convolution ran in the library (the model runs as it is: {why})"
    if "library calls: 0" not in text:
        return None, "convolution ran in the library"
    if "Fallbacks: none" not in text:
        return None, f"convolution ran in the framework: {opt.info.fallbacks[0][1]}"
    return opt, ""


def _repeat(f: Callable[[], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            f()
    return run


def time_pair(fns: dict[str, Callable[[], Any]], budget_s: float, max_rounds: int = 100
              ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per call of each function in every round, interleaved after a
    warm-up, with enough rounds for `budget_s` in all (at least 5); and errors.
    A sample repeats the call for at least `MIN_CALL_S`."""
    inner: dict[str, int] = {}
    for name, f in fns.items():
        f()  # first-call costs
        t0 = time.perf_counter()
        f()
        inner[name] = max(1, math.ceil(MIN_CALL_S / max(time.perf_counter() - t0, 1e-7)))
    fns = {name: _repeat(f, inner[name]) for name, f in fns.items()}
    round_s = 0.0
    for f in fns.values():
        t0 = time.perf_counter()
        f()
        round_s += time.perf_counter() - t0
    rounds = min(max_rounds, max(5, math.ceil(budget_s / max(round_s, 1e-6))))
    times, errors = time_interleaved(fns, rounds=rounds, warmup=1)
    return {k: [t / inner[k] for t in v] for k, v in times.items()}, errors


def _gflops(flops: int, seconds: float | None) -> float | None:
    return None if not seconds else flops / seconds / 1e9


def measure_shape(s: ConvShape, threads: int, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """One table row: both contenders on the same channels-last input."""
    from brainslug.bench.harness import compare

    gen = torch.Generator().manual_seed(0)
    conv = copy.deepcopy(s.module).eval()
    x = torch.randn(s.input, generator=gen).contiguous(memory_format=torch.channels_last)
    lib = copy.deepcopy(conv).to(memory_format=torch.channels_last)

    def library() -> Any:
        with torch.no_grad():
            return lib(x)

    ref = library()
    opt, note = brainslug_conv(conv, s.input, threads)
    fns: dict[str, Callable[[], Any]] = {"library": library}
    if opt is not None:
        try:
            with torch.no_grad():
                _, why = compare(opt(x), ref, TOLERANCE)
        except Exception as e:
            why = _first_line(e)
        if why is None:
            def brainslug() -> Any:
                with torch.no_grad():
                    return opt(x)

            fns["brainslug"] = brainslug
        else:
            note = f"wrong result: {why}"
    clock = cpu_clock()
    times, errors = time_pair(fns, budget_s)
    busy = others_cpu(clock)
    if "brainslug" in errors:
        note = f"failed while timed: {errors['brainslug']}"
    stats = summarize(times)  # ratios per round against "brainslug"
    bs, lb = (stats[k].median_ms / 1e3 if k in stats and stats[k].median_ms else None
              for k in ("brainslug", "library"))
    speedup = stats["library"].ratio_median if "library" in stats else None
    return {
        "shape": s.describe(),
        "count": s.count,
        "flops": s.flops,
        "brainslug_gflops": _gflops(s.flops, bs),
        "library_gflops": _gflops(s.flops, lb),
        "brainslug_ms": None if bs is None else bs * 1e3,
        "library_ms": None if lb is None else lb * 1e3,
        "rounds": len(times.get("library", [])),
        "speedup": speedup,  # median per-round library time / BrainSlug time
        "input": list(s.input),
        "output": list(s.output),
        "others_cpu": busy,  # fraction of the CPUs others used while this row was timed
        "note": note,
    }


def conv_rows(model: str | nn.Module, batch: int, threads: int, *, hw: int | None = None,
              budget_s: float | None = None, log: Callable[[str], None] | None = print
              ) -> dict[str, Any]:
    """The rows of `model` (a torchvision name, built without weights, or a
    module) at `batch`, on `threads` threads, without the peak."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if isinstance(model, str):
            from brainslug.bench.contenders import load_model

            name, (module, size) = model, load_model(model)
        else:
            name, module, size = type(model).__name__, model.eval(), 224
        size = hw or size
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        shapes = collect_convs(module, x)
        rows = []
        for i, s in enumerate(shapes):
            rows.append(measure_shape(s, threads, BUDGET_S if budget_s is None else budget_s))
            if log:
                log(f"  [{i + 1}/{len(shapes)}] {rows[-1]['shape']}")
    finally:
        torch.set_num_threads(old_threads)
    measured = [r for r in rows if r["speedup"] is not None]
    return {"model": name, "batch": batch, "hw": size, "threads": threads, "convs": rows,
            "shapes": len(rows),
            "brainslug_at_least_as_fast": sum(r["speedup"] >= 1.0 for r in measured),
            "brainslug_measured": len(measured)}


def with_peak(doc: dict[str, Any], peak: float, samples: list[float] | None = None
              ) -> dict[str, Any]:
    """`doc` with `peak_gflops` and each row's GFLOP/s as fractions of it."""
    for row in doc["convs"]:
        for who in ("brainslug", "library"):
            g = row[f"{who}_gflops"]
            row[f"{who}_fraction_of_peak"] = None if g is None else g / peak
    return {"peak_gflops": peak, "peak_samples": samples or [peak], **doc}


def conv_table(model: str | nn.Module, batch: int, threads: int, *, hw: int | None = None,
               peak: float | None = None, budget_s: float | None = None,
               log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Per distinct convolution of `model` at `batch`: GFLOP/s of BrainSlug and
    of the library, and as fractions of the peak FMA rate (when `peak` is None,
    measured before and after the convolutions, the better of the two)."""
    from brainslug.bench.peak import peak_gflops

    samples = [peak_gflops(threads)] if peak is None else [peak]
    doc = conv_rows(model, batch, threads, hw=hw, budget_s=budget_s, log=log)
    if peak is None:
        samples.append(peak_gflops(threads))
    doc = with_peak(doc, max(samples), samples)
    if log:
        log(format_table(doc))
    return doc


def _cell(g: float | None, peak: float) -> str:
    return "-" if g is None else f"{g:8.1f} ({100 * g / peak:3.0f}%)"


def format_table(doc: dict[str, Any]) -> str:
    """The table as text, with the notes and the summary line."""
    peak = doc["peak_gflops"]
    title = (f"{doc['model']}  batch {doc['batch']}  ({doc['hw']}x{doc['hw']}): GFLOP/s per "
             f"convolution, {doc['threads']} threads, peak {peak:.1f} GFLOP/s")
    lines = [title, "=" * len(title),
             f"{'shape':44s} {'count':>5s} {'BrainSlug (% peak)':>18s} "
             f"{'library (% peak)':>18s} {'ratio':>6s}"]
    notes: dict[str, list[int]] = {}
    for i, r in enumerate(doc["convs"]):
        ratio = "-" if r["speedup"] is None else f"{r['speedup']:.2f}"
        busy = (r.get("others_cpu") or 0) > BUSY
        lines.append(f"{r['shape']:44s} {r['count']:5d} {_cell(r['brainslug_gflops'], peak):>18s} "
                     f"{_cell(r['library_gflops'], peak):>18s} {ratio:>6s}{' *' if busy else ''}")
        if busy:
            notes.setdefault(f"* other processes used over {BUSY:.0%} of the CPUs while this "
                             f"was timed: noisy", []).append(i + 1)
        if r["note"]:
            notes.setdefault(r["note"], []).append(i + 1)
    for note, idx in notes.items():
        which = "all rows" if len(idx) == len(doc["convs"]) else f"rows {idx}"
        lines.append(f"  note ({which}): {note}")
    lines.append(f"ratio: library time / BrainSlug time (median per round; > 1: BrainSlug "
                 f"faster). BrainSlug is at least as fast as the library on "
                 f"{doc['brainslug_at_least_as_fast']} of {doc['shapes']} shapes"
                 f" ({doc['shapes'] - doc['brainslug_measured']} without a BrainSlug number)")
    samples = doc.get("peak_samples", [])
    if len(samples) > 1 and min(samples) < 0.8 * max(samples):
        lines.append(f"warning: the peak measurements differ ({', '.join(f'{p:.0f}' for p in samples)}"
                     f" GFLOP/s): the machine was busy, and the numbers are noisy")
    return "\n".join(lines)

"""Interleaved timing and its statistics.

The machines are shared and noisy, so absolute times from different runs are
never compared. Every contender runs in one process, interleaved after a
warm-up; each round gives one time per contender, and the ratio of a
contender to the baseline is taken per round (both ran within milliseconds of
each other, under the same load). The report is the median of those ratios,
with their min and max.

A call's time depends on what ran just before it (what that left in the
caches, or a library convolution before it: up to 2x slower on one machine),
so the rounds vary each contender's predecessor evenly (`balanced_orders`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    """One contender's statistics over the rounds (times in milliseconds)."""

    median_ms: float | None
    ratio_median: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    times_ms: list[float] = field(default_factory=list)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def summarize(
    times: Mapping[str, Sequence[float]], baseline: str | None = "brainslug"
) -> dict[str, Summary]:
    """Per contender: the median time and the per-round ratio to `baseline`.

    `times[name][r]` is the time (seconds) of `name` in round r; every
    contender must have the same number of rounds. Ratios are
    `times[name][r] / times[baseline][r]`, summarized by median, min and max;
    they are None when the baseline is not among the contenders (or has no
    rounds). The baseline's own ratio is exactly 1.
    """
    lengths = {len(v) for v in times.values()}
    if len(lengths) > 1:
        raise ValueError(
            f"contenders ran different numbers of rounds: { {k: len(v) for k, v in times.items()} }"
        )
    base = times.get(baseline) if baseline is not None else None
    out: dict[str, Summary] = {}
    for name, ts in times.items():
        ms = [t * 1e3 for t in ts]
        s = Summary(median(ms) if ms else None, times_ms=ms)
        if base is not None and len(base) and len(ts):
            if name == baseline:
                s.ratio_median = s.ratio_min = s.ratio_max = 1.0
            else:
                ratios = [t / b for t, b in zip(ts, base, strict=True)]
                s.ratio_median, s.ratio_min, s.ratio_max = (
                    median(ratios),
                    min(ratios),
                    max(ratios),
                )
        out[name] = s
    return out


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of `n` contenders for successive rounds in which each one runs
    directly after each other one equally often: a Williams design (a Latin
    square balanced for the effect of the predecessor; n orders for even n,
    2n for odd n), chained so that no order starts with the contender the one
    before it ended with (a repeat would find its own data in the caches).
    Two contenders keep one order, A B A B …: either reverse would repeat one.

    A plain rotation (A B C, B C A, C A B) gives every contender the same
    predecessor in every round: in resnet50's bench, `brainslug_convs`, run
    right after `brainslug_library` on the same model, measured 0.91-0.98 of
    the time of the default plan that ran after ONNX Runtime, while the two
    plans timed alone were within 0.994-1.003 of each other."""
    if n <= 2:
        return [list(range(n))]
    base, lo, hi = [0], 1, n - 1
    while len(base) < n:  # 0, 1, n-1, 2, n-2, …
        base.append(lo)
        lo += 1
        if len(base) < n:
            base.append(hi)
            hi -= 1
    rows = [[(b + i) % n for b in base] for i in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    out = [rows.pop(0)]
    while rows:
        k = next((i for i, row in enumerate(rows) if row[0] != out[-1][-1]), 0)
        out.append(rows.pop(k))
    return out


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Runs the functions in rounds, each in the next of `balanced_orders`
    (every function comes directly after every other one equally often), and
    times every call.

    Returns (times in seconds per name and round, errors): a function that
    raises is reported in `errors` (name -> message) and dropped from the
    rest of the run and from `times`, so the others keep equal round counts.
    """
    live = dict(fns)
    errors: dict[str, str] = {}

    def call(name: str, f: Callable[[], Any]) -> float | None:
        t0 = clock()
        try:
            f()
        except Exception as e:  # reported, never fatal
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            live.pop(name, None)
            return None
        return clock() - t0

    for _ in range(warmup):
        for name, f in list(live.items()):
            call(name, f)
    times: dict[str, list[float]] = {name: [] for name in live}
    names = list(live)
    orders = balanced_orders(len(names))
    for r in range(rounds):
        for name in (names[i] for i in orders[r % len(orders)]):
            if name not in live:
                continue
            t = call(name, live[name])
            if t is not None:
                times[name].append(t)
    return {k: v for k, v in times.items() if k in live}, errors

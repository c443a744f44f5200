"""Never slower than eager: a plan is measured against the model at optimize().

The plan and the model run on one random input of the plan's shape (one per
input of a model of several; batch 1 where the batch is free), interleaved
after a warm-up call, for 2 to 5 rounds (fewer when the times do not overlap;
`CLOSE_ROUNDS` more when the medians are within `CLOSE` of each other, where
a few rounds decide by noise), and the plan is kept unless its median is
slower than the model's by more than the timing's resolution (`MARGIN`). A
plan that measures slower is measured a second time, and each side keeps the
lower of its two medians: interference from other processes only adds time,
and slows the plan's threads more than the model's. The verdict is kept in
the kernel cache beside the plan, keyed like it, so a warm optimize()
measures nothing. A timing taken while other optimize() calls run in the same
process (they compile on the same cores) is not trusted to drop a plan and is
not cached. `BRAINSLUG_SPEED_CHECK=0` turns it off. A CUDA plan is measured
the same way on its device, each call timed to the end of its kernels
(`torch.cuda.synchronize`).

A plan slower at batch 1 may still pay at larger batches (densenet121 at
64x64: even at batch 1, 1.8x faster at batch 8), where per-call overhead
weighs less: `from_batch` measures larger batches where the batch is free
and the model is quick enough to time, and the plan then runs from the
smallest batch where it measured faster (smaller ones run the model).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from brainslug.bench.stats import balanced_orders
from brainslug.frontend_torch.graph import example_inputs, input_shapes
from brainslug.plan import progress
from brainslug.runtime import cache

ROUNDS = 5
"""Interleaved timing rounds after the warm-up, at most."""
MIN_ROUNDS = 2
"""Rounds before a clear verdict may stop the timing."""
WARMUP = 1
MARGIN = 1.03
"""How much slower than the model a kept plan may measure: the resolution of
a few interleaved rounds on a shared machine (densenet121 at 64x64 measured
37.98 ms against the model's 37.63 ms, a tie that dropped the plan by noise).
Within it the plan is kept: it computes the same results in fewer passes."""
CLOSE = 0.05
"""Medians closer than this (relative) are measured again, for longer."""
CLOSE_ROUNDS = 9


def enabled() -> bool:
    return os.environ.get("BRAINSLUG_SPEED_CHECK", "1").strip().lower() not in (
        "0", "off", "false", "no")


@dataclass(frozen=True)
class Verdict:
    """Median seconds of the plan and of the model on the measured input;
    `contended`: measured while other optimize() calls ran in this process
    (not trusted to drop a plan, and not cached)."""

    plan: float
    model: float
    batch: int
    contended: bool = False

    @property
    def plan_pays(self) -> bool:
        return self.plan <= self.model * MARGIN

    def describe(self, what: str) -> str:
        return (f"{what} measured at batch {self.batch}: {self.plan * 1e3:.2f} ms, the model "
                f"{self.model * 1e3:.2f} ms" + (
                    " (while other optimize() calls ran in this process: not trusted to "
                    "drop the plan, not cached; optimize() alone to measure it)"
                    if self.contended else ""))


_active = 0
_active_lock = threading.Lock()


@contextlib.contextmanager
def optimizing() -> Iterator[None]:
    """Marks an optimize() call in progress (`others_running`)."""
    global _active
    with _active_lock:
        _active += 1
    try:
        yield
    finally:
        with _active_lock:
            _active -= 1


def others_running() -> bool:
    """Whether other optimize() calls than this one are in progress: they
    compile on the same cores, and a timing taken meanwhile says little."""
    return _active > 1


def medians(candidates: dict[str, Callable[..., object]],
            x: torch.Tensor | tuple[torch.Tensor, ...],
            rounds: int = ROUNDS, warmup: int = WARMUP) -> dict[str, float]:
    """Median seconds of each candidate on `x` (a tuple: the inputs of a model
    of several), timed interleaved after `warmup` calls, for `rounds` rounds,
    or fewer once every time of one candidate is below every time of the
    others (at least `MIN_ROUNDS`). The rounds take `bench.stats.balanced_orders`:
    each candidate runs right after each other one equally often and never
    twice in a row (plan and model alternate), so that neither finds its own
    data in the caches more often than the other."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    xs = x if isinstance(x, tuple) else (x,)
    # on a GPU a call returns once its kernels are queued: time them to their end
    sync = torch.cuda.synchronize if any(t.is_cuda for t in xs) else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            for f in candidates.values():
                f(*xs)
        names = list(candidates)
        orders = balanced_orders(len(names))
        for r in range(rounds):
            for k in (names[i] for i in orders[r % len(orders)]):
                sync()
                t = time.perf_counter()
                candidates[k](*xs)
                sync()
                times[k].append(time.perf_counter() - t)
            if r + 1 >= MIN_ROUNDS and _separated(times):
                break
    return {k: statistics.median(v) for k, v in times.items()}


def _separated(times: dict[str, list[float]]) -> bool:
    """Whether one candidate's slowest time beats every other's fastest."""
    return any(max(v) < min(min(w) for k2, w in times.items() if k2 != k)
               for k, v in times.items())


def measure(plan: Callable[..., object], model: torch.nn.Module,
            spec: list[int] | list[list[int]], key_parts: list[str],
            device: torch.device | None = None) -> Verdict | None:
    """The plan against the model on a random input of shape `spec` (one per
    input where it gives several shapes) on `device` (the CPU by default);
    from the cache when measured before. None when the model does not run on
    it."""
    key = cache.key("speed", *key_parts)
    if (blob := cache.load(key)) is not None:
        try:
            return Verdict(**json.loads(blob))
        except (ValueError, TypeError):
            pass
    progress.note("measuring the plan against the model")
    verdict = _measure_at(plan, model, spec, 1, device)
    if verdict is not None and not verdict.contended:
        cache.store(key, json.dumps(verdict.__dict__).encode())
    return verdict


def _measure_at(plan: Callable[..., object], model: torch.nn.Module,
                spec: list[int] | list[list[int]], batch: int,
                device: torch.device | None = None) -> Verdict | None:
    """The plan against the model on random inputs of batch size `batch`
    (where the spec's batch is free; else the spec's) on `device`."""
    inputs = [t.to(device) for t in example_inputs(spec, batch)]
    shapes = input_shapes(spec)
    batch = batch if any(s[0] == 0 for s in shapes) else int(inputs[0].shape[0])
    x = inputs[0] if len(inputs) == 1 else tuple(inputs)
    candidates = {"plan": plan, "model": model}
    contended = others_running()
    try:
        m = medians(candidates, x)
        if abs(m["plan"] - m["model"]) < CLOSE * m["model"]:
            m = medians(candidates, x, rounds=CLOSE_ROUNDS, warmup=0)
        if m["plan"] > m["model"] * MARGIN:
            # a plan dropped for good (the verdict is cached) is measured twice: another
            # process on the cores slows the plan's threads more than the model's, and
            # interference only adds time, so each keeps the lower of its two medians
            again = medians(candidates, x, rounds=CLOSE_ROUNDS, warmup=0)
            m = {k: min(m[k], again[k]) for k in m}
    except Exception:  # a model that needs other inputs than random ones: keep the plan
        return None
    finally:  # (the buffers the plan kept for this batch size: made again when used)
        if (release := getattr(plan, "release_buffers", None)) is not None:
            release([batch])
    return Verdict(m["plan"], m["model"], batch, contended or others_running())


LARGER_BATCHES = (8, 2, 4)
"""The batches `from_batch` measures, in order: the largest first (where the
plan pays most), then down."""
MAX_MODEL_SECONDS = 0.03
"""Larger batches are measured only where the model takes at most this at
batch 1 (a larger batch takes about that many times as long, per round)."""


def from_batch(plan: Callable[..., object], model: torch.nn.Module,
               spec: list[int] | list[list[int]], key_parts: list[str],
               at_one: Verdict, device: torch.device | None = None
               ) -> tuple[int | None, list[Verdict]]:
    """The smallest batch size from which the plan runs (it measured faster
    there and at every larger batch measured), or None, with the timings;
    for a plan slower at batch 1 (`at_one`). From the cache when measured
    before."""
    if not any(s[0] == 0 for s in input_shapes(spec)) or at_one.model > MAX_MODEL_SECONDS:
        return None, []
    key = cache.key("speed-batches", *key_parts)
    if (blob := cache.load(key)) is not None:
        try:
            d = json.loads(blob)
            return d["from"], [Verdict(**v) for v in d["verdicts"]]
        except (ValueError, TypeError, KeyError):
            pass
    progress.note("measuring the plan against the model at larger batches")
    verdicts: list[Verdict] = []
    found: int | None = None
    for batch in LARGER_BATCHES:
        if found is None and verdicts:
            break  # slower at the largest batch: no smaller one pays
        if found is not None and batch > found:
            continue
        v = _measure_at(plan, model, spec, batch, device)
        if v is None:
            return None, verdicts
        verdicts.append(v)
        if v.plan_pays:
            found = batch
    if not any(v.contended for v in verdicts):
        cache.store(key, json.dumps({"from": found,
                                     "verdicts": [v.__dict__ for v in verdicts]}).encode())
    return found, verdicts


@dataclass(frozen=True)
class Judgement:
    """Whether a plan runs (`keep`), from which batch size where not from 1
    (`min_batch`), and the report's lines on its timings (`notes`)."""

    keep: bool
    min_batch: int | None
    notes: list[str]


def judge(plan: Callable[..., object], model: torch.nn.Module,
          spec: list[int] | list[list[int]], key_parts: list[str], what: str,
          device: torch.device | None = None) -> Judgement:
    """The plan (named `what` in the notes) against the model on `device`:
    kept where it measured faster at batch 1 (or could not be measured, or
    the timing is not trusted to drop it), else from the smallest batch where
    it pays (`from_batch`), else not used."""
    verdict = measure(plan, model, spec, key_parts, device)
    if verdict is None or verdict.plan_pays or verdict.contended:
        return Judgement(True, None, [] if verdict is None else [verdict.describe(what)])
    start, larger = from_batch(plan, model, spec, key_parts, verdict, device)
    if start is not None:
        return Judgement(True, start, [
            f"{what} runs batches of {start} and more; smaller batches run the model as it "
            f"is (where the plan measured slower):",
            *(f"  {v.describe('the plan')}" for v in [verdict, *larger])])
    return Judgement(False, None, [verdict.describe(f"{what} (slower, not used)"),
                                   *(f"  {v.describe('the plan')}" for v in larger)])

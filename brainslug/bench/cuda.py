"""`python -m brainslug.bench --device cuda`: the GPU benchmark.

For each torchvision model (no weights) on the CUDA device: time optimize()
cold (an empty kernel cache) and warm; build the contenders (eager cuDNN,
eager channels-last, torch.compile and BrainSlug; a failure is reported,
never fatal); for each batch size check every contender against eager and
time the ones that pass, interleaved A B C A B C … after a warm-up, each call
between two CUDA events after a `torch.cuda.synchronize()`. Ratios are per
round against BrainSlug (median, min, max; see `stats`). Then the roofline
of BrainSlug's stacks: every stack call of one forward pass, timed on its own
after an L2 flush (and back to back, hot), against the device's copy bandwidth
measured with a device-to-device `copy_` of 256 MiB (bytes read + written).
`--stacks` runs the roofline only.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

CUDA_CONTENDERS = ("eager", "eager_channels_last", "torch_compile", "brainslug")
"""What runs on the GPU (eager is cuDNN's NCHW path, the reference)."""
L2_FLUSH_BYTES = 256 << 20


def _log(s: str) -> None:
    print(s, flush=True)


def check_environment() -> str | None:
    """Why the CUDA benchmark cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        from brainslug.runtime.cuda import driver

        driver()
    except ImportError as e:
        return str(e)
    return None


# ------------------------------------------------------------------ timing


def event_time(fn: Callable[[], Any]) -> float:
    """Seconds of one call of `fn` on the device (CUDA events around it, idle before)."""
    import torch

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """`stats.time_interleaved` with each call timed by CUDA events."""
    live, errors = dict(fns), {}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for name, f in list(live.items()):
            try:
                t = event_time(f)
            except Exception as e:  # reported, never fatal
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                live.pop(name)
                times.pop(name, None)
                continue
            if r >= warmup:
                times[name].append(t)
    return times, errors


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> list[float]:
    """GB/s samples of a device-to-device `dst.copy_(src)` (bytes read + written)."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    return [2 * nbytes / event_time(lambda: dst.copy_(src)) / 1e9 for _ in range(repeats)]


# ------------------------------------------------------------------ contenders


def build(name: str, model: Any, spec: list[int]) -> tuple[Callable[[Any], Any], str]:
    """(run(x), note) of a contender on the GPU."""
    import torch

    import brainslug.pytorch as brainslug

    if name == "eager":
        return model, "cuDNN, NCHW"
    if name == "eager_channels_last":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return (lambda x: m(x.contiguous(memory_format=torch.channels_last))), "cuDNN, NHWC"
    if name == "torch_compile":
        import torch._dynamo

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        return torch.compile(copy.deepcopy(model), dynamic=False), "inductor, static shapes"
    if name == "brainslug":
        opt = brainslug.optimize(model, spec).eval()
        if getattr(opt, "plan", None) is None:  # measured slower at optimize(): the model runs
            why = opt.info.fallbacks[0][1] if opt.info.fallbacks else "no plan"
            return opt, f"{why} (BRAINSLUG_SPEED_CHECK=0 times the plan itself)"
        return opt, "CUDA kernels, cuDNN convolutions"
    raise ValueError(f"unknown CUDA contender {name!r}; known: {', '.join(CUDA_CONTENDERS)}")


def bench_model(name: str, batches: Sequence[int], contenders: Sequence[str],
                args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import brainslug.pytorch as brainslug
    from brainslug.bench.contenders import load_model
    from brainslug.bench.harness import compare, empty_kernel_cache
    from brainslug.bench.stats import summarize

    model, size = load_model(name)
    size = args.hw or size
    model = model.cuda().eval()
    spec = [0, 3, size, size]
    doc: dict[str, Any] = {"model": name, "hw": size, "batches": []}
    with empty_kernel_cache():
        t0 = time.perf_counter()
        brainslug.optimize(model, spec)
        doc["optimize_cold_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        brainslug.optimize(model, spec)
        doc["optimize_warm_s"] = time.perf_counter() - t0
    _log(f"== {name} ({size}x{size}) on {torch.cuda.get_device_name()}: optimize() "
         f"{doc['optimize_cold_s']:.2f} s cold, {doc['optimize_warm_s']:.2f} s warm ==")
    built: dict[str, Callable[[Any], Any]] = {}
    notes: dict[str, str] = {}
    for c in contenders:
        try:
            built[c], notes[c] = build(c, model, spec)
        except Exception as e:  # reported, never fatal
            notes[c] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device="cuda",
                        generator=torch.Generator("cuda").manual_seed(0))
        with torch.no_grad():
            ref = model(x)
            fns, diffs = {}, {}
            for c, run in built.items():
                try:
                    out = run(x)
                    torch.cuda.synchronize()
                    diffs[c], why = compare(out, ref)
                    if why is None:
                        fns[c] = (lambda run=run, x=x: run(x))
                    else:
                        notes[c] = f"FAILED: {why}"
                except Exception as e:
                    notes[c] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            times, errors = time_interleaved(fns, args.repeats, args.warmup)
        notes.update({k: f"error: {v}" for k, v in errors.items()})
        stats = summarize(times, "brainslug")
        rows = []
        for c in contenders:
            s = stats.get(c)
            rows.append({"contender": c, "median_ms": s.median_ms if s else None,
                         "ratio_vs_brainslug_median": s.ratio_median if s else None,
                         "ratio_vs_brainslug_min": s.ratio_min if s else None,
                         "ratio_vs_brainslug_max": s.ratio_max if s else None,
                         "max_abs_diff": diffs.get(c), "note": notes.get(c, "")})
        entry = {"batch": batch, "rows": rows}
        _log(format_rows(name, size, batch, rows, args))
        if "brainslug" in built and not args.no_roofline:
            entry["roofline"] = roofline(built["brainslug"], x, name, args.repeats)
            _log(format_roofline(entry["roofline"], name, batch))
        doc["batches"].append(entry)
    return doc


def format_rows(name: str, size: int, batch: int, rows: list[dict[str, Any]],
                args: argparse.Namespace) -> str:
    title = (f"{name}  batch {batch}  ({size}x{size}, CUDA, {args.repeats} interleaved rounds "
             f"after {args.warmup} warm-up, CUDA events)")
    lines = [title, "-" * len(title),
             f"{'contender':22s} {'median ms':>10s}  {'ratio vs brainslug [min, max]':30s} "
             f"{'max|Δ|':>9s}  note"]
    for r in rows:
        ms = "-" if r["median_ms"] is None else f"{r['median_ms']:10.3f}"
        ratio = "-" if r["ratio_vs_brainslug_median"] is None else (
            f"{r['ratio_vs_brainslug_median']:.2f} [{r['ratio_vs_brainslug_min']:.2f}, "
            f"{r['ratio_vs_brainslug_max']:.2f}]")
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:9.2e}"
        lines.append(f"{r['contender']:22s} {ms:>10s}  {ratio:30s} {diff:>9s}  {r['note']}")
    lines.append("ratio = contender time / brainslug time in the same round (> 1: brainslug faster)")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ roofline


def roofline(opt: Any, x: Any, model_name: str, repeats: int) -> dict[str, Any]:
    """Every stack call of one forward pass: bytes moved over its device time,
    cold (after writing an L2-flushing buffer) and hot (median of back-to-back calls)."""
    import torch

    from brainslug.bench.roofline import StackResult
    from brainslug.bench.stack_calls import capture_stack_calls
    from brainslug.bench.stats import median

    layers = {s.name: s.layers for s in getattr(getattr(opt, "info", None), "stacks", [])}
    with torch.no_grad():
        opt(x)
    calls = capture_stack_calls(opt, x)
    bw = copy_bandwidth()
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    n = max(3, min(repeats, 9))
    stacks = []
    for c in calls:
        c()
        cold = []
        for _ in range(n):
            flush.fill_(1.0)
            cold.append(event_time(c))
        hot = event_time(lambda c=c: [c() for _ in range(n)]) / n
        t = median(cold)
        stacks.append(StackResult(c.name, layers.get(c.name, []), c.bytes, t * 1e3,
                                  c.bytes / t / 1e9, None, hot * 1e3, c.bytes / hot / 1e9,
                                  model_name, int(x.shape[0])))
    del flush
    bw += copy_bandwidth()
    copy_gbps = median(bw)
    for s in stacks:
        s.copy_fraction = s.gbps / copy_gbps
    with torch.no_grad():
        forward = median([event_time(lambda: opt(x)) for _ in range(n)])
    return {"copy_gbps": copy_gbps, "copy_gbps_samples": bw, "forward_ms": forward * 1e3,
            "flush_bytes": L2_FLUSH_BYTES, "stacks": [asdict(s) for s in stacks]}


def format_roofline(doc: dict[str, Any], model: str, batch: int) -> str:
    from brainslug.bench.roofline import format_roofline as cpu_format

    text = cpu_format(doc, f"{model}  batch {batch}  (CUDA): roofline of the compiled stacks")
    return text.replace("torch copy_ of 256 MiB", "device-to-device copy_ of 256 MiB")


# ------------------------------------------------------------------ entry point


def run(args: argparse.Namespace) -> int:
    """`python -m brainslug.bench --device cuda ...` (the bench's parsed arguments)."""
    import torch

    why = check_environment()
    if why is not None:
        print(f"error: --device cuda: {why}", file=sys.stderr)
        return 2
    contenders = list(args.contenders or CUDA_CONTENDERS)
    unknown = [c for c in contenders if c not in CUDA_CONTENDERS]
    if unknown:
        print(f"error: unknown CUDA contenders {unknown}; known: {', '.join(CUDA_CONTENDERS)}",
              file=sys.stderr)
        return 2
    if getattr(args, "stacks", False):
        contenders = ["brainslug"]
    if not hasattr(args, "no_roofline"):
        args.no_roofline = False
    t0 = time.perf_counter()
    _log(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
         f"{torch.cuda.get_device_properties(0).multi_processor_count} SMs")
    docs = [bench_model(m, args.batch, contenders, args) for m in args.models]
    _log(f"benchmark took {time.perf_counter() - t0:.1f} s")
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "models": docs}, f, indent=2,
                      default=float)
            f.write("\n")
        _log(f"wrote {args.json}")
    return 0

"""Roofline of the compiled stacks: achieved bandwidth against a copy, and time
against the roof.

A stack of pointwise layers is memory-bound, so the question is how close it
gets to what the machine can move; one that computes convolutions may be bound
by the FMA units instead, and one with exact activations by their arithmetic.
Its roof is the longer of bytes / copy bandwidth and its compute time:
flops / measured FMA peak (`peak.peak_gflops` on the threads the plan uses)
plus the elements of its SiLU, sigmoid, tanh and GELU layers at their
measured cost (`math_rate`, on as many threads); "of roof" is that time over
the time taken, and "FMA roof" the same without the activations' cost. The copy bandwidth is measured in the same
run (`torch.Tensor.copy_` of a 256 MiB buffer, bytes read + written per second,
median of several, half before and half after the stacks); each `StackKernel`
of the optimized model is timed alone on the inputs it got during one real
forward pass, and its bandwidth is (bytes of its inputs + bytes of its
outputs) / time.

A kernel called over and over on the same buffers finds them in the cache
(ResNet's stacks move a few MiB; a last-level cache holds tens), which is not
what a forward pass sees and can exceed the copy bandwidth several times. So
every timed call comes after the cache was flushed (a buffer twice the size of
the last-level cache written outside the timing): "ms"/"gbps" are those
cold-cache calls. "ms_hot"/"gbps_hot" are back-to-back calls, for reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from brainslug.bench.math_rate import math_seconds, seconds_per_element
from brainslug.bench.peak import peak_gflops
from brainslug.bench.stack_calls import capture_stack_calls, time_call, time_in_pass
from brainslug.bench.stats import median


@dataclass
class StackResult:
    name: str
    layers: list[str]
    bytes: int
    ms: float  # cold cache
    gbps: float
    copy_fraction: float | None
    ms_hot: float  # back-to-back calls, warm cache
    gbps_hot: float
    model: str = ""
    batch: int = 0
    flops: int = 0  # of its convolutions and linears, for the whole batch
    roof_fraction: float | None = None  # time at the roof / measured time
    math: dict[str, int] | None = None  # elements of vector math by kind, whole batch
    math_ms: float = 0.0  # their time at the measured cost
    fma_roof_fraction: float | None = None  # the roof without the math, / measured time
    ms_in_pass: float | None = None  # median time inside real forward passes
    in_pass_roof_fraction: float | None = None  # time at the roof / ms_in_pass


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (Linux sysfs), or 32 MiB when unknown."""
    import glob

    best = 0
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = open(path).read().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            best = max(best, int(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return best or 32 << 20


class CacheFlusher:
    """Evicts the caches by writing a buffer twice the last-level cache (64 to 512 MiB)."""

    def __init__(self, nbytes: int | None = None):
        n = nbytes or min(max(2 * last_level_cache_bytes(), 64 << 20), 512 << 20)
        self.buffer = torch.zeros(n // 4, dtype=torch.float32)

    def __call__(self) -> None:
        self.buffer.add_(1.0)


def time_call_cold(fn: Callable[[], Any], flush: Callable[[], None], repeats: int = 7) -> float:
    """Median seconds of single calls, each after `flush()` (not timed)."""
    fn()
    samples = []
    for _ in range(repeats):
        flush()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return median(samples)


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> list[float]:
    """GB/s samples of `dst.copy_(src)` (bytes read + written / time)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        out.append(2 * nbytes / (time.perf_counter() - t0) / 1e9)
    return out


def roofline(
    opt: Any,
    x: torch.Tensor,
    *,
    model_name: str = "",
    repeats: int = 7,
    copy_bytes: int = 256 << 20,
) -> dict[str, Any]:
    """{"copy_gbps", "stacks": [{"name", "layers", "bytes", "ms", "gbps", ...}], ...}."""
    infos = getattr(getattr(opt, "info", None), "stacks", [])
    layers = {s.name: s.layers for s in infos}
    flops = {s.name: s.flops for s in infos}
    math = {s.name: s.math for s in infos}
    for kind in sorted({k for s in infos for k in s.math}):
        seconds_per_element(kind)  # (cached) before the model's thread pools run
    with torch.no_grad():
        opt(x)  # warm: arena, scratch, thread pool
    calls = capture_stack_calls(opt, x)
    in_pass = time_in_pass(opt, x, max(3, repeats))
    bw = copy_bandwidth(copy_bytes)
    flush = CacheFlusher()
    stacks = []
    for k, c in enumerate(calls):
        cold = time_call_cold(c, flush, repeats)
        hot = time_call(c, repeats)
        stacks.append(
            StackResult(
                name=c.name,
                layers=layers.get(c.name, []),
                bytes=c.bytes,
                ms=cold * 1e3,
                gbps=c.bytes / cold / 1e9,
                copy_fraction=None,
                ms_hot=hot * 1e3,
                gbps_hot=c.bytes / hot / 1e9,
                model=model_name,
                batch=int(x.shape[0]),
                flops=flops.get(c.name, 0) * c.batch,
                math={kind: n * c.batch for kind, n in math.get(c.name, {}).items()},
                ms_in_pass=in_pass[k] * 1e3 if k < len(in_pass) else None,
            )
        )
    flush_bytes = flush.buffer.numel() * 4
    del flush
    bw += copy_bandwidth(copy_bytes)
    copy_gbps = median(bw)
    threads = torch.get_num_threads()
    peak = peak_gflops(threads) if any(s.flops for s in stacks) else None
    for s in stacks:
        s.copy_fraction = s.gbps / copy_gbps
        memory_s = s.bytes / (copy_gbps * 1e9)
        fma_s = s.flops / (peak * 1e9) if peak else 0.0
        math_s = math_seconds(s.math or {}, threads)
        s.math_ms = math_s * 1e3
        roof_s = max(memory_s, fma_s + math_s)
        s.roof_fraction = roof_s / (s.ms / 1e3)
        s.fma_roof_fraction = max(memory_s, fma_s) / (s.ms / 1e3)
        if s.ms_in_pass:
            s.in_pass_roof_fraction = roof_s / (s.ms_in_pass / 1e3)
    with torch.no_grad():
        forward_s = time_call(lambda: opt(x), max(3, repeats // 2), min_time=0.0)
    return {
        "copy_gbps": copy_gbps,
        "peak_gflops": peak,
        "math_ns_per_element": {k: seconds_per_element(k) * 1e9
                                for k in sorted({k for s in stacks for k in s.math or {}})},
        "copy_gbps_samples": bw,
        "forward_ms": forward_s * 1e3,
        "flush_bytes": flush_bytes,
        "stacks": [asdict(s) for s in stacks],
    }


def format_roofline(doc: dict[str, Any], title: str) -> str:
    stacks: Sequence[dict[str, Any]] = doc["stacks"]
    total_ms = sum(s["ms"] for s in stacks)
    total_b = sum(s["bytes"] for s in stacks)
    samples = doc["copy_gbps_samples"]
    lines = [
        title,
        "-" * len(title),
        f"copy bandwidth: {doc['copy_gbps']:.2f} GB/s (torch copy_ of 256 MiB, read + "
        f"written, median of {len(samples)} [{min(samples):.2f}, {max(samples):.2f}])",
        f"stack times: single calls after a {doc['flush_bytes'] >> 20} MiB cache flush; "
        f"hot = back-to-back calls",
    ]
    if doc.get("peak_gflops"):
        lines.append(
            f"FMA peak: {doc['peak_gflops']:.0f} GFLOP/s (measured); \"FMA roof\": the time at "
            f"max(bytes / copy bandwidth, flops / peak) over the time taken"
        )
    costs = doc.get("math_ns_per_element") or {}
    if costs:
        lines.append(
            "vector math, ns per element on one thread (measured): "
            + ", ".join(f"{k.removeprefix('nn.')} {v:.3f}" for k, v in costs.items())
            + "; \"math ms\": the stack's at that cost; \"of roof\": the time at "
            "max(bytes / copy bandwidth, flops / peak + math) over the time taken"
        )
    lines.append(
        "\"in pass\": the stack's median time inside real forward passes (its inputs where "
        "the layers before it left them), and the roof over that time"
    )
    lines.append(
        f"{'stack':10s} {'ms':>8s} {'MiB':>8s} {'GB/s':>7s} {'of copy':>8s} {'GFLOP/s':>8s} "
        f"{'math ms':>8s} {'FMA roof':>8s} {'of roof':>8s} {'in pass':>8s} {'of roof':>8s} "
        f"{'hot GB/s':>9s}  layers"
    )

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x * 100:.0f}%"

    for s in stacks:
        short = ", ".join(x.split(": ")[-1].removeprefix("nn.") for x in s["layers"])
        gf = f"{s['flops'] / s['ms'] / 1e6:.1f}" if s.get("flops") else "-"
        mm = f"{s['math_ms']:.3f}" if s.get("math_ms") else "-"
        ip = f"{s['ms_in_pass']:.3f}" if s.get("ms_in_pass") else "-"
        lines.append(
            f"{s['name']:10s} {s['ms']:8.3f} {s['bytes'] / 2**20:8.2f} "
            f"{s['gbps']:7.2f} {pct(s['copy_fraction']):>8s} {gf:>8s} {mm:>8s} "
            f"{pct(s.get('fma_roof_fraction')):>8s} {pct(s.get('roof_fraction')):>8s} "
            f"{ip:>8s} {pct(s.get('in_pass_roof_fraction')):>8s} "
            f"{s['gbps_hot']:9.2f}  {short}"
        )
    if stacks and total_ms > 0:
        gbps = total_b / (total_ms / 1e3) / 1e9
        def share(key: str) -> str:
            roof = sum(s["ms"] * s[key] for s in stacks if s.get(key) is not None)
            return f"{roof / total_ms * 100:7.0f}%"

        math_ms = sum(s.get("math_ms") or 0.0 for s in stacks)
        in_pass_ms = sum(s.get("ms_in_pass") or 0.0 for s in stacks)
        roof_ms = sum(s["ms"] * s["roof_fraction"] for s in stacks
                      if s.get("roof_fraction") is not None)
        in_pass = f"{roof_ms / in_pass_ms * 100:7.0f}%" if in_pass_ms else f"{'-':>8s}"
        lines.append(
            f"{'all':10s} {total_ms:8.3f} {total_b / 2**20:8.2f} {gbps:7.2f} "
            f"{gbps / doc['copy_gbps'] * 100:7.0f}% {'':8s} {math_ms:8.3f} "
            f"{share('fma_roof_fraction')} {share('roof_fraction')} "
            f"{in_pass_ms:8.3f} {in_pass} "
            f"{'':9s}  ({len(stacks)} stacks; the whole forward pass takes "
            f"{doc['forward_ms']:.3f} ms)"
        )
    return "\n".join(lines) + "\n"

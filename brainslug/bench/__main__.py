"""Command line: `python -m brainslug.bench --framework torch --models M1,M2 --batch 1,8`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _ints(s: str) -> list[int]:
    try:
        out = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return out


def _names(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m brainslug.bench",
        description="Benchmark BrainSlug against eager PyTorch, torch.compile and ONNX Runtime "
        "(all contenders in one process, checked against eager, timed interleaved), or "
        "with --stacks a roofline of every compiled stack, with --convs GFLOP/s per "
        "convolution, or with --compile-time where optimize()'s time goes.",
    )
    p.add_argument("--framework", default="torch", choices=("torch", "tf"),
                   help="torch (torchvision models) or tf (keras.applications models)")
    p.add_argument(
        "--models",
        type=_names,
        required=True,
        help="comma-separated model names, no weights: torchvision (torch) or "
        "keras.applications (tf)",
    )
    p.add_argument("--batch", type=_ints, default=[1], help="comma-separated batch sizes")
    p.add_argument(
        "--contenders",
        type=_names,
        default=None,
        help="comma-separated subset of: eager, eager_channels_last, torch_compile, "
        "torch_compile_freezing, onnxruntime, brainslug, brainslug_fold, brainslug_library, "
        "brainslug_convs (torch) or "
        "keras_eager, tf_function, xla, brainslug (tf) (default all)",
    )
    p.add_argument("--repeats", type=int, default=20, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument(
        "--stacks",
        action="store_true",
        help="roofline of the compiled stacks instead of the contenders",
    )
    p.add_argument(
        "--convs",
        action="store_true",
        help="per-convolution GFLOP/s of BrainSlug's kernels and of the library against "
        "the measured peak FMA rate",
    )
    p.add_argument(
        "--compile-time",
        action="store_true",
        help="cold and warm optimize() of each model in a fresh process on an empty "
        "kernel cache, with the time of each stage and compile step",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--hw", type=int, default=None, help=argparse.SUPPRESS)  # input size (tests)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: eager cuDNN, channels-last, torch.compile, BrainSlug on the GPU")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        print("error: --repeats must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if args.convs and (args.framework != "torch" or args.device != "cpu" or args.stacks):
        print("error: --convs is for --framework torch on the CPU, without --stacks",
              file=sys.stderr)
        return 2
    if args.compile_time and (args.framework != "torch" or args.device != "cpu"
                              or args.stacks or args.convs):
        print("error: --compile-time is for --framework torch on the CPU, without --stacks "
              "or --convs", file=sys.stderr)
        return 2
    if args.framework == "tf":
        return main_tf(args)
    if args.device == "cuda":
        from brainslug.bench.cuda import run

        return run(args)

    from brainslug.bench.contenders import CONTENDERS

    if args.contenders is not None:
        unknown = [c for c in args.contenders if c not in CONTENDERS]
        if unknown:
            print(
                f"error: unknown contenders {unknown}; known: {', '.join(CONTENDERS)}",
                file=sys.stderr,
            )
            return 2

    t0 = time.perf_counter()
    if args.compile_time:
        from brainslug.bench.compile_time import run_compile_time

        doc = run_compile_time(args.models, args.hw, _log)
    elif args.convs:
        doc = run_convs(args)
    else:
        doc = run_stacks(args) if args.stacks else run_models(args)
    if doc is None:
        return 1
    print(f"benchmark took {time.perf_counter() - t0:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


def main_tf(args: argparse.Namespace) -> int:
    """`--framework tf`: keras.applications models (see `brainslug.bench.tf_contenders`)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from brainslug.bench.tf_contenders import TF_CONTENDERS

    unknown_models = [m for m in args.models if not m[:1].isupper()
                      or not callable(getattr(keras.applications, m, None))]
    if unknown_models:
        print(f"error: --framework tf takes keras.applications models (e.g. ResNet50), "
              f"unknown: {unknown_models}", file=sys.stderr)
        return 2
    if args.contenders is not None:
        unknown = [c for c in args.contenders if c not in TF_CONTENDERS]
        if unknown:
            print(f"error: unknown contenders {unknown}; known: {', '.join(TF_CONTENDERS)}",
                  file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    doc = run_tf_stacks(args) if args.stacks else run_tf_models(args)
    if doc is None:
        return 1
    print(f"benchmark took {time.perf_counter() - t0:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


def run_tf_models(args: argparse.Namespace) -> dict[str, Any]:
    import os

    import tensorflow as tf

    from brainslug.bench.tf_contenders import run_tf_benchmark

    _log(f"tensorflow {tf.__version__}, {os.cpu_count()} CPUs, load average "
         f"{os.getloadavg()[0]:.2f} at the start")
    return run_tf_benchmark(args.models, args.batch, args.contenders, repeats=args.repeats,
                            warmup=args.warmup, hw=args.hw, log=_log)


def run_tf_stacks(args: argparse.Namespace) -> dict[str, Any] | None:
    import numpy as np
    import tensorflow as tf

    import brainslug.tensorflow as brainslug
    from brainslug.bench.roofline import format_roofline
    from brainslug.bench.stats import median
    from brainslug.bench.tf_contenders import load_keras_model, roofline

    runs = []
    for name in args.models:
        model, size = load_keras_model(name)
        t0 = time.perf_counter()
        opt = brainslug.optimize(model, [0, size, size, 3])
        _log(f"== {name} ({size}x{size}, NHWC): optimize() {time.perf_counter() - t0:.2f} s ==")
        for batch in args.batch:
            x = tf.constant(np.random.default_rng(0).standard_normal(
                (batch, size, size, 3)).astype(np.float32))
            doc = roofline(opt, x, model_name=name, repeats=max(3, min(args.repeats, 9)))
            doc = {"model": name, "batch": batch, **doc}
            _log(format_roofline(
                doc, f"{name}  batch {batch}  ({size}x{size}, NHWC): roofline of the stacks"))
            runs.append(doc)
    if not runs:
        return None
    samples = [g for r in runs for g in r["copy_gbps_samples"]]
    return {"copy_gbps": median(samples), "copy_gbps_samples": samples,
            "stacks": [s for r in runs for s in r["stacks"]], "runs": runs}


def _log(s: str) -> None:
    print(s, flush=True)


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    from brainslug.bench.harness import environment, run_benchmark

    env = environment()
    _log(
        f"torch {env['torch']}, {env['torch_threads']} threads, {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_1min'] or 0:.2f} at the start"
    )
    return run_benchmark(
        args.models,
        args.batch,
        args.contenders,
        repeats=args.repeats,
        warmup=args.warmup,
        hw=args.hw,
        log=_log,
    )


def run_convs(args: argparse.Namespace) -> dict[str, Any] | None:
    """`--convs`: one table per model and batch, against the peak FMA rate
    measured before and after them (the better of the two)."""
    import torch

    from brainslug.bench.convs import conv_rows, format_table, with_peak
    from brainslug.bench.peak import lanes, peak_gflops

    threads = torch.get_num_threads()
    samples = [peak_gflops(threads)]
    _log(f"peak FMA rate: {samples[0]:.1f} GFLOP/s on {threads} threads "
         f"({lanes()}-lane float32 FMAs)")
    rows = [conv_rows(name, batch, threads, hw=args.hw, log=_log)
            for name in args.models for batch in args.batch]
    samples.append(peak_gflops(threads))
    _log(f"peak FMA rate again: {samples[1]:.1f} GFLOP/s (the tables use the better one)")
    tables = [with_peak(doc, max(samples), samples) for doc in rows]
    for doc in tables:
        _log(format_table(doc))
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0]
    return {"peak_gflops": max(samples), "peak_samples": samples, "threads": threads,
            "convs": tables[0]["convs"], "tables": tables}


def run_stacks(args: argparse.Namespace) -> dict[str, Any] | None:
    import torch

    import brainslug.pytorch as brainslug
    from brainslug.bench.contenders import load_model
    from brainslug.bench.roofline import format_roofline, roofline
    from brainslug.bench.stats import median

    runs = []
    for name in args.models:
        model, size = load_model(name)
        size = args.hw or size
        t0 = time.perf_counter()
        opt = brainslug.optimize(model, [0, 3, size, size]).eval()
        _log(f"== {name} ({size}x{size}): optimize() {time.perf_counter() - t0:.2f} s ==")
        for batch in args.batch:
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
            doc = roofline(opt, x, model_name=name, repeats=max(3, min(args.repeats, 9)))
            doc = {"model": name, "batch": batch, **doc}
            _log(
                format_roofline(
                    doc, f"{name}  batch {batch}  ({size}x{size}): roofline of the compiled stacks"
                )
            )
            runs.append(doc)
    if not runs:
        return None
    if len(runs) == 1:
        return runs[0]
    samples = [g for r in runs for g in r["copy_gbps_samples"]]
    return {
        "copy_gbps": median(samples),
        "copy_gbps_samples": samples,
        "stacks": [s for r in runs for s in r["stacks"]],
        "runs": runs,
    }


if __name__ == "__main__":
    sys.exit(main())

"""Batch inference with Ray Data on actors that load a saved BrainSlug model.

The driver builds the model, runs `brainslug.optimize()` once and saves the
result with `brainslug.save()`. Ray Data then streams a dataset through a pool
of actors (`map_batches` with a callable class): each actor loads the file
once with `brainslug.load()` in its constructor and never compiles. The same
dataset also goes through actors running eager PyTorch, and the example prints
the rows processed, max|Δ| of BrainSlug's outputs against eager's, and the
throughput of both.

    python examples/ray_batch_inference.py                 # resnet50, 64 rows, 224x224
    python examples/ray_batch_inference.py --model resnet18 --rows 32 --image-size 64
    python examples/ray_batch_inference.py --plan resnet50.bslug   # optimize once, reuse after

Runs on a local Ray cluster that it starts and stops (`pip install -e '.[serve]'`).
Weights are random (weights=None; batch norms get random statistics so that
every layer matters); the dataset is synthetic. Throughput is rows / (end of
the last batch - start of the first) as the actors saw it: actor start-up and
loading are left out (the pool is fully up before the first batch); runs
alternate eager, brainslug, brainslug, eager, ... and the medians are
reported. Exits 1 on a mismatch or a missing row, 2 when optimize() kept
the model as it is (nothing to save; BRAINSLUG_SPEED_CHECK=0 keeps the plan).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
import torchvision

import brainslug.pytorch as brainslug

EAGER, BRAINSLUG = "eager", "brainslug"
RTOL = 1e-4
"""A mismatch is max|Δ| > RTOL * max(1, max|eager|)."""


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """torchvision's `name` with random weights in eval mode; batch norms get
    random running statistics and affine parameters (fixed seed) so that the
    outputs depend on every layer."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                if m.affine:
                    m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                    m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model


def synthetic_images(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Row `id`'s image: standard normal noise seeded by the id (3 x size x size)."""
    ids = batch["id"]
    images = [np.random.default_rng(int(i)).standard_normal((3, size, size), dtype=np.float32)
              for i in ids]
    return {"id": ids, "image": np.stack(images)}


class Predictor:
    """A Ray Data actor: loads its model once, then runs batches of images.

    kind "brainslug" loads the saved BrainSlug file (`brainslug.load`, no
    compilation); kind "eager" builds torchvision's `model_name` and loads the
    state dict at `path`."""

    def __init__(self, kind: str, path: str, model_name: str, threads: int,
                 batch_size: int, image_size: int) -> None:
        # one actor's share of the cores, set before BrainSlug makes its thread pool
        os.environ["BRAINSLUG_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        if kind == BRAINSLUG:
            import brainslug.pytorch as bs

            self.model = bs.load(path)
        else:
            self.model = torchvision.models.get_model(model_name, weights=None).eval()
            self.model.load_state_dict(torch.load(path, weights_only=True))
        with torch.no_grad():  # warm-up: first-call costs stay out of the timings
            self.model(torch.zeros(batch_size, 3, image_size, image_size))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.time()
        x = torch.from_numpy(np.array(batch["image"], dtype=np.float32))  # a writable copy
        with torch.no_grad():
            out = self.model(x).numpy()
        end = time.time()
        n = len(out)
        return {"id": batch["id"], "out": out,
                "start": np.full(n, start), "end": np.full(n, end)}


@dataclass
class Run:
    kind: str
    ids: np.ndarray
    out: np.ndarray
    rows_per_s: float
    startup_s: float


def run_once(ds: ray.data.Dataset, kind: str, path: str, args: argparse.Namespace,
             threads: int, cpus_per_actor: float) -> Run:
    """Streams `ds` through a fresh pool of `args.actors` actors of `kind`."""
    t = time.time()
    mapped = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"kind": kind, "path": path, "model_name": args.model,
                               "threads": threads, "batch_size": args.batch_size,
                               "image_size": args.image_size},
        batch_size=args.batch_size,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=cpus_per_actor,
        batch_format="numpy",
    )
    batches = list(mapped.iter_batches(batch_size=None, batch_format="numpy"))
    cat = {k: np.concatenate([b[k] for b in batches]) for k in ("id", "out", "start", "end")}
    order = np.argsort(cat["id"], kind="stable")
    first = float(cat["start"].min())
    span = float(cat["end"].max()) - first
    return Run(kind, cat["id"][order], cat["out"][order], len(order) / span, first - t)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50", help="a torchvision model name")
    p.add_argument("--rows", type=int, default=64, help="rows in the synthetic dataset")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--actors", type=int, default=2, help="actors in each pool")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--plan", type=Path, default=None,
                   help="a saved BrainSlug file: used as is if it exists (it must come from "
                        "the same --model and --image-size), else written there")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs of each kind (interleaved; the median is reported)")
    args = p.parse_args(argv)
    for name in ("rows", "batch_size", "actors", "image_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // args.actors)  # so that the actors don't oversubscribe the cores
    shape = [0, 3, args.image_size, args.image_size]  # 0 = any batch size

    model = build_model(args.model)
    with tempfile.TemporaryDirectory(prefix="brainslug-ray-") as tmp:
        weights = str(Path(tmp) / "eager.pt")  # on a multi-node cluster: shared storage
        torch.save(model.state_dict(), weights)
        plan = args.plan or Path(tmp) / f"{args.model}.bslug"
        if plan.exists():
            how = "loaded in the actors, as it is"
        else:
            torch.set_num_threads(threads)  # optimize() times its choices as an actor runs them
            t = time.perf_counter()
            opt = brainslug.optimize(model, shape)
            took = time.perf_counter() - t
            try:
                brainslug.save(opt, plan)
            except ValueError as e:  # e.g. optimize() measured every plan slower than eager
                print(f"nothing to serve: {e}\n{brainslug.report(opt)}", file=sys.stderr)
                return 2
            how = f"optimize() {took:.1f} s, saved"
            del opt
        how += f" ({plan.stat().st_size / 1e6:.1f} MB)"

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True,
                 logging_level="warning")
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.print_on_execution_start = False
            ctx.wait_for_min_actors_s = 600  # the whole pool is up before the first batch
            blocks = max(args.actors, -(-args.rows // args.batch_size))
            ds = (ray.data.range(args.rows, override_num_blocks=blocks)
                  .map_batches(synthetic_images, fn_kwargs={"size": args.image_size},
                               batch_format="numpy")
                  .materialize())  # the same input rows for every run
            paths = {EAGER: weights, BRAINSLUG: str(plan)}
            order = [k for i in range(args.repeats)
                     for k in ((EAGER, BRAINSLUG) if i % 2 == 0 else (BRAINSLUG, EAGER))]
            runs = [run_once(ds, kind, paths[kind], args, threads, cpus / args.actors)
                    for kind in order]
        finally:
            ray.shutdown()

    return summarize(args, runs, order, threads, plan if args.plan else None, how)


def summarize(args: argparse.Namespace, runs: list[Run], order: list[str], threads: int,
              kept: Path | None, how: str) -> int:
    """Prints the table; 0 when every run has every row and BrainSlug matches eager."""
    expected = np.arange(args.rows)
    complete = [np.array_equal(r.ids, expected) for r in runs]
    ref = next(r.out for r in runs if r.kind == EAGER)  # the first eager run
    max_ref = float(np.abs(ref).max()) if ref.size else float("nan")
    tol = RTOL * max(1.0, max_ref)
    delta = float("nan")  # (NaN fails the check below)
    if all(complete):
        delta = float(np.max([np.abs(r.out - ref).max() for r in runs if r.kind == BRAINSLUG]))
    rate = {k: statistics.median(r.rows_per_s for r in runs if r.kind == k)
            for k in (EAGER, BRAINSLUG)}
    startup = {k: statistics.median(r.startup_s for r in runs if r.kind == k)
               for k in (EAGER, BRAINSLUG)}

    print(f"{args.model}: {args.rows} rows of 3x{args.image_size}x{args.image_size}, "
          f"batch {args.batch_size}, {args.actors} actors x {threads} thread(s), "
          f"Ray {ray.__version__}")
    print(f"plan: {kept or 'a temporary file'}, {how}")
    print(f"runs: {', '.join(order)}; rows/s = rows / (last batch end - first batch start)")
    print(f"  {'actors':<10} {'rows/s':>8} {'each run':>16} {'start-up s':>11}")
    for k in (EAGER, BRAINSLUG):
        each = " ".join(f"{r.rows_per_s:.1f}" for r in runs if r.kind == k)
        print(f"  {k:<10} {rate[k]:>8.1f} {each:>16} {startup[k]:>11.1f}")
    print("  (medians; start-up s: from the run's start to the first batch: Ray, the actors' "
          "imports, loading, warm-up)")
    print(f"speed-up (brainslug / eager rows/s): {rate[BRAINSLUG] / rate[EAGER]:.2f}x")
    got = min(len(r.ids) for r in runs)
    print(f"rows processed: {got} of {args.rows} in every run" if all(complete) else
          f"rows processed: MISSING ROWS ({', '.join(str(len(r.ids)) for r in runs)} "
          f"of {args.rows}, or not one of each)")
    print(f"max|Δ| brainslug vs eager: {delta:.2e} "
          f"(tolerance {tol:.1e} = {RTOL:g} x max(1, max|eager| = {max_ref:.2e}))")
    ok = all(complete) and delta <= tol  # (False for NaN)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`bench --compile-time`: where a cold and a warm optimize() spend their time.

Each model is optimized in a fresh Python process on an empty kernel cache
(cold), then once more in that process (warm: plan and kernels from the
cache), as a new user would see it. Printed per model: both times, and the
cold call's `plan.compile_profile` (its stages, and each compile step summed
over the stacks compiled in every process).

`python -m brainslug.bench.compile_time MODEL [HW]` is the child: it prints
one line of JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def measure_in_child(name: str, hw: int | None = None) -> dict[str, Any]:
    """Cold and warm optimize() of torchvision model `name` in a new process."""
    with tempfile.TemporaryDirectory(prefix="brainslug-cold-") as cache_dir:
        env = {**os.environ, "BRAINSLUG_CACHE_DIR": cache_dir}
        env.pop("BRAINSLUG_CACHE", None)  # (a disabled cache would make "warm" cold)
        cmd = [sys.executable, "-m", "brainslug.bench.compile_time", name]
        if hw is not None:
            cmd.append(str(hw))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"optimize() of {name} failed in its process:\n"
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_compile_time(models: list[str], hw: int | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    from brainslug.plan.compile_profile import format_profile

    runs = []
    for name in models:
        doc = measure_in_child(name, hw)
        log(f"== {name}: optimize() cold {doc['cold_s']:.2f} s, warm {doc['warm_s']:.2f} s "
            f"(fresh process, empty kernel cache) ==")
        log(format_profile(doc["cold_profile"], f"{name}: cold optimize()"))
        runs.append({"model": name, **doc})
    return {"runs": runs}


def _child(name: str, hw: int | None) -> None:
    import torch
    import torchvision

    import brainslug.pytorch as brainslug

    size = hw or 224
    model = torchvision.models.get_model(name, weights=None).eval()
    spec = [0, 3, size, size]
    doc: dict[str, Any] = {}
    for run in ("cold", "warm"):
        t0 = time.perf_counter()
        opt = brainslug.optimize(model, spec, verbose=False)
        doc[f"{run}_s"] = time.perf_counter() - t0
        doc[f"{run}_profile"] = opt.info.compile_profile or {}
    doc["torch_threads"] = torch.get_num_threads()
    print(json.dumps(doc))


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)

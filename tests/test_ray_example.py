"""examples/ray_batch_inference.py end to end on a local Ray cluster: eager and
loaded BrainSlug actors over the same rows, every row back, outputs that match."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="needs Ray Data: pip install -e '.[serve]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_batch_inference.py"


# (40-70 s on 2 cores: Ray's start, and four actors that import torch; in make test,
# as the issue asks: a test runs the example with 2 actors)
def test_ray_batch_inference_example(tmp_path: Path) -> None:
    plan = tmp_path / "resnet18.bslug"
    cmd = [sys.executable, str(EXAMPLE), "--model", "resnet18", "--image-size", "64",
           "--rows", "32", "--batch-size", "8", "--actors", "2", "--repeats", "1",
           "--plan", str(plan)]
    # (the environment passes on: conftest's BRAINSLUG_SPEED_CHECK=0 keeps the plan)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}"
    assert "rows processed: 32 of 32 in every run" in p.stdout, p.stdout
    m = re.search(r"max\|Δ\| brainslug vs eager: (\S+) \(tolerance (\S+) ", p.stdout)
    assert m and float(m[1]) <= float(m[2]), p.stdout
    assert re.search(r"brainslug +\d+\.\d", p.stdout), p.stdout
    assert plan.is_file()  # --plan writes the file when it isn't there


@functools.cache
def _example() -> ModuleType:  # the example as a module, for its summary
    spec = importlib.util.spec_from_file_location("ray_batch_inference", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fault", ["none", "missing row", "duplicate row", "mismatch", "nan"])
def test_summary_fails_on_a_missing_row_or_a_mismatch(
        fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    ex = _example()
    args = argparse.Namespace(model="m", rows=4, image_size=8, batch_size=2, actors=2)
    ref = np.arange(12, dtype=np.float32).reshape(4, 3) * 100
    ids, out = np.arange(4), ref + 1e-3
    if fault == "missing row":
        ids, out = ids[:3], out[:3]
    elif fault == "duplicate row":
        ids, out = np.array([0, 1, 1, 3]), out
    elif fault == "mismatch":
        out = out.copy()
        out[2, 1] += 1.0  # tolerance: 1e-4 x 1100
    elif fault == "nan":
        out = out.copy()
        out[0, 0] = np.nan
    runs = [ex.Run(ex.EAGER, np.arange(4), ref, 10.0, 1.0),
            ex.Run(ex.BRAINSLUG, ids, out, 20.0, 1.0)]
    code = ex.summarize(args, runs, [ex.EAGER, ex.BRAINSLUG], 1, None, "test")
    text = capsys.readouterr().out
    assert code == (0 if fault == "none" else 1), text
    assert "speed-up (brainslug / eager rows/s): 2.00x" in text
    assert ("MISSING ROWS" in text) == (fault in ("missing row", "duplicate row"))

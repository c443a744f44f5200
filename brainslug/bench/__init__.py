"""The benchmark harness: BrainSlug against eager PyTorch, torch.compile and
ONNX Runtime, and a roofline of the compiled stacks.

    python -m brainslug.bench --framework torch --models resnet18,densenet121 --batch 1,8
    python -m brainslug.bench --framework torch --models resnet18 --batch 8 --stacks

Every contender runs in one process, checked against eager first and timed
interleaved after a warm-up; ratios are per round against brainslug (see
`stats`). `python -m brainslug.bench --help` lists the options.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CONTENDERS": "contenders",
    "BuildContext": "contenders",
    "Contender": "contenders",
    "Skip": "contenders",
    "load_model": "contenders",
    "bench_model": "harness",
    "compare": "harness",
    "run_benchmark": "harness",
    "to_json": "harness",
    "capture_stack_calls": "roofline",
    "copy_bandwidth": "roofline",
    "roofline": "roofline",
    "balanced_orders": "stats",
    "summarize": "stats",
    "time_interleaved": "stats",
}


def __getattr__(name: str) -> Any:
    # lazy, so that `python -m brainslug.bench --framework tf` fails before importing torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"brainslug.bench.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'brainslug.bench' has no attribute {name!r}")


__all__ = [
    "CONTENDERS",
    "BuildContext",
    "Contender",
    "Skip",
    "balanced_orders",
    "bench_model",
    "capture_stack_calls",
    "compare",
    "copy_bandwidth",
    "load_model",
    "roofline",
    "run_benchmark",
    "summarize",
    "time_interleaved",
    "to_json",
]

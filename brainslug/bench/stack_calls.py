"""One compiled stack's kernel call, captured from a forward pass and replayed
alone: what the roofline and the math cost measurement time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from brainslug.bench.stats import median


@dataclass
class StackCall:
    """One stack kernel call captured during a forward pass."""

    name: str
    runner: Callable[[list[Any], int], None]
    buffers: list[Any]  # inputs then outputs, as the kernel is called
    num_outputs: int
    batch: int

    @property
    def bytes(self) -> int:
        return sum(_nbytes(b) for b in self.buffers)

    def __call__(self) -> None:
        """One call as the plan makes it: data pointers only, after the first
        (checked) call with these buffers (`KernelRunner.call_pointers`)."""
        fast = getattr(self.runner, "call_pointers", None)
        if fast is not None and self._fill is not None:
            if fast(self._pointers, self._fill, self.batch):
                return
        self.runner(self.buffers, self.batch)
        if fast is not None and self._fill is None:
            self._fill = self.runner.shape_slots(self.buffers, self.batch)
            self._pointers = [_data_ptr(b) for b in self.buffers]

    _fill: list[tuple[int, int]] | None = None
    _pointers: list[int] | None = None


def _nbytes(b: Any) -> int:
    if isinstance(b, torch.Tensor):
        return b.numel() * b.element_size()
    return int(b.nbytes)


def _data_ptr(b: Any) -> int:
    return b.data_ptr() if isinstance(b, torch.Tensor) else int(b.ctypes.data)


def _clone(b: Any) -> Any:
    return b.clone() if isinstance(b, torch.Tensor) else b.copy()


def _fresh(b: Any) -> Any:
    return torch.empty_like(b) if isinstance(b, torch.Tensor) else b.copy()


def stack_kernels(opt: Any) -> list[tuple[str, Any]]:
    """(attribute name, module) of every StackKernel in the plan of `opt`."""
    plan = getattr(opt, "plan", None)
    if plan is None:
        return []
    return [(n, m) for n, m in plan.named_modules() if getattr(m, "is_stack_kernel", False)]


def capture_stack_calls(opt: Any, x: torch.Tensor) -> list[StackCall]:
    """Runs `opt(x)` once and records every stack kernel call, in call order.

    Inputs are copied at the call (the arena reuses buffers later in the
    pass); outputs get fresh buffers of the same shape, but an output that the
    plan writes over one of the stack's inputs (an in-place residual add) is
    written over that input's copy, as in the pass (a fresh buffer would add
    a second stream and its write-allocate reads)."""
    calls: list[StackCall] = []
    kernels = stack_kernels(opt)
    originals = [k.runner for _, k in kernels]

    def recorder(k: Any, runner: Any) -> Callable[[list[Any], int], None]:
        n_out = len(k.output_shapes)

        def record(buffers: list[Any], batch: int) -> None:
            n_in = len(buffers) - n_out
            inputs = [_clone(b) for b in buffers[:n_in]]
            at = {_data_ptr(b): k for k, b in enumerate(buffers[:n_in])}
            copied = inputs + [inputs[at[_data_ptr(b)]] if _data_ptr(b) in at else _fresh(b)
                               for b in buffers[n_in:]]
            calls.append(StackCall(getattr(k, "stack_name", "?"), runner, copied, n_out, batch))
            runner(buffers, batch)

        return record

    try:
        for (_, k), r in zip(kernels, originals, strict=True):
            k.runner = recorder(k, r)
        with torch.no_grad():
            opt(x)
    finally:
        for (_, k), r in zip(kernels, originals, strict=True):
            k.runner = r
    return calls


def time_call(fn: Callable[[], Any], repeats: int = 7, min_time: float = 0.005) -> float:
    """Median seconds per call: each sample loops enough calls to last `min_time`."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, min(1000, int(min_time / one)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return median(samples)


def time_in_pass(opt: Any, x: torch.Tensor, rounds: int = 7) -> list[float]:
    """Median seconds of each stack kernel call, in call order, inside `rounds`
    real forward passes of `opt` on `x`: each finds the caches as the layers
    before it leave them (a stack that reads what the one before it wrote
    finds it in the L2 or L3, which a single call after a cache flush does not)."""
    kernels = stack_kernels(opt)
    originals = [k.runner for _, k in kernels]
    samples: list[list[float]] = []
    position = [0]

    def timed(runner: Any) -> Callable[[list[Any], int], None]:
        def call(buffers: list[Any], batch: int) -> None:
            t0 = time.perf_counter()
            runner(buffers, batch)
            dt = time.perf_counter() - t0
            k = position[0]
            position[0] += 1
            if k == len(samples):
                samples.append([])
            samples[k].append(dt)

        return call

    try:
        for (_, k), r in zip(kernels, originals, strict=True):
            k.runner = timed(r)
        with torch.no_grad():
            for _ in range(rounds):
                position[0] = 0
                opt(x)
    finally:
        for (_, k), r in zip(kernels, originals, strict=True):
            k.runner = r
    return [median(s) for s in samples]

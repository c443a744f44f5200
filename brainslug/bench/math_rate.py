"""What exact vector math costs per element, for the roofline's compute roof.

A stack's roof counts the FMAs of its convolutions at the measured FMA peak
(`peak`). Its activations cost compute as well, which that roof leaves out:
BrainSlug computes SiLU as PyTorch does, `x / (1 + exp(-x))` with Sleef's
`expf_u10` and an IEEE division, about 19 vector instructions per vector,
as many as a 16-channel 1×1 convolution spends on FMAs for the same output.

`seconds_per_element(kind)` measures it on this machine, on one thread, with
BrainSlug's own kernels: a batch norm followed by the activation, against the
same batch norm followed by a ReLU, each a compiled stack over a tensor that
stays in the L2 (hot calls, the best of several samples). The difference per
element is the activation's arithmetic beyond a load, a compare and a store.
The kinds are the `nn` ops whose lowering is vector math
(`plan.stacks.MATH_OPS`); GELU has its erf and tanh forms. TensorFlow's forms (`impl = "eigen"`) are counted
at PyTorch's cost.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from unittest import mock

import torch

SHAPE = (1, 64, 32, 32)
"""The measured tensor: 65536 elements, 256 KiB in and 256 KiB out (in the L2)."""


def _activation(kind: str) -> torch.nn.Module:
    return {
        "nn.silu": torch.nn.SiLU,
        "nn.sigmoid": torch.nn.Sigmoid,
        "nn.tanh": torch.nn.Tanh,
        "nn.gelu": torch.nn.GELU,
        "nn.gelu:tanh": lambda: torch.nn.GELU(approximate="tanh"),
        "nn.relu": torch.nn.ReLU,
    }[kind]()


def _stack_call(kind: str) -> Callable[[], None] | None:
    """One hot call of the compiled stack "batch norm, `kind`" on `SHAPE`."""
    import brainslug.pytorch as brainslug
    from brainslug.bench.stack_calls import capture_stack_calls

    gen = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm2d(SHAPE[1])
    with torch.no_grad():
        bn.running_mean.normal_(generator=gen)
        bn.running_var.uniform_(0.5, 2.0, generator=gen)
    model = torch.nn.Sequential(bn, _activation(kind)).eval()
    x = torch.randn(SHAPE, generator=gen).contiguous(memory_format=torch.channels_last)
    with mock.patch.dict(os.environ, {"BRAINSLUG_SPEED_CHECK": "0"}):
        opt = brainslug.optimize(model, [0, *SHAPE[1:]], threads=1, verbose=False)
    calls = capture_stack_calls(opt, x)
    return calls[0] if len(calls) == 1 else None


@functools.cache
def seconds_per_element(kind: str, rounds: int = 9) -> float:
    """Seconds of one thread per element of `kind`'s math (0.0 where the
    stacks did not compile, or the difference is not positive): the best time
    of each stack over `rounds` interleaved samples, so that a moment when
    another thread pool still spun on the core counts for neither."""
    from brainslug.bench.stack_calls import time_call

    with_math, base = _stack_call(kind), _stack_call("nn.relu")
    if with_math is None or base is None:
        return 0.0
    best_math = best_base = float("inf")
    for _ in range(rounds):
        best_math = min(best_math, time_call(with_math, repeats=5, min_time=0.002))
        best_base = min(best_base, time_call(base, repeats=5, min_time=0.002))
    elements = 1
    for d in SHAPE:
        elements *= d
    return max(0.0, (best_math - best_base) / elements)


def math_seconds(elements: dict[str, int], threads: int,
                 cost: Callable[[str], float] = seconds_per_element) -> float:
    """Seconds of `threads` threads for `elements` (kind -> count) of vector math."""
    return sum(n * cost(kind) for kind, n in elements.items()) / max(threads, 1)


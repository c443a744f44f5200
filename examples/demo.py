"""The seed's example on DenseNet-201: two lines to optimize, same results, faster.

Run with `make demo`. Weights are random (weights=None): exactness and speed
do not depend on them.
"""

from __future__ import annotations

import statistics
import time

import torch
from torchvision import models

import brainslug.pytorch as brainslug

BATCH = 8
REPEATS = 5


def main() -> None:
    torch.manual_seed(0)
    model = models.__dict__["densenet201"]()  # as in the seed: a fresh model (training mode)
    t = time.perf_counter()
    model = brainslug.optimize(model, [0, 3, 224, 224])  # 0 = any batch size
    print(f"optimize(): {time.perf_counter() - t:.1f} s")
    print(brainslug.report(model).splitlines()[2])

    # Inference: eval mode (BatchNorm uses its running statistics) and no_grad.
    model.eval()
    eager = model.original  # the same network, run by PyTorch alone
    x = torch.rand(BATCH, 3, 224, 224)
    with torch.no_grad():
        ref = eager(x)
        out = model(x)
        err = (out - ref).abs().max().item()
        print(f"batch {BATCH}: max|out - eager| = {err:.2e} "
              f"(max|eager| = {ref.abs().max().item():.2e})")
        t_eager, t_bs = [], []
        for _ in range(REPEATS):  # interleaved, after the warm-up above
            t0 = time.perf_counter()
            eager(x)
            t1 = time.perf_counter()
            model(x)
            t2 = time.perf_counter()
            t_eager.append(t1 - t0)
            t_bs.append(t2 - t1)
    me, mb = statistics.median(t_eager), statistics.median(t_bs)
    print(f"eval mode, torch.no_grad(), batch {BATCH}, median of {REPEATS} interleaved runs:")
    print(f"  PyTorch eager: {me * 1000:7.1f} ms")
    print(f"  BrainSlug:     {mb * 1000:7.1f} ms   speed-up {me / mb:.2f}x")


if __name__ == "__main__":
    main()

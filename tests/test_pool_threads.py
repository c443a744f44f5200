"""The kernels' OpenMP team follows PyTorch's thread count (torch.set_num_threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch  # noqa: F401  (loads its libgomp)

from brainslug.runtime.threads import loaded_libgomp

SCRIPT = r"""
import ctypes
import torch
from torch import nn
import brainslug.pytorch as brainslug
from brainslug.runtime import threads

pool = threads.default_pool()
assert isinstance(pool, threads.OmpPool), type(pool)
model = nn.Sequential(nn.Conv2d(5, 37, 3, padding=1), nn.BatchNorm2d(37), nn.ReLU()).eval()
opt = brainslug.optimize(model, [0, 5, 61, 61], conv="brainslug")
teams = []
run = threads.OmpPool.run
threads.OmpPool.run = lambda self, fn, n=None, args=None: teams.append(n) or run(self, fn, n, args)
run_phases = threads.OmpPool.run_phases


def spy_phases(self, entries, count):  # rows {function, args, threads}: the parallel ones
    rows = (ctypes.c_int64 * (3 * count)).from_address(entries)
    teams.extend(rows[3 * k + 2] for k in range(count) if rows[3 * k + 2] > 1)
    run_phases(self, entries, count)


threads.OmpPool.run_phases = spy_phases
x = torch.randn(3, 5, 61, 61)
for n in (1, 2, 1):
    torch.set_num_threads(n)
    assert pool.size == n, (n, pool.size)
    teams.clear()
    with torch.no_grad():
        assert (opt(x) - model(x)).abs().max().item() < 1e-4
    assert teams == [] if n == 1 else teams and set(teams) == {2}, (n, teams)
print("ok")
"""


@pytest.mark.skipif(loaded_libgomp() is None, reason="PyTorch here has no GNU OpenMP")
def test_kernels_run_on_as_many_threads_as_pytorch() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BRAINSLUG_NUM_THREADS"}
    env.update(BRAINSLUG_SPEED_CHECK="0", BRAINSLUG_POOL="omp")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.mark.skipif(loaded_libgomp() is None, reason="PyTorch here has no GNU OpenMP")
def test_brainslug_num_threads_fixes_the_team() -> None:
    env = dict(os.environ, BRAINSLUG_NUM_THREADS="3", BRAINSLUG_POOL="omp")
    script = ("import torch; from brainslug.runtime import threads; torch.set_num_threads(1); "
              "print(threads.default_pool().size)")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "3", out.stderr[-3000:]

"""optimize() from several threads at once, and while another thread serves a
model: fx patches nn.Module for the whole process while it traces."""

from __future__ import annotations

import threading

import torch
import torchvision
from torch import nn

import brainslug.pytorch as brainslug


def _small(k: int) -> nn.Module:
    torch.manual_seed(k)
    return nn.Sequential(nn.Conv2d(3, 8 + k, 3), nn.BatchNorm2d(8 + k), nn.ReLU(),
                         nn.Conv2d(8 + k, 5, 1), nn.Hardswish()).eval()


def test_optimize_in_threads_while_another_serves() -> None:
    models = [_small(k) for k in range(3)] + [torchvision.models.squeezenet1_1().eval()]
    served = torchvision.models.resnet18().eval()
    results: dict[int, tuple[float, str]] = {}
    errors: list[tuple[str, str]] = []
    stop = threading.Event()
    calls = [0]

    def serve() -> None:
        x = torch.randn(1, 3, 40, 40)
        while not stop.is_set():
            try:
                with torch.no_grad():
                    served(x)
                calls[0] += 1
            except Exception as e:  # noqa: BLE001 - the test reports it
                errors.append(("serving", repr(e)))
                return

    def optimize(k: int) -> None:
        try:
            opt = brainslug.optimize(models[k], [0, 3, 40, 40], conv="library")
            x = torch.randn(2, 3, 40, 40)
            with torch.no_grad():
                results[k] = ((opt(x) - models[k](x)).abs().max().item(), opt.info.capture)
        except Exception as e:  # noqa: BLE001
            errors.append((str(k), repr(e)))

    server = threading.Thread(target=serve)
    server.start()
    workers = [threading.Thread(target=optimize, args=(k,)) for k in range(len(models))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    server.join()
    assert not errors, errors
    assert calls[0] > 0
    for k, (err, how) in results.items():
        assert how == "torch.fx" and err <= 1e-4, (k, err, how)
    assert len(results) == len(models)
    with torch.no_grad():  # eager modules still work afterwards
        assert served(torch.randn(1, 3, 40, 40)).shape == (1, 1000)

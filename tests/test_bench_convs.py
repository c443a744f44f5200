"""brainslug.bench --convs: the peak FMA rate, the per-convolution table and its JSON.

Fast only: small convolutions, short timing budgets. The BrainSlug column may
be null (optimize()'s `conv=` option may not exist yet); stand-ins for
optimize() check that a number is only reported for BrainSlug's own kernel."""

from __future__ import annotations

import json
import time
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import brainslug.pytorch
from brainslug.bench import convs
from brainslug.bench.__main__ import main
from brainslug.bench.peak import cpu_clock, lanes, others_cpu, peak_gflops

ROW_KEYS = {"shape", "count", "flops", "brainslug_gflops", "library_gflops", "brainslug_ms",
            "library_ms", "note", "brainslug_fraction_of_peak", "library_fraction_of_peak"}


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, bias=False),
    )


def test_peak_is_plausible() -> None:
    assert lanes() in (8, 16)
    p = peak_gflops(1, seconds=0.01, runs=3)
    assert 5 < p < 2000  # one core of any AVX2/AVX-512 machine
    with pytest.raises(ValueError):
        peak_gflops(0)


def test_others_cpu() -> None:
    start = cpu_clock()
    sum(range(200_000))  # this process's own work is not counted
    time.sleep(0.3)  # /proc/stat counts in ticks of 10 ms: a short span can't be measured
    busy = others_cpu(start)
    assert start is None or busy is not None and 0.0 <= busy <= 1.5


def test_shapes_counts_and_library_column() -> None:
    lines: list[str] = []
    d = convs.conv_table(_model(), 2, 1, hw=12, budget_s=0.01, log=lines.append)
    assert d["peak_gflops"] > 0 and d["threads"] == 1
    rows = d["convs"]
    assert [(r["shape"], r["count"]) for r in rows] == [
        ("N2 C3 H12 W12 -> K8 3x3/1 p1 g1 +bias", 1),
        ("N2 C8 H12 W12 -> K8 3x3/1 p1 g1", 2),
        ("N2 C8 H12 W12 -> K8 3x3/2 p2 g1 d2", 1),
    ]
    assert rows[0]["flops"] == 2 * 2 * 8 * 12 * 12 * 3 * 9
    assert rows[2]["flops"] == 2 * 2 * 8 * 6 * 6 * 8 * 9 and rows[2]["output"] == [2, 8, 6, 6]
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["library_gflops"] > 0 and r["library_ms"] > 0
        assert r["library_fraction_of_peak"] == pytest.approx(r["library_gflops"] / d["peak_gflops"])
        if r["brainslug_gflops"] is None:
            assert r["note"]
    text = "\n".join(lines)
    assert "N2 C8 H12 W12 -> K8 3x3/2 p2 g1 d2" in text and "at least as fast" in text
    json.loads(json.dumps(d, allow_nan=False))


class _StandIn:
    """What optimize() returns, running the convolution with F.conv2d (+ offset)."""

    def __init__(self, conv: nn.Conv2d, offset: float) -> None:
        self.conv, self.offset = conv, offset
        self.plan, self.info = object(), types.SimpleNamespace(fallbacks=[])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups) + self.offset


def _stand_in(monkeypatch: pytest.MonkeyPatch, offset: float, report: str) -> None:
    monkeypatch.setattr(brainslug.pytorch, "optimize",
                        lambda model, shape, **kw: _StandIn(model[0], offset))
    monkeypatch.setattr(brainslug.pytorch, "report", lambda opt: report)


def _one_conv() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1))


def test_brainslug_column_when_its_kernel_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, 0.0, "stacks: 1 compiled   library calls: 0\nFallbacks: none")
    (r,) = convs.conv_table(_one_conv(), 1, 1, hw=10, peak=100.0, budget_s=0.01,
                            log=None)["convs"]
    assert r["note"] == "" and r["brainslug_gflops"] > 0 and r["speedup"] > 0
    assert r["brainslug_fraction_of_peak"] == pytest.approx(r["brainslug_gflops"] / 100.0)


def test_brainslug_column_null_for_a_wrong_result(monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, 1.0, "stacks: 1 compiled   library calls: 0\nFallbacks: none")
    (r,) = convs.conv_table(_one_conv(), 1, 1, hw=10, peak=100.0, budget_s=0.01,
                            log=None)["convs"]
    assert r["brainslug_gflops"] is None and r["note"].startswith("wrong result")
    assert r["library_gflops"] > 0


def test_brainslug_column_null_when_the_library_ran_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = brainslug.pytorch.optimize
    # the real optimize() with conv="library": the convolution is a (oneDNN) library call
    monkeypatch.setattr(brainslug.pytorch, "optimize",
                        lambda m, shape, conv="", **kw: real(m, shape, conv="library", **kw))
    (r,) = convs.conv_table(_one_conv(), 1, 1, hw=10, peak=100.0, budget_s=0.01,
                            log=None)["convs"]
    assert r["brainslug_gflops"] is None and r["note"] == "convolution ran in the library"


def test_cli_convs_json(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(convs, "BUDGET_S", 0.01)
    out = tmp_path / "convs.json"
    rc = main(["--framework", "torch", "--models", "resnet18", "--batch", "1,2", "--hw", "32",
               "--convs", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["peak_gflops"] > 0 and doc["threads"] == torch.get_num_threads()
    assert [(t["model"], t["batch"]) for t in doc["tables"]] == [("resnet18", 1), ("resnet18", 2)]
    assert doc["convs"] == doc["tables"][0]["convs"]
    rows = doc["convs"]
    assert len(rows) == 11 and sum(r["count"] for r in rows) == 20
    assert rows[0]["shape"] == "N1 C3 H32 W32 -> K64 7x7/2 p3 g1"
    assert all(ROW_KEYS <= set(r) and r["library_gflops"] > 0 for r in rows)
    assert doc["tables"][1]["convs"][0]["shape"].startswith("N2 ")
    assert "peak FMA rate" in capsys.readouterr().out


def test_cli_convs_needs_torch_on_the_cpu() -> None:
    assert main(["--framework", "tf", "--models", "ResNet50", "--convs"]) == 2
    assert main(["--models", "resnet18", "--convs", "--stacks"]) == 2

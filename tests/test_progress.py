"""The progress line of a long cold optimize(): only on a terminal, only after
`DELAY`, erased when done, silent with verbose=False."""

from __future__ import annotations

import io
import sys
import threading

import pytest
import torch
import torch.nn as nn

from brainslug.plan import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_is_drawn_in_place_and_erased(monkeypatch) -> None:
    monkeypatch.setattr(progress, "DELAY", 0.0)
    out = Terminal()
    with progress.showing(True, out):
        progress.note("compiling stacks", 1, 3)
        progress.note("compiling stacks", 2, 3)
        threading.Thread(target=progress.note, args=("from another thread",)).start()
    text = out.getvalue()
    assert text.startswith("\rBrainSlug: compiling stacks 1/3 (0 s)")
    assert "\rBrainSlug: compiling stacks 2/3 (0 s)" in text
    assert "another thread" not in text
    width = len("BrainSlug: compiling stacks 1/3 (0 s)")
    assert text.endswith("\r" + " " * width + "\r")  # the line is gone


@pytest.mark.parametrize("case", ["not a terminal", "verbose=False", "before the delay"])
def test_silent(monkeypatch, case: str) -> None:
    if case != "before the delay":
        monkeypatch.setattr(progress, "DELAY", 0.0)
    out = io.StringIO() if case == "not a terminal" else Terminal()
    with progress.showing(case != "verbose=False", out):
        progress.note("compiling stacks", 1, 3)
    assert out.getvalue() == ""
    progress.note("outside", 1, 1)  # no block: nothing, no error


def test_optimize_shows_compiling_stacks(monkeypatch, tmp_path) -> None:
    import brainslug.pytorch as brainslug

    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setenv("BRAINSLUG_CACHE_DIR", str(tmp_path))
    model = nn.Sequential(nn.BatchNorm2d(37), nn.ReLU(), nn.MaxPool2d(3, 2, 1)).eval()
    out = Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    opt = brainslug.optimize(model, [0, 37, 13, 13])
    assert "BrainSlug: compiling stacks" in out.getvalue()
    assert out.getvalue().endswith("\r")
    x = torch.randn(3, 37, 13, 13)
    with torch.no_grad():
        assert torch.allclose(opt(x), model(x), atol=1e-5)
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    brainslug.optimize(model, [0, 37, 15, 15], verbose=False)
    assert quiet.getvalue() == ""
    with pytest.raises(ValueError, match="verbose must be True or False"):
        brainslug.optimize(model, [0, 37, 13, 13], verbose="yes")

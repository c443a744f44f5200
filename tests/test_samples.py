"""`runtime.samples.Samples`: sampled 32-bit words compared in one native call."""

from __future__ import annotations

import numpy as np
import pytest

from brainslug.runtime.samples import Samples


def test_samples_see_a_write_to_a_sampled_word_only() -> None:
    flat = np.linspace(-1.0, 1.0, 1001, dtype=np.float32)
    grid = np.arange(7 * 9, dtype=np.float32).reshape(9, 7).T  # strided (not contiguous)
    grid[3, 4] = np.nan
    picks = [slice(0, 1001, 16), (np.array([0, 3, 6]), np.array([1, 4, 8]))]
    s = Samples([flat, grid], picks)
    assert len(s.addrs) == 63 + 3 and not s.changed()
    flat[1] = 5.0  # not sampled
    grid[1, 1] = 5.0
    assert not s.changed()
    flat[32] = -flat[32]
    assert s.changed()
    flat[32] = -flat[32]
    assert not s.changed()
    grid[6, 8] += 1.0
    assert s.changed()
    grid[6, 8] -= 1.0
    grid[3, 4] = np.float32(np.nan)  # the same bits: unchanged
    assert not s.changed()
    zero = np.zeros(3, np.float32)
    z = Samples([zero], [slice(0, 3, 1)])
    zero[2] = -0.0  # equal as floats, another word
    assert z.changed()


def test_samples_are_32_bit_words() -> None:
    with pytest.raises(ValueError, match="32-bit"):
        Samples([np.zeros(4, np.float64)], [slice(0, 4, 1)])
    assert not Samples([], []).changed()

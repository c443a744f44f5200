"""`WeightWatch`: notices that a weight tensor changed since it was last seen,
for the weights BrainSlug keeps in another order (packed copies).

A check costs a few microseconds: the tensor's identity, `_version` (bumped by
in-place ops on the parameter, `load_state_dict`, optimizer steps),
`data_ptr()` and a fingerprint of 64 sampled elements (writes through `.data`
do not bump `_version`). An edit through `.data` that touches none of the
sampled elements is missed; the owners offer `repack()` for that.
"""

from __future__ import annotations

import operator
import threading
import weakref
from typing import Any, NamedTuple

import numpy as np
import torch

FINGERPRINT_SAMPLES = 64


class _Seen(NamedTuple):
    """One remembered state of a weight."""

    src: weakref.ref[torch.Tensor]
    version: int
    ptr: int
    np: np.ndarray  # a view of the weight's memory
    sel: Any  # the sampled elements of np
    fingerprint: bytes


class WeightWatch:
    """Remembers one state of a weight; `changed(w)` says whether `w` differs.

    The state is one tuple, replaced whole: a thread that checks while
    another remembers sees the old state or the new, never half of each."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._seen: _Seen | None = None

    def remember(self, w: torch.Tensor) -> None:
        """Record `w` as the state that copies are made from."""
        n, d = w.numel(), w.detach()
        if d.is_contiguous() or d.is_contiguous(memory_format=torch.channels_last):
            # dense: a strided slice of the flat memory (cheaper than fancy indexing)
            view = d.as_strided((n,), (1,), d.storage_offset()).numpy()
            sel: Any = slice(0, n, max(1, -(-n // FINGERPRINT_SAMPLES)))
        else:
            view = d.numpy()
            flat = np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(np.int64)
            sel = np.unravel_index(np.unique(flat), view.shape)
        self._seen = _Seen(weakref.ref(w), w._version, w.data_ptr(), view, sel,
                           view[sel].tobytes())

    def changed(self, w: torch.Tensor) -> bool:
        seen = self._seen
        return (seen is None or seen.src() is not w or w._version != seen.version
                or w.data_ptr() != seen.ptr or seen.np[seen.sel].tobytes() != seen.fingerprint)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a copy remembers nothing: it repacks on first use

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.reset()


class PackedWeight:
    """A convolution's OIHW weight (or a linear layer's [O, K], as [O, K, 1,
    1]) in the order a compiled kernel reads it,
    repacked on first use after the parameter changes: HWIO `[KH, KW, I, O]`
    (output channels contiguous), or with `block` B, blocked by output
    channels `[ceil(O/B), KH, KW, I, B]` (zeros past O), so that a register
    block's weights are one contiguous stream.

    Callers that run concurrently get one copy; a caller holds the tensor
    `current()` returns while a kernel reads it (a repack for a changed weight
    replaces the copy, and would free it under the kernel)."""

    def __init__(self, param: torch.Tensor, block: int = 0):
        self.param = param
        self.block = block
        o, i, kh, kw = param.shape if param.dim() == 4 else (*param.shape, 1, 1)
        self.shape: tuple[int, ...] = (kh, kw, i, o) if not block else (
            -(-o // block), kh, kw, i, block)
        self._packed: torch.Tensor | None = None
        self._watch = WeightWatch()
        self._lock = threading.Lock()

    def pack(self, w: torch.Tensor) -> torch.Tensor:
        w = w.detach()
        if w.dim() == 2:  # a linear layer's [O, K]: a 1x1 convolution's
            w = w[:, :, None, None]
        hwio = w.permute(2, 3, 1, 0).contiguous()
        if not self.block:
            return hwio
        from brainslug.pipeline.target import block_weights

        return torch.from_numpy(block_weights(hwio.numpy(), self.block))

    def current(self) -> torch.Tensor:
        """The packed copy of the parameter as it is now."""
        with self._lock:  # (check and repack as one: a copy made twice frees the first)
            w = self.param
            if self._packed is None or self._watch.changed(w):
                with torch.no_grad():
                    self._packed = self.pack(w)
                self._watch.remember(w)
            return self._packed

    def repack(self) -> None:
        self._packed = None

    def __getstate__(self) -> dict[str, Any]:
        return {"param": self.param, "block": self.block, "shape": self.shape}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._packed = None
        self._watch = WeightWatch()
        self._lock = threading.Lock()


class ParamView:
    """A parameter as a broadcast operand of another rank or memory order:
    `param.reshape(shape)`, the same memory (a view) wherever the parameter is
    contiguous, so that in-place updates are seen without a check; else a
    contiguous copy per call, which the caller holds while a kernel reads it."""

    def __init__(self, param: torch.Tensor, shape: tuple[int, ...]):
        self.param = param
        self.shape = tuple(shape)

    def current(self) -> torch.Tensor:
        return self.param.detach().reshape(self.shape).contiguous()


class _GroupState(NamedTuple):
    """What a `PackedGroup` saw when it last packed."""

    params: list[torch.Tensor]
    versions: list[int]
    ptrs: list[int]
    packed: list[torch.Tensor]
    samples: Any  # runtime.samples.Samples: the fingerprints


_param = operator.attrgetter("param")
_version = operator.attrgetter("_version")
_packed = operator.attrgetter("_packed")
_data_ptr = torch.Tensor.data_ptr


class PackedGroup:
    """`PackedWeight`s read by one native run, checked together: the
    parameters' identity, `_version` and `data_ptr()` in bulk, and all their
    fingerprint samples in one native pass (`runtime.samples`). Where anything
    differs, each weight's own `current()` repacks what changed.

    One check per weight in Python cost 5-9 µs a weight after a large run had
    evicted it from cache: 0.46 ms a call of resnet50 at batch 1."""

    def __init__(self, weights: list[PackedWeight]):
        self.weights = weights
        self._state: _GroupState | None = None
        self._bulk = True  # (False: a weight can't be sampled natively)

    def current(self) -> list[torch.Tensor]:
        """Every weight's packed copy as its parameter is now (see `PackedWeight`)."""
        st = self._state
        if st is not None:
            params = list(map(_param, self.weights))
            if (all(map(operator.is_, params, st.params))
                    and list(map(_version, params)) == st.versions
                    and list(map(_data_ptr, params)) == st.ptrs
                    and all(map(operator.is_, map(_packed, self.weights), st.packed))
                    and not st.samples.changed()):
                return st.packed
        packed = [w.current() for w in self.weights]
        if self._bulk:
            self._state = self._remember(packed)
            self._bulk = self._state is not None
        return packed

    def _remember(self, packed: list[torch.Tensor]) -> _GroupState | None:
        """The state to check in bulk; None where a weight's samples are not
        32-bit words (each weight then checks itself, on every call)."""
        from brainslug.runtime.samples import Samples

        params = list(map(_param, self.weights))
        seen = [w._watch._seen for w in self.weights]
        if not all(s is not None and s.src() is p and s.np.dtype.itemsize == 4
                   for s, p in zip(seen, params, strict=True)):
            return None
        samples = Samples([s.np for s in seen], [s.sel for s in seen])  # type: ignore[union-attr]
        return _GroupState(params, list(map(_version, params)), list(map(_data_ptr, params)),
                           packed, samples)

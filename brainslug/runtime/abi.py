"""The kernel ABI as the runners see it: a `loop.kernel_info` decoded once.

A kernel is called with one i64 slot array (see `brainslug.lowering.to_llvm`):
for each ABI buffer (the arguments, then the scratch buffers) a slot for its
data pointer and one per dynamic dim, then the phases' constant parameter
blocks. `KernelAbi` says where everything lives and fills the buffer slots;
the CPU JIT, the CUDA runtime and the CUDA emulator call kernels through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainslug.dialects import loop


def kernel_record(info: loop.KernelInfoOp) -> dict[str, Any]:
    """A `loop.kernel_info` op as plain JSON data: what plan-cache records and
    saved plans store, and what `KernelAbi.of` reads without building IR."""
    launch = info.gpu_launch
    return {
        "kernel": info.kernel.data,
        "phases": [p.data for p in info.phases],
        "buffers": [list(t.get_shape()) for t in info.buffers],
        "work": list(info.work.get_values()),
        "target": info.target.data,
        "num_args": info.num_args.value.data,
        "parallel": list(info.parallel.get_values()),
        "scratch_dims": info.scratch_pairs(),
        "phase_args": list(info.phase_args.get_values()) if info.phase_args else None,
        "slots": list(info.slots.get_values()) if info.slots else None,
        "gpu_launch": None if launch is None else [
            list(launch.lanes.get_values()), list(launch.tiles.get_values()),
            list(launch.groups.get_values()), launch.arch.data],
    }


@dataclass(frozen=True)
class BufferSlots:
    """Where one ABI buffer lives in the slot array."""

    pointer: int
    """The slot of its data pointer."""
    dims: tuple[tuple[int, int], ...]
    """(dim, slot) of each dynamic dim."""


@dataclass(frozen=True)
class GpuLaunch:
    """The launch shape of a kernel lowered for nvptx (`#loop.gpu_launch`)."""

    lanes: list[int]
    """Each phase's static lane extent (0: unknown, 1: serial)."""
    tiles: list[int]
    """Each phase's tiles per batch item in block mode, else 0."""
    groups: list[int]
    """How many consecutive phases each launch runs."""
    arch: str


@dataclass(frozen=True)
class KernelAbi:
    """How to call one lowered kernel."""

    name: str
    phases: list[str]
    """The phase functions, called in order."""
    shapes: list[tuple[int, ...]]
    """The shape of each ABI buffer (-1: dynamic)."""
    num_args: int
    """How many of the buffers are arguments (the rest are scratch)."""
    parallel: list[int]
    """The parallel (thread-split) dims of each phase."""
    scratch_dims: list[tuple[int, int]]
    """The (argument, dim) of each dynamic scratch dim; (-1, -1): the batch."""
    work: list[int]
    """Points of each phase per batch item (a threading hint)."""
    layout: list[BufferSlots]
    """The slots of each buffer."""
    initial_slots: np.ndarray
    """The slot array before the buffer slots are filled (int64)."""
    phase_offsets: list[int]
    """The slot that each phase's `args` points at."""
    gpu: GpuLaunch | None

    @classmethod
    def of(cls, info: loop.KernelInfoOp | dict[str, Any]) -> KernelAbi:
        """The ABI of a `loop.kernel_info` op, or of its record (the plain data
        that `plan.cache.infos_to_json` makes of it: no IR to build on load)."""
        return cls._make(info if isinstance(info, dict) else kernel_record(info))

    @classmethod
    def _make(cls, d: dict[str, Any]) -> KernelAbi:
        shapes = [tuple(s) for s in d["buffers"]]
        layout, slot = [], 0
        for shape in shapes:
            dynamic = [k for k, s in enumerate(shape) if s < 0]
            layout.append(BufferSlots(slot, tuple((k, slot + 1 + i) for i, k in enumerate(dynamic))))
            slot += 1 + len(dynamic)
        init = list(d["slots"] or [])
        init += [0] * (slot - len(init))
        n = len(d["phases"])
        launch = d["gpu_launch"]
        return cls(
            name=d["kernel"],
            phases=list(d["phases"]),
            shapes=shapes,
            num_args=d["num_args"],
            parallel=list(d["parallel"]),
            scratch_dims=[tuple(p) for p in d["scratch_dims"]],  # type: ignore[misc]
            work=list(d["work"]),
            layout=layout,
            initial_slots=np.array(init or [0], np.int64),
            phase_offsets=list(d["phase_args"]) if d["phase_args"] is not None else [0] * n,
            gpu=None if launch is None else GpuLaunch(*launch),
        )

    def check_count(self, n: int) -> None:
        """Raises ValueError unless `n` buffers are the arguments, or all buffers."""
        if n not in (self.num_args, len(self.shapes)):
            raise ValueError(
                f"{self.name}: expected {self.num_args} arguments "
                f"(or {len(self.shapes)} with scratch), got {n}"
            )

    def needs_scratch(self, n: int) -> bool:
        """Whether a call with `n` buffers leaves the scratch buffers to the runner."""
        return n == self.num_args < len(self.shapes)

    def batch(self, buffers: Sequence[Any], hint: int | None = None) -> int:
        """`hint`, or the product of the first buffer's dynamic extents."""
        if hint is not None:
            return hint
        if not self.shapes:
            return 1
        return math.prod(
            int(d) for d, s in zip(buffers[0].shape, self.shapes[0], strict=False) if s < 0
        )

    def scratch_shapes(self, args: Sequence[Any] | None, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the scratch buffers: each dynamic extent is
        `args[arg].shape[dim]` for its (arg, dim) of `scratch_dims`, or the
        batch for (-1, -1) or without `args`."""
        pairs = iter(self.scratch_dims)
        out = []
        for shape in self.shapes[self.num_args :]:
            dims = []
            for s in shape:
                if s >= 0:
                    dims.append(s)
                    continue
                arg, dim = next(pairs)
                dims.append(int(args[arg].shape[dim]) if args is not None and arg >= 0 else batch)
            out.append(tuple(dims))
        return out

    def fill_slots(self, slots: np.ndarray, buffers: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Writes the (data pointer, shape) of each buffer, in ABI order, into
        its buffer slots."""
        for (ptr, shape), where in zip(buffers, self.layout, strict=True):
            slots[where.pointer] = ptr
            for d, s in where.dims:
                slots[s] = shape[d]

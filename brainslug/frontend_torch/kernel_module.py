"""`StackKernel`: the torch.nn.Module that runs one compiled stack in the plan,
and how many threads the kernels use (`kernel_threads`)."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from typing import Any

import torch

from brainslug.frontend_torch.replaced_tensors import watch
from brainslug.frontend_torch.weight_watch import PackedWeight, ParamView
from brainslug.plan.capture import Bound, Source
from brainslug.runtime.threads import loaded_libgomp, pool_kind


def kernel_threads(threads: Any = "auto") -> int | None:
    """How many threads the stack kernels use (None: all cores, the process-wide
    pool). `auto` leaves the cores PyTorch's own threads don't use, at least one:
    PyTorch's OpenMP threads keep spinning between its operators, so a second
    pool on the same cores waits for them at every phase (on 2 cores, densenet121
    at batch 8 ran 127 ms with one kernel thread and 165 ms with two). Where the
    kernels run on PyTorch's own OpenMP team (`OmpPool`) there is no contention
    and `auto` means all of them."""
    if threads == "auto":
        if os.environ.get("BRAINSLUG_NUM_THREADS") or pool_kind() == "omp":
            return None  # the process-wide pool (PyTorch's own OpenMP team, or of that size)
        return max(1, (os.cpu_count() or 1) - torch.get_num_threads())
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto', None or a positive int, got {threads!r}")
    return threads


class ForkedChild:
    """Whether this process is a forked child whose PyTorch threads are not
    yet made safe (`after_fork`)."""

    pending = False


def _after_fork_in_child() -> None:
    ForkedChild.pending = True  # (only a flag: a child of a threaded process must not take locks here)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def after_fork() -> None:
    """In a forked child, before its first optimized call: PyTorch's OpenMP
    team does not survive fork (GNU libgomp), so an operator on more than one
    thread would wait for it forever. As DataLoader does in its workers, the
    child runs PyTorch's operators on one thread; BrainSlug's kernels get
    threads of their own (`runtime.threads`)."""
    ForkedChild.pending = False
    if loaded_libgomp() is not None and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


Order = tuple[int, ...] | None
"""How a kernel buffer is stored: physical axis i holds logical axis order[i]
(None: row-major)."""


def physical_view(t: torch.Tensor, order: Order) -> torch.Tensor:
    """`t` with its dims in physical order (no copy)."""
    return t if order is None else t.permute(order)


def inverse_order(order: Order) -> Order:
    """The permute that takes a physical buffer back to logical order."""
    if order is None:
        return None
    inverse = [0] * len(order)
    for i, k in enumerate(order):
        inverse[k] = i
    return tuple(inverse)


CHANNELS_LAST = (0, 2, 3, 1)


def stored_in(t: torch.Tensor, order: Order) -> bool:
    """Whether `t` is dense in `order` (its pointer can be passed as is);
    row-major and channels-last checked without making a view."""
    if order is None:
        return t.is_contiguous()
    if order == CHANNELS_LAST:
        return t.is_contiguous(memory_format=torch.channels_last)
    return t.permute(order).is_contiguous()


def row_major_or_none(order: Sequence[int] | None) -> Order:
    return None if order is None or tuple(order) == tuple(range(len(order))) else tuple(order)


class StackKernel(torch.nn.Module):
    """Calls a compiled stack kernel on tensors by pointer.

    Bound tensors (parameters, running statistics) are the model's own, so later
    updates to them are seen; activations come in as call arguments. Outputs
    come from the plan's arena (`use_arena`), or are allocated per call when
    they leave the graph.

    `orders` gives the memory order of each buffer (inputs, then outputs) as
    the kernel reads it: a tensor `t` is passed as the view `t.permute(order)`
    (no copy when `t` is stored that way, as a channels-last tensor is in
    order (0, 2, 3, 1)) and an output buffer `o` is returned as the inverse
    permute of `o`. `batched` says which inputs have the batch in dim 0 (the
    first of their activations gives the kernel its batch size; default the
    first activation): an input of a fixed batch (a model input of spec
    [1, ...] beside batched ones, a tensor computed from the weights) does not.
    """

    is_stack_kernel = True

    def __init__(self, name: str, runner: Any, inputs: Sequence[Source],
                 output_shapes: Sequence[tuple[int, ...]],
                 orders: Sequence[Sequence[int] | None] = (),
                 batched: Sequence[bool] = ()):
        super().__init__()
        self.stack_name = name
        self.runner = runner
        self._bound: list[Any] = [x.value if isinstance(x, Bound) else None for x in inputs]
        orders = [row_major_or_none(o) for o in orders] or [None] * (
            len(inputs) + len(output_shapes))
        self._in_orders: list[Order] = orders[:len(inputs)]
        # outputs go back to logical order through the inverse permute
        self._out_inverse: list[Order] = [inverse_order(o) for o in orders[len(inputs):]]
        # bound weights in another shape or order: `PackedWeight` (HWIO copies,
        # repacked on change), `ParamView` (a view of another rank)
        self._packed = [i for i, t in enumerate(self._bound)
                        if isinstance(t, PackedWeight | ParamView)]
        self._packed_set = frozenset(self._packed)
        self._slots = [i for i, x in enumerate(self._bound) if x is None]
        self.output_shapes = [tuple(s) for s in output_shapes]
        self._arena: Any = None
        self._out_slots: list[int | None] = [None] * len(self.output_shapes)
        # activations come first in the call; the first batched one carries the batch
        self._batch_input = next((k for k, slot in enumerate(self._slots)
                                  if slot < len(batched) and batched[slot]),
                                 0 if self._slots else None)
        # activation shapes -> the runner's shape slots, after one checked call
        self._checked: dict[tuple[torch.Size, ...], Any] = {}  # -> the runner's fill
        self._dims: dict[int, list[tuple[int, ...]]] = {}  # output extents per batch
        self._replaced_badly = ""  # why a replaced tensor can't be read (`rebind`)
        self._fast_ok = self._bound_as_stored()

    def _bound_as_stored(self) -> bool:
        """Whether the bound tensors are stored as the kernel reads them (their
        pointers can be passed as they are)."""
        return all(t is None or i in self._packed_set or stored_in(t, self._in_orders[i])
                   for i, t in enumerate(self._bound))

    def _tensors(self) -> list[tuple[int, torch.Tensor]]:
        """(bound input, the model's tensor it reads)."""
        return [(i, t.param if isinstance(t, PackedWeight | ParamView) else t)
                for i, t in enumerate(self._bound) if t is not None]

    def held_tensors(self) -> list[torch.Tensor]:
        """The model's tensors this kernel reads (`replaced_tensors`)."""
        return [t for _, t in self._tensors()]

    def rebind(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Read `new` where the kernel read `old` (the module's tensor was
        replaced); a tensor of another shape or kind makes the next call fail
        with what to do."""
        for i, t in self._tensors():
            if t is not old:
                continue
            b = self._bound[i]
            if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
                self._replaced_badly = (
                    f"{self.stack_name}: a tensor of the model ({tuple(old.shape)}, "
                    f"{old.dtype}) was replaced by one of shape {tuple(new.shape)}, "
                    f"{new.dtype} on {new.device} after optimize(); optimize() the model "
                    f"again, or write new values into the old tensor (`.data`, `copy_`, "
                    f"`load_state_dict`)")
            elif isinstance(b, PackedWeight):
                b.param = new
                b.repack()
            elif isinstance(b, ParamView):
                b.param = new
            else:
                self._bound[i] = new
        self._fast_ok = self._bound_as_stored()
        if not self._replaced_badly:
            watch(new, self)

    def use_arena(self, arena: Any, slots: list[int | None]) -> None:
        self._arena, self._out_slots = arena, list(slots)

    def extra_repr(self) -> str:
        return f"{self.stack_name}, {len(self._bound)} inputs, {len(self.output_shapes)} outputs"

    def release(self, batches: Collection[int] | None = None) -> None:
        """Drops what this kernel keeps for these batch sizes (all if None):
        its runner's scratch, its output extents. (The arena is the plan's.)"""
        release = getattr(self.runner, "release", None)
        if release is not None:
            release(batches)
        self._checked = {k: f for k, f in self._checked.items()
                         if batches is not None and (not k or not k[0] or k[0][0] not in batches)}
        for b in list(self._dims):
            if batches is None or b in batches:
                self._dims.pop(b, None)

    def _pointers(self, activations: Sequence[torch.Tensor],
                  held: list[torch.Tensor]) -> list[int] | None:
        """Data pointers of all arguments, when every activation is already in
        the memory format of the kernel (else None: the checked path converts).
        The packed weights they point at go to `held`, for the caller to keep
        until the kernel returns."""
        if not self._fast_ok:
            return None
        ptrs = [0 if t is None or i in self._packed_set else t.data_ptr()
                for i, t in enumerate(self._bound)]
        for i in self._packed:
            held.append(t := self._bound[i].current())
            ptrs[i] = t.data_ptr()
        for slot, a in zip(self._slots, activations, strict=True):
            if not stored_in(a, self._in_orders[slot]):
                return None
            ptrs[slot] = a.data_ptr()
        return ptrs

    def forward(self, *activations: torch.Tensor) -> Any:
        if self._replaced_badly:
            raise ValueError(self._replaced_badly)
        batch = 1
        if self._batch_input is not None:
            batch = activations[self._batch_input].shape[0]
        all_dims = self._dims.get(batch)
        if all_dims is None:
            all_dims = self._dims[batch] = [tuple(batch if d < 0 else d for d in shape)
                                            for shape in self.output_shapes]
        cached = self._arena_views(batch, all_dims) if self._arena is not None else None
        outs = [torch.empty(dims, dtype=torch.float32) if c is None else c[0]
                for dims, c in zip(all_dims, cached or [None] * len(all_dims), strict=True)]
        key = tuple(a.shape for a in activations)
        fill = self._checked.get(key)
        # (a stand-in runner, such as the roofline's recorder, gets the checked call)
        call = getattr(self.runner, "call_pointers", None)
        held: list[torch.Tensor] = []  # (packed weights: alive until the kernel returns)
        ptrs = self._pointers(activations, held) if fill is not None and call else None
        if ptrs is None or not call(
            ptrs + [o.data_ptr() for o in outs], fill, batch  # type: ignore[arg-type]
        ):
            bufs: list[Any] = list(self._bound)
            for slot, a in zip(self._slots, activations, strict=True):
                bufs[slot] = a
            bufs = [t if i in self._packed_set else physical_view(t, self._in_orders[i])
                    for i, t in enumerate(bufs)]
            for i in self._packed:
                bufs[i] = bufs[i].current()
            bufs = [t if t.is_contiguous() else t.contiguous() for t in bufs]
            bufs += outs
            self.runner([t.detach() if t.requires_grad else t for t in bufs], batch)
            if call is not None:
                self._checked[key] = self.runner.shape_slots(bufs, batch)
        outs = [physical_view(o, inv) if c is None else c[1] for o, inv, c in zip(
            outs, self._out_inverse, cached or [None] * len(outs), strict=True)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _arena_views(self, batch: int, all_dims: list[tuple[int, ...]]
                     ) -> list[tuple[torch.Tensor, torch.Tensor, tuple[Any, ...]] | None]:
        """Per output in the arena: (the buffer the kernel writes, the view
        returned, its shape and strides), made once per thread and batch size
        (slicing, viewing and permuting cost about 4 µs a call); None for an
        output allocated per call. A returned view whose shape or strides a
        framework node changed in place is made again."""
        views = self._arena.views(batch)
        got = views.get(id(self))
        if got is not None and all(c is None or (c[1].shape, c[1].stride()) == c[2]
                                   for c in got):
            return got
        storage = self._arena.storage(batch)
        got = []
        for dims, slot, inv in zip(all_dims, self._out_slots, self._out_inverse, strict=True):
            if slot is None:
                got.append(None)
                continue
            buf = storage[slot][: math.prod(dims)].view(dims)
            view = physical_view(buf, inv)
            got.append((buf, view, (view.shape, view.stride())))
        views[id(self)] = got
        return got

"""The static buffer arena of a schedule's kernel outputs.

Every kernel output that does not leave the graph gets a slot of one arena,
and so does the result of each framework node that can write into a given
buffer (a library linear layer, `library_sizes`);
a slot is reused once the value in it is dead (liveness over the schedule,
extended through every framework node that may return a view of its input).
The arena allocates each slot once per batch size, so the hot path allocates
nothing and touches no fresh pages; one arena per thread keeps concurrent
calls of the same model apart.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brainslug.plan.schedule import Schedule

OutputKey = tuple[str, int]
"""(stack name, output index), or (`LIBRARY` + node name, 0)."""
LIBRARY = "@"
"""Prefix of a framework node's name in its `OutputKey`."""


@dataclass
class Slot:
    """A region of the arena: `numel` elements per batch item (or in all, if static)."""

    numel: int
    per_batch: bool
    busy_until: int = -1


@dataclass
class BufferPlan:
    """The arena slot of each (stack, output index); escaping outputs have none."""

    assignment: dict[OutputKey, int] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)


def plan_buffers(
    plan: Schedule,
    inputs_of: Callable[[str], Sequence[str]],
    fresh: Callable[[str], bool],
    outputs: Sequence[str],
    library_sizes: Mapping[str, tuple[int, bool]] | None = None,
    in_place: bool = False,
) -> BufferPlan:
    """Assigns arena slots to the kernel outputs of `plan`.

    `inputs_of(node)` are the values a framework node reads, `fresh(node)`
    whether its result is a new buffer (never a view of an input), `outputs`
    the values that leave the graph; `library_sizes` the framework nodes that
    write into a given buffer, with (elements per batch item or in all,
    whether it has a batch) of their result.

    With `in_place`, a stack output that may overwrite an input
    (`StackBinding.in_place`: a residual add) takes that input's slot where
    the input is a stack's output of the same shape, dies at this step and
    is read nowhere else: the add then reads and writes the same lines, and
    the step's working set loses a tensor (ResNet-50's 56×56×256 blocks: 26
    MB at batch 8, near the last-level cache)."""
    library_sizes = library_sizes or {}
    producer: dict[str, tuple[Any, int]] = {}  # stack output name -> (binding, index)
    alias: dict[str, set[OutputKey]] = {}
    last_use: dict[OutputKey, int] = {}
    for k, st in enumerate(plan.steps):
        if st.stack is not None:
            reads = [s for s in st.stack.inputs if isinstance(s, str)]
        else:
            reads = list(inputs_of(st.node))  # type: ignore[arg-type]
        carried: set[OutputKey] = set()
        for name in reads:
            for key in alias.get(plan.resolve(name), ()):
                last_use[key] = max(last_use.get(key, -1), k)
                carried.add(key)
        if st.stack is not None:
            for j, o in enumerate(st.stack.outputs):
                alias[o] = {(st.stack.name, j)}
                last_use.setdefault((st.stack.name, j), k)
                producer[o] = (st.stack, j)
        elif st.node in library_sizes:
            alias[st.node] = {(LIBRARY + st.node, 0)}
            last_use.setdefault((LIBRARY + st.node, 0), k)
        elif carried and not fresh(st.node):  # type: ignore[arg-type]
            alias[st.node] = carried  # type: ignore[index]  # may be a view: keeps them alive
    escaping: set[OutputKey] = set()
    for o in outputs:
        escaping |= alias.get(plan.resolve(o), set())
    out = BufferPlan()
    for k, st in enumerate(plan.steps):
        if st.stack is not None:
            sized = [((st.stack.name, j), size)
                     for j, size in enumerate(st.stack.output_sizes())]
        elif st.node in library_sizes:
            sized = [((LIBRARY + st.node, 0), library_sizes[st.node])]
        else:
            continue
        for key, (numel, per_batch) in sized:
            if key in escaping:
                continue
            if in_place and st.stack is not None:
                s = _overwritable(st.stack, key[1], k, plan, alias, producer, last_use, out)
                if s is not None:
                    out.slots[s].busy_until = last_use.get(key, k)
                    out.assignment[key] = s
                    continue
            free = [s for s, slot in enumerate(out.slots)
                    if slot.busy_until < k and slot.per_batch == per_batch]
            # best fit: the smallest free slot that is big enough, else the largest free one
            fits = [s for s in free if out.slots[s].numel >= numel]
            if fits:
                s = min(fits, key=lambda s: out.slots[s].numel)
            elif free:
                s = max(free, key=lambda s: out.slots[s].numel)
                out.slots[s].numel = numel
            else:
                out.slots.append(Slot(numel, per_batch))
                s = len(out.slots) - 1
            out.slots[s].busy_until = last_use.get(key, k)
            out.assignment[key] = s
    return out


def _overwritable(stack: Any, j: int, k: int, plan: Schedule,
                  alias: Mapping[str, set[OutputKey]],
                  producer: Mapping[str, tuple[Any, int]],
                  last_use: Mapping[OutputKey, int], out: BufferPlan) -> int | None:
    """The slot of the input that output `j` of `stack` (step `k`) may
    overwrite, if that input is an earlier stack's output of the same shape
    in the arena, read last at this step and by no view; else None."""
    i = getattr(stack, "in_place", {}).get(j)
    if i is None or not isinstance(src := stack.inputs[i], str):
        return None
    name = plan.resolve(src)
    if name not in producer:
        return None
    prod, pj = producer[name]
    key = (prod.name, pj)
    if alias.get(name) != {key} or last_use.get(key) != k or key not in out.assignment:
        return None
    if any(key in keys for n, keys in alias.items() if n != name):
        return None  # a framework node's view of it
    if tuple(prod.output_shapes[pj]) != tuple(stack.output_shapes[j]):
        return None
    s = out.assignment[key]
    if any(other == s for other_key, other in out.assignment.items()
           if other_key[0] == stack.name):
        return None  # another output of this stack took it already
    return s


class _Store:
    """One thread's slot buffers, by batch size."""

    __slots__ = ("by_batch", "views", "__weakref__")

    def __init__(self) -> None:
        self.by_batch: dict[int, list[Any]] = {}
        self.views: dict[int, dict[Any, Any]] = {}


class Arena:
    """Storage of a buffer plan's slots, made by `allocate(numel)` once per
    (thread, batch size). A thread's storage goes when the thread ends;
    `release` drops it for some batch sizes or all, in every thread (a call
    running meanwhile keeps the buffers it holds until it returns)."""

    def __init__(self, plan: BufferPlan, allocate: Callable[[int], Any]):
        self.plan = plan
        self.allocate = allocate
        self._local = threading.local()
        self._stores: weakref.WeakSet[_Store] = weakref.WeakSet()

    def storage(self, batch: int) -> list[Any]:
        """This thread's slot buffers for batch size `batch`."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = _Store()
            self._stores.add(store)
        bufs = store.by_batch.get(batch)
        if bufs is None:
            bufs = store.by_batch[batch] = [
                self.allocate(s.numel * (batch if s.per_batch else 1)) for s in self.plan.slots
            ]
        return bufs

    def views(self, batch: int) -> dict[Any, Any]:
        """This thread's cache of views into its storage for batch size `batch`
        (a kernel keeps the views it returns there, instead of slicing the
        storage on every call); emptied with the storage."""
        store = getattr(self._local, "store", None)
        if store is None or batch not in store.by_batch:
            self.storage(batch)
            store = self._local.store
        cache = store.views.get(batch)
        if cache is None:
            cache = store.views[batch] = {}
        return cache

    def release(self, batches: Collection[int] | None = None) -> None:
        """Drops the storage of these batch sizes (all if None), in every thread."""
        for store in list(self._stores):
            for b in list(store.by_batch):
                if batches is None or b in batches:
                    store.by_batch.pop(b, None)
                    store.views.pop(b, None)

    def held_bytes(self, itemsize: int = 4) -> int:
        """Bytes of storage held, all threads together."""
        total = 0
        for store in list(self._stores):
            for b in list(store.by_batch):
                total += sum(s.numel * (b if s.per_batch else 1) for s in self.plan.slots)
        return itemsize * total

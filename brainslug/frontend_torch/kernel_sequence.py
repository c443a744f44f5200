"""`StackSequence`: consecutive stack kernels of a plan called as one native
run (`runtime.sequence.PhaseProgram`), and `group_kernel_runs`, which puts
them there.

Where no framework layer runs between two stacks (a 1x1 convolution's stack
feeding a 3x3 one's, DenseNet's cat stack feeding its 1x1 convolution, the
pools and squeeze-excite stacks of a MobileNet), the plan's fx graph calls
one `StackSequence` in their place. A stack between two framework layers is a
run of one: its calls take the same short path. The first call with a set of
input shapes runs the kernels one by one (`StackKernel.forward`, checked);
later calls set the pointers that may change (inputs, weights, outputs not in
the arena) and run every phase of every kernel in one native call."""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from brainslug.frontend_torch.kernel_module import (
    CHANNELS_LAST,
    Order,
    StackKernel,
    inverse_order,
    physical_view,
    stored_in,
)
from brainslug.frontend_torch.replaced_tensors import replacements
from brainslug.frontend_torch.weight_watch import PackedGroup, PackedWeight
from brainslug.runtime.sequence import PhaseProgram

Wire = int | tuple[int, int]
"""Where a kernel's activation comes from: the sequence's argument k, or
(kernel, output) of an earlier kernel of the sequence."""


@dataclass
class _Output:
    """One output of a kernel of a prepared run: where its pointer goes (the
    kernel's own slot, and the slots of later kernels that read it)."""

    kernel: StackKernel
    index: int  # in the run's outputs
    batch: int
    dims: tuple[int, ...]  # of the buffer the kernel writes
    inverse: Order  # its permute to the logical order
    at: list[int]  # positions in the program's slots
    used: bool  # returned to the framework (its view is checked on every call)
    fresh: bool  # allocated per call (not in the plan's arena)
    shape: tuple[int, ...] = field(init=False)  # the logical shape

    def __post_init__(self) -> None:
        self.shape = self.dims if self.inverse is None \
            else tuple(self.dims[k] for k in self.inverse)


class _Prepared:
    """A run of kernels at one set of argument shapes: the program, and where
    each pointer that may change between calls goes in its slots.

    A call sets, in bulk: the bound tensors' `data_ptr()` (a `.data`
    assignment moves them), the packed weights as they are now
    (`PackedGroup`), the arguments, and the outputs allocated per call. The
    outputs in the plan's arena are the same buffers for a thread and batch
    size: their pointers are set when the storage changes, not per call.

    Per kernel in Python this had cost 20 µs a kernel after a large run had
    evicted the interpreter's objects from cache (1.2 ms a call of resnet50
    at batch 1, 0.35 ms of mobilenet_v2's 3.1 ms)."""

    def __init__(self, kernels: list[StackKernel], program: PhaseProgram,
                 plain: list[tuple[torch.Tensor, int]],
                 packed: list[tuple[PackedWeight, int]],
                 views: list[tuple[Any, int]],
                 external: list[tuple[int, Order, int]],
                 outputs: list[_Output]):
        self.kernels = kernels
        self.runners = [k.runner for k in kernels]
        self.program = program
        self.plain = [t for t, _ in plain]
        self.plain_at = np.asarray([i for _, i in plain], np.int64)
        self.packed = PackedGroup([w for w, _ in packed])
        self.packed_at = np.asarray([i for _, i in packed], np.int64)
        self.views = views  # ParamView: `current()` each call
        self.external = external
        self.outputs = outputs
        self.fresh = [o for o in outputs if o.fresh]
        self._arenas = list({(id(o.kernel._arena), o.batch): (o.kernel._arena, o.batch)
                             for o in outputs if not o.fresh}.values())
        self._stored: list[Any] | None = None  # the arena storage the slots point at
        self._results: list[torch.Tensor | None] = [None] * len(outputs)
        self._checks: list[tuple[int, torch.Tensor, tuple[Any, ...]]] = []
        self.replacements = replacements()  # (a replaced tensor: prepared again)

    def __call__(self, args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...] | None:
        """The outputs of every kernel, in order; None where the run can't be
        made natively this time (the caller then calls kernel by kernel)."""
        if list(map(_runner, self.kernels)) != self.runners:
            return None  # (a stand-in runner, such as the roofline's)
        flat = self.program.flat
        for arg, order, at in self.external:
            a = args[arg]
            if not stored_in(a, order):
                return None
            flat[at] = a.data_ptr()
        if not self._arena_outputs():
            return None
        if self.plain:
            flat[self.plain_at] = list(map(_data_ptr, self.plain))
        packed = self.packed.current()  # (alive until the run returns)
        if packed:
            flat[self.packed_at] = list(map(_data_ptr, packed))
        held = []
        for w, at in self.views:
            held.append(t := w.current())
            flat[at] = t.data_ptr()
        results = self._results.copy()
        for o in self.fresh:
            if o.inverse == FROM_CHANNELS_LAST:  # (one call: empty and permute cost 2 µs)
                view = torch.empty(o.shape, dtype=torch.float32,
                                   memory_format=torch.channels_last)
            else:
                view = physical_view(torch.empty(o.dims, dtype=torch.float32), o.inverse)
            ptr = view.data_ptr()
            for at in o.at:
                flat[at] = ptr
            results[o.index] = view
        if not self.program.run():
            return None
        return tuple(results)  # type: ignore[arg-type]

    def _arena_outputs(self) -> bool:
        """Points the slots at this thread's arena buffers, where they are not
        already, and checks the returned views (a framework layer may have
        changed one in place); False where a view can't be made."""
        stored = [arena.storage(batch) for arena, batch in self._arenas]
        if self._stored is not None and all(map(operator.is_, stored, self._stored)) \
                and all((v.shape, v.stride()) == s for _, v, s in self._checks):
            return True
        flat = self.program.flat
        checks = []
        for k, group in _by_kernel(self.outputs):
            if k._arena is None:
                continue
            cached = k._arena_views(group[0].batch, [o.dims for o in group])
            for o, got in zip(group, cached, strict=True):
                if o.fresh:
                    continue
                if got is None:
                    return False
                buf, view, layout = got
                flat[o.at] = buf.data_ptr()
                self._results[o.index] = view
                if o.used:
                    checks.append((o.index, view, layout))
        self._checks, self._stored = checks, stored
        return True


def _by_kernel(outputs: list[_Output]) -> list[tuple[StackKernel, list[_Output]]]:
    """Outputs grouped by kernel, in order."""
    groups: list[tuple[StackKernel, list[_Output]]] = []
    for o in outputs:
        if groups and groups[-1][0] is o.kernel:
            groups[-1][1].append(o)
        else:
            groups.append((o.kernel, [o]))
    return groups


FROM_CHANNELS_LAST = inverse_order(CHANNELS_LAST)
_runner = operator.attrgetter("runner")
_shape = operator.attrgetter("shape")
_data_ptr = torch.Tensor.data_ptr


class StackSequence(torch.nn.Module):
    """Stack kernels that run back to back, called as one native run.

    `wiring[i]` gives, per activation of kernel i, where it comes from
    (`Wire`). The call returns every output of every kernel, in order;
    `used` are those the framework reads (None: all)."""

    def __init__(self, kernels: Sequence[StackKernel], wiring: Sequence[Sequence[Wire]],
                 used: set[int] | None = None):
        super().__init__()
        self.kernels = torch.nn.ModuleList(kernels)
        self.wiring = [list(w) for w in wiring]
        self.used = used
        self._prepared: dict[tuple[torch.Size, ...], _Prepared | None] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_prepared"], state["_lock"]  # (made again: they hold pointers)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"used": None, **state})
        self._prepared, self._lock = {}, threading.Lock()

    def extra_repr(self) -> str:
        return ", ".join(k.stack_name for k in self.kernels)

    def release(self, batches: Any = None) -> None:
        """Drops the prepared runs (their fills point at released scratch)."""
        self._prepared = {}

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward(*args)  # (the plan's own module: no hooks, 1 µs less a call)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple(map(_shape, args))
        prepared = self._prepared.get(key)
        if prepared is not None and prepared.replacements != replacements():
            self._prepared.pop(key, None)  # (another thread may have dropped it)
            prepared = None
        lock = self._lock
        if prepared is not None and lock.acquire(blocking=False):
            try:
                outs = prepared(args)
            finally:
                lock.release()
            if outs is not None:
                return outs
            self._prepared.pop(key, None)  # (prepared again: its fills may be stale)
        outs, acts = self._one_by_one(args)
        if key not in self._prepared:
            self._prepared[key] = self._prepare(args, acts, outs)
        return outs

    def _one_by_one(self, args: Sequence[torch.Tensor]
                    ) -> tuple[tuple[torch.Tensor, ...], list[list[torch.Tensor]]]:
        """Every kernel's outputs, each kernel called on its own; and each
        kernel's activations."""
        per_kernel: list[tuple[torch.Tensor, ...]] = []
        acts: list[list[torch.Tensor]] = []
        for k, wires in zip(self.kernels, self.wiring, strict=True):
            a = [args[w] if isinstance(w, int) else per_kernel[w[0]][w[1]] for w in wires]
            out = k(*a)
            per_kernel.append(out if isinstance(out, tuple) else (out,))
            acts.append(a)
        return tuple(t for outs in per_kernel for t in outs), acts

    def _prepare(self, args: Sequence[torch.Tensor], acts: list[list[torch.Tensor]],
                 outs: tuple[torch.Tensor, ...]) -> _Prepared | None:
        """The native run for these argument shapes, after a call kernel by
        kernel; None where some kernel can't take pointers as they are."""
        fills = []
        batches: list[int] = []
        for k, wires, a in zip(self.kernels, self.wiring, acts, strict=True):
            fill = k._checked.get(tuple(t.shape for t in a))
            if fill is None or not k._fast_ok or not hasattr(k.runner, "abi"):
                return None
            batch = a[k._batch_input].shape[0] if k._batch_input is not None else 1
            if k._dims.get(batch) is None:
                return None  # (released since by another thread)
            for slot, w, t in zip(k._slots, wires, a, strict=True):
                if not isinstance(w, int) and not stored_in(t, k._in_orders[slot]):
                    return None  # (another order: the checked call copies it)
            fills.append((k.runner, fill, batch))
            batches.append(batch)
        try:
            program = PhaseProgram(fills)
        except ValueError:
            return None
        plain: list[tuple[torch.Tensor, int]] = []
        packed: list[tuple[PackedWeight, int]] = []
        views: list[tuple[Any, int]] = []
        external: list[tuple[int, Order, int]] = []
        outputs: list[_Output] = []
        first: list[int] = []  # each kernel's first output in `outputs`
        for i, (k, wires) in enumerate(zip(self.kernels, self.wiring, strict=True)):
            at = program.pointer_index
            for j, t in enumerate(k._bound):
                if t is not None and j not in k._packed_set:
                    plain.append((t, at(i, j)))
            for j in k._packed:
                w = k._bound[j]
                (packed if isinstance(w, PackedWeight) else views).append((w, at(i, j)))
            first.append(len(outputs))
            for j, dims in enumerate(k._dims[batches[i]]):
                fresh = k._arena is None or k._out_slots[j] is None
                outputs.append(_Output(k, len(outputs), batches[i], dims, k._out_inverse[j],
                                       [at(i, len(k._bound) + j)], True, fresh))
            for slot, w in zip(k._slots, wires, strict=True):
                if isinstance(w, int):
                    external.append((w, k._in_orders[slot], at(i, slot)))
                else:
                    outputs[first[w[0]] + w[1]].at.append(at(i, slot))
        for o in outputs:
            o.used = self.used is None or o.index in self.used
        return _Prepared(list(self.kernels), program, plain, packed, views, external, outputs)


def group_kernel_runs(gm: fx.GraphModule, getitem: Any, min_kernels: int = 1) -> int:
    """Puts each run of at least `min_kernels` consecutive `StackKernel` calls
    of `gm` (nothing between them but `getitem(kernel, k)` calls, which pick
    an output of a kernel of several) into one `StackSequence`; returns how
    many runs it made."""
    modules = dict(gm.named_modules())

    def kernel(n: fx.Node) -> StackKernel | None:
        if n.op != "call_module":
            return None
        m = modules.get(str(n.target))
        return m if isinstance(m, StackKernel) else None

    runs: list[list[fx.Node]] = []
    run: list[fx.Node] = []
    for n in gm.graph.nodes:
        if kernel(n) is not None and all(isinstance(a, fx.Node) for a in n.args) \
                and not n.kwargs:
            run.append(n)
        elif n.op == "call_function" and n.target is getitem and n.args[0] in run \
                and isinstance(n.args[1], int):
            run.append(n)
        else:
            if sum(kernel(x) is not None for x in run) >= min_kernels:
                runs.append(run)
            run = []
    made = 0
    for run in runs:
        if _picked_apart(run, kernel, getitem):
            _replace_run(gm, run, kernel, getitem, made)
            made += 1
    if made:
        gm.graph.lint()
        gm.recompile()
    return made


def _picked_apart(run: list[fx.Node], kernel: Any, getitem: Any) -> bool:
    """Whether every use of a kernel of several outputs picks one of them
    (`getitem(kernel, k)`), as the plan's graph does: the sequence returns
    the outputs one by one, not a kernel's tuple."""
    for n in run:
        k = kernel(n)
        if k is None or len(k.output_shapes) == 1:
            continue
        if any(u.op != "call_function" or u.target is not getitem or u.args[0] is not n
               or not isinstance(u.args[1], int) for u in n.users):
            return False
    return True


def _replace_run(gm: fx.GraphModule, run: list[fx.Node], kernel: Any, getitem: Any,
                 k: int) -> None:
    members = set(run)
    kernels = [n for n in run if kernel(n) is not None]
    position = {n: i for i, n in enumerate(kernels)}
    # each value of the run: (kernel, output) -> flat index
    flat: dict[tuple[int, int], int] = {}
    for n in kernels:
        for o in range(len(kernel(n).output_shapes)):
            flat[(position[n], o)] = len(flat)
    args: list[fx.Node] = []
    wiring: list[list[Wire]] = []

    def source(a: fx.Node) -> tuple[int, int] | None:
        if a in position:
            return position[a], 0
        if a in members:  # a getitem of a kernel of the run
            return position[a.args[0]], int(a.args[1])  # type: ignore[index, arg-type]
        return None

    for n in kernels:
        wires: list[Wire] = []
        for a in n.args:
            got = source(a)  # type: ignore[arg-type]
            if got is None:
                if a not in args:
                    args.append(a)  # type: ignore[arg-type]
                wires.append(args.index(a))  # type: ignore[arg-type]
            else:
                wires.append(got)
        wiring.append(wires)
    attr = f"bs_run{k}"
    sequence = StackSequence([kernel(n) for n in kernels], wiring)
    gm.add_submodule(attr, sequence)
    with gm.graph.inserting_before(run[0]):
        call = gm.graph.call_module(attr, tuple(args))
    after = call
    for n in run:
        got = source(n)
        if got is None or (n in position and len(kernel(n).output_shapes) != 1):
            continue
        if not any(u not in members for u in n.users):
            continue
        with gm.graph.inserting_after(after):
            value = gm.graph.call_function(getitem, (call, flat[got]))
        after = value
        n.replace_all_uses_with(value, delete_user_cb=lambda u: u not in members)
    for n in kernels:  # picks of a kernel's outputs after the run
        for u in list(n.users):
            if u not in members:
                u.args = (call, flat[(position[n], int(u.args[1]))])  # type: ignore[arg-type]
    sequence.used = {int(u.args[1]) for u in call.users  # type: ignore[arg-type]
                     if u.op == "call_function" and u.target is getitem}
    if any(u.op != "call_function" or u.target is not getitem for u in call.users):
        sequence.used = None
    for n in reversed(run):
        gm.graph.erase_node(n)
    for n in kernels:
        name = str(n.target)
        if hasattr(gm, name):
            delattr(gm, name)

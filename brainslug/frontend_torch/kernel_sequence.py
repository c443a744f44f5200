"""`StackSequence`: consecutive stack kernels of a plan called as one native
run (`runtime.sequence.PhaseProgram`), and `group_kernel_runs`, which puts
them there.

Where no framework layer runs between two stacks (a 1x1 convolution's stack
feeding a 3x3 one's, DenseNet's cat stack feeding its 1x1 convolution, the
pools and squeeze-excite stacks of a MobileNet), the plan's fx graph calls
one `StackSequence` in their place. Its first call with a set of input shapes
runs the kernels one by one (`StackKernel.forward`, checked); later calls set
the pointers that may change (inputs, weights, outputs not in the arena) and
run every phase of every kernel in one native call."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from brainslug.frontend_torch.kernel_module import (
    Order,
    StackKernel,
    physical_view,
    stored_in,
)
from brainslug.frontend_torch.replaced_tensors import replacements
from brainslug.runtime.sequence import PhaseProgram

Wire = int | tuple[int, int]
"""Where a kernel's activation comes from: the sequence's argument k, or
(kernel, output) of an earlier kernel of the sequence."""


@dataclass
class _Call:
    """One kernel of a prepared run: where its pointers come from."""

    kernel: StackKernel
    runner: Any
    batch: int
    dims: list[tuple[int, ...]]
    plain: list[torch.Tensor]  # bound tensors passed as they are
    packed: list[Any]  # PackedWeight / ParamView: `current()` each call
    external: list[tuple[int, Order]]  # (argument, memory order)
    internal: list[tuple[int, int]]  # (kernel, output)


class _Prepared:
    """A run of kernels at one set of argument shapes: the program and where
    each call's pointers go in its slots."""

    def __init__(self, calls: list[_Call], program: PhaseProgram, index: list[int]):
        self.calls = calls
        self.program = program
        self.index = np.asarray(index, np.int64)
        self.replacements = replacements()  # (a replaced tensor: prepared again)

    def __call__(self, args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...] | None:
        """The outputs of every kernel, in order; None where the run can't be
        made natively this time (the caller then calls kernel by kernel)."""
        values: list[int] = []
        held: list[torch.Tensor] = []  # (packed weights: alive until the run returns)
        results: list[torch.Tensor] = []
        physical: list[list[torch.Tensor]] = []
        for c in self.calls:
            k = c.kernel
            if k.runner is not c.runner:  # (a stand-in runner, such as the roofline's)
                return None
            values += [t.data_ptr() for t in c.plain]
            for w in c.packed:
                held.append(t := w.current())
                values.append(t.data_ptr())
            for arg, order in c.external:
                a = args[arg]
                if not stored_in(a, order):
                    return None
                values.append(a.data_ptr())
            values += [physical[p][o].data_ptr() for p, o in c.internal]
            cached = k._arena_views(c.batch, c.dims) if k._arena is not None else None
            bufs = []
            for j, dims in enumerate(c.dims):
                got = cached[j] if cached is not None else None
                if got is None:
                    buf = torch.empty(dims, dtype=torch.float32)
                    bufs.append(buf)
                    results.append(physical_view(buf, k._out_inverse[j]))
                else:
                    bufs.append(got[0])
                    results.append(got[1])
            values += [b.data_ptr() for b in bufs]
            physical.append(bufs)
        self.program.values(self.index, values)
        if not self.program.run():
            return None
        return tuple(results)


class StackSequence(torch.nn.Module):
    """Stack kernels that run back to back, called as one native run.

    `wiring[i]` gives, per activation of kernel i, where it comes from
    (`Wire`). The call returns every output of every kernel, in order."""

    def __init__(self, kernels: Sequence[StackKernel], wiring: Sequence[Sequence[Wire]]):
        super().__init__()
        self.kernels = torch.nn.ModuleList(kernels)
        self.wiring = [list(w) for w in wiring]
        self._prepared: dict[tuple[torch.Size, ...], _Prepared | None] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_prepared"], state["_lock"]  # (made again: they hold pointers)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._prepared, self._lock = {}, threading.Lock()

    def extra_repr(self) -> str:
        return ", ".join(k.stack_name for k in self.kernels)

    def release(self, batches: Any = None) -> None:
        """Drops the prepared runs (their fills point at released scratch)."""
        self._prepared = {}

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple(a.shape for a in args)
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
        calls: list[_Call] = []
        fills = []
        index: list[int] = []
        for i, (k, wires, a) in enumerate(zip(self.kernels, self.wiring, acts, strict=True)):
            fill = k._checked.get(tuple(t.shape for t in a))
            if fill is None or not k._fast_ok or not hasattr(k.runner, "abi"):
                return None
            batch = a[k._batch_input].shape[0] if k._batch_input is not None else 1
            if (dims := k._dims.get(batch)) is None:
                return None  # (released since by another thread)
            c = _Call(k, k.runner, batch, dims, [], [], [], [])
            order: list[int] = []  # buffers in the order their values are written
            for j, t in enumerate(k._bound):
                if t is not None and j not in k._packed_set:
                    c.plain.append(t)
                    order.append(j)
            for j in k._packed:
                c.packed.append(k._bound[j])
                order.append(j)
            for slot, w, t in zip(k._slots, wires, a, strict=True):
                if isinstance(w, int):
                    c.external.append((w, k._in_orders[slot]))
                elif not stored_in(t, k._in_orders[slot]):
                    return None  # (another order: the checked call copies it)
            order += [slot for slot, w in zip(k._slots, wires, strict=True) if isinstance(w, int)]
            for slot, w in zip(k._slots, wires, strict=True):
                if not isinstance(w, int):
                    c.internal.append(w)
                    order.append(slot)
            order += range(len(k._bound), len(k._bound) + len(c.dims))
            calls.append(c)
            fills.append((k.runner, fill, batch))
            index += [(i, j) for j in order]  # type: ignore[misc]
        try:
            program = PhaseProgram(fills)
        except ValueError:
            return None
        flat = [program.pointer_index(i, j) for i, j in index]  # type: ignore[misc]
        return _Prepared(calls, program, flat)


def group_kernel_runs(gm: fx.GraphModule, getitem: Any, min_kernels: int = 2) -> int:
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
    gm.add_submodule(attr, StackSequence([kernel(n) for n in kernels], wiring))
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
    for n in reversed(run):
        gm.graph.erase_node(n)
    for n in kernels:
        name = str(n.target)
        if hasattr(gm, name):
            delattr(gm, name)

"""Parameters and buffers replaced after optimize().

`module.weight = nn.Parameter(w)` or `module.running_var = t` puts a new
tensor in the module, while a compiled stack's kernel holds the tensor it was
built with: its results would silently stay the old model's. PyTorch calls
its global registration hooks on every such assignment, before the module
takes the new tensor; the hook here hands the new tensor to every holder of
the old one (`watch`), which rebinds to it: a compiled stack's kernel
(`StackKernel.rebind`), a folded convolution's sources, a plan module that
registered the model's tensor as its own (`PackedConv2d`, `PackedLinear`).
Library layers that are the model's own modules need nothing: the plan reads
their attributes on each call."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol

import torch


class Holder(Protocol):
    """What keeps a model's tensor: `rebind` takes its replacement."""

    def rebind(self, old: torch.Tensor, new: torch.Tensor) -> None: ...


class TensorHolder(Holder, Protocol):
    """A plan module that keeps model tensors of its own choosing."""

    def held_tensors(self) -> list[torch.Tensor]: ...


_holders: dict[int, list[weakref.ref[Any]]] = {}
_lock = threading.Lock()
_replacements = 0


def replacements() -> int:
    """How many held tensors were replaced so far (what a holder prepared
    before a change compares)."""
    return _replacements


PURGE_EVERY = 4096
"""Entries made between two sweeps of the entries whose holders are gone
(plans dropped: their tensors' ids may be reused)."""
_made = 0


def watch(t: torch.Tensor, holder: Holder) -> None:
    """Tell `holder` (`rebind(t, new)`) when a module's `t` is replaced."""
    global _made
    with _lock:
        refs = _holders.setdefault(id(t), [])
        if not any(r() is holder for r in refs):
            refs.append(weakref.ref(holder))
        _made += 1
        if _made % PURGE_EVERY == 0:
            for key in [k for k, rs in _holders.items() if all(r() is None for r in rs)]:
                del _holders[key]


class _Registered:
    """A model tensor that a plan module registered as its own parameter or
    buffer (under another module, or another name)."""

    def __init__(self, module: torch.nn.Module, table: str, name: str):
        self.module, self.table, self.name = module, table, name

    def rebind(self, old: torch.Tensor, new: torch.Tensor) -> None:
        entries = getattr(self.module, self.table)
        if entries.get(self.name) is old:
            entries[self.name] = new
            repack = getattr(self.module, "repack", None)
            if callable(repack):
                repack()
            watch(new, self)


def watch_plan(plan: torch.nn.Module, model: torch.nn.Module) -> list[Any]:
    """Makes the plan's copies of the model's tensors follow their
    replacement; returns the holders to keep alive with the plan (they are
    watched through weak references)."""
    model_modules = {id(m) for m in model.modules()}
    tensors = {id(t) for t in (*model.parameters(), *model.buffers())}
    kept: list[Any] = []
    for m in plan.modules():
        if hasattr(m, "held_tensors") and hasattr(m, "rebind"):
            for t in m.held_tensors():
                watch(t, m)
        if id(m) in model_modules:
            continue
        for table in ("_parameters", "_buffers"):
            for name, t in getattr(m, table).items():
                if t is not None and id(t) in tensors:
                    holder = _Registered(m, table, name)
                    watch(t, holder)
                    kept.append(holder)
    return kept


def _replaced(module: torch.nn.Module, name: str, new: Any) -> None:
    global _replacements
    old = module._parameters.get(name) if name in module._parameters \
        else module._buffers.get(name)
    if old is None or new is old or not isinstance(new, torch.Tensor):
        return None
    with _lock:
        refs = _holders.pop(id(old), None)
        if refs is None:
            return None
        _replacements += 1
    for r in refs:
        holder = r()
        if holder is not None:
            holder.rebind(old, new)
    return None


torch.nn.modules.module.register_module_parameter_registration_hook(_replaced)
torch.nn.modules.module.register_module_buffer_registration_hook(_replaced)

"""Static buffer plan for the outputs of stack kernels.

Every kernel output that does not leave the graph gets a slot of a per-model
arena; slots are reused once their previous tensor is dead (liveness over the
plan's order, extended through every op that may return a view of its input).
The arena allocates each slot once per batch size, so the hot path allocates
nothing and touches no fresh pages. One arena per thread keeps concurrent calls
of the same model apart.
"""

from __future__ import annotations

import math
import operator
import threading
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

# ops whose result is a fresh tensor, never a view of an input
FRESH_FUNCTIONS = {
    torch.conv2d, F.conv2d, F.linear, torch.addmm, torch.matmul, torch.cat, torch.concat,
    F.batch_norm, F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d, operator.add,
    operator.mul, torch.add, torch.mul, torch.relu, torch.sigmoid, torch.tanh, F.relu,
    F.gelu, F.silu, F.hardswish, F.hardsigmoid, torch.softmax, F.softmax, torch.mean,
}
FRESH_MODULES = (
    torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, torch.nn.AdaptiveAvgPool2d,
    torch.nn.AvgPool2d, torch.nn.MaxPool2d,
)


@dataclass
class Slot:
    """A region of the arena: `numel` floats per batch item (or in all, if static)."""

    numel: int
    per_batch: bool
    busy_until: int = -1


@dataclass
class BufferPlan:
    """slot of (stack node name, output index); the slots' sizes."""

    assignment: dict[tuple[str, int], int] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)


def _fresh(n: fx.Node, modules: dict[str, torch.nn.Module]) -> bool:
    if n.op == "call_function":
        return n.target in FRESH_FUNCTIONS
    if n.op == "call_module":
        m = modules.get(str(n.target))
        if m is not None and getattr(m, "is_stack_kernel", False):
            return True
        return isinstance(m, FRESH_MODULES) and not getattr(m, "inplace", False)
    return False


def plan_buffers(gm: fx.GraphModule, outputs: dict[str, list[tuple[tuple[int, ...], bool]]],
                 ) -> BufferPlan:
    """Assign arena slots to stack outputs.

    `outputs[node]` lists the (shape without the batch, has batch) of each output
    of the stack kernel called by fx node `node`."""
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    # value -> the stack outputs (node name, index) it may alias
    alias: dict[fx.Node, set[tuple[str, int]]] = {}
    last_use: dict[tuple[str, int], int] = {}
    escaping: set[tuple[str, int]] = set()
    for n in nodes:
        carried: set[tuple[str, int]] = set()
        for x in n.all_input_nodes:
            for key in alias.get(x, ()):
                last_use[key] = max(last_use.get(key, -1), pos[n])
                carried.add(key)
        if n.op == "output":
            escaping |= carried
            continue
        if n.name in outputs:
            k = len(outputs[n.name])
            if k == 1:
                alias[n] = {(n.name, 0)}
            else:
                alias[n] = {(n.name, i) for i in range(k)}
            for key in alias[n]:
                last_use.setdefault(key, pos[n])
            continue
        if n.op == "call_function" and n.target is operator.getitem and n.args[0] in alias:
            src = n.args[0]
            if src.name in outputs and isinstance(n.args[1], int):
                alias[n] = {(src.name, n.args[1])}
                continue
        if carried and not _fresh(n, modules):
            alias[n] = carried  # may be a view: keeps the buffers alive
    plan = BufferPlan()
    for n in nodes:
        if n.name not in outputs:
            continue
        for i, (shape, per_batch) in enumerate(outputs[n.name]):
            key = (n.name, i)
            if key in escaping:
                continue
            numel = math.prod(shape)
            free = [
                s for s, slot in enumerate(plan.slots)
                if slot.busy_until < pos[n] and slot.per_batch == per_batch
            ]
            # best fit: the smallest free slot that is big enough, else the largest free one
            fits = [s for s in free if plan.slots[s].numel >= numel]
            if fits:
                s = min(fits, key=lambda s: plan.slots[s].numel)
            elif free:
                s = max(free, key=lambda s: plan.slots[s].numel)
                plan.slots[s].numel = numel
            else:
                plan.slots.append(Slot(numel, per_batch))
                s = len(plan.slots) - 1
            plan.slots[s].busy_until = last_use.get(key, pos[n])
            plan.assignment[key] = s
    return plan


class Arena:
    """Storage for the plan's slots, allocated once per (thread, batch size)."""

    def __init__(self, plan: BufferPlan):
        self.plan = plan
        self._local = threading.local()

    def tensor(self, slot: int, shape: tuple[int, ...], batch: int) -> torch.Tensor:
        cache = getattr(self._local, "storage", None)
        if cache is None:
            cache = self._local.storage = {}
        store = cache.get(batch)
        if store is None:
            store = cache[batch] = [
                torch.empty(s.numel * (batch if s.per_batch else 1), dtype=torch.float32)
                for s in self.plan.slots
            ]
        return store[slot][: math.prod(shape)].view(shape)

    def release(self) -> None:
        """Drop this thread's storage (e.g. after a one-off large batch)."""
        self._local.storage = {}

"""The schedule: the framework's nodes and the compiled stacks, in one
topological order.

A node that a compiled stack computes is not run; the stack runs instead, once,
when the first value it computes is needed, after its inputs. A node that
bs-form-stacks removed (dropout, identity) is an alias of the node it passes
on. Everything else runs in the framework, in the framework graph's order as
far as the dependencies allow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from brainslug.plan.stacks import StackBinding


@dataclass
class Step:
    """One step: a framework node (`node`), or a compiled stack (`stack`)."""

    node: str | None = None
    stack: StackBinding | None = None


@dataclass
class Schedule:
    steps: list[Step]
    aliases: dict[str, str]

    def resolve(self, name: str) -> str:
        """The node whose value `name` is (itself, unless it was removed)."""
        while name in self.aliases:
            name = self.aliases[name]
        return name


def schedule(
    order: Sequence[str],
    inputs_of: Callable[[str], Sequence[str]],
    stacks: Sequence[StackBinding],
    aliases: Mapping[str, str],
    roots: Sequence[str],
    available: Sequence[str] = (),
) -> Schedule:
    """The steps that compute `roots`, in a topological order.

    `order` lists the framework's nodes in its graph order, `inputs_of(n)` the
    nodes that `n` reads; `stacks` are the compiled stacks; `available` are
    values the graph starts with (no step computes them)."""
    position = {name: k for k, name in enumerate(order)}
    member_of = {m: b for b in stacks for m in b.members}
    out = Schedule([], dict(aliases))
    done: set[str] = set(available)
    placed: set[str] = set()

    def by_position(names: Sequence[str]) -> list[str]:
        return sorted(names, key=lambda n: position.get(n, -1))

    def place(name: str) -> None:
        name = out.resolve(name)
        if name in done:
            return
        if name in member_of:
            b = member_of[name]
            if b.name not in placed:
                placed.add(b.name)
                for x in by_position([s for s in b.inputs if isinstance(s, str)]):
                    place(x)
                out.steps.append(Step(stack=b))
                done.update(b.outputs)
            if name not in done:
                raise KeyError(f"{name} is used outside its stack but is not an output")
            return
        for x in by_position([out.resolve(i) for i in inputs_of(name)]):
            place(x)
        out.steps.append(Step(node=name))
        done.add(name)

    for r in roots:
        place(r)
    return out


def needed(
    sinks: Sequence[str],
    inputs_of: Callable[[str], Sequence[str]],
    stacks: Sequence[StackBinding],
    aliases: Mapping[str, str],
) -> set[str]:
    """The nodes that `sinks` need: what they read, directly or through the
    stacks that compute it. A node whose readers are all stack members that
    read something else instead (the inner `cat` that bs-form-stacks flattens
    into the outer one) is not needed."""
    member_of = {m: b for b in stacks for m in b.members}
    seen: set[str] = set()
    todo = list(sinks)
    while todo:
        name = todo.pop()
        while name in aliases:
            name = aliases[name]
        if name in seen:
            continue
        seen.add(name)
        if name in member_of:
            todo += [s for s in member_of[name].inputs if isinstance(s, str)]
        else:
            todo += inputs_of(name)
    return seen

"""`conv="auto"`: each convolution runs where it is faster, measured at optimize().

Every convolution may win, even one whose epilogue oneDNN's post-ops apply
(a residual add) or that has none (DenseNet's 3×3 ones, which feed a `cat`)
and so saves no memory pass in BrainSlug's kernel: it keeps the run of
kernels around it one native call (`StackSequence`). (Left in the library
untimed, DenseNet's ran densenet121 at batch 1 in 34.3 ms against 30.4 ms
timed; at batch 8, where oneDNN's are faster, 192.8 against 192.2.) The plan is compiled with all of them (`start`,
`Pending.optimistic`); then, on random inputs of each kernel's shapes (at
batch 1 and 8 where the batch is free, `TIMING_BATCHES`), per distinct
convolution (shapes, hyperparameters and epilogue), BrainSlug's kernel with
its epilogue is timed against what the library plan would run: oneDNN's
convolution with prepacked weights, plus one memory pass for the epilogue
where oneDNN's post-ops can't take it (batch norm, other activations)
(`finish`). The faster over the batch sizes wins, BrainSlug's kernel even a
little slower (`FAVOR_RATIO`, `FAVOR_SECONDS`: it also saves the epilogue's
buffer and call). Where some lose, the plan is compiled again with them in
the library; its other stacks come from the kernel cache. A convolution that
the plan compiled together with others (a depth-first chain) is timed in a
trial plan of its own. Compiling the plan first spares a trial plan's
capture and stack formation where every convolution wins (densenet121: 0.6 s
of a 3.1 s cold optimize()).

Of a family of convolutions that differ only in their input channels
(DenseNet's 1×1 ones of a dense block), three are timed, and the others
follow the two whose channel counts enclose theirs where those agree
(densenet121: 13 timed instead of 58, 0.32 s of timing instead of 0.73). The
choices are kept in the kernel cache, keyed like the plan, so a warm
optimize() times nothing, and the report lists them with their times.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.nn import Linear

from brainslug.dialects import nn
from brainslug.frontend_torch.capture import capture
from brainslug.frontend_torch.compile import compile_plan
from brainslug.frontend_torch.graph import Spec, input_shapes
from brainslug.frontend_torch.kernel_module import inverse_order, physical_view
from brainslug.frontend_torch.speed import medians
from brainslug.passes.form_stacks import COMPUTE_OPS
from brainslug.plan import compile_profile, progress
from brainslug.plan.report import ConvChoice
from brainslug.runtime import cache

BUDGET_SECONDS = 3.0
"""Timing stops after this long; the convolutions left run in the library."""
FAVOR_SECONDS = 20e-6
FAVOR_RATIO = 1.05
"""BrainSlug's kernel wins up to `FAVOR_RATIO` times the library call's time
plus `FAVOR_SECONDS`: the library side's estimate leaves out the epilogue
stack's dispatch (a fixed cost per call: mobilenet_v2 at batch 1 ran 8.8 ms
with the bare comparison, 7.6 ms with all 52 convolutions compiled, about
23 µs each) and the cache misses of its extra buffer. A ratio alone (1.25
before) let resnet50's large convolutions run up to a quarter slower: 539 ms
against the library plan's 500 ms on one thread at batch 8."""
EPILOGUE_FAVOR_RATIO = 1.3
"""`FAVOR_RATIO` where the library plan runs the epilogue as a pass of its own
(batch norm, activations): timed alone, that plan's convolution and pass
(PyTorch's ReLU on a warm output) ran faster than in the network. resnet50's
3x3 convolutions timed at 0.78-0.94 of BrainSlug's time in the library, yet
with all of them in BrainSlug's kernels the network ran 7% faster at batch 1
and 3% at batch 8 than with them in the library (one process, interleaved)."""
BARE_FAVOR_RATIO = 1.2
"""`FAVOR_RATIO` for a convolution with no epilogue at all (DenseNet's 3×3
ones before a `cat`, its transitions' before a pool): timed alone, the library
call (no pass after it) looks faster than it runs in the network, where it also
splits a native run of kernels. densenet121's 3×3 convolutions timed at 0.90
of BrainSlug's time in oneDNN at batch 1 and 0.83-0.90 at batch 8, yet the
plan with every convolution compiled ran 5% faster at batch 1 and 1% at batch 8
than the plan with those in the library (bench, one process, interleaved)."""
POST_OPS = {"nn.add"}
"""Epilogue layers the library plan applies inside oneDNN's convolution, bit for
bit: a residual add. (oneDNN's ReLU post-op turns NaN into 0: in exact mode a
ReLU after a library convolution is a pass of its own.)"""
TIMING_BATCHES = (1, 8)
"""Where the batch is free, each convolution is timed at these batch sizes
(latency and throughput serving): mobilenet_v2's depthwise 3×3/2 over 144
channels ran 1.26× slower in BrainSlug at batch 1, and the plan with it in the
library ran 33 ms against 27 ms at batch 8."""
LARGER_BATCH_ROUNDS = 2
"""Rounds at batch 8: its calls are 8 times as long, so less noisy, and cost
most of the timing (resnet50 on 2 cores: 0.25 s of timing at batch 1 with 7
rounds, 1.1 s at batch 8 with 3)."""
DECISIVE = 1.3
"""A ratio at batch 1 (with the favor) beyond which the larger batch is not
timed: the geometric mean over the batch sizes would need the other side
faster by more than that at batch 8. Of the 63 such convolutions of
densenet121, resnet50, mobilenet_v2 and efficientnet_b0, timed at both, none
changed side with batch 8 counted (two of efficientnet_b0's ran 1.45 times
slower at batch 1 and even at 8); densenet121's 9 of 13 skip batch 8."""
COMPUTE = tuple(op.name for op in COMPUTE_OPS)
"""The layers that `conv="auto"` times, by op name: convolutions, and linear
layers (which BrainSlug computes as pointwise convolutions over their rows)."""

MAX_TIMED = 64
"""Convolutions compiled and timed at most, those with the largest outputs first
(the largest epilogue passes saved): compiling is most of a cold optimize()."""


ONE_PIXEL = ("a convolution of one pixel (squeeze-excite): one compiled call with its "
             "epilogue instead of a library call and a stack of its own (efficientnet_b0's "
             "timed 0.06 against 0.16 ms)")


@dataclass
class Pending:
    """conv="auto" between its plans: the convolutions to time, those decided
    without timing, the followers of timed families (`candidates`), and the
    kernel-cache key of the choices."""

    key: str
    timed: set[str]
    decided: list[ConvChoice]
    follows: dict[str, tuple[str, str]]

    @property
    def optimistic(self) -> set[str]:
        """The convolutions the first plan compiles: every one that may win."""
        return self.timed | set(self.follows) | {
            c.node for c in self.decided if c.runs == "brainslug"}


def start(gm: fx.GraphModule, spec: Spec, key_parts: list[str]) -> list[ConvChoice] | Pending:
    """The choices for `gm`'s channels-last convolutions (fx node names) where
    the kernel cache has them or nothing needs timing; else what to compile
    first (`Pending.optimistic`) and time after (`finish`)."""
    key = cache.key("conv-choice", *key_parts)
    if (blob := cache.load(key)) is not None:
        try:
            return [ConvChoice(**c) for c in json.loads(blob)]
        except (ValueError, TypeError):
            pass
    timed, decided, follows = candidates(gm, spec)
    if not timed:
        choices = decided + _as_family(follows, decided)
        cache.store(key, json.dumps([c.__dict__ for c in choices]).encode())
        return choices
    return Pending(key, timed, decided, follows)


def finish(pending: Pending, gm: fx.GraphModule, spec: Spec, plan: fx.GraphModule, info: Any,
           *, cpu: str, threads: int | None) -> list[ConvChoice]:
    """The choices, from timing the kernels of `plan` (compiled with
    `pending.optimistic`), kept in the kernel cache."""
    choices = _measure(pending, gm, spec, plan, info, cpu, threads)
    cache.store(pending.key, json.dumps([c.__dict__ for c in choices]).encode())
    return choices


def _conv_stacks(info: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Compiled stack name -> (its convolution's fx node, the layer ops)."""
    out = {}
    for s in info.stacks:
        nodes = s.layer_ops()
        convs = [n for n, op in nodes if op in COMPUTE]
        if s.compiled and len(convs) == 1:
            out[s.name] = (convs[0], tuple(op for _, op in nodes))
    return out


def candidates(gm: fx.GraphModule, spec: Spec
               ) -> tuple[set[str], list[ConvChoice], dict[str, tuple[str, str]]]:
    """The convolutions worth timing (fx node names), the choices made
    without timing, and the convolutions that follow their family's timed
    members (`_followers`)."""
    from brainslug.frontend_torch.compile import _shapes
    from brainslug.frontend_torch.graph import captured
    from brainslug.passes.form_stacks import (
        conv_epilogue_chains,
        one_pixel,
        remove_identities,
    )
    from brainslug.plan.capture import NODE_ATTR

    cap = capture(gm, input_shapes(spec), _shapes(gm, spec), "NHWC", compile_convs=True,
                  compile_linears=True)
    block = captured(cap).function.body.block
    remove_identities(block)
    decided, worth = [], []
    families: dict[tuple[Any, ...], list[tuple[int, str]]] = {}
    for chain in conv_epilogue_chains(block):
        node = chain[0].attributes[NODE_ATTR].data  # type: ignore[attr-defined]
        if isinstance(chain[0], nn.Conv2dOp) and one_pixel(chain[0]):
            decided.append(ConvChoice(node, "brainslug", why=ONE_PIXEL))
        else:  # the pass saved is one over the output
            worth.append((-math.prod(chain[-1].results[0].type.get_shape()[1:]), node))
            if (fam := _family(chain)) is not None:
                families.setdefault(fam[0], []).append((fam[1], node))
    follows = {}
    for members in families.values():
        follows.update(_followers(members))
    worth = sorted(w for w in worth if w[1] not in follows)
    for _, node in worth[MAX_TIMED:]:
        decided.append(ConvChoice(node, "library", why="beyond the convolutions timed"))
    return {node for _, node in worth[:MAX_TIMED]}, decided, follows


def _family(chain: list[Any]) -> tuple[tuple[Any, ...], int] | None:
    """(what a convolution's kernel is but for its input channels, those
    channels): DenseNet's 1×1 convolutions of one dense block differ only in
    how many channels the block has gathered. None for a grouped one."""
    conv = chain[0]
    if not isinstance(conv, nn.Conv2dOp) or conv.groups_value != 1:
        return None
    return (str(conv.operands[1].type.get_shape()[:2]), str(conv.properties),
            str(chain[-1].results[0].type), tuple(op.name for op in chain)), \
        conv.operands[0].type.get_shape()[-1]


def _followers(members: list[tuple[int, str]]) -> dict[str, tuple[str, str]]:
    """Of a family's (input channels, node): those not timed, each with the two
    timed members whose channel counts enclose its own. The members with the
    fewest, middle and most channels are timed; a family of three or fewer
    has no followers."""
    members = sorted(members)
    ends = [0, (len(members) - 1) // 2, len(members) - 1]
    if len(members) <= len(ends):
        return {}
    out = {}
    for k, (_, node) in enumerate(members):
        if k not in ends:
            lo, hi = (ends[0], ends[1]) if k < ends[1] else (ends[1], ends[2])
            out[node] = (members[lo][1], members[hi][1])
    return out


def _as_family(follows: dict[str, tuple[str, str]],
               choices: list[ConvChoice]) -> list[ConvChoice]:
    """The followers' choices: their enclosing members' where those agree (a
    ratio of times that changes smoothly with the channels keeps its side
    between them), else the library (as for a convolution not timed)."""
    runs = {c.node: c.runs for c in choices}
    out = []
    for node, (lo, hi) in follows.items():
        if runs.get(lo) is not None and runs.get(lo) == runs.get(hi):
            out.append(ConvChoice(node, runs[lo], why=f"as {lo} and {hi}: of its shape and "
                                  f"epilogue, with fewer and more input channels, timed"))
        else:
            out.append(ConvChoice(node, "library", why=f"{lo} and {hi}, of its shape with "
                                  f"fewer and more input channels, timed apart"))
    return out


def _measure(pending: Pending, gm: fx.GraphModule, spec: Spec, plan: fx.GraphModule,
             info: Any, cpu: str, threads: int | None) -> list[ConvChoice]:
    """Each timed convolution's kernel in `plan` against the library's work;
    a trial plan of its own for those that `plan` compiled with others in one
    stack (a depth-first chain), which can't be timed alone there."""
    alone = {node for node, _ in _conv_stacks(info).values()}
    with compile_profile.stage("convolution choice: timing"):
        choices = pending.decided + _time(gm, spec, plan, info, pending.timed & alone)
    if chained := pending.timed - alone:
        with compile_profile.stage("convolution choice: trial compile"):
            trial, trial_info, _ = compile_plan(gm, spec, cpu=cpu, layout="NHWC",
                                                threads=threads, convs=chained,
                                                only_convs=True, linears=chained)
        with compile_profile.stage("convolution choice: timing"):
            choices += _time(gm, spec, trial, trial_info, chained)
    timed = {c.node for c in choices}
    choices += [ConvChoice(node, "library", why="its kernel did not compile")
                for node in sorted(pending.timed - timed)]
    return choices + _as_family(pending.follows, choices)


def _time(gm: fx.GraphModule, spec: Spec, plan: Any, info: Any,
          nodes_timed: set[str]) -> list[ConvChoice]:
    """The kernels in `plan` of the convolutions `nodes_timed` against the
    library plan's work (see the module's docstring)."""
    from brainslug.frontend_torch.library_conv import PackedConv2d
    from brainslug.frontend_torch.library_linear import PackedLinear

    stacks = {name: s for name, s in _conv_stacks(info).items() if s[0] in nodes_timed}
    kernels = {k.stack_name: k for k in plan.modules() if getattr(k, "is_stack_kernel", False)
               and k.stack_name in stacks}
    batches = TIMING_BATCHES if any(s and s[0] == 0 for s in input_shapes(spec)) else (1,)
    pool = random_pool(max((sum(math.prod(s) for s in timing_shapes(k, b))
                            for k in kernels.values() for b in batches), default=0))
    nodes = {n.name: n for n in gm.graph.nodes}
    measured: dict[tuple[Any, ...], list[tuple[int, float, float]]] = {}
    choices, start = [], time.perf_counter()
    for i, (name, kernel) in enumerate(kernels.items()):
        progress.note("timing convolutions", i, len(kernels))
        node_name, ops = stacks[name]
        node = nodes.get(node_name)
        calls = [timing_inputs(kernel, b, pool) for b in batches]
        conv = gm.get_submodule(str(node.target)) if node is not None and \
            node.op == "call_module" else None
        if conv is None or not all(calls) or not isinstance(conv, torch.nn.Conv2d | Linear):
            choices.append(ConvChoice(node_name, "brainslug", why="not a module call"))
            continue
        sig = (tuple(a.shape for a in calls[0]), repr(conv), ops)  # type: ignore[index]
        if sig not in measured:
            if time.perf_counter() - start > BUDGET_SECONDS:
                choices.append(ConvChoice(node_name, "library", why="timing budget spent"))
                continue
            packed = PackedConv2d(conv) if isinstance(conv, torch.nn.Conv2d) else \
                PackedLinear(conv)
            measured[sig] = _timed(kernel, packed, calls, ops)  # type: ignore[arg-type]
            if not _brainslug_wins(measured[sig], ops):
                # the plan has the kernel: sending it back costs compiling the plan
                # again, so a loss is measured twice, each side keeping its lower
                # time (interference only adds time)
                again = _timed(kernel, packed, calls[:len(measured[sig])], ops,  # type: ignore[arg-type]
                               skip=False)
                measured[sig] = [(b, min(t, t2), min(u, u2)) for (b, t, u), (_, t2, u2)
                                 in zip(measured[sig], again, strict=True)]
        times = measured[sig]
        runs = "brainslug" if _brainslug_wins(times, ops) else "library"
        (_, bs, lib), *more = times
        choices.append(ConvChoice(node_name, runs, bs * 1e3, lib * 1e3,
                                  more=[[b, t * 1e3, u * 1e3] for b, t, u in more] or None))
    _release(kernels.values())
    return choices


def _release(kernels: Any) -> None:
    """Drops what timing made the kernels keep: their arena's storage and
    their scratch at the timing batch sizes (the plan would hold them until
    released: 17 MiB for resnet18)."""
    arenas = {id(k._arena): k._arena for k in kernels if k._arena is not None}
    for k in kernels:
        k.release()
    for arena in arenas.values():
        arena.release()


def _timed(kernel: Any, packed: Any, calls: list[tuple[torch.Tensor, ...]],
           ops: tuple[str, ...], skip: bool = True) -> list[tuple[int, float, float]]:
    """(batch, kernel's median seconds, library side's) at each batch size of
    `calls` (the activations per batch size), after the first (with `skip`)
    only where it leaves the choice open (`_decided`)."""
    out: list[tuple[int, float, float]] = []
    for j, args in enumerate(calls):  # (a residual is of each batch's own size)
        m = medians({"brainslug": lambda _, a=args: kernel(*a),
                     "library": _library_call(packed, args, ops)},
                    args[0], rounds=7 if j == 0 else LARGER_BATCH_ROUNDS)
        out.append((args[0].shape[0], m["brainslug"], m["library"]))
        if j == 0 and skip and _decided(out, ops):
            break  # (the larger batch would not turn it)
    return out


def timing_shapes(kernel: Any, batch: int) -> list[list[int]]:
    """The physical shapes of a stack kernel's activations at `batch` (where
    its batch is free)."""
    return [[batch if d < 0 else d for d in kernel.runner.shapes[slot]]
            for slot in kernel._slots]


def timing_inputs(kernel: Any, batch: int, pool: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Activations for a stack kernel at `batch`, stored as the kernel reads
    them (no conversion on the call): consecutive slices of `pool`, random
    numbers made once (each input its own memory). A convolution's time does
    not depend on its values, so the trial plan need not run to record its
    inputs, and one pool serves every kernel (resnet50 at batch 8: 1.1 s of
    random numbers made per kernel)."""
    out, start = [], 0
    for slot, shape in zip(kernel._slots, timing_shapes(kernel, batch), strict=True):
        physical = pool[start:start + math.prod(shape)].view(shape)
        start += math.prod(shape)
        out.append(physical_view(physical, inverse_order(kernel._in_orders[slot])))
    return tuple(out)


def random_pool(size: int) -> torch.Tensor:
    """`size` random floats in [-1, 1), the same on every run."""
    return torch.empty(size).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))


def _favored(lib: float, ops: tuple[str, ...]) -> float:
    """The library side's time as BrainSlug's kernel is held against it."""
    epilogue = set(ops[_compute_at(ops) + 1:])
    ratio = (BARE_FAVOR_RATIO if not epilogue else FAVOR_RATIO if epilogue <= POST_OPS
             else EPILOGUE_FAVOR_RATIO)
    return lib * ratio + FAVOR_SECONDS


def _decided(times: list[tuple[int, float, float]], ops: tuple[str, ...]) -> bool:
    """Whether the first batch size's times decide alone: one side faster by
    more than `DECISIVE` (with the favor)."""
    (_, bs, lib), = times
    return abs(math.log(bs / _favored(lib, ops))) > math.log(DECISIVE)


def _brainslug_wins(times: list[tuple[int, float, float]], ops: tuple[str, ...]) -> bool:
    """Whether BrainSlug's kernel runs: the geometric mean over the batch sizes
    timed of its time over the library side's (with the favor) is at most 1."""
    return sum(math.log(bs / _favored(lib, ops)) for _, bs, lib in times) <= 0


def _compute_at(ops: tuple[str, ...]) -> int:
    """Position of the convolution or linear layer in a stack's layer ops."""
    return next(k for k, op in enumerate(ops) if op in COMPUTE)


def _linear_library_call(linear: Any, args: tuple[torch.Tensor, ...],
                         ops: tuple[str, ...]) -> Callable[[torch.Tensor], Any]:
    """The library plan's work for one linear layer with this epilogue: the
    layer (MKL, prepacked: `linear` is a `PackedLinear`) on the rows of its
    input, and one pass over its result (with a residual) where it has an
    epilogue. `args` are the kernel's activations, the input the largest of
    those with the layer's input features, a residual one of its result's
    shape."""
    epilogue = set(ops[_compute_at(ops) + 1:])
    x_at = max((i for i, a in enumerate(args) if a.shape[-1] == linear.in_features),
               key=lambda i: args[i].numel())
    x = args[x_at]
    rest = [a for i, a in enumerate(args) if i != x_at and a.shape[-1] == linear.out_features
            and a.shape[:-1] == x.shape[:-1]]
    if not epilogue:
        return lambda _: linear(x)
    if rest:
        residual = rest[0]
        return lambda _: torch.add(linear(x), residual)
    return lambda _: torch.relu(linear(x))


def _library_call(conv: Any, args: tuple[torch.Tensor, ...],
                  ops: tuple[str, ...]) -> Callable[[torch.Tensor], Any]:
    """The library plan's work for one convolution with this prologue and
    epilogue: a pass for the prologue (BrainSlug takes one only where the
    library plan runs it as a stack of its own: a squeeze-excite scale `x * s`
    is that multiply), the convolution, and one pass over its output (and a
    residual) unless oneDNN's post-ops apply the whole epilogue. A `cat` that
    starts the prologue (with a batch norm and activation after it) is one
    pass that reads its pieces and writes the convolution's input, as the
    library plan's stack does. `args` are the
    kernel's activations (the convolution's input, a scale, a residual: told
    apart by their shapes), and the first argument of the call is ignored
    (the convolution's input is among `args`)."""
    if "nn.linear" in ops:
        return _linear_library_call(conv, args, ops)
    at = ops.index("nn.conv2d")
    prologue, epilogue = ops[:at], set(ops[at + 1:])
    pieces = prologue[:1] == ("nn.cat",)
    inputs = [i for i, a in enumerate(args) if a.shape[1] == conv.in_channels]
    x_at = max(inputs, key=lambda i: args[i].numel()) if inputs and not pieces else 0
    x = args[x_at]
    rest = [i for i in range(len(args)) if i != x_at]
    residual = max((i for i in rest if args[i].shape[1] == conv.out_channels
                    and args[i].shape[2:] != (1, 1)),
                   key=lambda i: args[i].numel(), default=None) if "nn.add" in epilogue else None
    scales = [args[i] for i in rest if i != residual]

    def before() -> torch.Tensor:
        if not prologue:
            return x
        if pieces:  # DenseNet's cat -> BN -> ReLU: one pass over the pieces
            return torch.cat([args[i] for i in range(len(args)) if i != residual], 1)
        return torch.mul(x, scales[0]) if scales else torch.relu(x)

    if epilogue <= POST_OPS:  # (the add inside oneDNN's call)
        return lambda _: conv(before())
    if "nn.add" in epilogue and residual is not None:
        other = args[residual]
        return lambda _: torch.add(conv(before()), other)
    return lambda _: torch.relu(conv(before()))

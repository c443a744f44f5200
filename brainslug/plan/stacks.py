"""The stacks of a captured graph after `bs-form-stacks`, as the plan sees them:
report rows, how each stack is called (its binding), which framework nodes
bs-form-stacks removed, and which stacks were compiled."""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue

from brainslug.dialects import loop, nn
from brainslug.plan.capture import NODE_ATTR, Bound, Source
from brainslug.plan.report import PlanInfo, StackInfo


@dataclass
class StackBinding:
    """How the schedule calls one stack's kernel."""

    name: str
    members: set[str]                    # the framework nodes the stack computes
    inputs: list[Source]                 # in kernel argument order
    outputs: list[str]                   # node names, in kernel output order
    output_shapes: list[tuple[int, ...]]  # -1 for the batch
    in_place: dict[int, int] = field(default_factory=dict)
    """Output index -> the input whose buffer it may overwrite (`in_place_inputs`)."""

    def output_sizes(self) -> list[tuple[int, bool]]:
        """(elements per batch item, or in all without a batch; whether it has
        a batch) of each output."""
        out = []
        for shape in self.output_shapes:
            n = 1
            for d in shape:
                n *= d if d >= 0 else 1
            out.append((n, any(d < 0 for d in shape)))
        return out


def in_place_inputs(op: nn.StackOp) -> dict[int, int]:
    """Output index -> input index, where the output may be written into the
    input's buffer: the output is an elementwise add (then any unary
    elementwise ops) of which one operand is that input, of the output's own
    type and read by nothing else (a residual add), and the add's value flows
    only through elementwise ops to the yield. Each output point then reads
    the input at that point alone, once, before its write, so a kernel that
    writes every point once (register blocks guard the stores of their
    clamped columns and rows) consumes each input element before overwriting
    it. A norm, pool or convolution after the add would read it again in a
    later pass or in a tile's halo, after the write (XCiT's `x + γ·y` then
    LayerNorm), so such an add is not in place."""
    args = {id(a): k for k, a in enumerate(op.body.block.args)}
    out: dict[int, int] = {}
    for j, v in enumerate(op.yield_op.values):
        cur = v.owner
        while (isinstance(cur, Operation) and nn.is_elementwise(cur) and len(cur.operands) == 1
               and cur.results[0].type == v.type):
            cur = cur.operands[0].owner
        if (not isinstance(cur, nn.AddOp) or cur.results[0].type != v.type
                or not _flows_pointwise(cur)):
            continue
        for x in (cur.lhs, cur.rhs):
            k = args.get(id(x))
            if (k is not None and x.type == v.type and x.has_one_use()
                    and k not in out.values()):
                out[j] = k
                break
    return out


def _flows_pointwise(op: Operation) -> bool:
    """Whether every op that reads `op`'s value, directly or not, is
    elementwise or the stack's yield."""
    todo, seen = [op], set()
    while todo:
        cur = todo.pop()
        for use in (u for r in cur.results for u in r.uses):
            user = use.operation
            if isinstance(user, nn.YieldOp) or id(user) in seen:
                continue
            if not nn.is_elementwise(user):
                return False
            seen.add(id(user))
            todo.append(user)
    return True


def node_of(v: SSAValue) -> str | None:
    """The framework node whose value `v` is (through stack results)."""
    owner = v.owner
    if isinstance(owner, nn.StackOp):
        return node_of(owner.yield_op.values[v.index])
    if NODE_ATTR in getattr(owner, "attributes", {}):
        return owner.attributes[NODE_ATTR].data
    return None


def _bytes(v: SSAValue) -> int:
    n = 4
    for d in v.type.get_shape():
        n *= 1 if d < 0 else d
    return n


def _per_item(shape: tuple[int, ...] | list[int]) -> int:
    """Elements per batch item of a result shape (batch first)."""
    n = 1
    for d in shape[1:]:
        n *= max(d, 1)
    return n


def macs_per_item(op: Operation) -> int:
    """Multiply-adds per batch item of a convolution or linear layer, else 0."""
    if isinstance(op, nn.Conv2dOp):
        w = op.weight.type.get_shape()
        if op.layout_value == "NCHW":
            per_output = w[1] * w[2] * w[3]  # OIHW
        elif len(w) == 5:
            per_output = w[1] * w[2] * w[3]  # blocked [O/B, KH, KW, I/g, B]
        else:
            per_output = w[0] * w[1] * w[2]  # HWIO
        return per_output * _per_item(op.output.type.get_shape())
    if isinstance(op, nn.LinearOp):  # [O, K], or packed [.., K, O] / [.., K, B]
        k = op.weight.type.get_shape()[-2 if op.packed else -1]
        return k * _per_item(op.output.type.get_shape())
    return 0


MATH_OPS = ("nn.silu", "nn.sigmoid", "nn.tanh", "nn.gelu")
"""`nn` ops whose lowering computes exp, erf or tanh per element (their cost,
for the roofline: `bench.math_rate`)."""


def math_kind(op: Operation) -> str | None:
    """The math cost kind of a layer: its op name, "nn.gelu:tanh" for GELU's
    tanh form; None for a layer without vector math."""
    if op.name not in MATH_OPS:
        return None
    approximate = op.properties.get("approximate")
    if isinstance(approximate, StringAttr) and approximate.data == "tanh":
        return f"{op.name}:tanh"
    return op.name


def math_per_item(members: list[Operation]) -> dict[str, int]:
    """Elements per batch item that the layers compute with vector math, by kind."""
    counts: dict[str, int] = {}
    for o in members:
        if (kind := math_kind(o)) is not None:
            counts[kind] = counts.get(kind, 0) + _per_item(o.results[0].type.get_shape())
    return counts


def _layout_of(ops, default: str) -> str:
    for o in ops:
        if lay := getattr(o, "layout_value", None):
            return lay
    return default


def _source(v: SSAValue, args: dict[int, int], sources: list[Source]) -> Source:
    """Where stack input `v` comes from; `args`: id of a function argument -> its
    position."""
    if (k := args.get(id(v))) is not None:
        return sources[k]
    name = node_of(v)
    if name is None:
        raise KeyError(f"stack input {v} comes from no framework node")
    return name


def describe(fn: func.FuncOp, sources: list[Source], default_layout: str = "NCHW",
             ) -> tuple[list[StackInfo], list[StackBinding]]:
    """Report rows and bindings of the stacks of `fn` (after bs-form-stacks);
    `sources[i]` is where argument i of `fn` comes from."""
    infos, bindings = [], []
    args = {id(a): k for k, a in enumerate(fn.body.block.args)}
    for op in fn.body.block.ops:
        if not isinstance(op, nn.StackOp):
            continue
        members = [o for o in op.body.block.ops if not isinstance(o, nn.YieldOp)]
        unfused = sum(sum(_bytes(x) for x in o.operands) + sum(_bytes(r) for r in o.results)
                      for o in members)
        fused = sum(_bytes(x) for x in op.inputs) + sum(_bytes(r) for r in op.outputs)
        inputs = [_source(v, args, sources) for v in op.inputs]
        outs = [node_of(v) or "?" for v in op.yield_op.values]
        infos.append(StackInfo(
            op.stack_name_value,
            [f"{o.attributes[NODE_ATTR].data}: {o.name}" for o in members],
            [s.name if isinstance(s, Bound) else s for s in inputs],
            outs, _layout_of(members, default_layout), unfused, fused,
            flops=2 * sum(macs_per_item(o) for o in members),
            math=math_per_item(members)))
        bindings.append(StackBinding(
            op.stack_name_value,
            {o.attributes[NODE_ATTR].data for o in members if NODE_ATTR in o.attributes},
            inputs, outs, [tuple(r.type.get_shape()) for r in op.outputs],
            in_place_inputs(op)))
    return infos, bindings


def removed_aliases(fn: func.FuncOp, sources: list[Source]) -> dict[str, str]:
    """Nodes of dropout/identity layers (bs-form-stacks removes them) -> the
    node whose value they pass on. A node whose value a later op of its own
    defines (an identity whose result the frontend then converts to another
    memory order: ResNeSt's `act2` after its `contiguous()`) is no alias: its
    value is that op's."""
    args = list(fn.body.block.args)
    last = {op.attributes[NODE_ATTR].data: op for op in fn.body.block.ops
            if NODE_ATTR in op.attributes}
    out = {}
    for op in fn.body.block.ops:
        if not (nn.is_removable(op) and NODE_ATTR in op.attributes):
            continue
        if last[op.attributes[NODE_ATTR].data] is not op:
            continue
        v = op.operands[0]
        src = sources[args.index(v)] if v in args else node_of(v)
        if isinstance(src, str):
            out[op.attributes[NODE_ATTR].data] = src
    return out


def stack_launches(fn: func.FuncOp) -> tuple[dict[str, str], dict[str, str]]:
    """After the pipeline: stack name -> the kernel it runs (identical stacks
    share one), and stack name -> why it was not lowered (stacks left as `nn.stack`)."""
    launch_of = {
        op.attributes["bs.stack"].data: op.callee_name
        for op in fn.body.block.ops if isinstance(op, loop.LaunchOp)
    }
    fallback_stacks = {
        op.stack_name_value: op.attributes.get("bs.fallback", StringAttr("")).data
        for op in fn.body.block.ops if isinstance(op, nn.StackOp)
    }
    return launch_of, fallback_stacks


def record_library(info: PlanInfo, fn: func.FuncOp, fallback_stacks: dict[str, str],
                   library_reasons: dict[str, str], library_prefix: str = "") -> None:
    """Mark the stacks that run in the framework, and list the library calls
    (with the reasons of those that are fallbacks) in `info`."""
    for s in info.stacks:
        if s.name in fallback_stacks:
            s.compiled, s.reason = False, fallback_stacks[s.name] or "no loop lowering"
            info.fallbacks.append((s.name, s.reason))
    for op in fn.body.block.ops:
        if isinstance(op, nn.LibraryOp) and op.results:
            name = op.attributes[NODE_ATTR].data
            info.library.append((name, op.callee.data))
            if name in library_reasons:
                info.fallbacks.append((name, library_reasons[name]))
        elif isinstance(op, nn.Conv2dOp | nn.LinearOp):
            info.library.append((op.attributes[NODE_ATTR].data, library_prefix + op.name))

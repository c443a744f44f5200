"""bs-form-stacks: group memory-bound layers into `nn.stack` regions.

A stack is a maximal connected group of optimizable layers (elementwise ops,
batch-norm, pooling, add, mul, cat, flatten, reshape, mean, softmax). Groups
stay convex: two layers never share a stack when a path between them leaves
the group (through a convolution, say), since the stack would then depend on
itself. Dropout and identity are removed first. Everything outside a stack is a
library call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.traits import IsTerminator

from brainslug.dialects import loop_kernels, nn

VIEW_OPS = (nn.FlattenOp, nn.ReshapeOp)


COMPUTE_OPS = (nn.Conv2dOp, nn.LinearOp)
"""The compute-bound layers a stack may take with their epilogues (convolutions,
and linear layers: pointwise convolutions over their rows)."""


def stackable(op: Operation, include_compute: bool = False) -> str | None:
    """None if `op` may join a stack, else why not."""
    compute = include_compute and isinstance(op, COMPUTE_OPS)
    if not compute and (not nn.is_optimizable(op) or nn.is_removable(op)):
        return "not a memory-bound layer"
    if isinstance(op, nn.FlattenOp) and op.normalized_dims[0] == 0:
        return "flattening the batch dimension"
    if isinstance(op, nn.PermuteOp) and op.dims_values[0] != 0:
        return "the permute moves the batch dimension"
    if isinstance(op, nn.ReshapeOp):
        a, b = op.operands[0].type.get_shape(), op.results[0].type.get_shape()
        if not a or not b or a[0] != b[0]:
            return "the reshape changes the batch dimension"
    for v in (*op.operands, *op.results):
        t = v.type
        if not isinstance(t, TensorType) or t.element_type != f32:
            return f"{v.type} is not a float32 tensor"
        if any(d < 0 for d in t.get_shape()[1:]):
            return "only the batch (dim 0) may be dynamic"
    return None


@dataclass
class _Groups:
    """Union-find over group ids with the set of groups each one reaches
    through a path that leaves the group. Ids follow block order (a group per
    layer, made in order) and a merged group is named by its first id, so a
    group whose last layer comes before another's first can't depend on it:
    `depends` searches only what is after its target."""

    parent: list[int] = field(default_factory=list)
    indirect: list[set[int]] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    """Per group (root): the id of its last layer."""

    def new(self, indirect: Iterable[int]) -> int:
        g = len(self.parent)
        self.parent.append(g)
        self.indirect.append(set(indirect))
        self.last.append(g)
        return g

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def canon(self, gs: Iterable[int]) -> set[int]:
        return {self.find(g) for g in gs}

    def depends(self, starts: Iterable[int], target: int) -> bool:
        """Whether any group of `starts` is `target` or depends on it through
        paths that leave it (following `indirect`, which merges may have grown
        since)."""
        target = self.find(target)
        seen: set[int] = set()
        todo = [self.find(g) for g in starts]
        while todo:
            g = todo.pop()
            if g == target:
                return True
            if g in seen or self.last[g] < target:  # all of g is before target
                continue
            seen.add(g)
            todo.extend(r for h in self.indirect[g] if (r := self.find(h)) not in seen)
        return False

    def reaches(self, a: int, b: int) -> bool:
        """Whether group `a` depends on group `b` through a path that leaves `a`."""
        return self.depends(self.indirect[self.find(a)], b)

    def can_merge(self, a: int, b: int) -> bool:
        """Whether `a` and `b` can be one group without a cycle through
        layers outside it."""
        return not self.reaches(a, b) and not self.reaches(b, a)

    def union(self, a: int, b: int) -> int:
        a, b = sorted((self.find(a), self.find(b)))
        if a == b:
            return a
        self.parent[b] = a  # (named by its first layer)
        self.indirect[a] |= self.indirect[b]
        self.last[a] = max(self.last[a], self.last[b])
        return a


def remove_identities(block: Block) -> None:
    """Drops the layers that are the identity at inference (dropout), and
    flattens nested concatenations (`flatten_cats`)."""
    for op in list(block.ops):
        if nn.is_removable(op):
            op.results[0].replace_all_uses_with(op.operands[0])
            Rewriter.erase_op(op)
    flatten_cats(block)


def flatten_cats(block: Block) -> None:
    """A `cat` of a `cat` along the same axis reads the inner one's operands
    instead (Keras's DenseNet concatenates the previous concatenation with the
    new features, layer after layer): each then reads the layers' features in
    place, as PyTorch's does, and an inner `cat` that nothing else reads goes."""
    for op in list(block.ops):
        if not isinstance(op, nn.CatOp):
            continue
        inner = [v.owner for v in op.inputs if _same_cat(v.owner, op, block)]
        if not inner:
            continue
        flat: list[SSAValue] = []
        for v in op.inputs:
            flat += list(v.owner.inputs) if _same_cat(v.owner, op, block) else [v]  # type: ignore[union-attr]
        new = nn.CatOp(flat, op.axis_value, result_type=op.output.type)
        new.attributes |= op.attributes
        Rewriter.replace_op(op, new)
        for cat in dict.fromkeys(inner):
            if not cat.results[0].uses:  # type: ignore[union-attr]
                Rewriter.erase_op(cat)  # type: ignore[arg-type]


def _same_cat(owner: object, cat: nn.CatOp, block: Block) -> bool:
    return (isinstance(owner, nn.CatOp) and owner.parent_block() is block
            and owner.axis_value == cat.axis_value)


def group_layers(block: Block, include_compute: bool = False) -> dict[Operation, int]:
    """Assign each stackable op of `block` to a convex group."""
    groups = _Groups()
    group_of: dict[Operation, int] = {}
    indirect_of: dict[SSAValue, set[int]] = {}

    def reach(v: SSAValue) -> set[int]:
        """Groups that value `v` depends on, directly or not."""
        out = set(indirect_of.get(v, ()))
        if isinstance(v.owner, Operation) and v.owner in group_of:
            out.add(group_of[v.owner])
        return groups.canon(out)

    for op in block.ops:
        if stackable(op, include_compute) is not None:
            deps: set[int] = set()
            for v in op.operands:
                deps |= reach(v)
            for r in op.results:
                indirect_of[r] = deps
            continue
        indirect: set[int] = set()
        direct: list[int] = []
        for v in op.operands:
            indirect |= groups.canon(indirect_of.get(v, ()))
            if isinstance(v.owner, Operation) and v.owner in group_of:
                direct.append(groups.find(group_of[v.owner]))
        if nn.OPERAND_OF_NEXT in op.attributes and not _read_by_library(op, include_compute):
            # made for its user alone: it joins the user's group, not its producer's
            indirect |= set(direct)
            direct = []
        g = groups.new(indirect)
        merged: list[int] = []
        producers = list(dict.fromkeys(direct))
        for d in producers:
            # joining d makes a cycle when a group reached through a layer
            # outside, or another producer's group, is d or depends on it
            others = [groups.find(e) for e in producers if e != d and e not in merged]
            if groups.depends(indirect, d) or any(
                    groups.depends(groups.indirect[e], d) for e in others):
                continue
            if merged and not groups.can_merge(g, d):
                continue
            g = groups.union(d, g)
            merged.append(d)
        # a producer's group that this op does not join is one it depends on
        groups.indirect[groups.find(g)].update(d for d in direct if d not in merged)
        group_of[op] = g
        for r in op.results:
            indirect_of[r] = indirect
    return {op: groups.find(g) for op, g in group_of.items()}


def _read_by_library(op: Operation, include_compute: bool) -> bool:
    """Whether what `op` makes is read only by layers that don't stack
    (library calls), through reshapes: a copy such as `nn.permute` for a GEMM
    then joins its producer's stack, which writes the new order, instead of
    being a stack of its own that reads the tensor again."""
    seen: set[Operation] = set()
    todo = [u.operation for r in op.results for u in r.uses]
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if isinstance(user, nn.ReshapeOp | nn.FlattenOp):
            todo += [u.operation for r in user.results for u in r.uses]
        elif stackable(user, include_compute) is None:
            return False
    return bool(seen)


def _topological_sort(block: Block) -> None:
    """Stable topological order of the block's ops (stacks may move past users)."""
    ops = list(block.ops)
    terminator = ops.pop() if ops and ops[-1].has_trait(IsTerminator) else None
    position = {op: i for i, op in enumerate(ops)}
    placed: set[Operation] = set()
    order: list[Operation] = []

    def deps(op: Operation) -> list[Operation]:
        out = []
        for v in op.operands:
            o = v.owner
            if isinstance(o, Operation) and o in position and o not in placed:
                out.append(o)
        return out

    for op in ops:
        stack = [op]
        visiting: set[Operation] = set()
        while stack:
            top = stack[-1]
            if top in placed:
                stack.pop()
                continue
            pending = sorted(deps(top), key=position.__getitem__)
            if pending:
                if top in visiting:
                    raise ValueError(f"bs-form-stacks: a cycle through {top.name}")
                visiting.add(top)
                stack.extend(reversed(pending))
                continue
            placed.add(top)
            order.append(top)
            stack.pop()
    for op in ops:
        op.detach()
    for op in order:
        block.add_op(op)
    if terminator is not None:
        terminator.detach()
        block.add_op(terminator)


def build_stack(name: str, members: list[Operation]) -> nn.StackOp:
    """Move `members` (in block order) into a new nn.stack inserted before the last one."""
    member_set = set(members)
    inputs: list[SSAValue] = []
    for op in members:
        for v in op.operands:
            if (v.owner not in member_set) and v not in inputs:
                inputs.append(v)
    outputs: list[SSAValue] = [
        r
        for op in members
        for r in op.results
        if any(u.operation not in member_set for u in r.uses)
    ]
    body = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, body.args, strict=True))
    for op in members:
        new = op.clone(value_mapper=mapping)
        body.add_op(new)
        for a, b in zip(op.results, new.results, strict=True):
            mapping[a] = b
    body.add_op(nn.YieldOp(*[mapping[o] for o in outputs]))
    stack = nn.StackOp(name, inputs, [o.type for o in outputs], Region(body))
    last = members[-1]
    last.parent_block().insert_op_before(stack, last)
    for old, new in zip(outputs, stack.results, strict=True):
        old.replace_all_uses_with(new)
    for op in reversed(members):
        Rewriter.erase_op(op)
    return stack


def _compiled_contraction(op: Operation) -> bool:
    """A channels-last convolution, or a linear layer with a packed weight (a
    pointwise convolution over its rows), that BrainSlug compiles (with its
    epilogue)."""
    return ((isinstance(op, nn.Conv2dOp) and op.layout_value == "NHWC")
            or (isinstance(op, nn.LinearOp) and op.packed)) and \
        stackable(op, include_compute=True) is None


def _reads_permuted_operand(op: Operation) -> bool:
    """An operand of `op` is a permute made for it (`nn.OPERAND_OF_NEXT`)."""
    return any(isinstance(o.owner, Operation) and nn.OPERAND_OF_NEXT in o.owner.attributes
               for o in op.operands)


def _epilogue_step(op: Operation, value: SSAValue) -> bool:
    """`op` applies a pointwise layer to `value` (the convolution's running
    result) that can join it in registers: batch norm, an activation, or an
    add/mul with a tensor of the same shape or a vector of its channels (the
    innermost dim: a linear layer's bias that the stack adds, a layer scale)."""
    if not (nn.is_elementwise(op) or isinstance(op, nn.BatchNormOp)):
        return False
    if isinstance(op, nn.BatchNormOp) and op.operands[0] is not value:
        return False
    if _reads_permuted_operand(op):
        return False  # its permuted operand goes with it: a stack of their own
    channels = value.type.get_shape()[-1:]  # type: ignore[attr-defined]
    return (stackable(op) is None and all(r.type == value.type for r in op.results)
            and all(o.type == value.type or o.type.get_shape() == channels  # type: ignore[attr-defined]
                    for o in op.operands if o is not value
                    and not isinstance(op, nn.BatchNormOp)))


def depthwise(op: Operation) -> bool:
    """A convolution with one channel per group (MobileNet's 3×3)."""
    if not isinstance(op, nn.Conv2dOp) or op.groups_value < 2:
        return False
    cin, cout = op.operands[0].type, op.results[0].type
    axis = 3 if op.layout_value == "NHWC" else 1
    return op.groups_value == cin.get_shape()[axis] == cout.get_shape()[axis]  # type: ignore[attr-defined]


def pointwise(op: Operation) -> bool:
    """A 1×1 convolution of stride 1 without padding or groups."""
    if not isinstance(op, nn.Conv2dOp) or op.groups_value != 1:
        return False
    w = op.operands[1].type.get_shape()  # type: ignore[attr-defined]
    # HWIO, or blocked by output channels [O/B, KH, KW, I, B]; OIHW for NCHW
    taps = w[-4:-2] if op.layout_value == "NHWC" else w[2:4]
    return (tuple(taps) == (1, 1) and set(op.strides_values) == {1}
            and not any(op.padding_values))


def _joins(chain: list[Operation], prev: list[Operation], chain_bytes: int) -> bool:
    """Whether `chain` (a convolution with its epilogue) runs depth-first after
    `prev`, whose result only `chain`'s convolution reads:
    - a depthwise convolution after a convolution that is not depthwise, when
      that one's result is over `chain_bytes` per batch item (so that
      depth-first tiles of the cache size still leave several tiles per item
      for the threads): MobileNet's expand → depthwise;
    - a pointwise convolution after such a pair (its tiles are already made):
      the project convolution;
    - a pointwise convolution of one pixel after another (a squeeze-excite
      block's two fully connected layers on pooled channels)."""
    head = chain[0]
    value = prev[-1].results[0]
    if not value.has_one_use() or next(iter(value.uses)).operation is not head:
        return False
    convs = [o for o in prev if isinstance(o, nn.Conv2dOp)]
    if depthwise(head):
        return (len(convs) == 1 and not depthwise(convs[0])
                and 4 * math.prod(value.type.get_shape()[1:]) > chain_bytes)  # type: ignore[attr-defined]
    if pointwise(head) and len(convs) == 1 and pointwise(convs[0]) and \
            one_pixel(convs[0]) and one_pixel(head):
        return True
    return pointwise(head) and len(convs) == 2 and depthwise(convs[1])


def one_pixel(conv: nn.Conv2dOp) -> bool:
    """A channels-last convolution that reads and writes 1x1 pixels."""
    return conv.layout_value == "NHWC" and all(
        tuple(v.type.get_shape()[1:3]) == (1, 1)  # type: ignore[attr-defined]
        for v in (conv.operands[0], conv.results[0]))


def _prologue(conv: nn.Conv2dOp, block: Block, claimed: set[Operation]) -> list[Operation]:
    """The pointwise layers before `conv` whose results only it reads, in order,
    which then run tile by tile before it, out of cache:
    - a squeeze-excite block's per-channel scale (`x * s`, s broadcast over
      the pixels) before its project convolution (or its squeeze: `_squeeze`);
    - the pre-activation of a channel `cat` (DenseNet's cat -> BN -> ReLU): the
      convolution reads the pieces in place, and neither the concatenation
      nor its BN-ReLU output is written.
    Each computes a tensor of the convolution's input type, and none belongs
    to another chain. None where they would join the stack of the layer
    before them, whose result only they read: they then save no pass, and
    tile by tile before the convolution they cost a copy of its input. (A
    batch norm of another tensor stays with its own stack.)"""
    if one_pixel(conv) and (squeeze := _squeeze(conv, block, claimed)) is not None:
        return squeeze
    ops: list[Operation] = []
    value = conv.operands[0]
    while isinstance(op := value.owner, Operation) and op.parent_block() is block:
        if ops and _channel_cat(op) and value.has_one_use() and op not in claimed:
            return [op, *ops]
        if (op in claimed or not value.has_one_use()
                or not (nn.is_elementwise(op) or isinstance(op, nn.BatchNormOp))
                or stackable(op) is not None or len(op.results) != 1
                or op.results[0].type != conv.operands[0].type
                or _reads_permuted_operand(op)):
            absorbs = value.has_one_use() and op not in claimed and stackable(op) is None
            return [] if absorbs else _without_norm(ops)
        ops.insert(0, op)
        same = [o for o in op.operands if o.type == value.type]
        if len(same) != 1:
            break  # the chain goes on through one operand of the result's own type
        value = same[0]
    return _without_norm(ops)


def _without_norm(ops: list[Operation]) -> list[Operation]:
    """`ops` without a batch norm (not after a `cat`): the batch norm's stack
    would take the layers after it, whose input only they read."""
    return [] if any(isinstance(o, nn.BatchNormOp) for o in ops) else ops


def _channel_cat(op: Operation) -> bool:
    """A stackable `cat` along the channels of a channels-last tensor (a
    depth-first tile's rows then hold every piece's channels)."""
    if not isinstance(op, nn.CatOp) or stackable(op) is not None:
        return False
    return op.axis_value == len(op.results[0].type.get_shape()) - 1  # type: ignore[attr-defined]


def _squeeze(conv: nn.Conv2dOp, block: Block, claimed: set[Operation]) -> list[Operation] | None:
    """A squeeze-excite block's squeeze, the global average pool that only its
    first fully connected layer (`conv`, of one pixel) reads, as that layer's
    prologue: the excitation then runs in the pool's kernel, one call instead
    of two. None where the pool would join the stack of its input's layer
    (a batch norm and activation before it, not a convolution's chain): it
    pools the activation there as it is written, and here it would read it
    again."""
    pool = conv.operands[0].owner
    if not (isinstance(pool, nn.AdaptiveAvgPool2dOp) and pool.parent_block() is block
            and pool not in claimed and conv.operands[0].has_one_use()
            and stackable(pool) is None):
        return None
    source = pool.operands[0].owner
    if isinstance(source, Operation) and source.parent_block() is block and \
            source not in claimed and stackable(source) is None:
        return []
    return [pool]


def _pool_step(op: Operation, block: Block, claimed: set[Operation]) -> bool:
    """A channels-last max pool that ends a convolution's chain (ResNet's
    stem): bs-tile-depth-first then pools the convolution's tiles in cache
    (recomputing the rows that overlapping windows share), and the full-size
    activation is never written (resnet50 at batch 8: the stem and its pool
    took 7.14 ms in the network, 6.56 ms as one stack)."""
    return (isinstance(op, nn.MaxPool2dOp) and op.layout_value == "NHWC"
            and op.parent_block() is block and op not in claimed and stackable(op) is None)


def conv_epilogue_chains(block: Block, chain_bytes: int = 0,
                         prologues: bool = False) -> list[list[Operation]]:
    """Each compiled convolution with the chain of pointwise layers that use
    only its running result (BN, activations, a residual add), and a max pool
    that alone reads the chain's result (`_pool_step`). With
    `chain_bytes`, MobileNet's expand, depthwise and project convolutions are
    one chain (`_joins`): its expanded tensors then never leave the cache.
    With `prologues`, a convolution that starts a chain takes the pointwise
    layers that only it reads (`_prologue`), which then run tile by tile
    before it."""
    chains: list[list[Operation]] = []
    claimed: set[Operation] = set()  # a residual add joins the first chain that reaches it
    for op in block.ops:
        if not _compiled_contraction(op):
            continue
        chain, value = [op], op.results[0]
        while value.has_one_use():
            user = next(iter(value.uses)).operation
            if (user in claimed or user.parent_block() is not block
                    or not _epilogue_step(user, value)):
                break
            chain.append(user)
            value = user.results[0]
        if value.has_one_use() and _pool_step(
                user := next(iter(value.uses)).operation, block, claimed):
            chain.append(user)
        if chain_bytes and chains and _joins(chain, chains[-1], chain_bytes):
            chains[-1] += chain
        else:
            if prologues and isinstance(op, nn.Conv2dOp):
                chain = _prologue(op, block, claimed) + chain
            chains.append(chain)
        claimed.update(chain)
    return chains


def form_stacks(fn: func.FuncOp, first_index: int = 0, include_compute: bool = False,
                conv_epilogues: bool = False, conv_chains: int = 0,
                conv_prologues: bool = False) -> int:
    """Form the stacks of one graph function; returns the next free stack index."""
    block = fn.body.block
    remove_identities(block)
    if conv_epilogues:
        for chain in conv_epilogue_chains(block, conv_chains, conv_prologues):
            build_stack(f"stack{first_index}", chain)
            first_index += 1
    group_of = group_layers(block, include_compute)
    members: dict[int, list[Operation]] = {}
    for op in block.ops:
        if op in group_of:
            members.setdefault(group_of[op], []).append(op)
    index = first_index
    for ops in members.values():
        if all(isinstance(o, VIEW_OPS) for o in ops):
            continue  # a pure view is free in the framework
        build_stack(f"stack{index}", ops)
        index += 1
    _topological_sort(block)
    return index


@dataclass(frozen=True)
class FormStacksPass(ModulePass):
    """Group the optimizable layers of every graph function into nn.stack ops.

    With `include-compute=true`, convolutions and linear layers join stacks too
    and are lowered to loop nests (no framework is needed). With
    `conv-epilogues=true`, each channels-last convolution instead starts a stack
    of its own with the pointwise layers after it (its epilogue), which
    bs-register-tile applies to the accumulators in registers, and a max pool
    that alone reads their result, which bs-tile-depth-first runs tile by
    tile after the convolution. With
    `conv-chains=N` as well, a depthwise convolution joins the stack of the
    convolution before it where that one's result, over N bytes per batch
    item, feeds only it: bs-tile-depth-first then runs the two tile by tile.
    With `conv-prologues=true`, a convolution's stack also takes the pointwise
    layers before it that only it reads (a squeeze-excite scale), run tile by
    tile before it."""

    name = "bs-form-stacks"
    include_compute: bool = False
    conv_epilogues: bool = False
    conv_chains: int = 0
    conv_prologues: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        index = 0
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and not loop_kernels.is_kernel(fn) and fn.body.blocks:
                index = form_stacks(fn, index, self.include_compute, self.conv_epilogues,
                                    self.conv_chains, self.conv_prologues)

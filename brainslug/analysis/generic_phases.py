"""Structural keys of kernel phases, generic over extents.

A *phase* (a top-level `loop.nest`/`loop.tile` of a kernel) is canonicalized
into a key string and a list of integer *parameters*. Two phases with the same
key compute the same thing up to the parameter values and the buffers they
touch, so they can share one compiled function (bs-lower-to-llvm emits it once
and each use passes its own parameter values).

What becomes a parameter (generic mode):
- the static dims of every buffer the phase touches (the ABI keeps dynamic
  dims, such as the batch, in the kernel's slots);
- the static bounds of `loop.nest`, `loop.tile` and `simd.loop` (but not of
  a register block's `simd.loop`, see below);
- the static extents of `loop.in_bounds`/`simd.in_bounds`;
- the constants of affine maps that are added (offsets such as a `cat`
  operand's channel offset or a window's padding), not the ones that multiply
  or divide (strides, reshape divisors);
- the bounds of `loop.reduce` from `REDUCE_PARAMS` up (a convolution's input
  channels: such a loop is not unrolled whatever its length).

What stays in the key (it decides the shape of the code): window bounds (the
smaller bounds of `loop.reduce`), the output channels of a register block
(its `simd.loop` of V vectors: a family of convolutions shares them, and
LLVM then knows the blocks and their tail; with bs-register-tile's depthwise
blocks of 2 vectors, MobileNet-v2 and EfficientNet-B0 ran in 0.95-0.99 of
the time at batch 1 and 8, both plans compiled in one process and timed
interleaved in both orders; DenseNet's cold optimize() is unchanged), tile
steps, strides, `parallel`, op kinds,
constants (`arith.constant`, pads, inits), types (but with `allocas`, on a
CPU, the static dims of a `memref.alloca` outside a run are parameters: a
DenseNet layer's depth-first tile holds its growing input channels),
whether a `simd.loop` with sibling loops (merged `cat` pieces) or a register
block of V vectors has an extent that is a multiple of 16 (times V; then its
code has no masked tail) and the structure of the ops. In exact mode
(`generic=False`) everything is in the key; bs-dedup-kernels uses it to find
identical kernels.

*Runs* (with `roll`): consecutive sibling ops with regions and no results
that are the same code up to the buffers only they touch and their own
numbers (the pieces of a merged `cat`: a DenseNet layer has one per earlier
layer) are keyed once, as a loop over a table with one row per member (the
member's buffers and numbers). Their count is not in the key, so every layer
of a dense block shares one phase function, and its code size does not grow
with the layer's depth.

Parameters with the same value share one slot, and the key says which are
equal: the code then knows, as it did with the numbers built in, that two
buffers of the same shape have the same strides, or that a loop runs over a
whole dim (without that, LLVM keeps every stride in its own register and the
inner loops spill). The bounds of a `loop.nest` inside the phase are counts
(a convolution's chunks of input channels, its bands of rows): each has a
slot of its own, so that a count equal to another number by chance does not
split the key. The values 0 and 1 stay in the key: they fold away (lower
bounds, unit dims).

Buffers are numbered by first use inside the phase, values by definition
order, so SSA names do not matter. A scalar op at the kernel's top level that
the phase uses (`memref.dim`, constants) is part of the key where it is first
used: the lowering re-materialises it inside the phase.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from xdsl.dialects import memref
from xdsl.dialects.builtin import MemRefType
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.ir.affine import (
    AffineBinaryOpExpr,
    AffineBinaryOpKind,
    AffineConstantExpr,
    AffineExpr,
    AffineMap,
    AffineSymExpr,
)

from brainslug.analysis.ranges import inside_dims
from brainslug.dialects import loop, simd

DYNAMIC = loop.DYNAMIC

STATIC_INNER = False
"""Keep the innermost dim of buffers and the bounds of `simd.loop` static (in the
key) instead of parameters."""

REDUCE_PARAMS = 16
"""`loop.reduce` bounds from this up are parameters (a convolution's input
channels); smaller ones (a window's taps) stay in the key."""

KEEP = frozenset((0, 1))
"""Values that stay in the key rather than becoming parameters."""

WHOLE_CHUNKS = 16
"""A `simd.loop` (with sibling loops, or a register block of V vectors) whose
static extent is a multiple of this (times V) is keyed as such (`whole`), so
that its generic code has no masked tail (lanes 4, 8 and 16)."""


ROLL_MIN = 2
"""The fewest members of a rolled run."""


class NotGeneric(Exception):
    """The phase uses a value the canonicalizer does not know how to key."""


class _NotRollable(Exception):
    """A would-be run member uses a value that is not keyed yet outside it."""


@dataclass
class RunSignature:
    """A run of sibling ops keyed once: the generic code of `ops[0]` (the
    template) runs once per row of a table in the phase's parameter block.

    A row holds, for each of the member's own buffers (those no op of the
    phase before the run touches), a slot that refers to its pointer and one
    per dynamic dim (as a phase's buffers have), then the member's own
    parameters (sites `-1 - q` in the template's sites)."""

    ops: list[Operation]
    buffers: list[list[SSAValue]]
    """Per member, its own buffers in first-use order (the same types)."""
    params: list[list[int]]
    """Per member, its own parameter values in key order."""
    dims: list[list[int | None]] = field(default_factory=list)
    """Per own buffer, the phase-level sites of its static dims."""

    def row_size(self) -> int:
        return sum(1 + _dynamic(v) for v in self.buffers[0]) + len(self.params[0])


def _dynamic(v: SSAValue) -> int:
    return sum(1 for s in v.type.get_shape() if s < 0)  # type: ignore[attr-defined]


def local_site(site: int) -> int:
    """The index in a run's row parameters of a negative (run-local) site."""
    return -1 - site


@dataclass
class PhaseSignature:
    """A phase's key, the buffers it touches and its parameter values.

    A *site* is where an integer of the phase comes from in generic code: a
    parameter index, or None where the number stays as it is."""

    key: str
    buffers: list[SSAValue]
    """ABI buffers in phase-local order (first use)."""
    params: list[int]
    """Distinct parameter values, in key order."""
    bounds: dict[int, tuple[list[int | None], list[int | None]]] = field(default_factory=dict)
    """id(domain op) -> the sites of its lower and upper bounds."""
    extents: dict[int, list[int | None]] = field(default_factory=dict)
    """id(in_bounds op) -> the sites of its extents."""
    maps: dict[int, tuple[AffineMap, tuple[int | None, ...]]] = field(default_factory=dict)
    """id(access op) -> (its map, the sites of its offsets in `map_template` order)."""
    dims: list[list[int | None]] = field(default_factory=list)
    """Per buffer, the sites of its static dims (None for a dynamic dim, which the
    phase reads through the kernel's buffer slots, or for a number kept as is)."""
    allocas: dict[int, list[int | None]] = field(default_factory=dict)
    """id(memref.alloca) -> the sites of its static dims (a depth-first tile's
    scratch has the channels of the layers it holds)."""
    whole: set[int] = field(default_factory=set)
    """id(simd.loop) of the loops whose static extent is a multiple of
    `WHOLE_CHUNKS` lanes: no partial last chunk at any lane count dividing it."""
    runs: list[RunSignature] = field(default_factory=list)
    run_of: dict[int, int] = field(default_factory=dict)
    """id(member op) -> the index of its run in `runs`."""

    def buffer_index(self) -> dict[SSAValue, int]:
        return {v: j for j, v in enumerate(self.buffers)}

    def layout(self) -> tuple[list[int], int, int]:
        """Where the generic phase finds its inputs, relative to its `args` pointer:
        (per buffer, the slot that refers to its pointer, followed by one slot per
        dynamic dim that refers to its value; the first parameter slot; the block
        size)."""
        offsets = []
        k = 0
        for v in self.buffers:
            offsets.append(k)
            k += 1 + _dynamic(v)
        return offsets, k, k + len(self.params) + 2 * len(self.runs)

    def run_header(self, run: int) -> int:
        """The slot (relative to `args`) of run `run`'s member count; the next
        one holds where its table starts (also relative to `args`). The
        tables follow the fixed part of the block (`layout`)."""
        _, first, _ = self.layout()
        return first + len(self.params) + 2 * run


# ---------------------------------------------------------------------------- maps

_ADD = AffineBinaryOpKind.Add
_MAP_CACHE: dict[tuple[AffineMap, bool], tuple[str, tuple[int, ...]]] = {}


def map_template(amap: AffineMap, generic: bool = True) -> tuple[str, tuple[int, ...]]:
    """The map as text with its added constants replaced by `P` (when generic),
    and those constants in order."""
    ck = (amap, generic)
    if (hit := _MAP_CACHE.get(ck)) is not None:
        return hit
    consts: list[int] = []

    def walk(e: AffineExpr, ok: bool) -> str:
        if isinstance(e, AffineConstantExpr):
            if ok:
                consts.append(e.value)
                return "P"
            return str(e.value)
        if isinstance(e, AffineBinaryOpExpr):
            add = generic and e.kind is _ADD
            return f"({walk(e.lhs, add)} {e.kind.get_token()} {walk(e.rhs, add)})"
        return str(e)

    # a result that is a bare constant is a fixed position (a column of a
    # register block's partial sums), not an offset: it stays in the key
    text = f"{amap.num_dims};" + ",".join(
        walk(r, generic and not isinstance(r, AffineConstantExpr)) for r in amap.results)
    hit = _MAP_CACHE[ck] = (text, tuple(consts))
    return hit


def generalize_map(amap: AffineMap, sites: Sequence[int | None]) -> tuple[AffineExpr, ...]:
    """The map's results with the constants that `map_template` lists replaced by
    `AffineSymExpr(parameter)` where their site is a parameter."""
    nxt = iter(sites)

    def walk(e: AffineExpr, ok: bool) -> AffineExpr:
        if isinstance(e, AffineConstantExpr):
            if not ok:
                return e
            p = next(nxt)
            return e if p is None else AffineSymExpr(p)
        if isinstance(e, AffineBinaryOpExpr):
            add = e.kind is _ADD
            return AffineBinaryOpExpr(e.kind, walk(e.lhs, add), walk(e.rhs, add))
        return e

    return tuple(walk(r, not isinstance(r, AffineConstantExpr)) for r in amap.results)


# ---------------------------------------------------------------------------- keys

_STR: dict[Attribute, str] = {}


def _text(a: Attribute) -> str:
    s = _STR.get(a)
    if s is None:
        s = _STR[a] = str(a)
    return s


_PARAM_DOMAIN = (loop.NestOp, loop.TileOp, simd.LoopOp)
_ACCESS = (loop.LoadOp, loop.StoreOp, simd.LoadOp, simd.StoreOp)
_IN_BOUNDS = (loop.InBoundsOp, simd.InBoundsOp)


def _whole(op: simd.LoopOp) -> bool:
    """Whether the loop's extents are static multiples of its whole chunk
    (`WHOLE_CHUNKS` lanes, times its vectors) and a masked tail would cost
    much code: the loop is one of several siblings (the pieces of a merged
    `cat`, where the tail would be repeated per piece), or a register block
    (the tail repeats the whole reduction and its epilogue per column: a
    GELU epilogue's units took 5 s of LLVM each). Another lone loop is not
    keyed so: its phases keep sharing one function whatever their extents."""
    block = op.parent_block()
    if block is None or (op.num_vectors == 1 and sum(
            isinstance(o, simd.LoopOp) for o in block.ops) < 2):
        return False
    chunk = WHOLE_CHUNKS * op.num_vectors
    return all(
        isinstance(lb, int) and isinstance(ub, int) and (ub - lb) % chunk == 0
        for lb, ub in zip(op.lower_bounds(), op.upper_bounds(), strict=True)
    )


def _rollable(ops: Sequence[Operation], i: int) -> bool:
    """Whether `ops[i]` may start or continue a run: it has regions and no
    results, and a like op follows or precedes it."""
    op = ops[i]
    if not op.regions or op.results:
        return False
    near = [ops[j] for j in (i - 1, i + 1) if 0 <= j < len(ops)]
    return any(type(o) is type(op) for o in near)


class Canonicalizer:
    """Keys the phases (or whole bodies) of one kernel."""

    def __init__(self, top: Block, buffers: Collection[SSAValue], generic: bool = True,
                 roll: bool = False, allocas: bool = False):
        self.top = top
        self.abi = buffers
        self.generic = generic
        self.roll = roll and generic
        """Key runs of like siblings once (`RunSignature`)."""
        self.allocas = allocas and generic
        """The static dims of a `memref.alloca` (outside a run) are parameters."""

    # ------------------------------------------------------------------ entry points

    def phase(self, op: Operation) -> PhaseSignature:
        self._reset()
        self.root = op
        self._op(op)
        return self._finish()

    def body(self, args: Sequence[SSAValue]) -> str:
        """The key of the whole block (a kernel body) with `args` named by
        position (exact mode: identical keys mean identical kernels)."""
        self._reset()
        for i, a in enumerate(args):
            self.vals[a] = f"A{i}"
        self.out.append(",".join(_text(a.type) for a in args))
        for op in self.top.ops:
            if op not in self.done:
                self._op(op)
        return self._finish().key

    # ------------------------------------------------------------------ internals

    def _reset(self) -> None:
        self.out: list[str] = []
        self.vals: dict[SSAValue, str] = {}
        self.done: set[Operation] = set()
        self.n = 0
        self.sig = PhaseSignature("", [], [])
        self.classes: dict[int, int] = {}
        self.root: Operation | None = None
        self.local: list[SSAValue] | None = None
        """While a run member is keyed: its own buffers so far."""

    def _finish(self) -> PhaseSignature:
        sig = self.sig
        descs = []
        for v in sig.buffers:
            t = v.type
            assert isinstance(t, MemRefType)
            shape = t.get_shape()
            if not self.generic:
                descs.append(_text(t))
                continue
            toks = []
            sites: list[int | None] = []
            pieces = isinstance(v.owner, loop.PiecesOp)
            for d, size in enumerate(shape):
                if size < 0:
                    toks.append("?")
                    sites.append(None)
                elif STATIC_INNER and d == len(shape) - 1:
                    toks.append(str(size))
                    sites.append(None)
                else:
                    # the pieces' total width (a DenseNet layer's earlier
                    # layers) equals other numbers by chance only
                    tok, site = self._param(size, shared=not (pieces and d == len(shape) - 1))
                    toks.append(tok)
                    sites.append(site)
            sig.dims.append(sites)
            table = f"|pieces{v.owner.width}" if pieces else ""  # type: ignore[attr-defined]
            descs.append(f"{'x'.join(toks)}x{_text(t.element_type)}{table}")
        self.out.append("@" + ",".join(descs))
        sig.key = "\n".join(self.out)
        return sig

    def _param(self, value: int, shared: bool = True) -> tuple[str, int | None]:
        """The key token and site of a number that may become a parameter (equal
        numbers share one, unless not `shared`: then it has a slot of its own)."""
        if value in KEEP:
            return str(value), None
        p = self.classes.get(value) if shared else None
        if p is None:
            p = len(self.sig.params)
            self.sig.params.append(value)
            if shared:
                self.classes[value] = p
        if self.local is not None:
            return f"L{p}", -1 - p
        return f"P{p}", p

    def _params(self, values: Sequence[int]) -> tuple[str, list[int | None]]:
        toks = []
        sites: list[int | None] = []
        for s in values:
            if s == DYNAMIC:
                toks.append("D")
                sites.append(None)
            else:
                tok, site = self._param(s)
                toks.append(tok)
                sites.append(site)
        return ",".join(toks), sites

    def _val(self, v: SSAValue) -> str:
        t = self.vals.get(v)
        if t is not None:
            return t
        if v in self.abi:
            if self.local is not None:
                if isinstance(v.owner, loop.PiecesOp):
                    raise _NotRollable  # (its row would need the pieces' slots)
                if v not in self.local:
                    self.local.append(v)
                return f"R{self.local.index(v)}"
            t = self.vals[v] = f"B{len(self.sig.buffers)}"
            self.sig.buffers.append(v)
            return t
        owner = v.owner
        if isinstance(owner, Operation) and owner.parent_block() is self.top:
            if self.local is not None:
                raise _NotRollable
            self._op(owner)  # a top-level scalar op: keyed where first used
            return self.vals[v]
        raise NotGeneric(f"value {v} comes from outside the phase")

    def _bounds(self, op: loop._DomainOp, name: str) -> tuple[str, list[int | None]]:
        values = getattr(op, name).get_values()
        if isinstance(op, loop.ReduceOp):
            # a long reduction (a convolution's input channels) runs as a loop
            # whatever its length; a window's few taps unroll
            toks, sites = [], []
            for v in values:
                tok, site = self._param(v) if v >= REDUCE_PARAMS else (str(v), None)
                toks.append(f"{tok}" if site is None else f"r{tok}")
                sites.append(site)
            return ",".join(toks), sites
        if not isinstance(op, _PARAM_DOMAIN) or (isinstance(op, simd.LoopOp) and (
                STATIC_INNER or op.vectors is not None)):
            return ",".join(map(str, values)), [None] * len(values)
        if isinstance(op, loop.NestOp) and op is not self.root:
            # a nest inside the phase counts (a convolution's chunks of input
            # channels, its bands of rows): a count equal to some other number
            # by chance would split the key
            toks, sites = [], []
            for v in values:
                tok, site = ("D", None) if v == DYNAMIC else self._param(v, shared=False)
                toks.append(f"c{tok}")
                sites.append(site)
            return ",".join(toks), sites
        return self._params(values)

    def _props(self, op: Operation) -> str:
        props = op.properties
        parts = []
        generic = self.generic
        for k in sorted(props):
            a = props[k]
            if generic and k in ("lower", "upper") and isinstance(op, loop._DomainOp):
                text, sites = self._bounds(op, k)
                lo, up = self.sig.bounds.setdefault(id(op), ([], []))
                (lo if k == "lower" else up).extend(sites)
                parts.append(f"{k}=[{text}]")
            elif k == "map" and isinstance(op, _ACCESS + _IN_BOUNDS):
                amap = a.data  # type: ignore[attr-defined]
                text, consts = map_template(amap, generic)
                if consts:
                    toks, sites = self._params(consts)
                    self.sig.maps[id(op)] = (amap, tuple(sites))
                    text += "|" + toks
                parts.append(f"map={text}")
            elif generic and k == "extents" and isinstance(op, _IN_BOUNDS):
                toks, sites = self._params(a.get_values())  # type: ignore[attr-defined]
                self.sig.extents[id(op)] = sites
                parts.append(f"extents=[{toks}]")
            else:
                parts.append(f"{k}={_text(a)}")
        if generic and isinstance(op, loop.LoadOp | simd.LoadOp) and op.pad is not None:
            # which indices skip their bounds check depends on static extents
            parts.append("inside=" + "".join("1" if x else "0" for x in inside_dims(op)))
        if generic and isinstance(op, simd.LoopOp) and _whole(op):
            self.sig.whole.add(id(op))
            parts.append("whole")
        if not generic and op.attributes:
            parts.extend(f"{k}={_text(v)}" for k, v in sorted(op.attributes.items()))
        return ";".join(parts)

    def _op(self, op: Operation) -> None:
        if op.successors:
            raise NotGeneric(f"{op.name} has successors")
        self.done.add(op)
        operands = ",".join([self._val(v) for v in op.operands])
        props = self._props(op) if op.properties or op.attributes else ""
        types = []
        for r in op.results:
            self.vals[r] = self._name()
            types.append(_text(r.type))
        if self.allocas and self.local is None and isinstance(op, memref.AllocaOp):
            t = op.memref.type
            assert isinstance(t, MemRefType)
            toks, sites = self._params([DYNAMIC if d < 0 else d for d in t.get_shape()])
            self.sig.allocas[id(op)] = sites
            types = [f"alloca<{toks}x{_text(t.element_type)}>"]
        self.out.append(f"{op.name}({operands}){{{props}}}:{','.join(types)}")
        for region in op.regions:
            self.out.append("{")
            for block in region.blocks:
                for a in block.args:
                    self.vals[a] = self._name()
                self.out.append(f"^{','.join(_text(a.type) for a in block.args)}")
                self._ops(block)
            self.out.append("}")

    def _name(self) -> str:
        name = f"%{'l' if self.local is not None else ''}{self.n}"
        self.n += 1
        return name

    # ------------------------------------------------------------------ runs

    def _ops(self, block: Block) -> None:
        ops = list(block.ops)
        i = 0
        while i < len(ops):
            if self.roll and self.local is None and _rollable(ops, i):
                first = self._member(ops[i])
                members = [first] if first is not None else []
                j = i + 1
                while first is not None and j < len(ops) and _rollable(ops, j):
                    m = self._member(ops[j])
                    if m is None or m[0] != first[0]:
                        break
                    members.append(m)
                    j += 1
                if len(members) >= ROLL_MIN:
                    self._run(ops[i:j], members)
                    i = j
                    continue
            self._op(ops[i])
            i += 1

    def _member(self, op: Operation
                ) -> tuple[tuple[str, str], list[SSAValue], PhaseSignature] | None:
        """The key of `op` as a run member (its own buffers and numbers keyed
        locally) with its own buffers' types, its own buffers and its local
        signature; None where it uses a value that is not keyed yet outside it."""
        saved = self.out, self.n, self.sig, self.classes
        self.out, self.n, self.sig, self.classes = [], 0, PhaseSignature("", [], []), {}
        self.local = []
        try:
            self._op(op)
            own = self.local
            # members agree on their buffers' types; the run's key has them generic
            return ("\n".join(self.out), ",".join(_text(v.type) for v in own)), own, self.sig
        except _NotRollable:
            return None
        finally:
            self.local = None
            self.out, self.n, self.sig, self.classes = saved

    def _run(self, ops: list[Operation],
             members: list[tuple[tuple[str, str], list[SSAValue], PhaseSignature]]) -> None:
        key, own, local = members[0]
        run = RunSignature(ops, [m[1] for m in members], [m[2].params for m in members])
        sig = self.sig
        sig.bounds.update(local.bounds)
        sig.extents.update(local.extents)
        sig.maps.update(local.maps)
        sig.whole |= local.whole
        descs = []
        for v in own:
            toks, sites = [], []
            for size in v.type.get_shape():  # type: ignore[attr-defined]
                tok, site = ("?", None) if size < 0 else self._param(size)
                toks.append(tok)
                sites.append(site)
            run.dims.append(sites)
            descs.append(",".join(toks))
        for op in ops:
            sig.run_of[id(op)] = len(sig.runs)
            self.done.add(op)
        sig.runs.append(run)
        self.out.append(f"run[{';'.join(descs)}]{{\n{key[0]}\n}}")

"""A small emitter of xDSL `llvm` dialect functions.

It builds blocks and branches directly (loops are a header block whose
arguments are the induction variable and the loop-carried values), folds
integer arithmetic on Python ints, and keeps constants in the entry block.
Functions that the `llvm` dialect cannot express as ops are called by name and
declared once per module through `Declarations`; the backend defines the `bs.*`
helpers after translation to LLVM IR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xdsl.dialects import llvm
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    VectorType,
    f32,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

IVal = int | SSAValue
"""An i64 value that is folded while it is a Python int."""

PTR = llvm.LLVMPointerType()

ICMP = {p: i for i, p in enumerate(llvm.ICmpPredicateFlag)}


class Declarations:
    """External functions (libm, `bs.*` helpers) that a module's code calls."""

    def __init__(self) -> None:
        self.funcs: dict[str, llvm.LLVMFunctionType] = {}

    def declare(self, name: str, args: Sequence[Attribute], result: Attribute | None) -> None:
        ftype = llvm.LLVMFunctionType(list(args), result)
        if self.funcs.setdefault(name, ftype) != ftype:
            raise ValueError(f"conflicting declarations of {name}")

    def ops(self) -> list[llvm.FuncOp]:
        return [
            llvm.FuncOp(name, ftype, linkage=llvm.LinkageAttr("external"))
            for name, ftype in self.funcs.items()
        ]


def type_suffix(t: Attribute) -> str:
    """LLVM's intrinsic mangling of a (vector) type: f32, i64, v16f32, v8i1."""
    if isinstance(t, VectorType):
        return f"v{t.get_shape()[0]}{type_suffix(t.element_type)}"
    if isinstance(t, Float32Type):
        return "f32"
    if isinstance(t, IntegerType):
        return f"i{t.width.data}"
    raise ValueError(f"no intrinsic suffix for {t}")


class LLVMBuilder:
    """Builds one `llvm.func`; `block` is the insertion point."""

    def __init__(
        self,
        name: str,
        arg_types: Sequence[Attribute],
        decls: Declarations,
        props: dict[str, Attribute | None] | None = None,
    ):
        self.decls = decls
        self.entry = Block(arg_types=arg_types)
        self.func = llvm.FuncOp(
            name,
            llvm.LLVMFunctionType(list(arg_types), None),
            linkage=llvm.LinkageAttr("external"),
            body=Region(self.entry),
            other_props=props,
        )
        self.block = self.new_block()
        self._consts: dict[tuple[Attribute, object], SSAValue] = {}
        self.before_return: Callable[[], object] | None = None
        """Emitted before the return (`finish`), in the last block."""

    @property
    def args(self) -> tuple[SSAValue, ...]:
        return tuple(self.entry.args)

    def finish(self) -> llvm.FuncOp:
        """Terminates the entry block (constants, prologue) and the last block."""
        self.entry.add_op(llvm.BrOp(self.func.body.blocks[1]))
        if self.before_return is not None:
            self.before_return()
        self.add(llvm.ReturnOp())
        return self.func

    # ------------------------------------------------------------------ blocks

    def new_block(self, arg_types: Sequence[Attribute] = ()) -> Block:
        b = Block(arg_types=arg_types)
        self.func.body.add_block(b)
        return b

    def add(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if op.results else None  # type: ignore[return-value]

    def add_entry(self, op: Operation) -> SSAValue:
        """Adds a loop-invariant op to the entry block (which dominates all)."""
        self.entry.add_op(op)
        return op.results[0]

    # ------------------------------------------------------------------ constants

    def const(self, value: int | float, typ: Attribute = i64) -> SSAValue:
        # float.hex keeps -0.0 apart from 0.0 and makes NaN a usable key
        key = (typ, value.hex() if isinstance(value, float) else int(value))
        if (v := self._consts.get(key)) is None:
            if isinstance(typ, VectorType):
                lanes = typ.get_shape()[0]
                attr = DenseIntOrFPElementsAttr.from_list(typ, [value] * lanes)
            elif isinstance(typ, Float32Type):
                attr = FloatAttr(float(value), typ)
            else:
                attr = IntegerAttr(int(value), typ)
            v = self._consts[key] = self.add_entry(llvm.ConstantOp(attr, typ))
        return v

    def const_vector(self, values: Sequence[int | float], typ: VectorType) -> SSAValue:
        key = (typ, tuple(x.hex() if isinstance(x, float) else x for x in values))
        if (v := self._consts.get(key)) is None:
            attr = DenseIntOrFPElementsAttr.from_list(typ, list(values))
            v = self._consts[key] = self.add_entry(llvm.ConstantOp(attr, typ))
        return v

    def ssa(self, x: IVal) -> SSAValue:
        return self.const(x) if isinstance(x, int) else x

    # ------------------------------------------------------------------ i64 arithmetic

    def iadd(self, a: IVal, b: IVal) -> IVal:
        if isinstance(a, int) and isinstance(b, int):
            return a + b
        if b == 0:
            return a
        if a == 0:
            return b
        return self.add(llvm.AddOp(self.ssa(a), self.ssa(b)))

    def isub(self, a: IVal, b: IVal) -> IVal:
        if isinstance(a, int) and isinstance(b, int):
            return a - b
        if b == 0:
            return a
        return self.add(llvm.SubOp(self.ssa(a), self.ssa(b)))

    def imul(self, a: IVal, b: IVal) -> IVal:
        if isinstance(a, int) and isinstance(b, int):
            return a * b
        if a == 0 or b == 0:
            return 0
        if b == 1:
            return a
        if a == 1:
            return b
        return self.add(llvm.MulOp(self.ssa(a), self.ssa(b)))

    def idiv_floor(self, a: IVal, b: IVal) -> IVal:
        """Division rounding toward minus infinity."""
        if isinstance(a, int) and isinstance(b, int):
            return a // b
        if b == 1:
            return a
        av, bv = self.ssa(a), self.ssa(b)
        q = self.add(llvm.SDivOp(av, bv))
        r = self.add(llvm.SRemOp(av, bv))
        # q - 1 where r != 0 and sign(r) != sign(b)
        fix = self.add(
            llvm.AndOp(
                self.add(llvm.ICmpOp(r, self.zero_like(r), IntegerAttr(ICMP["ne"], i64))),
                self.add(
                    llvm.ICmpOp(
                        self.add(llvm.XOrOp(r, bv)),
                        self.zero_like(r),
                        IntegerAttr(ICMP["slt"], i64),
                    )
                ),
            )
        )
        return self.add(llvm.AddOp(q, self.add(llvm.SExtOp(fix, q.type))))

    def imod_floor(self, a: IVal, b: IVal) -> IVal:
        """Remainder with the sign of the divisor."""
        if isinstance(a, int) and isinstance(b, int):
            return a % b
        if b == 1:
            return 0
        av, bv = self.ssa(a), self.ssa(b)
        r = self.add(llvm.SRemOp(av, bv))
        fix = self.add(
            llvm.AndOp(
                self.add(llvm.ICmpOp(r, self.zero_like(r), IntegerAttr(ICMP["ne"], i64))),
                self.add(
                    llvm.ICmpOp(
                        self.add(llvm.XOrOp(r, bv)),
                        self.zero_like(r),
                        IntegerAttr(ICMP["slt"], i64),
                    )
                ),
            )
        )
        return self.add(llvm.AddOp(r, self.add(llvm.AndOp(bv, self.add(llvm.SExtOp(fix, r.type))))))

    def imin(self, a: IVal, b: IVal) -> IVal:
        if isinstance(a, int) and isinstance(b, int):
            return min(a, b)
        return self.intrinsic("llvm.smin", [self.ssa(a), self.ssa(b)])

    def imax(self, a: IVal, b: IVal) -> IVal:
        if isinstance(a, int) and isinstance(b, int):
            return max(a, b)
        return self.intrinsic("llvm.smax", [self.ssa(a), self.ssa(b)])

    def icmp(self, pred: str, a: IVal, b: IVal) -> SSAValue:
        return self.add(llvm.ICmpOp(self.ssa(a), self.ssa(b), IntegerAttr(ICMP[pred], i64)))

    def zero_like(self, v: SSAValue) -> SSAValue:
        return self.const(0, v.type)

    def and_(self, a: SSAValue | None, b: SSAValue) -> SSAValue:
        """`a and b`, where None stands for true."""
        return b if a is None else self.add(llvm.AndOp(a, b))

    # ------------------------------------------------------------------ calls

    def intrinsic(
        self, name: str, args: Sequence[SSAValue], result: Attribute | None = None, mangle=True
    ) -> SSAValue:
        """Calls an LLVM intrinsic; by default mangled by the first argument's type."""
        rtype = args[0].type if result is None else result
        full = f"{name}.{type_suffix(args[0].type)}" if mangle else name
        return self.add(llvm.CallIntrinsicOp(full, list(args), [rtype]))

    def call(self, name: str, args: Sequence[SSAValue], result: Attribute | None) -> SSAValue:
        """Calls an external function or `bs.*` helper, declaring it in the module."""
        self.decls.declare(name, [a.type for a in args], result)
        return self.add(llvm.CallOp(name, *args, return_type=result))

    # ------------------------------------------------------------------ memory

    def gep(
        self, ptr: SSAValue, offset: IVal, elem: Attribute = f32, inbounds: bool = True
    ) -> SSAValue:
        """`ptr + offset` elements of type `elem`."""
        if isinstance(offset, int) and offset == 0:
            return ptr
        return self.add(
            llvm.GEPOp(ptr, [llvm.GEP_USE_SSA_VAL], elem, [self.ssa(offset)], inbounds=inbounds)
        )

    def gep_entry(self, ptr: SSAValue, offset: IVal, elem: Attribute = i64) -> SSAValue:
        """`ptr + offset` elements, computed in the entry block."""
        if isinstance(offset, int) and offset == 0:
            return ptr
        return self.add_entry(
            llvm.GEPOp(ptr, [llvm.GEP_USE_SSA_VAL], elem, [self.ssa(offset)], inbounds=True)
        )

    def load(self, ptr: SSAValue, typ: Attribute, align: int = 4) -> SSAValue:
        return self.add(llvm.LoadOp(ptr, typ, alignment=align))

    def store(self, value: SSAValue, ptr: SSAValue, align: int = 4) -> None:
        self.add(llvm.StoreOp(value, ptr, alignment=align))

    # ------------------------------------------------------------------ vectors

    def splat(self, x: SSAValue, lanes: int) -> SSAValue:
        vt = VectorType(x.type, [lanes])
        if isinstance(op := x.owner, llvm.ConstantOp) and isinstance(
            v := op.value, IntegerAttr | FloatAttr
        ):
            return self.const(v.value.data, vt)
        ins = self.add(llvm.InsertElementOp(self.add_undef(vt), x, self.const(0, i32)))
        return self.add(
            llvm.ShuffleVectorOp(ins, ins, DenseArrayBase.from_list(i32, [0] * lanes), vt)
        )

    def lanes_of(self, v: SSAValue, start: int, count: int) -> SSAValue:
        """Lanes `start`..`start + count` of vector `v`, as a vector of `count`."""
        assert isinstance(vt := v.type, VectorType)
        return self.add(llvm.ShuffleVectorOp(
            v, v, DenseArrayBase.from_list(i32, list(range(start, start + count))),
            VectorType(vt.element_type, [count])))

    def concat(self, parts: Sequence[SSAValue]) -> SSAValue:
        """The vectors `parts` (of one lane count each) one after the other."""
        out = parts[0]
        for part in parts[1:]:
            assert isinstance(ot := out.type, VectorType) and isinstance(pt := part.type, VectorType)
            n, m = ot.get_shape()[0], pt.get_shape()[0]
            if m < n:  # (shufflevector takes operands of one type: repeat the part's lanes)
                part = self.add(llvm.ShuffleVectorOp(
                    part, part, DenseArrayBase.from_list(i32, [k % m for k in range(n)]),
                    VectorType(pt.element_type, [n])))
            out = self.add(llvm.ShuffleVectorOp(
                out, part, DenseArrayBase.from_list(i32, list(range(n + m))),
                VectorType(ot.element_type, [n + m])))
        return out

    def add_undef(self, vt: Attribute) -> SSAValue:
        key = (vt, "undef")
        if (v := self._consts.get(key)) is None:
            v = self._consts[key] = self.add_entry(llvm.UndefOp(vt))
        return v

    def iota(self, lanes: int, step: int = 1) -> SSAValue:
        """<0, step, 2*step, ...> as a vector of i64."""
        return self.const_vector([step * i for i in range(lanes)], VectorType(i64, [lanes]))

    # ------------------------------------------------------------------ control flow

    def loop(
        self,
        lb: IVal,
        ub: IVal,
        step: IVal,
        body: Callable[[SSAValue, list[SSAValue]], Sequence[SSAValue]],
        init: Sequence[SSAValue] = (),
        pred: str = "slt",
    ) -> tuple[SSAValue, list[SSAValue]]:
        """`for (iv = lb; iv pred ub; iv += step)`; returns the final iv and carried values."""
        header = self.new_block([i64, *(v.type for v in init)])
        body_block = self.new_block()
        exit_block = self.new_block()
        self.add(llvm.BrOp(header, self.ssa(lb), *init))
        self.block = header
        iv, *carried = header.args
        self.add(llvm.CondBrOp(self.icmp(pred, iv, ub), body_block, [], exit_block, []))
        self.block = body_block
        new = body(iv, list(carried))
        self.add(llvm.BrOp(header, self.ssa(self.iadd(iv, step)), *new))
        self.block = exit_block
        return iv, list(carried)

    def if_then(self, cond: SSAValue, then: Callable[[], None]) -> None:
        then_block = self.new_block()
        merge = self.new_block()
        self.add(llvm.CondBrOp(cond, then_block, [], merge, []))
        self.block = then_block
        then()
        self.add(llvm.BrOp(merge))
        self.block = merge

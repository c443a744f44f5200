"""Kernels in the `loop` dialect: the marker of kernel functions,
`loop.pieces` (like kernel arguments read as one buffer), and
`loop.kernel_info`, the kernel ABI that bs-lower-to-llvm leaves for the
runtime (with `#loop.gpu_launch`, how a GPU launches its phases).

Kernels are `func.func`s with memref arguments marked `bs.kernel`; after
bs-lower-to-llvm each is a set of phase functions plus its `loop.kernel_info`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeGuard

from xdsl.dialects import func
from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, Operation, ParametrizedAttribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    param_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import (
    NoTerminator,
)
from xdsl.utils.exceptions import VerifyException

KERNEL_ATTR = "bs.kernel"
"""The unit attribute that marks a `func.func` as a kernel."""


def is_kernel(op: Operation | None) -> TypeGuard[func.FuncOp]:
    """Whether `op` is a kernel function."""
    return isinstance(op, func.FuncOp) and KERNEL_ATTR in op.attributes


def mark_kernel(fn: func.FuncOp) -> None:
    """Marks `fn` as a kernel function."""
    fn.attributes[KERNEL_ATTR] = UnitAttr()


def kernel_functions(module: ModuleOp) -> list[func.FuncOp]:
    """The kernel functions of `module`, in order."""
    return [op for op in module.ops if is_kernel(op)]


@irdl_op_definition
class PiecesOp(IRDLOperation):
    """Like kernel arguments read side by side along their last dim, as one
    read-only buffer (the pieces of a `cat`), without a copy: an access finds
    its piece through the kernel's slot array. The pieces are consecutive
    arguments of the kernel, so that their slots are evenly spaced, and the
    piece count is a number in the code, not part of it (every layer of a
    dense block reads its growing list of pieces with one function)."""

    name = "loop.pieces"
    pieces = var_operand_def(MemRefType)
    result = result_def(MemRefType)
    assembly_format = "$pieces attr-dict `:` type($pieces) `->` type($result)"

    def __init__(self, pieces: Sequence[SSAValue]):
        t = pieces[0].type
        assert isinstance(t, MemRefType)
        shape = list(t.get_shape())
        shape[-1] *= len(pieces)
        super().__init__(operands=[pieces], result_types=[MemRefType(t.element_type, shape)])

    @property
    def width(self) -> int:
        """The extent of each piece along the last dim."""
        return self.pieces[0].type.get_shape()[-1]  # type: ignore[attr-defined]

    def verify_(self) -> None:
        types = {v.type for v in self.pieces}
        if len(self.pieces) < 2 or len(types) != 1:
            raise VerifyException("loop.pieces takes two or more buffers of one type")
        (t,) = types
        r = self.result.type
        assert isinstance(t, MemRefType) and isinstance(r, MemRefType)
        shape = list(t.get_shape())
        shape[-1] *= len(self.pieces)
        if r.element_type != t.element_type or list(r.get_shape()) != shape \
                or shape[-1] < 0:
            raise VerifyException(
                f"loop.pieces of {len(self.pieces)} {t} must be {MemRefType(t.element_type, shape)}")
        block = self.parent_block()
        if block is None or not is_kernel(block.parent_op()):
            raise VerifyException("loop.pieces must be at the top level of a kernel")
        args = list(block.args)
        if not all(v in args for v in self.pieces) or [args.index(v) for v in self.pieces] != \
                list(range(args.index(self.pieces[0]), args.index(self.pieces[0]) + len(self.pieces))):
            raise VerifyException("loop.pieces reads consecutive arguments of its kernel")


GPU_LAUNCH_ARRAYS = ("lanes", "tiles", "groups")
"""The per-phase and per-launch arrays of `GpuLaunchAttr`, in printed order."""


@irdl_attr_definition
class GpuLaunchAttr(ParametrizedAttribute):
    """How the CUDA runtime launches the phases of a kernel lowered for nvptx:
    `lanes`, each phase's static lane extent (the block's x; 0: unknown, 1:
    serial); `tiles`, each phase's tiles per batch item in block mode (0: not a
    block-mode tile); `groups`, how many consecutive phases each launch runs;
    `arch`, the SM architecture the kernel was lowered for.

    `#loop.gpu_launch<lanes = [37, 13], tiles = [0, 0], groups = [1, 1], arch = "sm_90">`
    """

    name = "loop.gpu_launch"
    lanes: DenseArrayBase = param_def(DenseArrayBase.constr(i64))
    tiles: DenseArrayBase = param_def(DenseArrayBase.constr(i64))
    groups: DenseArrayBase = param_def(DenseArrayBase.constr(i64))
    arch: StringAttr

    def __init__(self, lanes: Sequence[int], tiles: Sequence[int], groups: Sequence[int], arch: str):
        super().__init__(
            *(DenseArrayBase.from_list(i64, list(v)) for v in (lanes, tiles, groups)),
            StringAttr(arch),
        )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            arrays = []
            for key in GPU_LAUNCH_ARRAYS:
                parser.parse_keyword(key)
                parser.parse_punctuation("=")
                values = parser.parse_comma_separated_list(
                    AttrParser.Delimiter.SQUARE, parser.parse_integer
                )
                arrays.append(DenseArrayBase.from_list(i64, values))
                parser.parse_punctuation(",")
            parser.parse_keyword("arch")
            parser.parse_punctuation("=")
            arch = StringAttr(parser.parse_str_literal())
        return (*arrays, arch)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            for key in GPU_LAUNCH_ARRAYS:
                printer.print_string(f"{key} = [")
                printer.print_list(getattr(self, key).get_values(), printer.print_int)
                printer.print_string("], ")
            printer.print_string("arch = ")
            printer.print_string_literal(self.arch.data)

    def verify(self) -> None:
        lanes, tiles, groups = (getattr(self, k).get_values() for k in GPU_LAUNCH_ARRAYS)
        if len(tiles) != len(lanes):
            raise VerifyException(
                f"loop.gpu_launch: {len(lanes)} lane entries but {len(tiles)} tile entries"
            )
        if any(v < 0 for v in (*lanes, *tiles)):
            raise VerifyException("loop.gpu_launch: lane and tile counts must be >= 0")
        if any(g < 1 for g in groups):
            raise VerifyException("loop.gpu_launch: every launch group runs at least one phase")
        if sum(groups) != len(lanes):
            raise VerifyException(
                f"loop.gpu_launch: the launch groups run {sum(groups)} phases but there are "
                f"{len(lanes)} lane entries"
            )
        if not re.fullmatch(r"sm_\d+[af]?", self.arch.data):
            raise VerifyException(
                f"loop.gpu_launch: arch must be an SM architecture such as sm_90, "
                f"got '{self.arch.data}'"
            )


@irdl_op_definition
class KernelInfoOp(IRDLOperation):
    """Left by bs-lower-to-llvm for the runtime: how to call kernel `kernel`.

    `phases` are the entry points to call in order (kernels may share them);
    `buffers` the memref type of every ABI argument: the `num_args` kernel
    arguments, then the scratch buffers; `work` the number of points of each
    phase per batch item (a threading hint); `parallel` the number of parallel
    (thread-split) dims of each phase. `scratch_dims` has an (argument, dim)
    pair for each dynamic dim of each scratch buffer, in order: the extent of
    that argument dim, or (-1, -1) for the batch. `slots` is the initial
    content of the kernel's i64 slot array: the buffer slots (filled per call),
    then each phase's parameter block; phase i is called with `args` pointing
    at slot `phase_args[i]`. Without them the array is just the buffer slots
    and every phase gets slot 0. `gpu_launch` is the launch shape of a kernel
    lowered for nvptx.
    """

    name = "loop.kernel_info"
    num_args = prop_def(IntegerAttr[I64])
    parallel = prop_def(DenseArrayBase.constr(i64))
    scratch_dims = prop_def(DenseArrayBase.constr(i64))
    gpu_launch = opt_prop_def(GpuLaunchAttr)
    kernel = prop_def(StringAttr)
    phases = prop_def(ArrayAttr[StringAttr])
    buffers = prop_def(ArrayAttr[MemRefType])
    work = prop_def(DenseArrayBase)
    target = prop_def(StringAttr)
    phase_args = opt_prop_def(DenseArrayBase)
    slots = opt_prop_def(DenseArrayBase)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(NoTerminator())
    assembly_format = "attr-dict"

    def __init__(
        self,
        kernel: str,
        phases: Sequence[str],
        buffers: Sequence[Attribute],
        work: Sequence[int],
        target: str,
        num_args: int,
        parallel: Sequence[int],
        scratch_dims: Sequence[tuple[int, int]],
        phase_args: Sequence[int] | None = None,
        slots: Sequence[int] | None = None,
        gpu_launch: GpuLaunchAttr | None = None,
    ):
        props: dict[str, Attribute] = {
            "num_args": IntegerAttr(num_args, i64),
            "parallel": DenseArrayBase.from_list(i64, list(parallel)),
            "scratch_dims": DenseArrayBase.from_list(i64, [v for p in scratch_dims for v in p]),
        }
        if gpu_launch is not None:
            props["gpu_launch"] = gpu_launch
        props |= {
            "kernel": StringAttr(kernel),
            "phases": ArrayAttr([StringAttr(p) for p in phases]),
            "buffers": ArrayAttr(list(buffers)),
            "work": DenseArrayBase.from_list(i64, list(work)),
        }
        if phase_args is not None:
            props["phase_args"] = DenseArrayBase.from_list(i64, list(phase_args))
        if slots is not None:
            props["slots"] = DenseArrayBase.from_list(i64, list(slots))
        props["target"] = StringAttr(target)  # printed last
        super().__init__(properties=props)

    def scratch_pairs(self) -> list[tuple[int, int]]:
        """`scratch_dims` as (argument, dim) pairs."""
        flat = self.scratch_dims.get_values()
        return list(zip(flat[::2], flat[1::2], strict=True))

    def verify_(self) -> None:
        n = len(self.phases)
        if len(self.work.get_values()) != n:
            raise VerifyException(
                f"loop.kernel_info: {n} phases but {len(self.work.get_values())} work hints"
            )
        if len(par := self.parallel.get_values()) != n:
            raise VerifyException(f"loop.kernel_info: {n} phases but {len(par)} parallel entries")
        if any(p < 0 for p in par):
            raise VerifyException("loop.kernel_info: a phase's parallel dims must be >= 0")
        if self.phase_args is not None:
            offs = self.phase_args.get_values()
            size = len(self.slots.get_values()) if self.slots is not None else None
            if len(offs) != n:
                raise VerifyException(
                    f"loop.kernel_info: {n} phases but {len(offs)} phase_args"
                )
            if size is not None and any(not 0 <= o <= size for o in offs):
                raise VerifyException("loop.kernel_info: a phase_args offset is outside the slots")
        self._verify_buffers()
        if self.gpu_launch is not None and len(self.gpu_launch.lanes) != n:
            raise VerifyException(
                f"loop.kernel_info: {n} phases but gpu_launch describes {len(self.gpu_launch.lanes)}"
            )

    def _verify_buffers(self) -> None:
        shapes = [t.get_shape() for t in self.buffers]
        num_args = self.num_args.value.data
        if not 0 <= num_args <= len(shapes):
            raise VerifyException(
                f"loop.kernel_info: num_args is {num_args} but there are {len(shapes)} buffers"
            )
        if len(self.scratch_dims) % 2:
            raise VerifyException("loop.kernel_info: scratch_dims must hold (argument, dim) pairs")
        dynamic = sum(s < 0 for shape in shapes[num_args:] for s in shape)
        pairs = self.scratch_pairs()
        if len(pairs) != dynamic:
            raise VerifyException(
                f"loop.kernel_info: the scratch buffers have {dynamic} dynamic dims but "
                f"scratch_dims has {len(pairs)} (argument, dim) pairs"
            )
        for arg, dim in pairs:
            if (arg, dim) != (-1, -1) and not (
                0 <= arg < num_args and 0 <= dim < len(shapes[arg])
            ):
                raise VerifyException(
                    f"loop.kernel_info: scratch_dims pair ({arg}, {dim}) is neither a dim of "
                    f"one of the {num_args} arguments nor (-1, -1)"
                )

"""Stacks and library calls: `nn.stack` (a group of memory-bound layers), its
terminator `nn.yield`, and `nn.library` (a layer the framework runs)."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.ir import Attribute, Region
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    lazy_traits_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsolatedFromAbove, IsTerminator, Pure, RecursiveMemoryEffect

from brainslug.dialects.nn.base import Operand, verify_error

OPERAND_OF_NEXT = "bs.operand_of_next"
"""Discardable unit attribute of a layer that a frontend made for its user
alone (a permute into the user's memory order): `bs-form-stacks` puts it in
its user's stack, never with its producer."""


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminator of `nn.stack`: the stack's results."""

    name = "nn.yield"

    values = var_operand_def(TensorType)

    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = lazy_traits_def(lambda: (IsTerminator(), HasParent(StackOp), Pure()))

    def __init__(self, *values: Operand):
        super().__init__(operands=[list(values)])


@irdl_op_definition
class LibraryOp(IRDLOperation):
    """A layer BrainSlug does not optimize: the framework runs it (`callee` names
    it, e.g. `torch.transpose`). Stack formation sees it as a barrier."""

    name = "nn.library"
    callee = prop_def(StringAttr)
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$callee `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs)"

    def __init__(self, callee: str, inputs: Sequence[Operand], result_types: Sequence[Attribute]):
        super().__init__(
            operands=[list(inputs)],
            result_types=[list(result_types)],
            properties={"callee": StringAttr(callee)},
        )


@irdl_op_definition
class StackOp(IRDLOperation):
    """A BrainSlug stack: a group of memory-bound layers with explicit inputs
    and outputs.

    The single block of `body` takes arguments of the types of `inputs` and
    ends with `nn.yield` of values of the result types. The body only uses its
    block arguments (IsolatedFromAbove).
    """

    name = "nn.stack"

    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    stack_name = prop_def(StringAttr)
    body = region_def("single_block")

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$stack_name ` ` `(` $inputs `)` attr-dict-with-keyword `:` "
        "functional-type($inputs, $outputs) $body"
    )
    traits = traits_def(IsolatedFromAbove(), RecursiveMemoryEffect())

    def __init__(
        self,
        name: str | StringAttr,
        inputs: Sequence[Operand],
        result_types: Sequence[Attribute],
        body: Region,
    ):
        if isinstance(name, str):
            name = StringAttr(name)
        super().__init__(
            operands=[list(inputs)],
            result_types=[list(result_types)],
            properties={"stack_name": name},
            regions=[body],
        )

    @property
    def stack_name_value(self) -> str:
        return self.stack_name.data

    @property
    def yield_op(self) -> YieldOp:
        last = self.body.block.last_op
        if not isinstance(last, YieldOp):
            raise verify_error(self.name, "body must end with nn.yield")
        return last

    def verify_(self) -> None:
        n = f"{self.name} {self.stack_name}"
        block = self.body.block
        arg_types = [a.type for a in block.args]
        in_types = [v.type for v in self.inputs]
        if arg_types != in_types:
            raise verify_error(
                n,
                f"body block arguments have types ({_format_types(arg_types)}), "
                f"inputs have types ({_format_types(in_types)})",
            )
        last = block.last_op
        if not isinstance(last, YieldOp):
            found = "nothing" if last is None else last.name
            raise verify_error(n, f"body must end with nn.yield, found {found}")
        yield_types = [v.type for v in last.values]
        out_types = [r.type for r in self.outputs]
        if yield_types != out_types:
            raise verify_error(
                n,
                f"nn.yield has types ({_format_types(yield_types)}), results have "
                f"types ({_format_types(out_types)})",
            )


def _format_types(types: Sequence[Attribute]) -> str:
    return ", ".join(str(t) for t in types)

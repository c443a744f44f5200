"""An IRDL constraint for string properties that spell a `StrEnum` member.

The property stays a `StringAttr`, so the IR prints as before (`kind = "max"`),
while the op's accessor returns the enum and the verifier names the op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute
from xdsl.irdl import AttrConstraint, IntConstraint, VerificationContext
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum


@dataclass(frozen=True)
class StrEnumConstraint(AttrConstraint[StringAttr]):
    """A `StringAttr` that spells a member of `enum`.

    Otherwise the error is `message` with `{value}` (the string given) and
    `{members}` (the tuple of allowed strings) filled in.
    """

    enum: type[StrEnum]
    message: str

    def verify(self, attr: Attribute, constraint_context: VerificationContext) -> None:
        if not isinstance(attr, StringAttr):
            raise VerifyException(f"{attr} should be of base attribute {StringAttr.name}")
        members = tuple(m.value for m in self.enum)
        if attr.data not in members:
            raise VerifyException(self.message.format(value=attr.data, members=members))

    def get_bases(self) -> set[type[Attribute]]:
        return {StringAttr}

    def mapping_type_vars(
        self, type_var_mapping: Mapping[TypeVar, AttrConstraint | IntConstraint]
    ) -> StrEnumConstraint:
        return self

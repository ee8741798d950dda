"""A domain enum and its protobuf namesake, matched by name instead of a hand-kept table.

Every service mirrors some enums of ``protos/`` in its ``domain.py`` (``ExitReason``, ``ColumnType``, a
build's ``Phase``...). :func:`proto_numbers` pairs each member with the value called ``PREFIX_`` + its
name in the protobuf enum, so a member added on one side and not the other fails at import, naming it,
instead of being answered UNSPECIFIED at run time.
"""

from __future__ import annotations

import enum
from typing import Protocol, TypeVar

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V", bound=int)
V_co = TypeVar("V_co", bound=int, covariant=True)


class ProtoEnum(Protocol[V_co]):
    """A generated protobuf enum (``EnumTypeWrapper``): its values by name."""

    def Value(self, name: str) -> V_co: ...


def proto_numbers(domain: type[E], proto: ProtoEnum[V], prefix: str) -> dict[E, V]:
    """Each member of ``domain`` with the number of ``prefix + member.name`` in ``proto``."""
    numbers: dict[E, V] = {}
    for member in domain:
        try:
            numbers[member] = proto.Value(prefix + member.name)
        except ValueError:
            raise LookupError(
                f"{domain.__name__}.{member.name} has no {prefix}{member.name} in the proto"
            ) from None
    return numbers


def from_proto(numbers: dict[E, V]) -> dict[V, E]:
    """The reverse of a :func:`proto_numbers` table: protobuf numbers to members."""
    return {number: member for member, number in numbers.items()}

"""protovalidate rules (declared in the protos) → :class:`InvalidArgument` with field violations."""

from __future__ import annotations

from typing import Any

import protovalidate

from zehanx_runtime.errors import FieldViolation, InvalidArgument

_validator = protovalidate.Validator()


def field_path(violation: Any) -> str:
    """Render a protovalidate field path as ``sources[0].url`` / ``env["KEY"]``."""
    parts: list[str] = []
    field = violation.proto.field
    if field is None:  # a message-level rule (CEL on the message) names no field
        return ""
    for element in field.elements:
        name = element.field_name
        subscript = ""
        kind = element.subscript
        if kind is not None:
            value = getattr(kind, "value", kind)
            subscript = f'["{value}"]' if isinstance(value, str) else f"[{value}]"
        parts.append(f"{'.' if parts and name else ''}{name}{subscript}")
    return "".join(parts)


def violations_of(message: Any) -> list[FieldViolation]:
    """All rule violations of ``message`` (empty when valid)."""
    found = []
    for v in _validator.collect_violations(message):
        path = field_path(v) or "(message)"
        found.append(FieldViolation(field=path, description=v.proto.message, reason=v.proto.rule_id))
    return found


def validate(message: Any) -> None:
    """Raise :class:`InvalidArgument` listing every violated rule of ``message``."""
    found = violations_of(message)
    if found:
        summary = "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        more = f" (+{len(found) - 5} more)" if len(found) > 5 else ""
        raise InvalidArgument(
            f"invalid {type(message).__name__}: {summary}{more}",
            violations=found,
            reason="INVALID_REQUEST",
        )

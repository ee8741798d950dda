"""Opaque page tokens for the List RPCs.

A token is url-safe base64 of a small JSON object: the list it belongs to, a fingerprint of the filter
it was made with, and the keyset position to continue after. A token from another list, another
filter, or garbage is INVALID_ARGUMENT with a ``page_token`` field violation. Every list reads one item
beyond its page and cuts it with :func:`page_of`; the stores' lists ordered by time go through
``zehanx_gateway.store.base.PoolStore._keyset_page``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_gateway.domain import Page

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; larger than the maximum is capped (AIP-158)."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", "must be >= 0", "page_size.negative")],
        )
    return default if requested == 0 else min(requested, maximum)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(kind: str, filter_fingerprint: str, position: dict[str, Any]) -> str:
    body = json.dumps({"k": kind, "f": filter_fingerprint, "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str, kind: str, filter_fingerprint: str) -> dict[str, Any] | None:
    """The position a token continues after; ``None`` for the empty token (first page)."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad_token("page_token is not a token this service issued") from None
    if not isinstance(body, dict) or body.get("k") != kind or not isinstance(body.get("p"), dict):
        raise bad_token("page_token belongs to another list")
    if body.get("f") != filter_fingerprint:
        raise bad_token("page_token was issued for a different filter; start again without it")
    return body["p"]


def page_of(
    fetched: Sequence[T],
    size: int,
    kind: str,
    filter_fingerprint: str,
    position: Callable[[T], dict[str, Any]],
) -> Page[T]:
    """The page of a list read one item beyond ``size`` (keyset paging: ``limit size + 1``): its first
    ``size`` items, and the token to continue after the last of them when that one more item exists."""
    items = list(fetched[:size])
    next_token = encode(kind, filter_fingerprint, position(items[-1])) if len(fetched) > size else ""
    return Page(items, next_token)


def bad_token(message: str) -> InvalidArgument:
    return InvalidArgument(
        message,
        violations=[FieldViolation("page_token", message, "page_token.invalid")],
        reason="BAD_PAGE_TOKEN",
    )

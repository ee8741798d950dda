"""JSON read and written with orjson where it gives exactly what the standard library's ``json`` gives.

A 1000-row Predict carries its rows and its predictions through JSON several times (the instances'
lines, the predictor's answer, the predictions' lines); with ``json`` that took most of the trainer's
time on a batch (measured with py-spy on a running suite: writing the predictions' lines alone was a
fifth of it), orjson does the same work in a tenth to a twentieth of the time. It differs from ``json``
in a few corners, which fall back to ``json`` here, so that what is accepted, refused and returned
does not change:

- it refuses what ``json`` accepts by default (NaN, Infinity, numbers that overflow to infinity,
  lone surrogates, UTF-16 and UTF-32 text): the text goes to ``json.loads`` then, which accepts it or
  raises its own error, as before;
- it reads an integer beyond 64 bits as a float where ``json`` keeps an ``int``: text holding an
  integer of 19 digits or more is read by ``json`` (found with two C-speed passes, ``bytes.translate``
  and ``in``; a string or a long fraction that looks like one costs only the fallback);
- writing, it writes NaN and infinities as ``null`` and refuses integers beyond 64 bits and dict keys
  that are not strings: :func:`dumps` gives the value to ``json`` when orjson refuses it or wrote a
  ``null`` (a real ``None`` then costs the slower path, nothing else). orjson also writes UUIDs and
  enums, which ``json`` refuses; the values written here are JSON data already (parsed rows).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Digits become "0"; what may come before an integer's first digit (or its sign) becomes "x".
_SHAPE = bytes(
    ord("0") if chr(c).isdigit() and c < 128 else ord("x") if chr(c) in ",:[ \t\r\n-" else c
    for c in range(256)
)
_LONG = b"0" * 19
_LONG_INT = b"x" + _LONG


def may_hold_long_int(data: bytes) -> bool:
    """Whether ``data`` may hold an integer of 19 digits or more (false positives allowed)."""
    shape = data.translate(_SHAPE)
    return _LONG_INT in shape or shape.startswith(_LONG)


def loads(data: bytes, **json_options: Any) -> Any:
    """``json.loads(data, **json_options)``, through orjson when that gives the same value.

    ``json_options`` are for the ``json`` path only and may only refuse more (``parse_constant``
    refusing NaN, which orjson refuses anyway); errors are always ``json``'s own."""
    if not may_hold_long_int(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # json's own verdict and message
    return json.loads(data, **json_options)


#: Dataclasses and dates go to the fallback, where json refuses them as it always did.
_PLAIN = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; ValueError for NaN or an infinity, TypeError for what JSON
    cannot hold, as ``json.dumps(allow_nan=False)`` raises them."""
    try:
        out = orjson.dumps(value, option=_PLAIN)
    except TypeError:  # orjson.JSONEncodeError included: json says what it makes of it
        out = b"null"
    if b"null" not in out:
        return out
    return _ENCODER.encode(value).encode("utf-8")

"""Bytes to text when the server does not say (or says wrongly) which encoding it used.

Order: a byte-order mark; the declared charset (HTTP header) if the bytes really decode with it; an HTML
``<meta charset>``; strict UTF-8; windows-1252 for mostly-ASCII text (the WHATWG default for pages that
declare nothing, and what "latin-1" files such as ``rt-polarity.*`` really are); charset-normalizer for
the rest. Every fallback is reported in ``notes`` so a repaired decode is never silent.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

import charset_normalizer
from zehanx_runtime.errors import FailedPrecondition

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
#: Bytes windows-1252 leaves undefined.
_CP1252_HOLES = frozenset(b"\x81\x8d\x8f\x90\x9d")
#: WHATWG: these labels mean windows-1252 on the web.
_LATIN1_LABELS = {"latin-1", "latin1", "iso-8859-1", "iso8859-1", "iso_8859-1", "us-ascii", "ascii", "l1"}


@dataclass
class Decoded:
    text: str
    encoding: str
    notes: list[str] = field(default_factory=list)


def _normalise_label(label: str) -> str | None:
    label = label.strip().strip("\"'").lower()
    if label in _LATIN1_LABELS:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _try(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def looks_binary(data: bytes) -> bool:
    """NUL bytes in the first 8 KiB (and no UTF-16/32 BOM) mean this is not text."""
    head = data[:8192]
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    return b"\x00" in head


def decode_text(data: bytes, declared: str | None = None, *, name: str = "", html: bool = False) -> Decoded:
    """Decode ``data``; raise :class:`FailedPrecondition` if it is binary and no text encoding fits."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = _try(data[len(bom) :], encoding)
            if text is not None:
                return Decoded(text, encoding)
    notes: list[str] = []
    if declared:
        label = _normalise_label(declared)
        if label is None:
            notes.append(f"{name}: unknown declared charset {declared!r} ignored")
        else:
            text = _try(data, label)
            if text is not None:
                return Decoded(text, label, notes)
            notes.append(
                f"{name}: declared charset {declared} does not fit the bytes; detecting the encoding"
            )
    if html:
        match = _META_CHARSET.search(data[:4096])
        if match:
            meta = _normalise_label(match.group(1).decode("ascii", "replace"))
            if meta:
                text = _try(data, meta)
                if text is not None:
                    return Decoded(text, meta, notes)
                notes.append(f"{name}: <meta charset={meta}> does not fit the bytes; detecting the encoding")
    text = _try(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", notes)
    if looks_binary(data):
        raise FailedPrecondition(
            f"{name or 'source'} is binary data in no supported format (not text, CSV, JSON, HTML, Parquet "
            "or an archive)",
            reason="UNSUPPORTED_FORMAT",
        )
    high = sum(1 for b in data[:65536] if b >= 0x80)
    sample = data[:65536]
    if high <= len(sample) * 0.1 and not _CP1252_HOLES.intersection(data):
        notes.append(f"{name}: not valid UTF-8 and no charset declared; decoded as windows-1252")
        return Decoded(data.decode("cp1252"), "cp1252", notes)
    best = charset_normalizer.from_bytes(data[:262144]).best()
    if best is not None:
        text = _try(data, best.encoding)
        if text is not None:
            notes.append(f"{name}: not valid UTF-8; detected {best.encoding} (charset-normalizer)")
            return Decoded(text, best.encoding, notes)
    notes.append(f"{name}: encoding not recognised; decoded as latin-1 (every byte kept, some may be wrong)")
    return Decoded(data.decode("latin-1"), "latin-1", notes)

"""Cell values: numbers as numbers (thousands separators, percent, currency, unicode minus, footnote
marks), missing-value markers, and dates in the handful of formats real tables use."""

from __future__ import annotations

import math
import re
from datetime import datetime

#: Written where a value is missing (compared lower-case, after stripping).
MISSING_MARKERS = frozenset(
    {"", "na", "n/a", "nan", "null", "none", "-", "--", "\u2014", "\u2013", "?", "#n/a"}
)

#: Footnote marks after a value: daggers and asterisks.
_MARKS = "\u2020\u2021*"
_NUMBER = re.compile(
    r"""^
    (?P<sign>[-+\u2212]?)
    (?P<cur>[$\u20ac\u00a3\u00a5]?)
    (?P<num>
        \d{1,3}(?:,\d{3})+(?:\.\d+)?     # 1,234,567.89
      | \d+(?:\.\d*)?                    # 1234 / 1234.5 / 12.
      | \.\d+                            # .5
    )
    (?:[eE](?P<exp>[-+]?\d+))?
    (?P<pct>\s?%)?
    $""",
    re.VERBOSE,
)


def clean_cell(value: str) -> str:
    """Trim, turn no-break spaces into spaces and collapse runs of whitespace."""
    if not value:
        return ""
    value = value.replace("\u00a0", " ").replace("\u200b", "").replace("\u202f", " ")
    return " ".join(value.split())


def _is_word_or_space(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or ch.isspace()


def strip_footnote(value: str) -> str:
    """``"1,234[5]"`` → ``"1,234"``; ``"12*"`` → ``"12"``.

    A trailing ``[...]`` of word characters and spaces (at most 12 once its spaces are trimmed), or a
    trailing run of daggers and asterisks, goes. Written as one backward look at the end of the value,
    not as a regular expression searched at every position: that was quadratic, and hours on a 1 MB
    header cell (H3).
    """
    if value.endswith("\n"):
        value = value[:-1]  # where ``$`` matched too
    if value.endswith("]"):
        start = value.rfind("[")
        inner = value[start + 1 : -1] if start >= 0 else ""
        if inner and len(inner.strip()) <= 12 and all(_is_word_or_space(ch) for ch in inner):
            value = value[:start]
    else:
        value = value.rstrip(_MARKS)
    return value.strip()


def parse_number(value: str) -> tuple[float | int, bool, bool] | None:
    """``(number, is_integer_literal, was_percent)`` or ``None`` when ``value`` is not a number."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    match = _NUMBER.match(text)
    if not match:
        text = strip_footnote(text)
        match = _NUMBER.match(text) if text else None
        if not match:
            return None
    digits = match.group("num").replace(",", "")
    exp = match.group("exp")
    negative = match.group("sign") in ("-", "\u2212")
    integral = exp is None and "." not in digits
    number: float | int
    if integral:
        number = int(digits)
    else:
        number = float(digits + (f"e{exp}" if exp else ""))
        if not math.isfinite(number):
            return None
    if negative:
        number = -number
    return number, integral, match.group("pct") is not None


def is_number(value: str) -> bool:
    return parse_number(value) is not None


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in MISSING_MARKERS
    return False


#: Date formats tried in order; a column is a date column when one format reads every value.
DATE_FORMATS = [
    ("%Y-%m-%d", "date"),
    ("%Y-%m-%dT%H:%M:%S", "datetime"),
    ("%Y-%m-%d %H:%M:%S", "datetime"),
    ("%Y-%m-%dT%H:%M", "datetime"),
    ("%Y-%m-%d %H:%M", "datetime"),
    ("%Y-%m", "month"),
    ("%Y/%m/%d", "date"),
    ("%m/%d/%Y", "date"),
    ("%d/%m/%Y", "date"),
    ("%d.%m.%Y", "date"),
    ("%B %d, %Y", "date"),
    ("%b %d, %Y", "date"),
    ("%d %B %Y", "date"),
    ("%d %b %Y", "date"),
    ("%d-%b-%y", "date"),
    ("%d-%b-%Y", "date"),
    ("%b-%y", "month"),
    ("%Y%m", "month"),
]
_DATE_HINT = re.compile(r"\d{1,4}[-/.\s]|[A-Za-z]{3}")


def date_format_of(values: list[str]) -> tuple[str, str] | None:
    """The first format in :data:`DATE_FORMATS` that parses every value, or ``None``."""
    if not values or not all(_DATE_HINT.search(v) for v in values[:50]):
        return None
    for fmt, kind in DATE_FORMATS:
        if fmt == "%Y%m" and not all(len(v) == 6 for v in values[:50]):
            continue
        try:
            for v in values:
                datetime.strptime(v, fmt)
        except ValueError:
            continue
        return fmt, kind
    return None


def to_iso(value: str, fmt: str, kind: str) -> str:
    """A date value as ISO 8601: ``YYYY-MM-DD`` (months become the first of the month) or a timestamp."""
    parsed = datetime.strptime(value, fmt)
    if kind == "datetime":
        return parsed.isoformat()
    return parsed.date().isoformat()

"""Raw tables to typed columns, with every repair written down.

Column types (as in ``schema.json``): ``integer``, ``number``, ``boolean``, ``date``, ``datetime``,
``category`` (few distinct short values), ``text`` (free text), ``string`` (other short strings, often
names or identifiers), ``list`` (JSON arrays) and, after the task step, ``image``.

Repairs, each recorded in the notes: surrounding and repeated whitespace and no-break spaces removed;
thousands separators, currency and percent signs and footnote marks removed from numbers
(``"1,723,337"`` → 1723337, ``"85.76%"`` → 85.76); missing-value markers (``NA``, ``n/a``, ``-``, ``?``
...) read as missing outside free text; dates in one consistent format rewritten as ISO 8601; columns
with no value and rows with no value dropped. Duplicate rows are kept (they are real: 400+ SMS messages
repeat) and counted in the profile.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from zehanx_runtime.errors import FailedPrecondition

from zehanx_crawler.domain import RawTable
from zehanx_crawler.values import (
    MISSING_MARKERS,
    clean_cell,
    date_format_of,
    parse_number,
    strip_footnote,
    to_iso,
)

NUMERIC = ("integer", "number")


@dataclass
class Column:
    name: str
    type: str
    values: list[Any]
    #: Extra schema facts: ``percent``, ``date_format``, ``shape``, ``value_range``...
    facts: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def present(self) -> list[Any]:
        return [v for v in self.values if v is not None]

    @cached_property
    def missing(self) -> int:
        return len(self.values) - len(self.present)

    @cached_property
    def distinct(self) -> int:
        if self.type in ("image", "list"):
            return len({repr(v) for v in self.present})
        return len(set(self.present))


@dataclass
class Table:
    columns: list[Column]
    notes: list[str]
    sources: list[RawTable]

    @property
    def n_rows(self) -> int:
        return len(self.columns[0].values) if self.columns else 0

    def get(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def take(self, indices: list[int]) -> Table:
        cols = [Column(c.name, c.type, [c.values[i] for i in indices], dict(c.facts)) for c in self.columns]
        return Table(cols, list(self.notes), self.sources)


#: Longest column name kept; longer names are cut (and the cut is noted).
MAX_NAME_CHARS = 200
#: Characters of a raw name read at all: enough for the whitespace that cleaning collapses, and a bound
#: on the work any later step does with a name (a header cell may be megabytes long).
_RAW_NAME_CHARS = 4 * MAX_NAME_CHARS


def clean_names(names: list[str], notes: list[str] | None = None) -> list[str]:
    """Column names: cleaned like cells, footnote marks removed, at most :data:`MAX_NAME_CHARS`
    characters, empty ones invented, repeats numbered."""
    out: list[str] = []
    seen: Counter[str] = Counter()
    cut = 0
    for i, raw in enumerate(names):
        text = str(raw) if raw is not None else ""
        long = len(text) > _RAW_NAME_CHARS
        name = strip_footnote(clean_cell(text[:_RAW_NAME_CHARS]))
        if long or len(name) > MAX_NAME_CHARS:
            name = name[:MAX_NAME_CHARS].rstrip()
            cut += 1
        name = name or f"column_{i + 1}"
        seen[name.lower()] += 1
        if seen[name.lower()] > 1:
            name = f"{name}_{seen[name.lower()]}"
        out.append(name)
    if cut and notes is not None:
        notes.append(f"{cut} column names longer than {MAX_NAME_CHARS} characters cut to that length")
    return out


def _string_kind(values: list[str], n_rows: int) -> str:
    if not values:
        return "string"
    mean_len = sum(len(v) for v in values) / len(values)
    mean_words = sum(v.count(" ") + 1 for v in values) / len(values)
    distinct = len(set(values))
    if mean_words >= 5 or mean_len >= 40:
        return "text"
    if distinct <= max(2, min(50, n_rows // 5)) and mean_len <= 40:
        return "category"
    return "string"


def _type_strings(name: str, raw: list[Any], n_rows: int, notes: list[str]) -> Column:
    """Type a column whose values are strings (or missing). Work is done once per distinct value."""
    cleaned = {v: clean_cell(v) for v in set(raw) if isinstance(v, str)}
    cells = [cleaned[v] if isinstance(v, str) else "" for v in raw]
    distinct = {v for v in cleaned.values() if v}
    markers = {v for v in distinct if v.lower() in MISSING_MARKERS}
    real = distinct - markers
    if not real:
        return Column(name, "string", [None] * len(cells))
    marker_note = f"{', '.join(sorted(repr(m) for m in markers))} read as missing" if markers else ""
    parsed = {v: parse_number(v) for v in real}
    if all(p is not None for p in parsed.values()):
        integral = all(p[1] for p in parsed.values() if p)
        percent = any(p[2] for p in parsed.values() if p)
        lookup = {v: (int(p[0]) if integral else float(p[0])) for v, p in parsed.items() if p}
        col = Column(name, "integer" if integral else "number", [lookup.get(v) for v in cells])
        reformatted = any(("," in v or "%" in v or v[:1] in "$\u20ac\u00a3\u00a5\u2212") for v in real)
        if percent:
            col.facts["percent"] = True
            notes.append(
                f"column {name!r}: percent values kept as numbers (85.76% → 85.76)"
                + (f"; {marker_note}" if marker_note else "")
            )
        elif reformatted:
            notes.append(
                f"column {name!r}: read as numbers (thousands separators and symbols removed)"
                + (f"; {marker_note}" if marker_note else "")
            )
        elif marker_note:
            notes.append(f"column {name!r}: {marker_note}")
        return col
    non_empty = [v for v in cells if v]
    if _string_kind(non_empty, n_rows) == "text":
        # Free text: only empty cells are missing ("None" may be what someone wrote).
        return Column(name, "text", [v or None for v in cells])
    ordered = sorted(real)
    date = date_format_of(ordered) if len(ordered) >= 2 else None
    if date is not None:
        fmt, kind_ = date
        iso = {v: to_iso(v, fmt, kind_) for v in ordered}
        col = Column(name, "datetime" if kind_ == "datetime" else "date", [iso.get(v) for v in cells])
        col.facts["date_format"] = fmt
        if any(iso[v] != v for v in ordered[:100]):
            notes.append(
                f"column {name!r}: dates in format {fmt!r} rewritten as ISO 8601"
                + (f"; {marker_note}" if marker_note else "")
            )
        return col
    if {v.lower() for v in real} <= {"true", "false"}:
        return Column(name, "boolean", [v.lower() == "true" if v in real else None for v in cells])
    if marker_note:
        notes.append(f"column {name!r}: {marker_note}")
    values = [v if v in real else None for v in cells]
    return Column(name, _string_kind([v for v in values if v is not None], n_rows), values)


def _type_column(name: str, raw: list[Any], n_rows: int, notes: list[str]) -> Column:
    kinds = {type(v) for v in raw if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if not kinds or kinds <= {str}:
        return _type_strings(name, raw, n_rows, notes)
    clean = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in raw]
    if kinds <= {bool}:
        return Column(name, "boolean", clean)
    if kinds <= {int}:
        return Column(name, "integer", clean)
    if kinds <= {int, float}:
        if all(float(v).is_integer() for v in clean if v is not None) and int in kinds:
            return Column(name, "integer", [None if v is None else int(v) for v in clean])
        return Column(name, "number", [None if v is None else float(v) for v in clean])
    if kinds <= {list}:
        return Column(name, "list", clean)
    # Mixed JSON types: judge them as strings.
    return _type_strings(name, ["" if v is None else str(v) for v in clean], n_rows, notes)


def concat(tables: list[RawTable]) -> RawTable:
    """Stack tables with the same columns (matched by name, case-insensitively) in the first's order."""
    first = tables[0]
    if len(tables) == 1:
        return first
    order = [c.lower() for c in first.columns]
    rows: list[list[Any]] = []
    notes: list[str] = []
    for table in tables:
        index = {c.lower(): i for i, c in enumerate(table.columns)}
        picks = [index[c] for c in order]
        rows += [[row[i] for i in picks] for row in table.rows]
        notes += table.notes
    notes.append(
        f"{len(tables)} sources with the same columns stacked: "
        + ", ".join(f"{t.origin} ({t.n_rows} rows)" for t in tables)
    )
    return RawTable(
        columns=list(first.columns),
        rows=rows,
        origin=first.origin,
        format=first.format,
        notes=notes,
        invented_header=first.invented_header,
        context=" ".join(t.context for t in tables),
        resource=first.resource,
        dropped_rows=sum(t.dropped_rows for t in tables),
    )


def clean(raw: RawTable, *, max_columns: int) -> Table:
    """Type every column of ``raw``; drop empty columns and rows; record every repair."""
    if len(raw.columns) > max_columns:
        raise FailedPrecondition(
            f"{raw.origin} has {len(raw.columns)} columns; at most {max_columns} are accepted",
            reason="TOO_MANY_COLUMNS",
        )
    notes = list(raw.notes)
    names = clean_names(raw.columns, notes)
    width = len(names)
    rows = [list(r[:width]) + [None] * (width - len(r)) for r in raw.rows]

    def blank(v: Any) -> bool:
        return v is None or (isinstance(v, str) and not v.strip())

    kept = [r for r in rows if not all(blank(v) for v in r)]
    if len(kept) < len(rows):
        notes.append(f"dropped {len(rows) - len(kept)} empty rows")
    n = len(kept)
    columns: list[Column] = []
    for j, name in enumerate(names):
        column = _type_column(name, [r[j] for r in kept], n, notes)
        if not column.present:
            notes.append(f"dropped column {name!r}: no values")
            continue
        columns.append(column)
    if not columns:
        raise FailedPrecondition(f"{raw.origin}: no column holds any value", reason="NO_USABLE_TABLE")
    return Table(columns, notes, [raw])

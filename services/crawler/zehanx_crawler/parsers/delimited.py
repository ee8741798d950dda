"""CSV, TSV and other delimited text, including the ``sentence<TAB>label`` traps.

Rules (each learnt from a real file in ../shared/data):

- Lines end at ``\\n`` only (``\\r\\n`` is tolerated). ``str.splitlines`` also breaks at byte 0x85, which
  latin-1/windows-1252 movie reviews contain, and would corrupt rows.
- Quoting is decided per file, not assumed: a file is parsed with and without quote handling. When the
  literal split (no quoting) gives the same number of fields on every line and the quote-aware parse does
  not, quotes are part of the text (``imdb_labelled.txt`` loses 252 rows and ``SMSSpamCollection`` two
  to quote-aware parsing) and the literal split is used. Fields that are wholly and properly quoted are
  still unquoted.
- Lines with one label token and free text (``0 the movie was...``, ``text<TAB>1``, ``ham<TAB>text``)
  are split on the first or last separator, whichever side holds a small set of labels.
- A header row is recognised, not assumed; a headerless file gets invented names (``text``/``label``
  for two-column label files, else ``column_1``...).
- Ragged rows: short rows are padded with missing values (counted in the notes); rows with too many
  fields are an error naming the lines, since no rule can say which field is extra.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass

from zehanx_runtime.errors import FailedPrecondition

from zehanx_crawler.domain import RawTable
from zehanx_crawler.values import is_number

_DELIMITERS = ["\t", ",", ";", "|"]
_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "space"}
_MAX_LABELS = 20
_csv_limit_set = False


def _raise_field_limit() -> None:
    global _csv_limit_set
    if not _csv_limit_set:
        csv.field_size_limit(64 * 1024 * 1024)
        _csv_limit_set = True


def split_lines(text: str) -> list[str]:
    """Lines at ``\\n`` only, without a trailing ``\\r``; trailing blank lines removed."""
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


@dataclass
class _Parse:
    rows: list[list[str]]
    quoted: bool

    @property
    def widths(self) -> Counter[int]:
        return Counter(len(r) for r in self.rows)

    @property
    def rectangular(self) -> bool:
        widths = self.widths
        return len(widths) == 1 and next(iter(widths)) >= 2


def _unquote(field: str) -> str:
    if len(field) >= 2 and field[0] == '"' and field[-1] == '"':
        inner = field[1:-1]
        if '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return field


def _literal(lines: list[str], delimiter: str) -> _Parse:
    rows = [
        [_unquote(f) for f in line.split(delimiter)] if '"' in line else line.split(delimiter)
        for line in lines
        if line.strip()
    ]
    return _Parse(rows, quoted=False)


def _quoted(text: str, delimiter: str) -> _Parse:
    _raise_field_limit()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    return _Parse(rows, quoted=True)


def _consistency(widths: Counter[int]) -> tuple[float, int]:
    """(share of rows with the modal field count, that count); 0 when the modal count is below 2."""
    total = sum(widths.values())
    if not total:
        return 0.0, 0
    width, hits = widths.most_common(1)[0]
    return (hits / total if width >= 2 else 0.0), width


def _pick_delimiter(text: str, lines: list[str]) -> tuple[str, float]:
    """The delimiter whose literal or quote-aware split of the first lines is the most regular."""
    sample_lines = [line for line in lines[:500] if line.strip()]
    sample_text = "\n".join(sample_lines)
    best = ("", 0.0, 0)
    for d in _DELIMITERS:
        if d not in sample_text:
            continue
        literal = _consistency(Counter(line.count(d) + 1 for line in sample_lines))
        quoted = (0.0, 0)
        if '"' in sample_text:
            try:
                quoted = _consistency(_quoted(sample_text, d).widths)
            except csv.Error:
                pass
        score, width = max(literal, quoted)
        if (score, width) > best[1:]:
            best = (d, score, width)
    return best[0], best[1]


def _label_side(values: list[str]) -> bool:
    """A small vocabulary of short tokens: labels."""
    distinct = set(values)
    return (
        1 <= len(distinct) <= _MAX_LABELS
        and len(distinct) <= max(2, len(values) // 10)
        and all(0 < len(v) <= 30 and " " not in v for v in distinct)
    )


def _label_lines(lines: list[str], name: str) -> RawTable | None:
    """``label SEP text`` or ``text SEP label`` lines, split once at the first or last separator."""
    body = [line.strip() for line in lines if line.strip()]
    if len(body) < 10:
        return None
    for sep in ("\t", " ", ","):
        if not all(sep in line for line in body[1:]):
            continue
        for label_first in (True, False):
            parts = [line.split(sep, 1) if label_first else line.rsplit(sep, 1) for line in body]
            for skip in (0, 1):
                rest = parts[skip:]
                if any(len(p) != 2 for p in rest):
                    continue
                labels = [p[0 if label_first else 1].strip() for p in rest]
                texts = [p[1 if label_first else 0].strip() for p in rest]
                if not _label_side(labels) or sum(t.count(" ") + 1 for t in texts) / len(texts) < 3:
                    continue
                columns = ["label", "text"] if label_first else ["text", "label"]
                notes = [
                    f"{name}: lines of one label and free text; each split on its "
                    f"{'first' if label_first else 'last'} {_NAMES[sep]} ({len(set(labels))} labels)"
                ]
                if skip:
                    head = [c.strip() for c in parts[0]]
                    if len(head) == 2 and all(head):
                        columns = head
                    notes.append(f"{name}: first line taken as the header")
                rows = [[a, b] if label_first else [b, a] for a, b in zip(labels, texts, strict=True)]
                return RawTable(
                    columns=columns,
                    rows=rows,
                    origin=name,
                    format="label-lines",
                    notes=notes,
                    invented_header=not skip,
                )
    return None


def looks_like_header(first: list[str], body: list[list[str]]) -> bool:
    """Is ``first`` a header over ``body``? Evidence: numeric columns under words, never a repeated value."""
    if not body or not first:
        return False
    cells = [c.strip() for c in first]
    if any(is_number(c) for c in cells if c):
        return False
    if sum(1 for c in cells if c) < max(1, len(cells) // 2):
        return False
    sample = body[:2000]
    repeats = 0
    evidence = 0
    for j, cell in enumerate(cells):
        column = [r[j].strip() for r in sample if j < len(r) and r[j].strip()]
        if not column:
            continue
        if cell and cell in set(column):
            repeats += 1
        numeric = sum(1 for v in column if is_number(v))
        if numeric >= 0.9 * len(column):
            evidence += 1
        elif cell and len(cell) <= 40 and sum(len(v) for v in column) / len(column) > 3 * max(len(cell), 8):
            evidence += 1  # a short name over long free text
    if repeats * 2 >= len(cells):
        return False
    if evidence:
        return True
    # No numbers anywhere: a header of short, distinct names that never recur below.
    return repeats == 0 and len(set(cells)) == len(cells) and all(len(c) <= 40 for c in cells)


def _name_columns(width: int, rows: list[list[str]]) -> list[str]:
    if width == 2 and rows:
        sample = rows[:2000]
        for label_col in (1, 0):
            labels = [r[label_col].strip() for r in sample if len(r) > label_col]
            texts = [r[1 - label_col] for r in sample if len(r) > 1 - label_col]
            if _label_side(labels) and texts and sum(t.count(" ") + 1 for t in texts) / len(texts) >= 3:
                return ["text", "label"] if label_col == 1 else ["label", "text"]
    return [f"column_{i + 1}" for i in range(width)]


def _choose(literal: _Parse, quoted: _Parse, name: str, notes: list[str]) -> _Parse:
    """Literal split when every physical line is a record; the quote-aware parse otherwise."""
    if literal.rectangular:
        if len(quoted.rows) != len(literal.rows):
            notes.append(
                f"{name}: quote characters are part of the text (quote-aware parsing would have merged "
                f"lines into {len(quoted.rows)} rows instead of {len(literal.rows)}); fields split literally"
            )
            return literal
        return quoted if quoted.rectangular else literal
    if quoted.rectangular:
        return quoted
    # Neither is regular: keep the one with the more consistent field count.
    return literal if _consistency(literal.widths)[0] > _consistency(quoted.widths)[0] else quoted


def parse_delimited(text: str, name: str) -> RawTable:
    """Parse delimited or line-oriented text into a table."""
    lines = split_lines(text)
    if not any(line.strip() for line in lines):
        raise FailedPrecondition(f"{name} is empty", reason="EMPTY_SOURCE")
    notes: list[str] = []
    delimiter, score = _pick_delimiter(text, lines)
    if score < 0.9:
        label_table = _label_lines(lines, name)
        if label_table is not None:
            return label_table
        if score < 0.5:
            rows = [[line.strip()] for line in lines if line.strip()]
            return RawTable(
                columns=["text"],
                rows=rows,
                origin=name,
                format="lines",
                invented_header=True,
                notes=[f"{name}: no consistent delimiter; one value per line"],
            )
    literal = _literal(lines, delimiter)
    quoted = literal
    if '"' in text:
        try:
            quoted = _quoted(text, delimiter)
        except csv.Error as exc:
            notes.append(f"{name}: quote-aware parsing failed ({exc}); fields split literally")
    parsed = _choose(literal, quoted, name, notes)
    if not parsed.rectangular:
        label_table = _label_lines(lines, name)
        if label_table is not None:
            return label_table
    rows = parsed.rows
    fmt = {"\t": "tsv", ",": "csv"}.get(delimiter, f"delimited-{_NAMES[delimiter]}")
    header: list[str] | None = None
    if rows and looks_like_header(rows[0], rows[1:]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    width = len(header) if header else Counter(len(r) for r in rows).most_common(1)[0][0]
    long_rows = [i for i, r in enumerate(rows) if len(r) > width and any(c.strip() for c in r[width:])]
    if long_rows:
        first_line = 2 if header else 1
        where = ", ".join(str(i + first_line) for i in long_rows[:5])
        raise FailedPrecondition(
            f"{name}: {len(long_rows)} of {len(rows)} rows have more than {width} fields (rows {where}"
            f"{' ...' if len(long_rows) > 5 else ''}); the file is ragged and no rule says which field is "
            "extra. Fix the file or pass a cleaner source.",
            reason="RAGGED_ROWS",
            metadata={"source": name, "rows": str(len(long_rows))},
        )
    rows = [r[:width] for r in rows]
    short = sum(1 for r in rows if len(r) < width)
    if short:
        notes.append(f"{name}: {short} short rows padded with missing values (ragged rows repaired)")
        rows = [r + [""] * (width - len(r)) for r in rows]
    columns = header if header else _name_columns(width, rows)
    return RawTable(
        columns=columns, rows=rows, origin=name, format=fmt, notes=notes, invented_header=header is None
    )

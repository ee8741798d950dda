"""JSON, JSON Lines and Parquet into tables.

JSON: an array of objects; an object holding such an array (the largest, searched two levels deep); an
object of equal-length arrays (column-oriented); or an array of arrays whose first row is a header of
strings. Nested objects are flattened one level (``a.b``); arrays stay values. JSON Lines: one object per
line; a line that is not an object is an error naming the line, never silently skipped.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
from typing import Any

from zehanx_runtime.errors import FailedPrecondition

from zehanx_crawler.domain import RawTable


def _too_deep(where: str) -> FailedPrecondition:
    return FailedPrecondition(f"{where}: JSON nested too deeply to be a table", reason="INVALID_JSON")


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                flat[f"{key}.{inner}"] = json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v
        else:
            flat[str(key)] = value
    return flat


def _records_table(records: list[dict[str, Any]], origin: str, fmt: str, notes: list[str]) -> RawTable:
    columns: dict[str, None] = {}
    flat = []
    for record in records:
        row = _flatten(record)
        flat.append(row)
        for key in row:
            columns.setdefault(key, None)
    names = list(columns)
    rows = [[row.get(name) for name in names] for row in flat]
    return RawTable(columns=names, rows=rows, origin=origin, format=fmt, notes=notes)


def _find_records(value: Any, depth: int = 0) -> tuple[list[Any], str] | None:
    if isinstance(value, list):
        return value, ""
    if not isinstance(value, dict) or depth > 2:
        return None
    lists = [(k, v) for k, v in value.items() if isinstance(v, list) and v]
    if lists:
        key, best = max(lists, key=lambda kv: len(kv[1]))
        lengths = {len(v) for _, v in lists}
        if (
            len(lists) > 1
            and len(lengths) == 1
            and not isinstance(best[0], dict)
            and len(lists) == len(value)
        ):
            # Column-oriented: {"a": [...], "b": [...]}
            n = len(best)
            return [{k: v[i] for k, v in lists} for i in range(n)], "columns"
        return best, key
    for key, inner in value.items():
        found = _find_records(inner, depth + 1)
        if found is not None:
            return found[0], f"{key}.{found[1]}" if found[1] else key
    return None


def parse_json(text: str, origin: str) -> RawTable:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return parse_jsonl(text, origin)
        raise FailedPrecondition(
            f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            reason="INVALID_JSON",
        ) from None
    except RecursionError:
        raise _too_deep(origin) from None
    found = _find_records(value)
    if found is None or not found[0]:
        raise FailedPrecondition(f"{origin}: JSON holds no array of records", reason="NO_TABLE")
    records, path = found
    notes = [f"{origin}: records read from {path!r}"] if path and path != "columns" else []
    if path == "columns":
        notes.append(f"{origin}: column-oriented JSON turned into rows")
    if all(isinstance(r, dict) for r in records):
        return _records_table(records, origin, "json", notes)
    if all(isinstance(r, list) for r in records):
        first = records[0]
        width = max(len(r) for r in records)
        if (
            all(isinstance(c, str) for c in first)
            and len(records) > 1
            and any(not isinstance(c, str) for r in records[1:] for c in r)
        ):
            names = [str(c) for c in first]
            body = records[1:]
        else:
            names = [f"column_{i + 1}" for i in range(width)]
            body = records
        rows = [list(r) + [None] * (len(names) - len(r)) for r in body]
        if any(len(r) > len(names) for r in rows):
            raise FailedPrecondition(f"{origin}: rows longer than the header", reason="RAGGED_ROWS")
        return RawTable(
            columns=names,
            rows=rows,
            origin=origin,
            format="json",
            notes=notes,
            invented_header=names[0] == "column_1",
        )
    if all(not isinstance(r, dict | list) for r in records):
        return RawTable(
            columns=["value"],
            rows=[[r] for r in records],
            origin=origin,
            format="json",
            notes=notes,
            invented_header=True,
        )
    raise FailedPrecondition(f"{origin}: JSON array mixes records of different shapes", reason="NO_TABLE")


def parse_jsonl(text: str, origin: str) -> RawTable:
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except RecursionError:
            raise _too_deep(f"{origin}: line {number}") from None
        except json.JSONDecodeError as exc:
            raise FailedPrecondition(
                f"{origin}: line {number} is not valid JSON ({exc.msg}); JSON Lines needs one object per line",
                reason="INVALID_JSON",
                metadata={"line": str(number)},
            ) from None
        if not isinstance(value, dict):
            raise FailedPrecondition(
                f"{origin}: line {number} is a JSON {type(value).__name__}, not an object",
                reason="INVALID_JSON",
            )
        records.append(value)
    if not records:
        raise FailedPrecondition(f"{origin} is empty", reason="EMPTY_SOURCE")
    return _records_table(records, origin, "jsonl", [])


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return json.dumps({k: _plain(v) for k, v in value.items()}, ensure_ascii=False)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_parquet(data: bytes, origin: str) -> RawTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except MemoryError:
        raise  # the parsing process's memory cap, reported as such by the caller
    except (pa.ArrowException, OSError) as exc:
        raise FailedPrecondition(
            f"{origin}: not a readable Parquet file ({exc})", reason="INVALID_PARQUET"
        ) from None
    notes: list[str] = []
    names: list[str] = []
    columns: list[list[Any]] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            notes.append(f"{origin}: binary column {name!r} dropped")
            continue
        names.append(name)
        columns.append([_plain(v) for v in column.to_pylist()])
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return RawTable(columns=names, rows=rows, origin=origin, format="parquet", notes=notes)

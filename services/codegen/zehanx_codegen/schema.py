"""What a dataset's ``schema.json`` adds to its profile: the target, the task, the inputs, the time
column and the image shape the crawler decided on.

The crawler writes the file (``format: zehanx.dataset``); codegen trusts only its shape, never its
size: unknown keys are ignored, wrong types are reported as a field violation of ``schema_json``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_codegen.domain import DatasetProfile, TaskFamily


def _bad(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"schema_json: {field} {problem}",
        violations=[FieldViolation("schema_json", f"{field} {problem}", "BAD_SCHEMA")],
        reason="BAD_SCHEMA",
    )


def _name(schema: dict[str, Any], key: str) -> str | None:
    value = schema.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise _bad(key, "must be a column name (a string of at most 256 characters)")
    return value


def apply_schema(profile: DatasetProfile, schema_json: str, *, field: str = "schema_json") -> DatasetProfile:
    """``profile`` with the schema's decisions filled in; the profile unchanged when there is no schema."""
    if not schema_json.strip():
        return profile
    try:
        schema = json.loads(schema_json)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"{field} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            violations=[FieldViolation(field, f"not JSON: {exc.msg}", "BAD_SCHEMA")],
            reason="BAD_SCHEMA",
        ) from None
    if not isinstance(schema, dict):
        raise _bad("the document", "must be a JSON object")
    task = schema.get("task")
    family = None
    if task not in (None, ""):
        try:
            family = TaskFamily(task)
        except ValueError:
            raise _bad("task", f"{task!r} is not one of {', '.join(f.value for f in TaskFamily)}") from None
    inputs = schema.get("inputs") or []
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise _bad("inputs", "must be a list of column names")
    shape: tuple[int, ...] = ()
    image = schema.get("image")
    if image:
        if not isinstance(image, dict):
            raise _bad("image", "must be an object with shape and channels")
        raw = image.get("shape") or []
        channels = image.get("channels") or 1
        if (
            not isinstance(raw, list)
            or len(raw) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in raw)
            or not isinstance(channels, int)
            or not 0 < channels <= 4
        ):
            raise _bad("image", "needs shape [height, width] (1 to 4096 each) and channels 1 to 4")
        shape = (raw[0], raw[1], raw[2] if len(raw) == 3 else channels)
    columns = schema.get("columns") or []
    if not isinstance(columns, list) or not all(isinstance(c, dict) for c in columns):
        raise _bad("columns", "must be a list of objects")
    series = tuple(str(c.get("name")) for c in columns if c.get("layout") == "series" and c.get("name"))
    return dataclasses.replace(
        profile,
        series_columns=series or profile.series_columns,
        schema_target=_name(schema, "target") or profile.schema_target,
        schema_task=family or profile.schema_task,
        schema_inputs=tuple(inputs) or profile.schema_inputs,
        time_column=_name(schema, "time_column") or profile.time_column,
        image_shape=shape or profile.image_shape,
    )

"""Rendering a template file: a config block at the top, ``#% if flag`` blocks and shared parts.

Templates are plain Python files so they can be read, linted and edited as code. Three markers:

- ``# {{config}}`` on its own line becomes the config block: one ``name = value  # why`` per line.
- ``#% if flag`` / ``#% if not flag`` / ``#% else`` / ``#% endif`` keep or drop the lines between.
- ``#% include name`` on its own line becomes the lines of the shared part ``name`` (the files of
  ``templates/_shared/``: what every family's program says the same way, written once).

``{{title}}`` and ``{{summary}}`` in the module docstring are replaced by sanitised text. Values in
the config block are written with ``repr`` so user data (column names, labels) can never become code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_MARK = re.compile(r"^\s*#%\s*(if not|if|else|endif)\b\s*(\w*)\s*$")
_CONFIG = re.compile(r"^(\s*)# \{\{config\}\}\s*$")
_INCLUDE = re.compile(r"^\s*#%\s*include\s+(\w+)\s*$")


@dataclass(frozen=True)
class ConfigEntry:
    """One line of the config block: a Python name, a literal value and why it has that value."""

    name: str
    value: object
    why: str = ""
    #: A Python expression written by codegen itself (never user data), used instead of ``value``.
    code: str | None = None


class TemplateError(Exception):
    """A template is malformed (an unbalanced ``#%`` block or an unknown flag): a bug in codegen."""


def safe_text(text: str, *, limit: int = 300) -> str:
    """One printable line that cannot end a docstring or a comment early."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = cleaned.replace("\\", "/").replace('"""', "'''")
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _literal(value: object) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    raise TemplateError(f"config values must be literals, not {type(value).__name__}")


def _wrapped(name: str, value: object) -> str:
    """``name = [...]`` on one line, or one item per line when that line would be long."""
    one = f"{name} = {_literal(value)}"
    if len(one) <= 100 or not isinstance(value, list):
        return one
    return f"{name} = [\n" + "".join(f"    {_literal(v)},\n" for v in value) + "]"


def config_block(entries: Sequence[ConfigEntry]) -> list[str]:
    """``name = value  # why`` lines, the comments aligned so the block reads as a table."""
    codes = []
    for e in entries:
        if not e.name.isidentifier():
            raise TemplateError(f"config name {e.name!r} is not a Python identifier")
        codes.append(f"{e.name} = {e.code}" if e.code is not None else _wrapped(e.name, e.value))
    short = [c for c in codes if "\n" not in c and len(c) <= 60]
    width = max((len(c) for c in short), default=0)
    lines: list[str] = []
    for e, code in zip(entries, codes, strict=True):
        why = safe_text(e.why, limit=100) if e.why else ""
        if why and "\n" not in code and len(code) <= 60:
            lines.append(f"{code.ljust(width)}  # {why}")
        else:
            if why:
                lines.append(f"# {why}")
            lines.extend(code.split("\n"))
    return lines


def _included(template: str, parts: Mapping[str, str]) -> list[tuple[int, str]]:
    """The template's lines numbered as in its file, each ``#% include`` replaced by its part's lines."""
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(template.splitlines(), start=1):
        include = _INCLUDE.match(line)
        if include is None:
            lines.append((number, line))
        elif include.group(1) in parts:
            lines.extend((number, part_line) for part_line in parts[include.group(1)].splitlines())
        else:
            raise TemplateError(f"line {number}: unknown part {include.group(1)!r}")
    return lines


def render(
    template: str,
    *,
    flags: Mapping[str, bool],
    config: Sequence[ConfigEntry] = (),
    text: Mapping[str, str] | None = None,
    parts: Mapping[str, str] | None = None,
) -> str:
    """Render ``template`` (see the module docstring); ``parts``: the shared parts by name."""
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (this block's condition, was the enclosing block active)
    active = True
    for number, line in _included(template, parts or {}):
        mark = _MARK.match(line)
        if mark:
            kind, name = mark.groups()
            if kind in ("if", "if not"):
                if name not in flags:
                    raise TemplateError(f"line {number}: unknown flag {name!r}")
                condition = bool(flags[name]) if kind == "if" else not flags[name]
                stack.append((condition, active))
                active = active and condition
            elif kind == "else":
                if not stack:
                    raise TemplateError(f"line {number}: #% else without #% if")
                condition, outer = stack[-1]
                stack[-1] = (not condition, outer)
                active = outer and not condition
            else:
                if not stack:
                    raise TemplateError(f"line {number}: #% endif without #% if")
                _, active = stack.pop()
            continue
        if not active:
            continue
        block = _CONFIG.match(line)
        if block:
            out.extend(block.group(1) + c for c in config_block(config))
            continue
        out.append(line)
    if stack:
        raise TemplateError("a #% if block is not closed")
    result = "\n".join(out) + "\n"
    for key, value in (text or {}).items():
        result = result.replace("{{" + key + "}}", safe_text(value))
    # blank lines left where a block was dropped: at most two in a row, as PEP 8 has it
    return re.sub(r"\n{4,}", "\n\n\n", result)

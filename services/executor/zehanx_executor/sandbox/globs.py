"""The ``collect`` glob patterns of ExecuteRequest, matched against job-relative paths.

``*`` and ``?`` stay inside one folder, ``**`` (a whole segment) crosses folders (``out/**`` is every
file under ``out``; ``**/*.json`` every JSON file anywhere), ``[...]`` is a character class and
``{a,b}`` alternatives (not nested).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out += _expand_braces(head + alt + tail)
    return out[:256]


def _segment(seg: str) -> str:
    out, i = [], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = seg.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = seg[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``patterns`` (None when there are none)."""
    alts: list[str] = []
    for pattern in patterns:
        for p in _expand_braces(pattern):
            parts = p.split("/")
            rx = ""
            for k, seg in enumerate(parts):
                last = k == len(parts) - 1
                if seg == "**":
                    rx += ".*" if last else "(?:[^/]+/)*"
                else:
                    rx += _segment(seg) + ("" if last else "/")
            alts.append(rx)
    if not alts:
        return None
    return re.compile("^(?:" + "|".join(alts) + ")$")

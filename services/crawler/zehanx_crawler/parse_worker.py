"""The parsing process: where the crawler parses and cleans bytes from the outside world.

:class:`zehanx_crawler.parse_pool.ParsePool` starts it with exec (``python -c`` calling :func:`serve`;
the gRPC server is never forked) and talks to it over its stdin and stdout: a frame is an 8-byte
big-endian length and a pickle. A request is ``(function, args)``; the reply is ``(status, value,
peak_rss_bytes, rss_bytes)`` with status ``ok`` (value: the result), ``error`` (a domain error),
``memory`` (the address-space cap was hit) or ``crash`` (another exception, as ``"Type: message"``).

The process caps its own address space (``RLIMIT_AS``) before it reads a request, so a parser bomb
fails here with :class:`MemoryError` instead of taking the host's memory, and the server kills it when
the build's time is up or its caller goes away: parsing that never ends cannot outlive its job.

Results come back small: :func:`parse` writes each table's rows to a file in the build's work folder
and returns the table's description; :func:`clean` reads those files back here, in the next parsing
process, so raw rows never travel through the server process.
"""

from __future__ import annotations

import os
import pickle
import resource
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from zehanx_runtime.errors import DomainError

from zehanx_crawler import cleaning
from zehanx_crawler.domain import RawTable, Resource
from zehanx_crawler.parsers import Parsed, parse_resource
from zehanx_crawler.parsers.archives import ArchiveLimits
from zehanx_crawler.parsers.html_tables import GridLimits

_FRAME = 8


def described(res: Resource) -> Resource:
    """``res`` without its bytes (their count kept): what a table needs for its provenance."""
    if res.size is not None:
        return res
    return replace(res, data=b"", size=len(res.data))


# -- the operations (run in the parsing process) -------------------------------------------------


def parse(res: Resource, limits: ArchiveLimits, grid: GridLimits, folder: str) -> Parsed:
    """:func:`parse_resource`, with every table's rows written to a file under ``folder``."""
    parsed = parse_resource(res, limits, grid)
    for table in parsed.tables:
        path = Path(folder) / f"{uuid.uuid4().hex}.rows"
        with open(path, "wb") as f:
            pickle.dump(table.rows, f, protocol=pickle.HIGHEST_PROTOCOL)
        table.row_count = len(table.rows)
        table.rows = []
        table.rows_file = str(path)
        if table.resource is not None:
            table.resource = described(table.resource)
    return parsed


def _loaded(table: RawTable) -> RawTable:
    if not table.rows_file:
        return table
    with open(table.rows_file, "rb") as f:
        rows = pickle.load(f)  # written by a parsing process of this build
    return replace(table, rows=rows, rows_file="", row_count=0)


def clean(tables: list[RawTable], max_columns: int) -> cleaning.Table:
    """Stack ``tables`` (rows read back from their files) and type them: :func:`cleaning.clean`."""
    raw = cleaning.concat([_loaded(t) for t in tables])
    table = cleaning.clean(raw, max_columns=max_columns)
    # Back to the server without the raw rows (rows_file "-": read, not kept) and without the cached
    # views of each column.
    table.sources = [replace(raw, rows=[], rows_file="-", row_count=raw.n_rows)]
    for column in table.columns:
        for cached in ("present", "missing", "distinct"):
            column.__dict__.pop(cached, None)
    return table


# -- the process ---------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the server that started it dies (best effort)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _rss() -> tuple[int, int]:
    """(peak, current) resident memory of this process, in bytes: ``VmHWM`` and ``VmRSS``, which
    start afresh at exec (``ru_maxrss`` carries over the server's own peak through fork and exec)."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith((b"VmHWM:", b"VmRSS:")):
                    key, value = line.split(b":", 1)
                    fields[key.decode()] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    peak = fields.get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak, fields.get("VmRSS", peak)


def _read(stream: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _answer(function: Any, args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", function(*args)
    except DomainError as exc:
        return "error", exc
    except MemoryError:
        return "memory", ""
    except Exception as exc:  # a parser bug: name it, the server reports it
        return "crash", f"{type(exc).__name__}: {exc}"[:1000]


def serve(argv: list[str]) -> int:
    """Answer requests on stdin until it closes. ``argv``: the address-space cap in bytes."""
    memory = int(argv[0])
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.setrecursionlimit(5000)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the replies
    requests = sys.stdin.buffer
    while True:
        head = _read(requests, _FRAME)
        if head is None:
            return 0
        body = _read(requests, int.from_bytes(head, "big"))
        if body is None:
            return 0
        function, args = pickle.loads(body)  # from the server that started this process
        del body
        status, value = _answer(function, args)
        del function, args
        try:
            data = pickle.dumps((status, value, *_rss()), protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            data = pickle.dumps(("memory", "", *_rss()))
        except Exception as exc:
            data = pickle.dumps(("crash", f"unpicklable result: {type(exc).__name__}: {exc}"[:1000], *_rss()))
        del value
        replies.write(len(data).to_bytes(_FRAME, "big"))
        replies.write(data)
        replies.flush()

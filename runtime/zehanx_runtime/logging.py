"""structlog, configured once per process.

``merge_contextvars`` comes first so that the request id, job id and RPC name bound by the logging
interceptor appear on every line written while a call runs. JSON when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog
import structlog.tracebacks

#: Tracebacks as structured data, WITHOUT each frame's local variables (structlog's ``dict_tracebacks``
#: shows them): a frame's locals hold API keys, users' provider keys, passwords and tokens.
_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", json: bool | None = None, *, service: str | None = None) -> None:
    """Configure structlog for this process (idempotent: the last call wins)."""
    if json is None:
        json = not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        processors.append(_add_service(service))
    if json:
        processors += [_TRACEBACKS, structlog.processors.JSONRenderer()]
    else:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(),
                exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
            )
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        # PrintLogger only writes and flushes, which is all _CurrentStderr offers.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a stream
    swapped in and closed later (a test's capture, a redirect) must not take every later line with it
    (writing to it would raise "I/O operation on closed file" inside whatever was logging)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _add_service(service: str) -> Any:
    def processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return processor


def get_logger(name: str | None = None, **bind: Any) -> Any:
    """Return a structlog logger, optionally with values bound."""
    log = structlog.get_logger(name) if name else structlog.get_logger()
    return log.bind(**bind) if bind else log

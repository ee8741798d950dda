"""A stand-in HTTP endpoint (a JWKS, a provider's API) on a real loopback server, port 0.

The handler class is the test's own; this serves it on a thread and stops it on exit.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes no access log to stderr, and answers JSON."""

    def log_message(self, *args: object) -> None:
        pass

    def reply_json(self, status: int, doc: object = None) -> None:
        """Answer ``status`` with ``doc`` as JSON (bytes go as they are; ``None``: an empty body)."""
        body = doc if isinstance(doc, bytes) else b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        if doc is not None:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on 127.0.0.1 (a free port) and yield the port; shut down and closed on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()

"""A stand-in HTTP(S) endpoint (a JWKS, a provider's API, a web site) on a real loopback server, port 0.

The handler class is the test's own; this serves it on a thread and stops it on exit.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes no access log to stderr, and answers bytes or JSON."""

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str | None = None) -> None:
        """Answer ``status`` with ``body``, with its length and (if given) its content type."""
        self.send_response(status)
        if content_type is not None:
            self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status: int, doc: object = None) -> None:
        """Answer ``status`` with ``doc`` as JSON (bytes go as they are; ``None``: an empty body)."""
        body = doc if isinstance(doc, bytes) else b"" if doc is None else json.dumps(doc).encode()
        self.reply(status, body, None if doc is None else "application/json")


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """Serve ``handler`` on 127.0.0.1 (a free port) and yield the port; shut down and closed on exit.
    With ``tls`` (a server context) it serves HTTPS."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()

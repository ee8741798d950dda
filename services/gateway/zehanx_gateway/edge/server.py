"""The edge's HTTP server: uvicorn (HTTP/1.1) inside the gateway process, on the gateway's event loop.

It serves ``/zehanx.gateway.v1.GatewayService/<Method>`` over the Connect protocol (JSON or binary,
unary and server streaming; gRPC-Web too, which connectrpc picks by content type). Plain gRPC
(``application/grpc``) needs HTTP/2 and trailers: it is refused here with a pointer to the gRPC port.
The web dashboard (``web/dist``, built by ``make setup``) is served from the same origin, so the page
needs no CORS: ``GET /`` and app routes (``/jobs/<id>``…) answer its ``index.html``, its files answer
themselves, and ``/config.json`` tells the page where to sign in. Connect and ``/auth/v1/`` paths come
first; every page response carries a strict Content-Security-Policy (no inline script).

A stream whose client went away is cancelled at once, so a WatchJob on a quiet job does not hold its
subscription until the next event. The server never installs signal handlers: the gateway's
:func:`~zehanx_runtime.server.serve` owns SIGTERM/SIGINT and stops the edge from its shutdown hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import uvicorn
from connectrpc.errors import ConnectError

from zehanx_gateway.edge.auth_routes import PREFIX as AUTH_PREFIX
from zehanx_gateway.edge.connect import ConnectService

Scope = dict[str, Any]
Receive = Any
Send = Any


#: Files of the built app served as themselves, by extension; any other path without an extension is an
#: app route (the page's own router reads it) and answers index.html.
#: Types worth compressing (text); images are compressed already.
_COMPRESSIBLE = {".html", ".js", ".css", ".json", ".svg", ".txt", ".map"}


@dataclass(frozen=True)
class _File:
    """A file of the build as served: its bytes, gzip'd bytes (text only) and a strong ETag."""

    stamp: tuple[int, int]
    raw: bytes
    packed: bytes | None
    etag: bytes


_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}


def content_security_policy(auth_origin: str = "") -> str:
    """The page's CSP: everything from this origin only (plus the Supabase origin for sign-in), no
    inline script or style, no framing, no plugins."""
    connect = "'self'" + (f" {auth_origin}" if auth_origin else "")
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src {connect}; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` ("" when it has none)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


class WebApp:
    """The built dashboard in ``root`` (``web/dist``) and its ``/config.json``.

    ``supabase_url``: sign-in goes to Supabase Auth at ``<url>/auth/v1`` with ``anon_key``; unset: to this
    edge's own ``/auth/v1``. A missing build answers 503 with what to run, never a stack trace.
    """

    def __init__(self, root: Path, *, supabase_url: str = "", anon_key: str = "") -> None:
        self._root = root.resolve()
        supabase_url = supabase_url.rstrip("/")
        self._config = json.dumps(
            {
                "auth": {
                    "mode": "supabase" if supabase_url else "local",
                    "url": f"{supabase_url}/auth/v1" if supabase_url else "/auth/v1",
                    "anonKey": anon_key if supabase_url else "",
                }
            }
        ).encode()
        self._headers = [
            (b"content-security-policy", content_security_policy(origin_of(supabase_url)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        self._files: dict[Path, _File] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, {"code": "method_not_allowed", "message": "the web app answers GET only"})
            return
        path = unquote(scope["path"])
        if path == "/config.json":
            await self._respond(send, 200, "application/json", self._config, method, cache="no-store")
            return
        name = path.rsplit("/", 1)[-1]
        suffix = Path(name).suffix.lower()
        if suffix:  # a file of the app (app.js, app.css…): itself or 404
            target = (self._root / path.lstrip("/")).resolve()
            if suffix not in _STATIC_TYPES or not target.is_relative_to(self._root) or not target.is_file():
                body = f"no such file: {path}\n".encode()
                await self._respond(send, 404, "text/plain; charset=utf-8", body, method)
                return
        else:  # an app route (/, /jobs/<id>…): the page, whose router reads the path
            target = self._root / "index.html"
            suffix = ".html"
            if not target.is_file():
                body = (
                    f"The web dashboard is not built ({target} is missing): run `make setup` "
                    "(or scripts/build_web.sh).\n"
                ).encode()
                await self._respond(send, 503, "text/plain; charset=utf-8", body, method, cache="no-store")
                return
        served = self._file(target, suffix)
        extra = [(b"etag", served.etag), (b"vary", b"accept-encoding")]
        if _header(scope, b"if-none-match") == served.etag.decode():
            # Unchanged since the browser's copy: no body (the build changes the ETag).
            await self._respond(send, 304, _STATIC_TYPES[suffix], b"", "HEAD", extra=extra, length=False)
            return
        body = served.raw
        if served.packed is not None and "gzip" in _header(scope, b"accept-encoding"):
            body = served.packed
            extra.append((b"content-encoding", b"gzip"))
        await self._respond(send, 200, _STATIC_TYPES[suffix], body, method, extra=extra)

    def _file(self, target: Path, suffix: str) -> _File:
        """The file as served, read (and compressed) again only when it changed on disk."""
        info = target.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        cached = self._files.get(target)
        if cached is None or cached.stamp != stamp:
            raw = target.read_bytes()
            packed = gzip.compress(raw, compresslevel=9, mtime=0) if suffix in _COMPRESSIBLE else None
            etag = f'"{hashlib.sha256(raw).hexdigest()[:32]}"'.encode()
            cached = self._files[target] = _File(stamp, raw, packed, etag)
        return cached

    async def _respond(
        self,
        send: Send,
        status: int,
        content_type: str,
        body: bytes,
        method: str,
        *,
        cache: str = "no-cache",
        extra: list[tuple[bytes, bytes]] | None = None,
        length: bool = True,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            *([(b"content-length", str(len(body)).encode())] if length else []),
            (b"cache-control", cache.encode()),
            *(extra or []),
            *self._headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False}
        )


class EdgeApp:
    """The ASGI application of the edge: Connect calls of the public service, the accounts' routes
    (``/auth/v1/…``), then the web app (``web``) for every other path; 404 for anything else when the
    edge has no web app."""

    def __init__(self, service: ConnectService, auth: Any = None, web: WebApp | None = None) -> None:
        self._service = service
        self._prefix = service.path + "/"
        self._auth = auth
        self._web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: closed unanswered (uvicorn answers 403)
        if self._auth is not None and scope["path"].startswith(AUTH_PREFIX):
            await self._auth(scope, receive, send)
            return
        if not scope["path"].startswith(self._prefix):
            if self._web is not None and not scope["path"].startswith(AUTH_PREFIX):
                await self._web(scope, receive, send)
                return
            await _plain(send, 404, {"code": "not_found", "message": f"no such path: {scope['path']}"})
            return
        content_type = _header(scope, b"content-type")
        if content_type.startswith("application/grpc") and not content_type.startswith(
            "application/grpc-web"
        ):
            await _plain(
                send,
                415,
                {
                    "code": "unimplemented",
                    "message": "plain gRPC is served on the gateway's gRPC port (ZX_GATEWAY_PORT); "
                    "this port speaks Connect and gRPC-Web over HTTP/1.1",
                },
            )
            return
        await self._until_disconnect(scope, receive, send)

    async def _until_disconnect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the call, cancelling it as soon as the client disconnects."""
        call: asyncio.Task[None] | None = None

        async def watched() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.disconnect" and call is not None and not call.done():
                call.cancel()
            return message

        call = asyncio.create_task(self._service(scope, watched, send))
        try:
            await call
        except (asyncio.CancelledError, ConnectError):
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server itself is cancelling this request
            # The client went away: the call was cancelled for it; there is nobody to answer.


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1").lower()
    return ""


async def _plain(send: Send, status: int, body: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway's serve() handles SIGTERM/SIGINT and stops the edge itself.
        yield


@dataclass
class RunningEdge:
    """A started edge: where it listens, and how to stop it."""

    host: str
    port: int
    _server: _Server
    _task: asyncio.Task[None]
    tls: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, give open ones ``grace`` seconds (streams are then cancelled)."""
        self._server.config.timeout_graceful_shutdown = grace
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def start_edge(
    app: Any,
    *,
    host: str,
    port: int,
    grace: float = 5.0,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
) -> RunningEdge:
    """Bind ``host:port`` (0: a free port) and serve ``app`` over HTTP/1.1 until stopped.

    ``ssl_certfile`` and ``ssl_keyfile`` (PEM): serve https instead of http.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"the gateway's web edge cannot listen on {host}:{port} ({exc.strerror}); "
            "move it with ZX_GATEWAY_EDGE_PORT or turn it off with ZX_GATEWAY_EDGE_ENABLED=false"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        app,
        lifespan="off",
        # the C parser (httptools) rather than h11: every refused request of a flood costs less of the loop
        http="httptools",
        loop="none",
        log_config=None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=grace,
        server_header=False,
        # uvicorn would otherwise rewrite the client address from X-Forwarded-For for peers on
        # 127.0.0.1; the accounts decide whom to believe (ZX_GATEWAY_TRUSTED_PROXIES).
        proxy_headers=False,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="zx-gateway-edge")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises the start-up failure
            raise RuntimeError("the gateway's web edge stopped while starting")
        await asyncio.sleep(0.01)
    bound = sock.getsockname()
    return RunningEdge(
        host=host, port=int(bound[1]), _server=server, _task=task, tls=ssl_certfile is not None
    )

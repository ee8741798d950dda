"""The edge's HTTP server: uvicorn (HTTP/1.1) inside the gateway process, on the gateway's event loop.

It serves ``/zehanx.gateway.v1.GatewayService/<Method>`` over the Connect protocol (JSON or binary,
unary and server streaming; gRPC-Web too, which connectrpc picks by content type). Plain gRPC
(``application/grpc``) needs HTTP/2 and trailers: it is refused here with a pointer to the gRPC port.

A stream whose client went away is cancelled at once, so a WatchJob on a quiet job does not hold its
subscription until the next event. The server never installs signal handlers: the gateway's
:func:`~zehanx_runtime.server.serve` owns SIGTERM/SIGINT and stops the edge from its shutdown hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from connectrpc.errors import ConnectError

from zehanx_gateway.edge.auth_routes import PREFIX as AUTH_PREFIX
from zehanx_gateway.edge.connect import ConnectService

Scope = dict[str, Any]
Receive = Any
Send = Any


class EdgeApp:
    """The ASGI application of the edge: Connect calls of the public service, the accounts' routes
    (``/auth/v1/…``); 404 for anything else."""

    def __init__(self, service: ConnectService, auth: Any = None) -> None:
        self._service = service
        self._prefix = service.path + "/"
        self._auth = auth

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

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, give open ones ``grace`` seconds (streams are then cancelled)."""
        self._server.config.timeout_graceful_shutdown = grace
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def start_edge(app: Any, *, host: str, port: int, grace: float = 5.0) -> RunningEdge:
    """Bind ``host:port`` (0: a free port) and serve ``app`` over HTTP/1.1 until stopped."""
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
        http="h11",
        loop="none",
        log_config=None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=grace,
        server_header=False,
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
    return RunningEdge(host=host, port=int(bound[1]), _server=server, _task=task)

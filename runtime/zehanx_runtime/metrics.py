"""Prometheus metrics: what every service measures about its RPCs, and its ``/metrics`` endpoint.

Every service gets the gRPC server metrics from the one interceptor (:mod:`zehanx_runtime.interceptors`),
named as go-grpc-middleware's Prometheus interceptors name them (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``, ``grpc_server_msg_sent_total``,
``grpc_server_msg_received_total``), so dashboards written for gRPC services read them as they are; plus
``zx_grpc_server_in_flight_rpcs``. Services add their domain metrics (``zx_<service>_…``) to the same
default registry, beside the process metrics prometheus-client collects itself (CPU, memory, open files).

Labels are bounded: service, method, type and status code, and small fixed sets a service chooses
(a job state, an end reason). Never a job id, a user id or a URL.

The endpoint is served on ``ZX_<SERVICE>_METRICS_PORT`` (``zx up`` assigns one per service and ``zx
status --json`` reports it as ``metrics_address``); unset, a service serves no metrics endpoint.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

#: Seconds: from a health check (~1 ms) to a training run's stream (tens of minutes).
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)

_RPC = ["grpc_type", "grpc_service", "grpc_method"]
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", [*_RPC, "grpc_code"]
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end on the server (a stream: its whole life).",
    _RPC,
    buckets=LATENCY_BUCKETS,
)
MSG_SENT = Counter("grpc_server_msg_sent_total", "Stream messages sent by the server.", _RPC)
MSG_RECEIVED = Counter("grpc_server_msg_received_total", "Stream messages received by the server.", _RPC)
IN_FLIGHT = Gauge("zx_grpc_server_in_flight_rpcs", "RPCs being handled now.", ["grpc_service", "grpc_method"])


class Rpc:
    """One method's label values, and its labelled metrics resolved once (``.labels()`` takes a lock and
    hashes the label tuple: per call it was a measurable part of a unary call's cost)."""

    __slots__ = (
        "handled",
        "handling",
        "in_flight",
        "method",
        "received",
        "sent",
        "service",
        "started",
        "type",
    )

    def __init__(self, type: str, service: str, method: str) -> None:
        self.type, self.service, self.method = type, service, method
        self.started = STARTED.labels(*self.labels)
        self.handling = HANDLING.labels(*self.labels)
        self.sent = MSG_SENT.labels(*self.labels)
        self.received = MSG_RECEIVED.labels(*self.labels)
        self.in_flight = IN_FLIGHT.labels(service, method)
        #: grpc_code -> the handled counter's child, filled as codes occur (a fixed set of 17).
        self.handled: dict[str, Any] = {}

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.type, self.service, self.method)

    def handled_with(self, code: str) -> Any:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = HANDLED.labels(*self.labels, code)
        return child


_KINDS = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}
_RPCS: dict[tuple[str, bool, bool], Rpc] = {}


def rpc_of(full_method: str, *, client_streaming: bool, server_streaming: bool) -> Rpc:
    """``/pkg.Service/Method`` and the handler's kind as label values (one :class:`Rpc` per method: the
    methods a server registers are a fixed set; an unknown method never reaches the interceptor's
    handler)."""
    key = (full_method, client_streaming, server_streaming)
    rpc = _RPCS.get(key)
    if rpc is None:
        service, _, method = full_method.lstrip("/").partition("/")
        kind = _KINDS[(client_streaming, server_streaming)]
        rpc = _RPCS[key] = Rpc(kind, service or "unknown", method or "unknown")
    return rpc


class CallMetrics:
    """The metrics of one call: started on creation, handled on :meth:`done`."""

    __slots__ = ("_rpc", "_timer")

    def __init__(self, rpc: Rpc, clock: float) -> None:
        self._rpc = rpc
        self._timer = clock
        rpc.started.inc()
        rpc.in_flight.inc()

    def sent(self) -> None:
        self._rpc.sent.inc()

    def received(self) -> None:
        self._rpc.received.inc()

    def done(self, code: str, clock: float) -> None:
        rpc = self._rpc
        rpc.handled_with(code).inc()
        rpc.handling.observe(max(0.0, clock - self._timer))
        rpc.in_flight.dec()


def serve_metrics(host: str, port: int) -> tuple[Any, int]:
    """Serve ``/metrics`` (the default registry) on ``host:port`` in a thread; returns the server and the
    bound port (``port`` 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server, int(server.server_port)

"""The crawler's egress guard: which addresses it may connect to, checked on every connection.

Policy (:func:`denial`): only global unicast addresses are allowed. The IANA special-purpose registries
(RFC 6890 and its updates) are denied explicitly, by network, rather than through ``ipaddress`` flags
alone: private, loopback, link-local, carrier-grade NAT 100.64.0.0/10, documentation, benchmarking,
multicast, reserved, site-local fec0::/10, unique-local fc00::/7 and the cloud metadata addresses
(169.254.169.254, 100.100.100.200, 168.63.129.16, fd00:ec2::254 ...). Addresses that carry an IPv4
address inside an IPv6 one (IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``,
Teredo ``2001::/32``) are unpacked and the IPv4 address is judged too; the local-use NAT64 prefix
``64:ff9b:1::/48`` is denied whole (its layout is the operator's choice, so it cannot be unpacked safely).

Pinning (:class:`GuardedNetworkBackend`): httpx hands every new TCP connection to an httpcore network
backend with the URL's host name. This backend resolves that name once, checks every address it got,
and connects to one of exactly those addresses. TLS is then started by httpcore with the URL's name as
SNI and as the name the certificate must match, and the Host header is the URL's, so only the socket's
address is pinned. Nothing is cached between connections: a name that answers differently each time
(DNS rebinding) cannot make a connection to an address that was not checked for that connection.

Firecrawl fetches pages itself, so its URLs can only be checked before the call (:meth:`EgressGuard.check_url`);
a self-hosted Firecrawl on the internal network is the case that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx
from zehanx_runtime.errors import InvalidArgument, PermissionDenied, Unavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses``: how names are resolved (tests stand in for DNS here).
Resolver = Callable[[str, int], Awaitable[list[str]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 special-purpose networks (IANA registry, RFC 6890 and updates) plus cloud metadata endpoints.
_DENIED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), '"this network"'),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT (shared address space; cloud metadata 100.100.100.200)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (cloud metadata 169.254.169.254)"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.31.196.0/24"), "AS112"),
    (_V4("192.52.193.0/24"), "AMT"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("192.175.48.0/24"), "AS112"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
    (_V4("168.63.129.16/32"), "cloud metadata (Azure)"),
)

#: IPv6 special-purpose networks. Everything outside 2000::/3 (global unicast) is denied as well.
_DENIED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::1/128"), "loopback"),
    (_V6("::/128"), "unspecified"),
    (_V6("::/96"), "IPv4-compatible (deprecated)"),
    (_V6("::ffff:0:0:0/96"), "IPv4-translated"),
    (_V6("64:ff9b:1::/48"), "local-use IPv4/IPv6 translation"),
    (_V6("::/8"), "reserved"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/23"), "IETF protocol assignments"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("5f00::/16"), "SRv6 segment identifiers"),
    (_V6("fc00::/7"), "unique local (cloud metadata fd00:ec2::254)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
)
_GLOBAL_UNICAST_V6 = _V6("2000::/3")
_MAPPED = _V6("::ffff:0:0/96")
_NAT64 = _V6("64:ff9b::/96")
_SIX_TO_FOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")


def _denial_v4(address: ipaddress.IPv4Address) -> str | None:
    for network, what in _DENIED_V4:
        if address in network:
            return f"{what}, {network}"
    if not address.is_global or address.is_multicast:  # a second opinion; the table above is the policy
        return "not a global unicast address"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The IPv4 address(es) an IPv6 address carries, by the form that carries them."""
    if address in _MAPPED and address.ipv4_mapped is not None:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address in _NAT64:  # RFC 6052 /96: the last 32 bits
        return "NAT64", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _SIX_TO_FOUR and address.sixtofour is not None:
        return "6to4", [address.sixtofour]
    if address in _TEREDO and address.teredo is not None:
        return "Teredo", list(address.teredo)  # (server, client), the client un-obfuscated
    return None


def denial(address: IPAddress) -> str | None:
    """Why the crawler may not connect to ``address``, or None when it may (a global unicast address)."""
    if isinstance(address, ipaddress.IPv4Address):
        return _denial_v4(address)
    plain = ipaddress.IPv6Address(int(address))  # without a %scope
    embedded = _embedded_v4(plain)
    if embedded is not None:
        form, inner = embedded
        for v4 in inner:
            why = _denial_v4(v4)
            if why is not None:
                return f"{form} form of {v4}: {why}"
        return None
    for network, what in _DENIED_V6:
        if plain in network:
            return f"{what}, {network}"
    if plain not in _GLOBAL_UNICAST_V6 or not plain.is_global:
        return "not a global unicast address"
    return None


def _literal(host: str) -> list[IPAddress] | None:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's resolver (``getaddrinfo``), addresses in its order without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


class EgressGuard:
    """Resolves and checks names for the crawler's connections (see the module docstring)."""

    def __init__(
        self,
        *,
        allow_private_networks: bool = False,
        resolver: Resolver | None = None,
        connector: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private_networks = allow_private_networks
        self._resolve = resolver or system_resolver
        #: What opens the socket to a vetted address (tests stand in for the internet here).
        self._connector = connector or httpcore.AnyIOBackend()

    async def vetted_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` once and return its addresses, or raise PRIVATE_ADDRESS when any is denied."""
        addresses = _literal(host)
        if addresses is None:
            try:
                answers = await self._resolve(host, port)
            except OSError as exc:
                raise Unavailable(
                    f"could not resolve host {host!r} ({exc.strerror or exc})",
                    reason="HOST_NOT_FOUND",
                    metadata={"host": host},
                ) from None
            addresses = []
            for answer in answers:
                with contextlib.suppress(ValueError):
                    addresses.append(ipaddress.ip_address(answer))
            if not addresses:
                raise Unavailable(
                    f"could not resolve host {host!r} (no usable address)",
                    reason="HOST_NOT_FOUND",
                    metadata={"host": host},
                )
        for address in addresses:
            why = denial(address)
            if why is not None:
                raise PermissionDenied(
                    f"{host} resolves to {address}, not a public address ({why}); the crawler only fetches "
                    "public addresses (set ZX_CRAWLER_ALLOW_PRIVATE_NETWORKS=true for local development)",
                    reason="PRIVATE_ADDRESS",
                    metadata={"host": host},
                )
        return addresses

    async def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is http(s) and its host resolves only to allowed addresses. For
        fetchers that resolve on their own (Firecrawl); the crawler's own connections are pinned instead."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidArgument(f"{url!r} is not an http(s) URL", reason="INVALID_URL")
        if self.allow_private_networks:
            return
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        await self.vetted_addresses(parsed.raw_host.decode("ascii"), port)

    def network_backend(self) -> GuardedNetworkBackend:
        return GuardedNetworkBackend(self, self._connector)

    def transport(
        self, *, limits: httpx.Limits | None = None, verify: Any = True
    ) -> httpx.AsyncHTTPTransport:
        """An httpx transport whose every connection goes through this guard (no proxy, no env)."""
        return _GuardedTransport(self.network_backend(), limits=limits or httpx.Limits(), verify=verify)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses vetted for this very connection (see the module docstring)."""

    def __init__(self, guard: EgressGuard, connector: httpcore.AsyncNetworkBackend) -> None:
        self._guard = guard
        self._connector = connector

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._guard.allow_private_networks:
            return await self._connector.connect_tcp(host, port, timeout, local_address, socket_options)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._guard.vetted_addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took more than {timeout} s") from None
        last: Exception = httpcore.ConnectError(f"{host}: no address to connect to")
        for index, address in enumerate(addresses):
            # One address that drops packets must not use up the time of the others: each gets its share.
            remaining = (
                None if deadline is None else max(0.0, deadline - loop.time()) / (len(addresses) - index)
            )
            try:
                return await self._connector.connect_tcp(
                    str(address), port, remaining, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PermissionDenied("the crawler does not connect to unix sockets", reason="PRIVATE_ADDRESS")

    async def sleep(self, seconds: float) -> None:
        await self._connector.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, error mapping, streaming) over a guarded connection pool."""

    def __init__(self, backend: GuardedNetworkBackend, *, limits: httpx.Limits, verify: Any) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False)
        # httpx 0.28 exposes no network_backend option, so the pool it built is replaced by the same pool
        # with the guarded backend. Checked here so an httpx upgrade that renames it fails loudly.
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps an httpcore pool in _pool")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )

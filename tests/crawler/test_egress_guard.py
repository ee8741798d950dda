"""The crawler's egress guard (security review H1, M8): DNS rebinding and special-purpose addresses.

A real HTTP server on 127.0.0.1 stands in for an internal service and logs every request it gets. DNS is
played by the attacker: either ``socket.getaddrinfo`` is patched (the review's proof of concept) or the
guard's resolver is a stand-in. The public internet is a second local server: the stand-in connector sends
connections for the public address there, lets loopback through untouched (so a guard that failed would
really reach the internal server) and calls every other address unreachable. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from crawler_support import Internet
from support.http_stand_in import QuietHandler, serve_http
from zehanx_crawler.egress import EgressGuard, denial
from zehanx_crawler.fetcher import FetchPolicy, HttpFetcher
from zehanx_runtime.errors import PermissionDenied, Unavailable

pytestmark = pytest.mark.timeout(60)

NAME = "rebind.attacker.test"
PUBLIC = "93.184.216.34"  # stands for any public address; its connections go to the public stand-in
SECRET = b"name,secret\nadmin,INTERNAL-ONLY-TOKEN-123\n"
PUBLIC_BODY = b"a,b\n1,2\n"


@dataclass
class Site:
    """A local HTTP(S) server that logs ``(path, Host header)`` of every request it answers."""

    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, when it serves TLS


@contextlib.contextmanager
def _serve(body: bytes, tls: ssl.SSLContext | None = None) -> Iterator[Site]:
    site = Site(0)

    class Handler(QuietHandler):  # HTTP/1.0: one request per connection
        def do_GET(self) -> None:
            site.requests.append((self.path, self.headers.get("Host", "")))
            status, data = (404, b"no robots") if self.path == "/robots.txt" else (200, body)
            self.reply(status, data, "text/csv")

    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: site.server_names.append(name)  # type: ignore[assignment]
    with serve_http(Handler, tls) as port:
        site.port = port
        yield site


@pytest.fixture
def internal() -> Iterator[Site]:
    """The internal service the attacker is after."""
    with _serve(SECRET) as site:
        yield site


@pytest.fixture
def public() -> Iterator[Site]:
    """The public web site the attacker's name first points to."""
    with _serve(PUBLIC_BODY) as site:
        yield site


class Dns:
    """The attacker's DNS: for ``NAME`` the next answer of ``answers`` (cycling); other names fail."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        if host != NAME:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers[self.calls % len(self.answers)]
        self.calls += 1
        return answer


def _fetcher(guard: EgressGuard, *, robots: bool = False) -> HttpFetcher:
    policy = FetchPolicy(
        retries=0, respect_robots=robots, per_host_rps=1000.0, connect_timeout_s=5.0, backoff_s=0.01
    )
    return HttpFetcher(policy, guard=guard)


async def _refused(guard: EgressGuard, url: str) -> PermissionDenied:
    """The refusal of a fetcher behind ``guard`` for ``url`` (it must raise PermissionDenied)."""
    fetcher = _fetcher(guard)
    try:
        with pytest.raises(PermissionDenied) as info:
            await fetcher.fetch(url)
    finally:
        await fetcher.aclose()
    return info.value


# -- H1: DNS rebinding --------------------------------------------------------------------------------


async def test_h1_rebinding_after_a_public_answer_is_refused(
    internal: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's proof of concept: job 1 sees a public address, job 2 the internal one. The old code
    cached the name after job 1 and fetched the internal service in job 2."""
    answer = {"address": "127.0.0.1"}
    real_getaddrinfo = socket.getaddrinfo

    def attacker_dns(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == NAME:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer["address"], int(port or 0)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", attacker_dns)
    internet = Internet()  # the public address is unreachable here, as in the review's run
    fetcher = _fetcher(EgressGuard(connector=internet), robots=True)
    url = f"http://{NAME}:{internal.port}/data.csv"
    try:
        with pytest.raises(PermissionDenied) as control:  # control: the internal answer on a fresh fetcher
            await fetcher.fetch(url)
        assert control.value.reason == "PRIVATE_ADDRESS"

        answer["address"] = PUBLIC  # job 1
        with pytest.raises(Unavailable) as job1:
            await fetcher.fetch(url)
        assert job1.value.reason == "SOURCE_UNREACHABLE"

        answer["address"] = "127.0.0.1"  # job 2: the name now points inside
        with pytest.raises(PermissionDenied) as job2:
            await fetcher.fetch(url)
        assert job2.value.reason == "PRIVATE_ADDRESS"
    finally:
        await fetcher.aclose()
    assert internal.requests == []  # robots.txt included
    assert internet.connects == [PUBLIC]  # only job 1's robots.txt connection was opened


async def test_h1_alternating_answers_never_connect_to_the_private_address(
    internal: Site, public: Site
) -> None:
    """A name that answers public, private, public, ... per lookup: every connection is made to the
    address checked for it, so the fetches alternate between the public site and a refusal."""
    dns = Dns([PUBLIC], ["127.0.0.1"])
    internet = Internet({PUBLIC: public.port})
    fetcher = _fetcher(EgressGuard(resolver=dns, connector=internet))
    url = f"http://{NAME}:{internal.port}/data.csv"
    outcomes = []
    try:
        for _ in range(8):
            try:
                resource = await fetcher.fetch(url)
                outcomes.append(resource.data)
            except PermissionDenied as exc:
                outcomes.append(exc.reason)
    finally:
        await fetcher.aclose()
    assert outcomes == [PUBLIC_BODY, "PRIVATE_ADDRESS"] * 4
    assert dns.calls == 8  # one lookup per connection: nothing cached
    assert internal.requests == []
    assert set(internet.connects) == {PUBLIC}
    # The connection was pinned to the address, the request still names the host.
    assert public.requests == [("/data.csv", f"{NAME}:{internal.port}")] * 4


async def test_h1_an_answer_mixing_public_and_private_addresses_is_refused(internal: Site) -> None:
    internet = Internet()
    refusal = await _refused(
        EgressGuard(resolver=Dns([PUBLIC, "127.0.0.1"]), connector=internet),
        f"http://{NAME}:{internal.port}/data.csv",
    )
    assert refusal.reason == "PRIVATE_ADDRESS" and "127.0.0.1" in refusal.message
    assert internet.connects == [] and internal.requests == []


async def test_h1_a_redirect_to_a_rebound_name_is_checked_again(internal: Site) -> None:
    """The public site redirects to the attacker's name, which by then answers 127.0.0.1."""
    location = f"http://{NAME}:{internal.port}/data.csv"

    class Redirect(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve_http(Redirect) as port:
        internet = Internet({PUBLIC: port})
        refusal = await _refused(
            EgressGuard(resolver=Dns(["127.0.0.1"]), connector=internet), f"http://{PUBLIC}/start"
        )
    assert refusal.reason == "PRIVATE_ADDRESS"
    assert internet.connects == [PUBLIC] and internal.requests == []


def _certificates(name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``name`` signed by a fresh CA, and a client context that
    trusts only that CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("egress test CA", ca_key, "egress test CA", ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(name, leaf_key, "egress test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = f"{folder}/cert.pem", f"{folder}/key.pem"
        with open(cert_file, "wb") as f:
            f.write(leaf.public_bytes(pem))
        with open(key_file, "wb") as f:
            f.write(
                leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            )
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client


async def test_h1_a_pinned_tls_connection_verifies_the_urls_name() -> None:
    """Pinning changes only the socket's address: SNI, the certificate check and the Host header are
    still the URL's name, and a certificate for another name is refused."""
    server_tls, client_tls = _certificates(NAME)
    with _serve(PUBLIC_BODY, tls=server_tls) as site:
        internet = Internet({PUBLIC: site.port})
        guard = EgressGuard(resolver=Dns([PUBLIC]), connector=internet)
        async with httpx.AsyncClient(transport=guard.transport(verify=client_tls)) as client:
            response = await client.get(f"https://{NAME}/data.csv")
            assert response.status_code == 200 and response.content == PUBLIC_BODY
            assert site.server_names == [NAME]
            assert site.requests == [("/data.csv", NAME)]

            # The same address under another name: the certificate does not match that name.
            other = EgressGuard(resolver=lambda _h, _p: _answer(PUBLIC), connector=internet)
            async with httpx.AsyncClient(transport=other.transport(verify=client_tls)) as wrong:
                with pytest.raises(httpx.ConnectError, match=r"(?i)certificate|hostname"):
                    await wrong.get("https://other.attacker.test/data.csv")
        assert internet.connects == [PUBLIC, PUBLIC]
        assert len(site.requests) == 1


async def _answer(address: str) -> list[str]:
    return [address]


# -- M8: the address policy -----------------------------------------------------------------------------

_TEREDO_OF_LOOPBACK = str(
    ipaddress.IPv6Address(
        (0x20010000 << 96)
        | (int(ipaddress.IPv4Address("65.54.227.120")) << 64)
        | (int(ipaddress.IPv4Address("127.0.0.1")) ^ 0xFFFFFFFF)
    )
)

REFUSED = [
    "100.100.100.200",  # Alibaba Cloud metadata
    "100.64.0.1",  # carrier-grade NAT, Tailscale
    "fec0::1",  # site-local
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    _TEREDO_OF_LOOPBACK,  # Teredo with client 127.0.0.1
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::7f00:1",  # IPv4-compatible
    "0.0.0.0",
    "::",
    "::1",
    "169.254.169.254",  # AWS, GCP, Azure, OCI metadata
    "168.63.129.16",  # Azure wireserver
    "fd00:ec2::254",  # AWS metadata over IPv6
    "192.0.0.192",  # OCI metadata (IETF protocol assignments)
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "224.0.0.251",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "2001:db8::1",  # documentation
    "100::1",  # discard-only
]

ALLOWED = [
    PUBLIC,
    "8.8.8.8",
    "2606:2800:220:1:248:1893:25c8:1946",
    "64:ff9b::5db8:d822",  # NAT64 (DNS64) of a public address
    "::ffff:93.184.216.34",
]


@pytest.mark.parametrize("address", REFUSED)
async def test_m8_special_purpose_addresses_are_refused(address: str, internal: Site) -> None:
    assert denial(ipaddress.ip_address(address)) is not None
    internet = Internet()
    refusal = await _refused(
        EgressGuard(resolver=Dns([address]), connector=internet),
        f"http://{NAME}:{internal.port}/latest/meta-data/",
    )
    assert refusal.reason == "PRIVATE_ADDRESS"
    assert internet.connects == []


@pytest.mark.parametrize("address", ALLOWED)
async def test_m8_global_unicast_addresses_are_allowed(address: str, public: Site) -> None:
    assert denial(ipaddress.ip_address(address)) is None
    pinned = str(ipaddress.ip_address(address))  # the form the socket is opened with
    internet = Internet({pinned: public.port})
    fetcher = _fetcher(EgressGuard(resolver=Dns([address]), connector=internet))
    try:
        resource = await fetcher.fetch(f"http://{NAME}/data.csv")
    finally:
        await fetcher.aclose()
    assert resource.data == PUBLIC_BODY
    assert internet.connects == [pinned]


@pytest.mark.parametrize(
    "host",
    ["100.100.100.200", "[fec0::1]", "[::ffff:10.0.0.1]", "[64:ff9b::7f00:1]", "0.0.0.0", "2130706433"],
)
async def test_m8_address_literals_in_urls_are_refused_without_a_connection(
    host: str, internal: Site
) -> None:
    internet = Internet()
    # The system resolver (2130706433 is 127.0.0.1).
    refusal = await _refused(EgressGuard(connector=internet), f"http://{host}:{internal.port}/data.csv")
    assert refusal.reason == "PRIVATE_ADDRESS"
    assert internet.connects == [] and internal.requests == []


async def test_m8_check_url_applies_the_same_policy() -> None:
    guard = EgressGuard(resolver=Dns(["10.0.0.7"]))
    with pytest.raises(PermissionDenied):
        await guard.check_url(f"https://{NAME}/page")
    with pytest.raises(PermissionDenied):
        await guard.check_url("http://[fd00:ec2::254]/latest/meta-data/")
    await EgressGuard(resolver=Dns([PUBLIC])).check_url(f"https://{NAME}/page")
    await EgressGuard(allow_private_networks=True).check_url("http://127.0.0.1/")


async def test_h1_the_next_checked_address_is_tried_when_one_is_unreachable(public: Site) -> None:
    unreachable = "2606:2800:220:1:248:1893:25c8:1946"
    internet = Internet({PUBLIC: public.port})
    fetcher = _fetcher(EgressGuard(resolver=Dns([unreachable, PUBLIC]), connector=internet))
    try:
        resource = await fetcher.fetch(f"http://{NAME}/data.csv")
    finally:
        await fetcher.aclose()
    assert resource.data == PUBLIC_BODY
    assert internet.connects == [unreachable, PUBLIC]

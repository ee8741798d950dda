"""Cookie sessions of the dashboard, sign-up limits and X-Forwarded-For on the edge's accounts, against a
real PostgreSQL: the refresh token never reaches page scripts, the cookie is useless without the custom
header, and per-client limits count the address a trusted proxy saw, not one a client claims."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx
import pytest
from edge_support import Edge, serve, stop
from zehanx_gateway.edge.auth_routes import REFRESH_COOKIE, client_address
from zehanx_gateway.edge.settings import EdgeSettings

PASSWORD = "correct horse battery staple"
COOKIE_MODE = {"x-zx-session": "cookie"}


def set_cookie(response: httpx.Response) -> str:
    values = response.headers.get_list("set-cookie")
    assert len(values) == 1, values
    return values[0]


def cookie_value(header: str) -> str:
    name, _, rest = header.partition("=")
    assert name == REFRESH_COOKIE
    return rest.split(";", 1)[0]


async def post(edge: Edge, path: str, body: dict, headers: dict[str, str], **params: str) -> httpx.Response:
    return await edge.http.post(f"/auth/v1/{path}", json=body, headers=headers, params=params or None)


async def test_a_cookie_session_keeps_the_refresh_token_out_of_the_page(edge: Edge) -> None:
    signed_up = await post(edge, "signup", {"email": "c@example.org", "password": PASSWORD}, COOKIE_MODE)
    assert signed_up.status_code == 200, signed_up.text
    assert signed_up.json()["refresh_token"] == "", "the token is in the cookie, not in what scripts read"
    assert signed_up.json()["access_token"]
    header = set_cookie(signed_up)
    attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in header and "Path=/auth/v1/" in header
    assert "secure" not in attributes, "plain http to a direct client: no Secure (the browser would drop it)"
    first = cookie_value(header)

    # Without the custom header the cookie is ignored: another site's form cannot use it (CSRF).
    edge.http.cookies.clear()
    forged = await post(
        edge, "token", {}, {"cookie": f"{REFRESH_COOKIE}={first}"}, grant_type="refresh_token"
    )
    assert forged.status_code == 400 and "access_token" not in forged.text

    renewed = await post(
        edge, "token", {}, {**COOKIE_MODE, "cookie": f"{REFRESH_COOKIE}={first}"}, grant_type="refresh_token"
    )
    assert renewed.status_code == 200, renewed.text
    second = cookie_value(set_cookie(renewed))
    assert second and second != first, "rotated on every use"
    assert renewed.json()["user"]["email"] == "c@example.org" and renewed.json()["refresh_token"] == ""

    replayed = await post(
        edge, "token", {}, {**COOKIE_MODE, "cookie": f"{REFRESH_COOKIE}={first}"}, grant_type="refresh_token"
    )
    assert replayed.status_code == 400
    assert "Max-Age=0" in set_cookie(replayed), "a dead cookie is cleared"

    # Sign-out with an expired (here: absent) access token still ends the cookie's session.
    out = await post(edge, "logout", {}, {**COOKIE_MODE, "cookie": f"{REFRESH_COOKIE}={second}"})
    assert out.status_code == 204
    assert "Max-Age=0" in set_cookie(out)
    after = await post(
        edge, "token", {}, {**COOKIE_MODE, "cookie": f"{REFRESH_COOKIE}={second}"}, grant_type="refresh_token"
    )
    assert after.status_code == 400, "the signed-out session must not renew"


async def test_without_cookie_mode_sessions_stay_supabase_shaped(edge: Edge) -> None:
    answer = await post(edge, "signup", {"email": "plain@example.org", "password": PASSWORD}, {})
    assert answer.status_code == 200
    assert answer.json()["refresh_token"], "API clients get the refresh token in the JSON, as from Supabase"
    assert answer.headers.get_list("set-cookie") == []


async def test_sign_ups_are_limited_per_client_address_a_trusted_proxy_reports(proxied: Edge) -> None:
    def via(address: str) -> dict[str, str]:
        return {"x-forwarded-for": address}

    for n in range(2):
        ok = await post(
            proxied, "signup", {"email": f"u{n}@example.org", "password": PASSWORD}, via("203.0.113.7")
        )
        assert ok.status_code == 200, ok.text
    refused = await post(
        proxied, "signup", {"email": "u2@example.org", "password": PASSWORD}, via("203.0.113.7")
    )
    assert refused.status_code == 429
    assert refused.json()["error_code"] == "over_request_rate_limit"
    assert 1 <= int(refused.headers["retry-after"]) <= 3601
    # A client cannot escape by prepending addresses: only the hop the proxy appended counts.
    spoofed = await post(
        proxied, "signup", {"email": "u3@example.org", "password": PASSWORD}, via("198.51.100.1, 203.0.113.7")
    )
    assert spoofed.status_code == 429
    # Another client behind the same proxy is not affected.
    other = await post(
        proxied, "signup", {"email": "u4@example.org", "password": PASSWORD}, via("203.0.113.8")
    )
    assert other.status_code == 200, other.text
    # Through the trusted proxy over https, the cookie is Secure.
    secure = await post(
        proxied,
        "token",
        {"email": "u4@example.org", "password": PASSWORD},
        {**COOKIE_MODE, **via("203.0.113.8"), "x-forwarded-proto": "https"},
        grant_type="password",
    )
    assert secure.status_code == 200 and "; Secure" in set_cookie(secure)


async def test_without_trusted_proxies_forwarded_for_is_ignored(database_url: str, tmp_path: Path) -> None:
    served = await serve(database_url, tmp_path, EdgeSettings(edge_port=0, sign_up_max_per_client=2))
    try:
        for n, claimed in enumerate(["203.0.113.1", "203.0.113.2"]):
            body = {"email": f"v{n}@example.org", "password": PASSWORD}
            assert (await post(served, "signup", body, {"x-forwarded-for": claimed})).status_code == 200
        body = {"email": "v2@example.org", "password": PASSWORD}
        third = await post(served, "signup", body, {"x-forwarded-for": "203.0.113.3"})
        assert third.status_code == 429, "the TCP peer is the client; what it claims is not believed"
        plain = await post(
            served,
            "token",
            {"email": "v0@example.org", "password": PASSWORD},
            {**COOKIE_MODE, "x-forwarded-proto": "https"},
            grant_type="password",
        )
        assert "; Secure" not in set_cookie(plain), "an untrusted peer's X-Forwarded-Proto is not believed"
    finally:
        await stop(served)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["1.1.1.1, 203.0.113.9, 10.0.0.5"], "203.0.113.9"),  # the inner proxy is skipped
        ("127.0.0.1", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),  # two header lines: one list
        ("127.0.0.1", ["not-an-ip"], "127.0.0.1"),
        ("127.0.0.1", ["10.0.0.5"], "127.0.0.1"),  # only proxies: the peer
        ("198.51.100.4", ["203.0.113.9"], "198.51.100.4"),  # an untrusted peer's header is ignored
        ("::1", ["2001:db8::7"], "::1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    trusted = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")]
    scope = {"client": (peer, 5000), "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}
    assert client_address(scope, trusted) == expected

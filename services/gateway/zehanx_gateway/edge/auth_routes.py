"""Sign-up, sign-in, refresh and sign-out over HTTP, shaped like Supabase Auth's REST API.

The page talks to the embedded accounts exactly as it would to Supabase Auth (same paths, bodies and
session JSON), so one client serves both; only the base URL differs. The tokens are the gateway's own
(its own key, issuer and audience: see ``zehanx_gateway.accounts``), and in Supabase mode these routes
are off (503 ``accounts_disabled``): Supabase Auth is then the only way to sign up or in.

- ``POST /auth/v1/signup`` ``{"email", "password"}`` → a session
- ``POST /auth/v1/token?grant_type=password`` ``{"email", "password"}`` → a session
- ``POST /auth/v1/token?grant_type=refresh_token`` ``{"refresh_token"}`` → a new session (rotated)
- ``POST /auth/v1/logout[?scope=local|global]`` with ``authorization: Bearer <access token>`` → 204

A session is ``{"access_token", "token_type": "bearer", "expires_in", "expires_at", "refresh_token",
"user": {"id", "aud", "role", "email"}}``. Errors are ``{"code": <HTTP status>, "error_code", "msg"}``
like Supabase's, with the gateway's ``reason`` and, for bad input, the field ``violations``. Sign-up
and sign-in bodies must be sent as ``application/json``: a cross-site HTML form can only send
``text/plain``, form or multipart bodies, so it cannot sign a visitor's browser up (CSRF).

**Cookie sessions (the dashboard).** A request with the header ``X-Zx-Session: cookie`` gets its refresh
token as an ``HttpOnly; SameSite=Strict; Path=/auth/v1/`` cookie (``Secure`` over https) instead of in
the JSON (``"refresh_token": ""``), so page scripts never hold it; a refresh with that header and no
``refresh_token`` in the body reads the cookie (no cookie: 204 and no session, how a signed-out page
learns it is signed out); a logout with it revokes the cookie's session (even when
the access token has expired) and clears the cookie. The custom header is required for every use of the
cookie: a cross-site form or ``fetch`` cannot send it without a CORS preflight, which the edge never
grants, so the cookie cannot be used by another site (CSRF), on top of ``SameSite=Strict``.

**Client address.** Sign-in failures and sign-ups are counted per client address: the TCP peer, or,
when the peer is one of the trusted proxies (``ZX_GATEWAY_TRUSTED_PROXIES``), the right-most
``X-Forwarded-For`` address that is not itself a trusted proxy (the left-most entries are whatever
the client claimed and are never believed). An IPv6 client is counted by its /64 (one subscriber's
network: anyone holding one holds 2^64 addresses), an IPv4-mapped one as its IPv4 address
(:func:`client_bucket`).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from zehanx_runtime import errors
from zehanx_runtime.logging import get_logger

from zehanx_gateway.accounts import AccountService, Session
from zehanx_gateway.auth import SESSION_AUDIENCE

PREFIX = "/auth/v1/"
MAX_BODY = 64 * 1024
#: The cookie that holds the refresh token of a cookie session, and how long the browser keeps it
#: by default (the session's absolute lifetime, ZX_GATEWAY_SESSION_LIFETIME_SECONDS).
REFRESH_COOKIE = "zx_refresh"
REFRESH_COOKIE_SECONDS = 30 * 86_400
#: The prefix length an IPv6 client is counted by.
IPV6_CLIENT_PREFIX = 64
SESSION_HEADER = b"x-zx-session"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Domain code → (HTTP status, Supabase error_code).
_HTTP = {
    "INVALID_ARGUMENT": (400, "validation_failed"),
    "UNAUTHENTICATED": (400, "invalid_credentials"),
    "ALREADY_EXISTS": (422, "user_already_exists"),
    "RESOURCE_EXHAUSTED": (429, "over_request_rate_limit"),
    "NOT_FOUND": (404, "not_found"),
}

Send = Callable[[dict[str, Any]], Awaitable[None]]


class AuthRoutes:
    """The ASGI handler of ``/auth/v1/*`` over an :class:`AccountService` (None: accounts are off)."""

    def __init__(
        self,
        accounts: AccountService | None,
        *,
        disabled_reason: str = "",
        trusted_proxies: Sequence[str] = (),
        cookie_seconds: int = REFRESH_COOKIE_SECONDS,
    ) -> None:
        self._accounts = accounts
        self._disabled_reason = disabled_reason
        self._cookie_seconds = cookie_seconds
        self._trusted: list[Network] = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self._log = get_logger("zehanx.accounts")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        path = scope["path"].removeprefix(PREFIX)
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        try:
            if scope["method"] != "POST":
                await _json(send, 405, {"code": 405, "error_code": "method_not_allowed", "msg": "use POST"})
                return
            if self._accounts is None:
                await _json(
                    send, 503, {"code": 503, "error_code": "accounts_disabled", "msg": self._disabled_reason}
                )
                return
            if path in ("signup", "token") and not _is_json(_header(scope, b"content-type")):
                # Refused before the body is read: a cross-site form cannot send application/json.
                raise errors.InvalidArgument(
                    "send the body as JSON (content-type: application/json)", reason="BODY_NOT_JSON"
                )
            body = await _body(receive)
            client = client_bucket(client_address(scope, self._trusted))
            cookie_mode = _header(scope, SESSION_HEADER).lower() == "cookie"
            secure = self._secure(scope)
            if path == "signup":
                session = await self._accounts.sign_up(
                    _text(body, "email"), _text(body, "password"), client=client
                )
                await self._answer_session(send, session, cookie_mode, secure)
            elif path == "token" and query.get("grant_type") == "password":
                session = await self._accounts.sign_in(
                    _text(body, "email"), _text(body, "password"), client=client
                )
                await self._answer_session(send, session, cookie_mode, secure)
            elif path == "token" and query.get("grant_type") == "refresh_token":
                token = _text(body, "refresh_token")
                if not token and cookie_mode:
                    token = _cookie(scope, REFRESH_COOKIE)
                    if not token:
                        # A signed-out visitor's page asks whether it has a session: it has none. That
                        # is an answer, not an error (a 400 here is a console error on every visit).
                        await _json(send, 204, None)
                        return
                session = await self._accounts.refresh(token)
                await self._answer_session(send, session, cookie_mode, secure)
            elif path == "logout":
                everywhere = query.get("scope", "global") != "local"
                cookie_token = _cookie(scope, REFRESH_COOKIE) if cookie_mode else ""
                try:
                    await self._accounts.sign_out(_bearer(scope), everywhere=everywhere)
                except errors.Unauthenticated:
                    if not cookie_mode:
                        raise
                    # An expired access token: the cookie still names the session to end.
                    await self._accounts.sign_out_refresh(cookie_token)
                else:
                    if cookie_token and not everywhere:
                        await self._accounts.sign_out_refresh(cookie_token)
                headers = [_clear_cookie(secure)] if cookie_mode else []
                await _json(send, 204, None, headers)
            else:
                await _json(
                    send,
                    404,
                    {"code": 404, "error_code": "not_found", "msg": f"no such path: {scope['path']}"},
                )
        except errors.DomainError as err:
            status, error_code = _HTTP.get(err.code, (500, "unexpected_failure"))
            if path == "logout" and err.code == "UNAUTHENTICATED":
                status, error_code = 401, "bad_jwt"
            answer: dict[str, Any] = {
                "code": status,
                "error_code": error_code,
                "msg": err.message,
                "reason": err.reason,
            }
            if isinstance(err, errors.InvalidArgument) and err.violations:
                answer["violations"] = [
                    {"field": v.field, "description": v.description} for v in err.violations
                ]
            headers = []
            if (
                path == "token"
                and err.code == "UNAUTHENTICATED"
                and query.get("grant_type") == "refresh_token"
            ):
                if _header(scope, SESSION_HEADER).lower() == "cookie":
                    headers.append(_clear_cookie(self._secure(scope)))  # a dead cookie is dropped
            if "retry_after_seconds" in err.metadata:
                headers.append((b"retry-after", err.metadata["retry_after_seconds"].encode()))
            self._log.info("auth refused", path=path, reason=err.reason)
            await _json(send, status, answer, headers)

    def _secure(self, scope: dict[str, Any]) -> bool:
        """Whether the browser reached the edge over https (directly or through a trusted proxy)."""
        if scope.get("scheme") == "https":
            return True
        return _peer_trusted(scope, self._trusted) and _header(scope, b"x-forwarded-proto").lower() == "https"

    async def _answer_session(self, send: Send, session: Session, cookie_mode: bool, secure: bool) -> None:
        body = self._session_json(session)
        headers = []
        if cookie_mode:
            headers.append(_set_cookie(session.refresh_token, secure, self._cookie_seconds))
            body["refresh_token"] = ""
        await _json(send, 200, body, headers)

    def _session_json(self, session: Session) -> dict[str, Any]:
        return {
            "access_token": session.access_token,
            "token_type": "bearer",
            "expires_in": session.expires_in,
            "expires_at": session.expires_at,
            "refresh_token": session.refresh_token,
            "user": {
                "id": str(session.user_id),
                "aud": SESSION_AUDIENCE,
                "role": "authenticated",
                "email": session.email,
            },
        }


async def _body(receive: Any) -> dict[str, Any]:
    data = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.Cancelled("the client went away")
        data += message.get("body", b"")
        if len(data) > MAX_BODY:
            raise errors.InvalidArgument("the request body is too large", reason="BODY_TOO_LARGE")
        if not message.get("more_body"):
            break
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        raise errors.InvalidArgument("the request body is not JSON", reason="BODY_NOT_JSON") from None
    if not isinstance(parsed, dict):
        raise errors.InvalidArgument("the request body must be a JSON object", reason="BODY_NOT_OBJECT")
    return parsed


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise errors.InvalidArgument(
            f"{name} must be a string",
            violations=[errors.FieldViolation(name, "must be a string", "type")],
            reason="VALIDATION_FAILED",
        )
    return value


def client_address(scope: dict[str, Any], trusted: Sequence[Network]) -> str:
    """The address requests are counted against (see the module's notes on X-Forwarded-For)."""
    peer = (scope.get("client") or ("", 0))[0] or ""
    if not _peer_trusted(scope, trusted):
        return peer
    forwarded = [
        part.strip()
        for value in _headers(scope, b"x-forwarded-for")
        for part in value.split(",")
        if part.strip()
    ]
    for hop in reversed(forwarded):
        address = _ip(hop)
        if address is None:
            return peer  # a malformed hop: believe nothing beyond it
        if not any(address in net for net in trusted):
            return str(address)
    return peer


def client_bucket(address: str) -> str:
    """What per-client limits count ``address`` as: an IPv4 address as itself, an IPv6 address as its
    /64 network (``2001:db8:1:2::/64``), an IPv4-mapped IPv6 address as the IPv4 address."""
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _peer_trusted(scope: dict[str, Any], trusted: Sequence[Network]) -> bool:
    peer = _ip((scope.get("client") or ("", 0))[0] or "")
    return peer is not None and any(peer in net for net in trusted)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return None


def _headers(scope: dict[str, Any], name: bytes) -> list[str]:
    return [bytes(v).decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


def _header(scope: dict[str, Any], name: bytes) -> str:
    found = _headers(scope, name)
    return found[0].strip() if found else ""


def _cookie(scope: dict[str, Any], name: str) -> str:
    for value in _headers(scope, b"cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value)
        except Exception:  # a malformed Cookie header: no cookie
            continue
        if name in jar:
            return jar[name].value
    return ""


def _set_cookie(token: str, secure: bool, max_age: int = REFRESH_COOKIE_SECONDS) -> tuple[bytes, bytes]:
    value = f"{REFRESH_COOKIE}={token}; Path={PREFIX}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return (b"set-cookie", (value + ("; Secure" if secure else "")).encode())


def _clear_cookie(secure: bool) -> tuple[bytes, bytes]:
    value = f"{REFRESH_COOKIE}=; Path={PREFIX}; Max-Age=0; HttpOnly; SameSite=Strict"
    return (b"set-cookie", (value + ("; Secure" if secure else "")).encode())


def _bearer(scope: dict[str, Any]) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    raise errors.Unauthenticated(
        "sign-out needs 'authorization: Bearer <access token>'", reason="CREDENTIALS_MISSING"
    )


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    all_headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})

"""Sign-up, sign-in, refresh and sign-out over HTTP, shaped like Supabase Auth's REST API.

The page talks to the embedded accounts exactly as it would to Supabase Auth (same paths, bodies and
session JSON), so one client serves both; only the base URL differs:

- ``POST /auth/v1/signup`` ``{"email", "password"}`` → a session
- ``POST /auth/v1/token?grant_type=password`` ``{"email", "password"}`` → a session
- ``POST /auth/v1/token?grant_type=refresh_token`` ``{"refresh_token"}`` → a new session (rotated)
- ``POST /auth/v1/logout[?scope=local|global]`` with ``authorization: Bearer <access token>`` → 204

A session is ``{"access_token", "token_type": "bearer", "expires_in", "expires_at", "refresh_token",
"user": {"id", "aud", "role", "email"}}``. Errors are ``{"code": <HTTP status>, "error_code", "msg"}``
like Supabase's, with the gateway's ``reason`` and, for bad input, the field ``violations``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from zehanx_runtime import errors
from zehanx_runtime.logging import get_logger

from zehanx_gateway.accounts import AccountService, Session

PREFIX = "/auth/v1/"
MAX_BODY = 64 * 1024

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

    def __init__(self, accounts: AccountService | None, *, audience: str, disabled_reason: str = "") -> None:
        self._accounts = accounts
        self._audience = audience
        self._disabled_reason = disabled_reason
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
            body = await _body(receive)
            client = (scope.get("client") or ("", 0))[0] or ""
            if path == "signup":
                session = await self._accounts.sign_up(_text(body, "email"), _text(body, "password"))
                await _json(send, 200, self._session_json(session))
            elif path == "token" and query.get("grant_type") == "password":
                session = await self._accounts.sign_in(
                    _text(body, "email"), _text(body, "password"), client=client
                )
                await _json(send, 200, self._session_json(session))
            elif path == "token" and query.get("grant_type") == "refresh_token":
                session = await self._accounts.refresh(_text(body, "refresh_token"))
                await _json(send, 200, self._session_json(session))
            elif path == "logout":
                token = _bearer(scope)
                everywhere = query.get("scope", "global") != "local"
                await self._accounts.sign_out(token, everywhere=everywhere)
                await _json(send, 204, None)
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
            if "retry_after_seconds" in err.metadata:
                headers.append((b"retry-after", err.metadata["retry_after_seconds"].encode()))
            self._log.info("auth refused", path=path, reason=err.reason)
            await _json(send, status, answer, headers)

    def _session_json(self, session: Session) -> dict[str, Any]:
        return {
            "access_token": session.access_token,
            "token_type": "bearer",
            "expires_in": session.expires_in,
            "expires_at": session.expires_at,
            "refresh_token": session.refresh_token,
            "user": {
                "id": str(session.user_id),
                "aud": self._audience,
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

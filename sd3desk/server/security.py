"""The server's door guard, an ASGI middleware in front of every route (the APIs and the page).

A local GPU server is a target: a web page the user visits must not be able to queue jobs or
read the gallery, and nobody on the network may use it without the token.
- With a token (always off loopback): every request carries it, as `Authorization: Bearer`, as
  HTTP Basic with the token as password (what AUTOMATIC1111's `--api-auth` clients send, and
  what a browser asks for), or once as `?token=` on a page address (then a cookie carries it).
  Tokens are compared in constant time.
- Without a token (loopback only): the Host must be a loopback name, so a site that rebinds its
  DNS name to 127.0.0.1 is refused.
- A request from a web page of another origin (an Origin header naming another host or port) is
  refused unless that origin is in the allow-list; no permissive CORS headers are ever sent.
- Request bodies over the limit are refused with 413 before the route reads them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sd3desk.server.config import ServeConfig, is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "sd3desk_token"
# Requests whose body may carry pictures in base64 (ServeConfig.max_picture_body_bytes)
PICTURE_PATHS = frozenset({"/sdapi/v1/img2img", "/api/v1/jobs"})


class Guard:
    """Checks Host, Origin, the token and the body size of every request (see the module)."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.config = config
        self.allowed_origins = {o.rstrip("/").lower() for o in config.cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, reason, extra = refusal
            await _deny(scope, receive, send, status, reason, extra)
            return
        set_cookie = self._token_from_query(scope)
        if set_cookie:
            # strip the token from the address the browser keeps: a clean redirect with a cookie
            await _redirect_with_cookie(scope, send, self.config.token)
            return
        if scope["type"] == "http":
            limited = self._limited(headers, receive, scope.get("path", ""))
            if limited is None:
                limit = self._limit(scope.get("path", ""))
                await _deny(scope, _no_body, send, 413, self._too_big(limit), {})
                return
            receive = limited
        await self.app(scope, receive, send)

    # ------------------------------------------------------------------ the checks

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, dict] | None:
        host = headers.get("host", "")
        if not self.config.token and not is_loopback(_hostname(host)):
            return (
                403,
                f"this server answers to localhost only (Host {host!r}); to serve other "
                "computers, start it on their network address with a token",
                {},
            )
        origin = headers.get("origin", "")
        if origin and origin.lower() != "null" and not self._origin_allowed(origin, host):
            return (403, f"requests from web pages of {origin} are not allowed", {})
        if self.config.token and not self._authorised(scope, headers):
            return (
                401,
                "this server needs its token: Authorization: Bearer <token>, or HTTP Basic "
                "with the token as password",
                {"www-authenticate": 'Basic realm="sd3desk", charset="UTF-8"'},
            )
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        parts = urlsplit(origin)
        if parts.netloc.lower() == host.lower():
            return True  # the page this server itself served
        return origin.rstrip("/").lower() in self.allowed_origins

    def _authorised(self, scope: Scope, headers: dict[str, str]) -> bool:
        token = self.config.token.encode()
        offered = [_from_authorization(headers.get("authorization", ""))]
        offered.append(_cookie(headers.get("cookie", "")))
        offered.append(_query_token(scope))
        return any(o is not None and hmac.compare_digest(o.encode(), token) for o in offered)

    def _token_from_query(self, scope: Scope) -> bool:
        """A page address with ?token= (what the server prints): answer with a cookie."""
        return bool(
            self.config.token
            and scope["type"] == "http"
            and scope.get("method") == "GET"
            and _query_token(scope) is not None
        )

    def _limit(self, path: str) -> int:
        """Bodies that may carry pictures (img2img, a native job) get the larger limit."""
        if path in PICTURE_PATHS:
            return self.config.max_picture_body_bytes
        return self.config.max_body_bytes

    def _limited(self, headers: dict[str, str], receive: Receive, path: str) -> Receive | None:
        """`receive` that stops a body at the limit; None when Content-Length is already over."""
        limit = self._limit(path)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return None
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(self._too_big(limit))
            return message

        return limited

    @staticmethod
    def _too_big(limit: int) -> str:
        return f"the request body is over {limit} bytes"


class BodyTooLarge(Exception):
    """A streamed body passed the limit (the app turns it into 413)."""


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:7860
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _from_authorization(value: str) -> str | None:
    scheme, _, credentials = value.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return credentials.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]  # any user name; the token is the password
    return None


def _cookie(value: str) -> str | None:
    cookie = SimpleCookie()
    try:
        cookie.load(value)
    except Exception:  # a malformed Cookie header is no credential
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel else None


def _query_token(scope: Scope) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


async def _deny(
    scope: Scope, receive: Receive, send: Send, status: int, reason: str, extra: dict[str, str]
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        return
    body = json.dumps({"detail": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(scope: Scope, send: Send, token: str) -> None:
    query = [
        (k, v)
        for k, values in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()
        for v in values
        if k != "token"
    ]
    location = (
        scope.get("root_path", "") + scope["path"] + (f"?{urlencode(query)}" if query else "")
    )
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    headers = [
        (b"location", location.encode("latin-1")),
        (b"set-cookie", cookie.encode("latin-1")),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

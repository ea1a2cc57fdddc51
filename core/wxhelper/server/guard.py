"""Auth and body limits, as one pure ASGI middleware (cheaper than a Starlette ``BaseHTTPMiddleware``).

* When a token is configured, every path but the probes needs ``Authorization: Bearer <token>``,
  compared in constant time (:func:`hmac.compare_digest`); otherwise 401.
* A request body over ``max_body`` bytes gets 413: at once when ``Content-Length`` says so,
  else as soon as the streamed body passes the limit (the body is buffered, at most ``max_body``).
* A JSON body that is not valid UTF-8 gets 422 with a field error on ``body``, in the same shape as
  FastAPI's validation errors (FastAPI itself would answer 400).
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable, Optional

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/admin", "/admin/"})
"""Paths that never need the token: liveness and readiness probes, and the console's page (it holds no data)."""
OPEN_PREFIX = "/admin/static/"
"""The console's JS, CSS and images: no data either. Its data, under ``/admin/api/``, needs the token."""


async def send_json(send: Send, status: int, body: Any, headers: Optional[list[tuple[bytes, bytes]]] = None) -> None:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """``Guard(app, token=..., max_body=..., on_reject=...)``; ``on_reject(reason)`` feeds the metrics."""

    def __init__(self, app: ASGIApp, *, token: Optional[str], max_body: int,
                 on_reject: Optional[Callable[[str], None]] = None) -> None:
        self.app = app
        self.token = ("Bearer " + token).encode("utf-8") if token else None
        self.max_body = max_body
        self.on_reject = on_reject or (lambda reason: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (self.token is not None and scope["path"] not in OPEN_PATHS and not scope["path"].startswith(OPEN_PREFIX)
                and not self._authorized(scope)):
            self.on_reject("unauthorized")
            await send_json(send, 401, {"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                            [(b"www-authenticate", b'Bearer realm="wxhelper"')])
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") and not _declares_body(scope):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await self._too_large(send, length)
            return
        # Buffer the body (bounded by max_body), then replay it to the app in one piece.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _is_json(scope):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.on_reject("invalid")
                await send_json(send, 422, {"detail": [{
                    "type": "utf8_invalid", "loc": ["body"],
                    "msg": f"request body is not valid UTF-8: byte {body[exc.start]:#04x} at offset {exc.start}",
                    "input": None}]})
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.token)
        return False

    async def _too_large(self, send: Send, length: Optional[int]) -> None:
        self.on_reject("too_large")
        said = f" ({length} bytes)" if length is not None else ""
        await send_json(send, 413, {"detail": f"request body{said} is over the limit of {self.max_body} bytes "
                                              "(WXHELPER_MAX_BODY)"}, [(b"connection", b"close")])


def _content_length(scope: Scope) -> Optional[int]:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _declares_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value not in (b"0", b"")):
            return True
    return False


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return b"json" in value.lower()
    return True  # FastAPI parses a body without a content type as JSON too

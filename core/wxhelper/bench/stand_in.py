"""The benchmark's stand-in LLM: a lean OpenAI-compatible chat-completions server on loopback.

``wxhelper bench serve`` measures the host, but its stand-in LLM shares the machine's two cores
with the server, Redis and the driver. :class:`wxhelper.fake_llm.FakeLLM` (the tests' stand-in:
``http.server`` with a thread per connection, fault injection, every request recorded) cost
~0.6–0.7 ms of CPU a message there, which a real LLM never takes from the host's machine. This one
answers the same ``POST /v1/chat/completions`` (the bearer token checked, the JSON body parsed and
its ``model`` and ``messages`` checked, the completion in the real response shape, streamed as
Server-Sent Events when asked) from one asyncio event loop, with keep-alive connections.

It speaks only what the host's LLM client sends: HTTP/1.1 requests with a ``Content-Length`` body
(anything else gets 400, 404 or 411 and the connection is closed). Tests keep using FakeLLM.

Run as ``python -m wxhelper.bench.stand_in [--api-key KEY] [--reply TEXT]``: it prints its base URL
(``http://127.0.0.1:<port>/v1``) and serves until its standard input closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any, Optional

import orjson

CHAT_PATH = b"/v1/chat/completions"
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 411: b"Length Required",
           413: b"Payload Too Large"}


class _HttpError(Exception):
    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


def _error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


class StandInProtocol(asyncio.Protocol):
    """One connection: requests parsed from the buffer as they arrive, answered in order."""

    def __init__(self, server: "StandIn") -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._answer(400, _error_body(400, "request head too large"), close=True)
                return
            try:
                method, path, headers = _parse_head(bytes(self.buffer[:end]))
                length = _body_length(headers)
            except _HttpError as exc:
                self._answer(exc.status, _error_body(exc.status, str(exc)), close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is on its way
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            close = headers.get(b"connection", b"").lower() == b"close"
            try:
                self._handle(method, path, headers, body, close)
            except _HttpError as exc:
                self._answer(exc.status, _error_body(exc.status, str(exc)), close=close or exc.close)

    def _handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes, close: bool) -> None:
        if path.split(b"?", 1)[0] != CHAT_PATH:
            raise _HttpError(404, f"Unknown request URL: {method.decode('latin-1')} {path.decode('latin-1')}")
        if method != b"POST":
            raise _HttpError(404, "only POST /v1/chat/completions is served")
        if headers.get(b"authorization") != self.server.authorization:
            raise _HttpError(401, "Incorrect API key provided.")
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _HttpError(400, "the body is not valid JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            raise _HttpError(400, "'model' is required")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _HttpError(400, "'messages' must be a non-empty array of objects")
        if request.get("stream"):
            self._stream(request, messages, close)
        else:
            self._answer(200, orjson.dumps(self.server.completion(request, messages)), close=close)

    def _answer(self, status: int, data: bytes, *, close: bool = False,
                content_type: bytes = b"application/json") -> None:
        assert self.transport is not None
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nx-request-id: req_%s\r\n%s\r\n"
                % (status, REASONS.get(status, b"Error"), content_type, len(data), uuid.uuid4().hex[:24].encode(),
                   b"connection: close\r\n" if close else b""))
        self.transport.write(head + data)
        if close:
            self.transport.close()

    def _stream(self, request: dict[str, Any], messages: list[dict[str, Any]], close: bool) -> None:
        whole = self.server.completion(request, messages)
        base = {k: whole[k] for k in ("id", "created", "model", "system_fingerprint")}
        text = whole["choices"][0]["message"]["content"]
        events = []
        pieces = [text[i:i + 8] for i in range(0, len(text), 8)] or [""]
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            events.append({**base, "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
        events.append({**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
        self._answer(200, data + b"data: [DONE]\n\n", close=close, content_type=b"text/event-stream")

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None


def _parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _HttpError(400, "malformed request line")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _HttpError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _body_length(headers: dict[bytes, bytes]) -> int:
    if b"transfer-encoding" in headers:
        raise _HttpError(411, "send the body with Content-Length", close=True)
    try:
        length = int(headers.get(b"content-length", b"0"))
    except ValueError:
        raise _HttpError(400, "malformed Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise _HttpError(413, "body too large", close=True)
    return length


class StandIn:
    """The server: ``await StandIn(api_key, reply).start()``; :attr:`base_url`; ``close()``."""

    def __init__(self, api_key: str = "test-key", reply: str = "好的，收到。这是替身模型的回答。",
                 model: str = "gpt-4o-mini") -> None:
        self.authorization = b"Bearer " + api_key.encode()
        self.reply = reply
        self.model = model
        self._server: Optional[asyncio.AbstractServer] = None
        self.port = 0

    async def start(self) -> "StandIn":
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: StandInProtocol(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def completion(self, request: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        """A chat completion in the real shape; usage counts characters (the host does not read it)."""
        prompt_chars = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
            "model": request["model"], "system_fingerprint": "fp_standin",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_chars, "completion_tokens": len(self.reply),
                      "total_tokens": prompt_chars + len(self.reply)},
        }

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _serve(api_key: str, reply: str) -> None:
    server = await StandIn(api_key, reply).start()
    print(server.base_url, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    await server.close()


def main(argv: Optional[list[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--reply", default="好的，收到。这是替身模型的回答。")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.api_key, args.reply))
    else:
        uvloop.run(_serve(args.api_key, args.reply))


if __name__ == "__main__":
    main()

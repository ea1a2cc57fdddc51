"""A stand-in OpenAI-compatible LLM server for tests.

Why this exists
---------------
wxhelper talks to "any OpenAI-compatible LLM" through the real ``openai``
client.  Mocking that client in tests hides exactly the bugs that matter in
production: wrong request shapes, unhandled HTTP errors, retries, timeouts,
broken streams and the base64 embedding encoding that recent clients ask for
by default.  So the project rule is: **tests never mock ``openai``**; instead
they point the real client at this small HTTP server on loopback.

It uses only the standard library (``http.server`` in a daemon thread), so
plugin authors can use it in their own test suites without extra
dependencies::

    from openai import OpenAI
    from wxhelper.fake_llm import FakeLLM

    def test_my_plugin():
        with FakeLLM(reply="hello") as fake:
            client = OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)
            out = client.chat.completions.create(
                model="any", messages=[{"role": "user", "content": "hi"}]
            )
            assert out.choices[0].message.content == "hello"
            assert fake.chat_requests()[0]["messages"][0]["content"] == "hi"

or, for code that builds its own client from the environment, set
``OPENAI_BASE_URL=fake.base_url`` and ``OPENAI_API_KEY=fake.api_key``
(e.g. with ``monkeypatch.setenv``).

Endpoints (all under ``/v1``)
-----------------------------
* ``POST /v1/chat/completions`` – non-streaming and streaming (SSE) answers in
  the real response shapes, including ``stream_options.include_usage``.
* ``POST /v1/embeddings`` – deterministic, L2-normalised vectors per input
  text, as float lists or little-endian float32 base64.
* ``GET /v1/models`` – a list holding :attr:`FakeLLM.model`.
* anything else – ``404`` with an OpenAI-style error JSON.

Fault injection
---------------
:meth:`FakeLLM.fail_next`, :meth:`FakeLLM.delay_next` and
:meth:`FakeLLM.break_stream_next` queue faults that are consumed by the next
*authenticated* requests to the chat-completions / embeddings endpoints, so
error handling, retries, timeouts and broken streams can be tested against the
real client's behaviour.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
import math
import random
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

__all__ = ["FakeLLM"]

log = logging.getLogger(__name__)

ReplyType = Union[str, Callable[[dict], str], None]

_CHAT_PATH = "/v1/chat/completions"
_EMBEDDINGS_PATH = "/v1/embeddings"
_MODELS_PATH = "/v1/models"
_FAULTABLE_PATHS = (_CHAT_PATH, _EMBEDDINGS_PATH)

# Error "type"/"code" values as the OpenAI API uses them, so client code that
# inspects ``err.type`` / ``err.code`` sees realistic values.
_ERROR_KINDS: Dict[int, Tuple[str, Optional[str]]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


class _RequestError(Exception):
    """Raised while handling a request to answer with an OpenAI error JSON."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def _error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    """Build ``{"error": {...}}`` the way the OpenAI API shapes its errors."""
    kind, default_code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code if code is not None else default_code}}


def _count_tokens(text: str) -> int:
    """A crude but deterministic token estimate: about 4 characters per token."""
    return math.ceil(len(text) / 4)


def _content_text(content: Any) -> str:
    """Flatten a message ``content`` (str, list of parts or None) to plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def _embed(key: bytes, dim: int) -> List[float]:
    """A deterministic unit vector for ``key``.

    Seeded from blake2b so that equal inputs give equal vectors across runs and
    processes; values are rounded to float32 so the float and base64 encodings
    of the same text decode to exactly the same numbers.
    """
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=32).digest(), "big")
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    packed = struct.pack(f"<{dim}f", *(v / norm for v in vec))
    return list(struct.unpack(f"<{dim}f", packed))


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its open connections.

    Clients keep HTTP/1.1 connections alive; tracking them lets
    :meth:`FakeLLM.stop` shut them down so that nothing keeps answering after
    the fake was stopped.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], fake: "FakeLLM"):
        self.fake = fake
        self._conns: set = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):  # type: ignore[override]
        # Clients that time out or hang up are expected in tests; don't spam stderr.
        log.debug("fake LLM: error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Per-connection request handler; all state lives on the :class:`FakeLLM`."""

    protocol_version = "HTTP/1.1"  # needed for chunked streaming and keep-alive
    server_version = "wxhelper-FakeLLM/1.0"
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    # TCP_NODELAY: the headers and the body (or each stream chunk) go out as separate sends; with
    # Nagle's algorithm the second one waits for the client's delayed ACK, ~40 ms per request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake LLM: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- request plumbing -------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # consume trailers up to the blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        body: Any = None
        json_error = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                json_error = True
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        fake._record(
            {
                "path": self.path,
                "method": self.command,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        try:
            self._route(fake, path, body, json_error)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            # The client gave up (e.g. its timeout fired while we were delayed).
            self.close_connection = True

    def _route(self, fake: "FakeLLM", path: str, body: Any, json_error: bool) -> None:
        routes = {_CHAT_PATH: "POST", _EMBEDDINGS_PATH: "POST", _MODELS_PATH: "GET"}
        if path not in routes:
            self._send_error(_RequestError(404, f"Invalid URL ({self.command} {self.path})"))
            return
        if self.command != routes[path]:
            self._send_error(_RequestError(405, f"Method {self.command} not allowed for {path}"))
            return
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {fake.api_key}":
            shown = auth[len("Bearer "):] if auth.startswith("Bearer ") else auth
            self._send_error(
                _RequestError(401, f"Incorrect API key provided: {shown[:8] + '...' if shown else '(none)'}.")
            )
            return

        if path in _FAULTABLE_PATHS:
            delay, failure = fake._take_faults()
            if delay:
                if fake._stopping.wait(delay):
                    self.close_connection = True  # stopped while delayed: just hang up
                    return
            if failure is not None:
                self._send_failure(*failure)
                return

        try:
            if path == _MODELS_PATH:
                self._send_json(200, fake._models_response())
                return
            if json_error or not isinstance(body, dict):
                raise _RequestError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                )
            if path == _CHAT_PATH:
                self._chat(fake, body)
            else:
                self._send_json(200, fake._embeddings_response(body))
        except _RequestError as err:
            self._send_error(err)

    # -- responses --------------------------------------------------------

    def _common_headers(self) -> None:
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:24])
        self.send_header("openai-processing-ms", "1")

    def _send_json(self, status: int, payload: dict, extra_headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, err: _RequestError) -> None:
        self._send_json(err.status, _error_body(err.status, err.message, err.param, err.code))

    def _send_failure(self, status: int, retry_after: Optional[float], body: Optional[dict]) -> None:
        headers: Dict[str, str] = {}
        if retry_after is not None:
            # retry-after-ms lets sub-second waits through (the openai client prefers it);
            # Retry-After is the standard header other clients understand.
            headers["retry-after-ms"] = str(int(round(retry_after * 1000)))
            headers["Retry-After"] = str(int(retry_after)) if float(retry_after).is_integer() else repr(float(retry_after))
        payload = body if body is not None else _error_body(status, f"Injected failure: HTTP {status} (FakeLLM.fail_next)")
        self._send_json(status, payload, headers)

    def _chat(self, fake: "FakeLLM", body: dict) -> None:
        _validate_chat(body)
        try:
            text = fake._reply_text(body)
        except Exception as exc:  # a broken reply callable should fail loudly, not hang the test
            log.exception("fake LLM: reply callable raised")
            raise _RequestError(500, f"FakeLLM reply callable raised {type(exc).__name__}: {exc}") from exc
        model = body["model"]
        prompt_tokens = sum(_count_tokens(_content_text(m.get("content"))) for m in body["messages"])
        completion_tokens = _count_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fakellm",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        break_after = fake._take_stream_break()

        def chunk(delta: dict, finish: Optional[str]) -> dict:
            c: dict = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fakellm",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                c["usage"] = None
            return c

        events: List[dict] = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        size = max(1, fake.chunk_size)
        for i in range(0, len(text), size):
            events.append(chunk({"content": text[i : i + size]}, None))
        events.append(chunk({}, "stop"))
        if include_usage:
            last = chunk({}, None)
            last["choices"] = []
            last["usage"] = usage
            events.append(last)
        payloads = [b"data: " + json.dumps(e).encode("utf-8") + b"\n\n" for e in events]
        payloads.append(b"data: [DONE]\n\n")
        if break_after is not None:
            # never send [DONE] nor the chunked terminator: the client sees a truncated body
            payloads = payloads[: min(break_after, len(payloads) - 1)]

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        # Chunked encoding makes a dropped connection detectable by the client
        # (an incomplete chunked body is a protocol error, a plain EOF is not).
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self._common_headers()
        self.end_headers()
        for payload in payloads:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()
        if break_after is not None:
            # Hang up mid-body (a FIN, not a RST, so the client still reads the chunks sent so far).
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _validate_chat(body: dict) -> None:
    """Reject chat bodies the real API would reject, so client bugs surface as 400s."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _RequestError(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _RequestError(400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not messages:
        raise _RequestError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.", param="messages", code="empty_array")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _RequestError(400, f"Invalid type for 'messages[{i}]': expected an object.", param=f"messages.[{i}]", code="invalid_type")
        if not isinstance(msg.get("role"), str) or not msg["role"]:
            raise _RequestError(400, f"Missing required parameter: 'messages[{i}].role'.", param=f"messages.[{i}].role", code="missing_required_parameter")
        content = msg.get("content")
        has_calls = bool(msg.get("tool_calls") or msg.get("function_call"))
        if "content" not in msg and not has_calls:
            raise _RequestError(400, f"Missing required parameter: 'messages[{i}].content'.", param=f"messages.[{i}].content", code="missing_required_parameter")
        if not (content is None or isinstance(content, (str, list))):
            raise _RequestError(400, f"Invalid type for 'messages[{i}].content': expected a string or an array.", param=f"messages.[{i}].content", code="invalid_type")
        if content is None and not (msg["role"] == "assistant" and has_calls):
            raise _RequestError(400, f"Invalid value for 'messages[{i}].content': expected a string, got null.", param=f"messages.[{i}].content", code="invalid_value")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _RequestError(400, "Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _RequestError(400, "Invalid type for 'stream_options': expected an object.", param="stream_options", code="invalid_type")


class FakeLLM:
    """An OpenAI-compatible HTTP server on loopback, for tests.

    Start it (``with FakeLLM() as fake:`` or ``fake = FakeLLM().start()``),
    point the real ``openai`` client at :attr:`base_url` with :attr:`api_key`,
    then assert on :attr:`requests` / :meth:`chat_requests`.

    Args:
        reply: What the assistant answers.  A string is returned verbatim; a
            callable receives the parsed request body (a dict) and returns the
            text, so tests can answer depending on the prompt.  ``None`` gives a
            deterministic echo, ``"FAKE-LLM: " + <last user message text>``,
            which makes it easy to check that the right prompt reached the LLM.
            If the callable raises, the request is answered with HTTP 500
            (and the exception is logged) rather than hanging the test.
        host: Interface to bind; loopback by default so tests never expose a port.
        port: Port to bind; ``0`` picks a free one (read it from :attr:`base_url`).
        chunk_size: Characters per content piece in streamed answers; small
            values exercise clients' chunk reassembly.
        embedding_dim: Length of embedding vectors (the request's ``dimensions``
            overrides it per request, as the real API does).

    Attributes:
        api_key: The only accepted bearer token; anything else gets 401 in the
            OpenAI error shape, so authentication handling can be tested.
        model: The model id listed by ``GET /v1/models`` (requests may use any model
            name; it is echoed back).
        requests: Every request received, in order, as
            ``{"path", "method", "headers" (lower-case keys), "body" (parsed JSON or None)}``.
    """

    api_key: str = "test-key"
    model: str = "fake-llm"

    def __init__(
        self,
        reply: ReplyType = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chunk_size: int = 8,
        embedding_dim: int = 64,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if embedding_dim < 1:
            raise ValueError("embedding_dim must be >= 1")
        self.reply = reply
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.embedding_dim = embedding_dim
        self.api_key = type(self).api_key
        self.model = type(self).model
        self.requests: List[dict] = []
        self._lock = threading.Lock()
        self._delays: Deque[float] = collections.deque()
        self._failures: Deque[Tuple[int, Optional[float], Optional[dict]]] = collections.deque()
        self._breaks: Deque[int] = collections.deque()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._base_url: Optional[str] = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "FakeLLM":
        """Bind and serve in a daemon thread; returns ``self`` for chaining.

        Idempotent while running.  A daemon thread means a forgotten ``stop()``
        can never keep the test process alive.
        """
        if self._server is not None:
            return self
        self._stopping = threading.Event()
        server = _Server((self.host, self.port), self)
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        url_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self._base_url = f"http://{url_host}:{bound_port}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"FakeLLM:{bound_port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (including keep-alive ones).

        Also wakes up requests sleeping in :meth:`delay_next` so that stopping is
        fast.  Safe to call more than once.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeLLM":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to give the client as ``base_url`` / ``OPENAI_BASE_URL``, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._base_url is None:
            raise RuntimeError("FakeLLM is not started; call start() or use it as a context manager")
        return self._base_url

    # -- fault injection ----------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: Optional[float] = None,
        body: Optional[dict] = None,
    ) -> None:
        """Answer the next ``count`` chat/embeddings requests with HTTP ``status``.

        The answer is an OpenAI-style error JSON (or ``body`` verbatim if given),
        so the client raises its real exception (429 → ``RateLimitError``,
        500 → ``InternalServerError``, ...) and its real retry logic runs.
        ``retry_after`` (seconds, may be fractional) is sent as ``Retry-After``
        and ``retry-after-ms``, which the openai client honours for its retry wait.
        Only requests that pass authentication consume a failure.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._failures.extend([(status, retry_after, body)] * count)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Sleep ``seconds`` before answering the next ``count`` chat/embeddings requests.

        Use a delay longer than the client's ``timeout`` to test timeout
        handling.  :meth:`stop` interrupts pending delays.
        """
        if seconds < 0 or count < 0:
            raise ValueError("seconds and count must be >= 0")
        with self._lock:
            self._delays.extend([float(seconds)] * count)

    def break_stream_next(self, after_chunks: int = 1, count: int = 1) -> None:
        """Make the next ``count`` *streaming* chat answers drop the connection.

        The server sends ``after_chunks`` SSE events (the first one is the
        ``role`` chunk), then resets the connection without ``[DONE]`` and
        without finishing the chunked body, like a proxy or upstream dying
        mid-answer; the client's stream iteration raises.  Non-streaming
        requests do not consume this fault.
        """
        if after_chunks < 0 or count < 0:
            raise ValueError("after_chunks and count must be >= 0")
        with self._lock:
            self._breaks.extend([after_chunks] * count)

    # -- inspection -----------------------------------------------------------

    def chat_requests(self) -> List[dict]:
        """The parsed bodies of all ``POST /v1/chat/completions`` requests, in order."""
        with self._lock:
            return [
                r["body"]
                for r in self.requests
                if r["method"] == "POST" and r["path"].split("?", 1)[0].rstrip("/") == _CHAT_PATH
            ]

    # -- internals used by the handler ------------------------------------------

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def _take_faults(self) -> Tuple[float, Optional[Tuple[int, Optional[float], Optional[dict]]]]:
        with self._lock:
            delay = self._delays.popleft() if self._delays else 0.0
            failure = self._failures.popleft() if self._failures else None
        return delay, failure

    def _take_stream_break(self) -> Optional[int]:
        with self._lock:
            return self._breaks.popleft() if self._breaks else None

    def _reply_text(self, body: dict) -> str:
        reply = self.reply
        if reply is None:
            last_user = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), None)
            return "FAKE-LLM: " + (_content_text(last_user.get("content")) if last_user else "")
        if callable(reply):
            text = reply(body)
            if not isinstance(text, str):
                raise TypeError(f"reply callable must return str, got {type(text).__name__}")
            return text
        return str(reply)

    def _models_response(self) -> dict:
        return {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "wxhelper-fake"}],
        }

    def _embeddings_response(self, body: dict) -> dict:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _RequestError(400, "you must provide a model parameter", param="model")
        raw = body.get("input")
        # Accepted forms, as in the real API: str, [str], [int] (one token array), [[int]].
        items: List[Any]
        if isinstance(raw, str):
            items = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
            items = [raw]
        elif isinstance(raw, list) and raw:
            items = raw
        else:
            raise _RequestError(400, "'input' must be a non-empty string or array", param="input", code="invalid_value")
        keys: List[bytes] = []
        tokens = 0
        for i, item in enumerate(items):
            if isinstance(item, str):
                if not item:
                    raise _RequestError(400, f"'$.input[{i}]' is invalid: empty string", param="input", code="invalid_value")
                keys.append(item.encode("utf-8"))
                tokens += _count_tokens(item)
            elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                keys.append(b"tokens:" + json.dumps(item).encode("ascii"))
                tokens += len(item)
            else:
                raise _RequestError(400, f"'$.input[{i}]' is invalid: expected a string or token array", param="input", code="invalid_type")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _RequestError(400, f"Invalid value for 'encoding_format': {fmt!r}", param="encoding_format", code="invalid_value")
        dim = body.get("dimensions")
        if dim is None:
            dim = self.embedding_dim
        elif not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise _RequestError(400, "'dimensions' must be a positive integer", param="dimensions", code="invalid_value")
        data = []
        for i, key in enumerate(keys):
            vec = _embed(key, dim)
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii") if fmt == "base64" else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

"""The LLM client's sockets: one send per request and no socket poll per pooled connection.

The ``openai`` client talks through httpx, whose connection pool (httpcore) reaches the network
through a *network backend*. Its default one (anyio) sends a request's head and body in two
writes, each with a scheduling checkpoint and a cancel scope, so every LLM call woke the LLM's
process twice; and before each request the pool asks every idle keep-alive connection whether
its server hung up, with a ``poll()`` system call per connection. Under ``wxhelper bench serve``
that was about a tenth of the server's CPU per message (docs/performance.md, "HTTP service").

:class:`LeanBackend` is the same interface over asyncio's own transports and protocols:

* writes made in one step of the calling task (the head, then the body) go out in one send, at
  the latest when the task first reads or yields to the loop (nothing is ever held back longer);
* the protocol is told by the loop when data or the end of the stream arrives, so "has the server
  hung up?" is a look at a flag, not a system call;
* reads and connects keep their timeouts and raise the pool's own errors (ReadTimeout,
  ConnectError, …), which httpx and the ``openai`` client turn into their usual ones, so the
  host's retries (:mod:`wxhelper.llm`) see exactly what they saw before; TLS goes through
  ``loop.start_tls`` with the pool's SSL context (verification, SNI and ALPN as before).

:func:`lean_http_client` builds the ``openai`` client's default httpx client and puts the backend
under its pool; when the installed httpx does not look as expected it leaves the default in
place (logged), so an upgrade can cost speed but never break the LLM calls. Proxies configured
through the environment keep httpx's own transports.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import sys
import time
from types import ModuleType
from typing import Any, AsyncIterator, Iterable, Optional

log = logging.getLogger(__name__)

#: Pending bytes beyond which a write is sent at once (a large streamed body).
FLUSH_BYTES = 64 * 1024


class _Protocol(asyncio.Protocol):
    """Collects what arrives; wakes the one reader waiting for it."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.error: Optional[BaseException] = None
        self.waiter: Optional[asyncio.Future] = None
        self.paused = False
        self.drained: Optional[asyncio.Future] = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: HTTP/1.1 never half-closes a connection it still uses

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


class LeanStream:
    """An ``AsyncNetworkStream`` over an asyncio transport; see the module's docstring."""

    def __init__(self, core: ModuleType, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._core = core
        self._transport = transport
        self._protocol = protocol
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_scheduled = False

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise self._core.WriteError("the connection is closed")
        self._pending.append(bytes(buffer))
        self._pending_bytes += len(buffer)
        if self._pending_bytes >= FLUSH_BYTES or self._protocol.paused:
            self._flush()
            await self._drain(timeout)
        elif not self._flush_scheduled:  # sent when this step of the task ends, at the latest
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    async def _drain(self, timeout: Optional[float]) -> None:
        protocol = self._protocol
        if not protocol.paused:
            return
        protocol.drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(protocol.drained, timeout)
        except asyncio.TimeoutError:
            raise self._core.WriteTimeout(f"the connection took no data for {timeout}s") from None
        finally:
            protocol.drained = None
        if protocol.error is not None:
            raise self._core.WriteError(str(protocol.error))

    # -- reading ---------------------------------------------------------------------------------
    async def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        self._flush()
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            loop = asyncio.get_running_loop()
            waiter = protocol.waiter = loop.create_future()
            expired = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            except _Expired:
                raise self._core.ReadTimeout(f"no data from the server within {timeout}s") from None
            finally:
                protocol.waiter = None
                if expired is not None:
                    expired.cancel()
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            return data
        if protocol.error is not None:
            raise self._core.ReadError(f"{type(protocol.error).__name__}: {protocol.error}")
        return b""  # the server closed the connection

    async def aclose(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        self._pending.clear()
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: Optional[str] = None,
                        timeout: Optional[float] = None) -> "LeanStream":
        self._flush()
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(self._transport, self._protocol, ssl_context, server_hostname=server_hostname),
                timeout)
        except asyncio.TimeoutError:
            self._transport.close()
            raise self._core.ConnectTimeout(f"TLS handshake took over {timeout}s") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise self._core.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return LeanStream(self._core, transport, self._protocol)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # idle and readable means the server hung up (or spoke out of turn)
            return bool(self._protocol.buffer) or self._protocol.eof or self._transport.is_closing()
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class _Expired(Exception):
    pass


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class LeanBackend:
    """An ``AsyncNetworkBackend`` of the httpcore package ``core`` (httpcore or httpcore2)."""

    def __init__(self, core: ModuleType) -> None:
        self._core = core

    async def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                          local_address: Optional[str] = None,
                          socket_options: Optional[Iterable[Any]] = None) -> LeanStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await self._connect(loop.create_connection(_Protocol, host, port, local_addr=local),
                                   timeout, socket_options)

    async def connect_unix_socket(self, path: str, timeout: Optional[float] = None,
                                  socket_options: Optional[Iterable[Any]] = None) -> LeanStream:
        loop = asyncio.get_running_loop()
        return await self._connect(loop.create_unix_connection(_Protocol, path), timeout, socket_options)

    async def _connect(self, connecting: Any, timeout: Optional[float],
                       socket_options: Optional[Iterable[Any]]) -> LeanStream:
        try:
            transport, protocol = await asyncio.wait_for(connecting, timeout)
        except asyncio.TimeoutError:
            raise self._core.ConnectTimeout(f"no connection within {timeout}s") from None
        except OSError as exc:
            raise self._core.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        sock: Optional[socket.socket] = transport.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
        return LeanStream(self._core, transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: The longest response head (status line and headers) read before giving up on a server.
MAX_HEAD_BYTES = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class LeanTransport:
    """An httpx transport speaking HTTP/1.1 itself over :class:`LeanStream` connections.

    httpx's own transport turns every request into an httpcore request, runs it through httpcore's
    pool and h11's state machine (headers validated and normalised again, events built and checked)
    and wraps the answer back: ~0.3 ms of the host's CPU per LLM call, a fifth of what the ``openai``
    client costs it. This one writes the request's head and body as httpx built them, reads the
    status line and headers, and hands httpx a stream of the body (``Content-Length``, chunked or up
    to the close), keeping the connection for the next request when both sides allow it.

    It answers what the ``openai`` client sends: ``http``/``https`` requests with only the
    ``timeout`` extension. Anything else (another extension, a scheme of its own) goes to
    ``fallback``, httpx's own transport. The errors are httpx's (ConnectError, ReadTimeout,
    RemoteProtocolError, PoolTimeout, ...), raised where httpx would raise them, so the ``openai``
    client and the host's retries see what they saw before. A kept-alive connection the server hung
    up on while idle is dropped before use, as httpcore's pool does; one that dies after the request
    was sent is an error (never a silent second send of a non-idempotent POST).
    """

    def __init__(self, httpx: ModuleType, fallback: Any, ssl_context: Optional[ssl.SSLContext],
                 max_connections: Optional[int], max_keepalive: Optional[int],
                 keepalive_expiry: Optional[float]) -> None:
        self._httpx = httpx
        self._fallback = fallback
        self._ssl_context = ssl_context
        self._backend = LeanBackend(httpx)  # its errors: httpx's own classes, same names as httpcore's
        self._limit = asyncio.Semaphore(max_connections) if max_connections else None
        self._max_keepalive = sys.maxsize if max_keepalive is None else max_keepalive
        self._expiry = keepalive_expiry
        self._idle: dict[tuple[bytes, bytes, int], list[tuple[float, LeanStream]]] = {}
        self._closed = False
        # httpx checks that a response's stream is one of its own AsyncByteStreams
        self._body_class = type("LeanResponseBody", (_ResponseBody, httpx.AsyncByteStream), {})

    # -- the pool --------------------------------------------------------------------------------
    def _take_idle(self, key: tuple[bytes, bytes, int], now: float) -> Optional[LeanStream]:
        idle = self._idle.get(key)
        while idle:
            since, stream = idle.pop()
            expired = self._expiry is not None and now - since > self._expiry
            if expired or stream.get_extra_info("is_readable"):  # hung up, spoke out of turn, or stale
                stream.close_now()
                continue
            return stream
        return None

    def _give_back(self, key: tuple[bytes, bytes, int], stream: LeanStream) -> None:
        if self._closed or stream.get_extra_info("is_readable"):
            stream.close_now()
            return
        idle = self._idle.setdefault(key, [])
        if sum(len(streams) for streams in self._idle.values()) >= self._max_keepalive:
            stream.close_now()
            return
        idle.append((time.monotonic(), stream))

    async def _connect(self, scheme: bytes, host: str, port: int, timeouts: dict) -> LeanStream:
        stream = await self._backend.connect_tcp(host, port, timeout=timeouts.get("connect"))
        if scheme == b"https":
            context = self._ssl_context if self._ssl_context is not None else ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])  # as httpcore does for an HTTP/1.1-only pool
            stream = await stream.start_tls(context, server_hostname=host, timeout=timeouts.get("connect"))
        return stream

    async def _acquire_slot(self, timeouts: dict) -> None:
        if self._limit is None:
            return
        if not self._limit.locked():
            await self._limit.acquire()  # does not wait: a slot is free
            return
        try:
            await asyncio.wait_for(self._limit.acquire(), timeouts.get("pool"))
        except asyncio.TimeoutError:
            raise self._httpx.PoolTimeout("no connection became free in time") from None

    def _release_slot(self) -> None:
        if self._limit is not None:
            self._limit.release()

    # -- a request -------------------------------------------------------------------------------
    async def handle_async_request(self, request: Any) -> Any:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https") or len(request.extensions) > 1 or (
                request.extensions and "timeout" not in request.extensions):
            return await self._fallback.handle_async_request(request)
        if self._closed:
            raise RuntimeError("the LLM client's transport is closed")
        httpx = self._httpx
        timeouts = request.extensions.get("timeout") or {}
        host = url.host
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        await self._acquire_slot(timeouts)
        stream: Optional[LeanStream] = None
        try:
            stream = self._take_idle(key, time.monotonic()) or await self._connect(scheme, host, port, timeouts)
            await self._send(stream, request, timeouts.get("write"))
            status, reason, version, headers, rest = await self._read_head(stream, timeouts.get("read"))
        except BaseException:
            if stream is not None:
                stream.close_now()
            self._release_slot()
            raise
        body = self._body_class(self, key, stream, request, status, version, headers, rest, timeouts.get("read"))
        return httpx.Response(status, headers=headers, stream=body,
                              extensions={"http_version": version, "reason_phrase": reason})

    async def _send(self, stream: LeanStream, request: Any, timeout: Optional[float]) -> None:
        url = request.url
        lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        chunked = False
        for name, value in request.headers.raw:
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
                raise self._httpx.LocalProtocolError(f"illegal header {name!r}")
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        await stream.write(b"".join(lines), timeout)
        async for piece in request.stream:
            if chunked:
                if piece:
                    await stream.write(b"%x\r\n%s\r\n" % (len(piece), piece), timeout)
            else:
                await stream.write(piece, timeout)
        if chunked:
            await stream.write(b"0\r\n\r\n", timeout)

    async def _read_head(self, stream: LeanStream, timeout: Optional[float]) -> tuple:
        """The status line and headers; 1xx interim answers (100 Continue) are skipped."""
        buffer = b""
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise self._httpx.RemoteProtocolError("the response's head is too long")
                data = await stream.read(65536, timeout)
                if not data:
                    raise self._httpx.RemoteProtocolError("Server disconnected without sending a response.")
                buffer += data
                end = buffer.find(b"\r\n\r\n")
            head, buffer = buffer[:end], buffer[end + 4:]
            status_line, *header_lines = head.split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            code, _, reason = rest.partition(b" ")
            if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
                raise self._httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
            headers = []
            for line in header_lines:
                name, colon, value = line.partition(b":")
                if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                    raise self._httpx.RemoteProtocolError(f"malformed response header {line[:80]!r}")
                headers.append((name, value.strip(b" \t")))
            status = int(code)
            if 100 <= status < 200 and status != 101:
                continue
            if status == 101:
                raise self._httpx.RemoteProtocolError("the server switched protocols")
            return status, reason, version, headers, buffer

    async def aclose(self) -> None:
        self._closed = True
        for streams in self._idle.values():
            for _, stream in streams:
                stream.close_now()
        self._idle.clear()
        await self._fallback.aclose()

    async def __aenter__(self) -> "LeanTransport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _ResponseBody:
    """The body of one response as httpx reads it: framed by ``Content-Length``, chunks or the close;
    the connection goes back to the pool once the body is read whole and both sides keep it alive."""

    def __init__(self, transport: LeanTransport, key: tuple, stream: LeanStream, request: Any, status: int,
                 version: bytes, headers: list, rest: bytes, timeout: Optional[float]) -> None:
        self._transport = transport
        self._key = key
        self._stream: Optional[LeanStream] = stream
        self._timeout = timeout
        self._buffer = rest
        self._length: Optional[int] = None
        self._chunked = False
        close = version == b"HTTP/1.0"
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                if not value.isdigit() or (self._length is not None and self._length != int(value)):
                    raise transport._httpx.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
                self._length = int(value)
            elif lowered == b"transfer-encoding":
                self._chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                if not self._chunked:
                    close = True  # a framing this client does not know: the body lasts until the close
            elif lowered == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    close = False
        for name, value in request.headers.raw:
            if name.lower() == b"connection" and b"close" in value.lower():
                close = True
        if request.method == "HEAD" or status in _NO_BODY_STATUS:
            self._length, self._chunked = 0, False
        elif self._chunked:
            self._length = None
        elif self._length is None:
            close = True  # no framing: the body is what comes until the server closes
        self._keep = not close
        self._done = False

    async def _more(self) -> bytes:
        stream = self._stream
        assert stream is not None
        data = await stream.read(65536, self._timeout)
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        httpx = self._transport._httpx
        if self._done or self._stream is None:
            return
        if self._chunked:
            async for piece in self._chunks():
                yield piece
        elif self._length is not None:
            left = self._length
            if self._buffer:
                piece, self._buffer = self._buffer[:left], self._buffer[left:]
                left -= len(piece)
                if piece:
                    yield piece
            while left > 0:
                data = await self._more()
                if not data:
                    raise httpx.RemoteProtocolError(
                        f"peer closed connection without sending complete message body: "
                        f"received {self._length - left} bytes, expected {self._length}")
                piece = data[:left]
                left -= len(piece)
                yield piece
            if self._buffer or left < 0:
                self._keep = False  # more than announced: do not trust the connection again
        else:
            if self._buffer:
                yield self._buffer
                self._buffer = b""
            while True:
                data = await self._more()
                if not data:
                    break
                yield data
        self._finish()

    async def _chunks(self) -> AsyncIterator[bytes]:
        httpx = self._transport._httpx
        while True:
            line = await self._line()
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {line[:40]!r}") from None
            if size < 0:
                raise httpx.RemoteProtocolError(f"bad chunk size {line[:40]!r}")
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                if self._buffer:
                    self._keep = False
                return
            while len(self._buffer) < size + 2:
                await self._fill()
            piece, ending, self._buffer = self._buffer[:size], self._buffer[size:size + 2], self._buffer[size + 2:]
            if ending != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk does not end with CRLF")
            yield piece

    async def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
                return line
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise self._transport._httpx.RemoteProtocolError("a chunk's size line is too long")
            await self._fill()

    async def _fill(self) -> None:
        data = await self._more()
        if not data:
            raise self._transport._httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body: incomplete chunked read")
        self._buffer += data

    def _finish(self) -> None:
        """The body was read whole: the connection goes back to the pool (or is closed)."""
        if self._done:
            return
        self._done = True
        stream, self._stream = self._stream, None
        if stream is not None:
            if self._keep:
                self._transport._give_back(self._key, stream)
            else:
                stream.close_now()
        self._transport._release_slot()

    async def aclose(self) -> None:
        """Closed before the body was read whole (or after): an unread body closes the connection."""
        if self._done:
            return
        self._keep = False
        self._finish()


#: URLs remembered per client (the host sends to one or two; a full memo is emptied, not grown).
URL_MEMO_SIZE = 64


class UrlMemo:
    """The URL a client builds from a path and its ``base_url``, parsed once instead of on every call.

    The ``openai`` client and httpx each parse the request's URL again on every call (joining
    ``/chat/completions`` to ``base_url``: ~0.07 ms each, a tenth of the client's CPU per call).
    Both return an immutable URL, so the result for the same string and the same ``base_url``
    object is reused; setting ``base_url`` (a new object) empties the memo.
    """

    def __init__(self) -> None:
        self._base: object = None
        self._urls: dict[str, Any] = {}

    def get(self, base: object, url: object, build: Any) -> Any:
        if type(url) is not str:
            return build(url)
        if base is not self._base:
            self._base, self._urls = base, {}
        found = self._urls.get(url)
        if found is None:
            if len(self._urls) >= URL_MEMO_SIZE:
                self._urls = {}
            found = self._urls[url] = build(url)
        return found


@functools.lru_cache(maxsize=None)
def _memo_client_class(base: type) -> type:
    """``base`` (the ``openai`` client's httpx client class) with its URL merge remembered (:class:`UrlMemo`)."""

    class LeanAsyncHttpxClient(base):  # type: ignore[valid-type, misc]
        def _merge_url(self, url: Any, *args: Any, **kwargs: Any) -> Any:
            if args or kwargs:  # a signature the memo does not know: httpx's own
                return super()._merge_url(url, *args, **kwargs)
            memo = self.__dict__.get("_wxhelper_url_memo")
            if memo is None:
                memo = self.__dict__["_wxhelper_url_memo"] = UrlMemo()
            return memo.get(getattr(self, "_base_url", None), url, super()._merge_url)

    return LeanAsyncHttpxClient


def lean_http_client(**kwargs: Any) -> Any:
    """The ``openai`` client's default async httpx client, sending through :class:`LeanTransport`
    (with :class:`LeanBackend` under httpx's own pool for what it hands on). When this httpx/httpcore
    has not the pool it expects, or the pool was configured beyond what the lean transport speaks
    (HTTP/2, a proxy, a Unix socket, a local address, socket options, connect retries), httpx's own
    transport stays in place (logged), so an upgrade can cost speed but never break the LLM calls."""
    from openai import DefaultAsyncHttpxClient

    if callable(getattr(DefaultAsyncHttpxClient, "_merge_url", None)):
        client = _memo_client_class(DefaultAsyncHttpxClient)(**kwargs)
    else:
        client = DefaultAsyncHttpxClient(**kwargs)
    transport = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    core = sys.modules.get(type(pool).__module__.split(".")[0]) if pool is not None else None
    if (core is None or type(pool) is not getattr(core, "AsyncConnectionPool", None)
            or not hasattr(pool, "_network_backend") or not hasattr(core, "ReadTimeout")):
        log.info("the LLM client keeps httpx's default network backend (unexpected pool %r)", type(pool))
        return client
    pool._network_backend = LeanBackend(core)
    httpx = sys.modules.get(type(transport).__module__.split(".")[0])
    plain = all(getattr(pool, name, None) in (None, False, 0) for name in
                ("_proxy", "_uds", "_local_address", "_socket_options", "_http2", "_retries"))
    needed = ("Response", "PoolTimeout", "ReadTimeout", "ReadError", "WriteError", "WriteTimeout",
              "ConnectError", "ConnectTimeout", "RemoteProtocolError", "LocalProtocolError")
    if httpx is None or not plain or not all(hasattr(httpx, name) for name in needed) or not all(
            hasattr(pool, name) for name in ("_ssl_context", "_max_connections", "_max_keepalive_connections",
                                             "_keepalive_expiry")):
        log.info("the LLM client keeps httpx's own transport (a pool it does not expect: %r)", type(pool))
        return client
    client._transport = LeanTransport(httpx, transport, pool._ssl_context, pool._max_connections,
                                      pool._max_keepalive_connections, pool._keepalive_expiry)
    return client


def uses_lean_backend(client: Any) -> bool:
    """Whether an httpx client sends through :class:`LeanTransport` over :class:`LeanBackend` (tests
    check it, so that an httpx upgrade that loses it fails them instead of silently costing speed)."""
    transport = getattr(client, "_transport", None)
    if not isinstance(transport, LeanTransport):
        return False
    pool = getattr(transport._fallback, "_pool", None)
    return isinstance(getattr(pool, "_network_backend", None), LeanBackend)

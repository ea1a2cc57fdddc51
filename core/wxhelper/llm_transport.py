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
import logging
import socket
import ssl
import sys
from types import ModuleType
from typing import Any, Iterable, Optional

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


def lean_http_client(**kwargs: Any) -> Any:
    """The ``openai`` client's default async httpx client with :class:`LeanBackend` under its pool
    (left with httpx's own backend, logged, when this httpx/httpcore has not the pool it expects)."""
    from openai import DefaultAsyncHttpxClient

    client = DefaultAsyncHttpxClient(**kwargs)
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    core = sys.modules.get(type(pool).__module__.split(".")[0]) if pool is not None else None
    if (core is None or type(pool) is not getattr(core, "AsyncConnectionPool", None)
            or not hasattr(pool, "_network_backend") or not hasattr(core, "ReadTimeout")):
        log.info("the LLM client keeps httpx's default network backend (unexpected pool %r)", type(pool))
        return client
    pool._network_backend = LeanBackend(core)
    return client


def uses_lean_backend(client: Any) -> bool:
    """Whether an httpx client's pool sends through :class:`LeanBackend` (tests check it, so that an
    httpx upgrade that loses it fails them instead of silently costing speed)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    return isinstance(getattr(pool, "_network_backend", None), LeanBackend)

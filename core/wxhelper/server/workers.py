"""Several worker processes, each accepting on a listening socket of its own (``SO_REUSEPORT``).

uvicorn's ``--workers`` binds one socket in the parent and every worker accepts from it. Whichever
worker's loop wakes first takes every connection waiting, so a bot that opens its keep-alive
connections at once lands them on one worker: ``wxhelper bench serve`` found 30 of its 32
connections on one of two workers, the other nearly idle, and the throughput of two workers swung
between that of one (~190 msg/s) and of two (~280) from run to run. With a socket per worker,
all bound to the same port with ``SO_REUSEPORT``, the kernel spreads new connections over the
workers by a hash of their addresses (Linux), whatever the workers are doing.

The supervision (restarting a worker that dies or hangs, SIGINT/SIGTERM, SIGHUP) stays uvicorn's
own :class:`~uvicorn.supervisors.multiprocess.Multiprocess`; only what a worker listens on changes.
Where the platform or the installed uvicorn lacks what this needs, ``wxhelper serve`` says so and
uses uvicorn's shared socket (:func:`reuse_port_available`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import sys
from typing import Any, Iterator, Optional

log = logging.getLogger("wxhelper.server")


def reuse_port_available() -> Optional[str]:
    """None when workers can have sockets of their own here, else why not (a sentence)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return "SO_REUSEPORT does not spread connections over the workers on this platform"
    if OwnSocketProcess is None or _Multiprocess is None:
        return "this uvicorn's worker supervisor differs from the one wxhelper knows"
    params = inspect.signature(_Multiprocess).parameters
    if "sockets" not in params or "target" in params or not callable(getattr(_UvicornProcess, "target", None)):
        return "this uvicorn's worker supervisor differs from the one wxhelper knows"
    return None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def already_served(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` now (another ``wxhelper serve``, say).

    A second server of the same user binding the port with ``SO_REUSEPORT`` would not fail: it
    would silently take half of the first one's connections. So the port is probed first.
    """
    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((probe_host, port), timeout=0.5):
            return True
    except OSError:
        return False


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` and never listening, held by the parent.

    It resolves port 0 to a real port the workers then share, fails at once (``OSError``) when
    another program holds the port, and keeps the port while workers are replaced. A socket that
    does not listen takes no connections.
    """
    if port and already_served(host, port):
        raise OSError(98, f"something already accepts connections on {host}:{port}")
    return _port_socket(host, port)


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A worker's own listening socket on the shared port."""
    sock = _port_socket(host, port)
    try:
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


try:  # uvicorn is the server extra's; its supervisor's worker class is what a worker runs
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess as _Multiprocess
    from uvicorn.supervisors.multiprocess import Process as _UvicornProcess
except ImportError:  # no uvicorn, or one without these: reuse_port_available() says so
    STARTUP_FAILURE, _Multiprocess, _UvicornProcess = 3, None, None

if _UvicornProcess is not None:
    class OwnSocketProcess(_UvicornProcess):  # type: ignore[misc, valid-type]
        """A uvicorn worker that listens on a socket of its own instead of the parent's."""

        def target(self, sockets: Optional[list[socket.socket]] = None) -> None:  # runs in the worker
            config = self.config
            try:
                own = listening_socket(config.host, config.port, config.backlog)
            except OSError as exc:
                logging.getLogger("uvicorn.error").error("worker could not listen on %s:%s: %s",
                                                         config.host, config.port, exc)
                sys.exit(STARTUP_FAILURE)
            super().target([own])
else:
    OwnSocketProcess = None  # type: ignore[assignment, misc]


@contextlib.contextmanager
def _workers_are(process_class: type) -> Iterator[None]:
    """uvicorn's supervisor makes its workers with its module's ``Process``: ours while it runs."""
    from uvicorn.supervisors import multiprocess

    original = multiprocess.Process
    multiprocess.Process = process_class
    try:
        yield
    finally:
        multiprocess.Process = original


def run_workers(config: Any) -> None:
    """Run ``config.workers`` uvicorn workers under uvicorn's supervisor, each with a socket of its own.

    ``config`` is a :class:`uvicorn.Config` (an import string as the app). Exits with uvicorn's
    startup-failure status when the port cannot be had.
    """
    from uvicorn.supervisors import multiprocess

    try:
        reserved = reserve_port(config.host, config.port)
    except OSError as exc:
        logging.getLogger("uvicorn.error").error("cannot serve %s:%s: %s", config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)
    with reserved:
        config.port = reserved.getsockname()[1]
        shown = f"[{config.host}]" if ":" in config.host else config.host
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on %s://%s:%d, a socket per worker (Press CTRL+C to quit)",
            "https" if config.is_ssl else "http", shown, config.port)
        with _workers_are(OwnSocketProcess):
            multiprocess.Multiprocess(config, sockets=[]).run()

"""``wxhelper serve``: the HTTP service under uvicorn.

Refuses, with a message saying what to do instead:

* a non-loopback ``--host`` without ``WXHELPER_API_TOKEN`` (unless ``--allow-unauthenticated``);
* ``--workers`` above 1 over SQLite: each worker would hold its own connection to one file and
  its own embedded Chroma; several workers need the Redis store (``WXHELPER_STORE=redis://…``),
  which they then share completely (histories, bindings, metrics through the multiprocess dir).

Before the workers start, the knowledge collections are indexed once here, so workers never
index concurrently. Several workers each accept on a socket of their own (``SO_REUSEPORT``, see
:mod:`.workers`) unless ``--shared-socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, Optional

import click

log = logging.getLogger("wxhelper.server")

APP = "wxhelper.server.app:app_from_env"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token_set: bool, allow_unauthenticated: bool) -> str:
    """What to say at start; raises ClickException when the bind is refused."""
    if token_set:
        return f"auth: bearer token required (WXHELPER_API_TOKEN) on every route but /healthz and /readyz"
    if is_loopback(host):
        return (f"auth: none (WXHELPER_API_TOKEN is not set), so binding to loopback only ({host}); "
                "set WXHELPER_API_TOKEN to serve other interfaces")
    if allow_unauthenticated:
        return f"auth: NONE on {host}, a non-loopback interface (--allow-unauthenticated): anyone who reaches it can use it"
    raise click.ClickException(
        f"refusing to serve on {host} without authentication: set WXHELPER_API_TOKEN, bind to 127.0.0.1, "
        "or pass --allow-unauthenticated")


def check_workers(workers: int, store_url: str) -> None:
    if workers > 1 and store_url.startswith("sqlite"):
        raise click.ClickException(
            f"--workers {workers} needs a store the workers can share, and the history store is SQLite "
            f"({store_url}). Use --workers 1, or set WXHELPER_STORE=redis://host:port/0 (or REDIS_URL) so every "
            "worker shares the same histories, bindings and metrics.")


@click.command("serve")
@click.option("--host", "bind_host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (more than 1 needs the Redis store).")
@click.option("--allow-unauthenticated", is_flag=True,
              help="Serve a non-loopback interface without WXHELPER_API_TOKEN (not recommended).")
@click.option("--access-log", is_flag=True, help="Log every request (off by default: it costs throughput).")
@click.option("--no-index", is_flag=True, help="Skip indexing the corpora before the workers start.")
@click.option("--shared-socket", is_flag=True,
              help="With several workers, accept from one socket as uvicorn does (by default each worker has "
                   "its own, SO_REUSEPORT, so connections are spread over the workers).")
def serve(bind_host: str, port: int, workers: int, allow_unauthenticated: bool, access_log: bool,
          no_index: bool, shared_socket: bool) -> None:
    """Serve the HTTP API (POST /v1/messages, histories, export, /metrics …) with uvicorn."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is missing: install the server extra, pip install 'wxhelper[server]'")
    from ..cli import _settings

    from .app import api_token

    settings = _settings()
    said = check_bind(bind_host, api_token(settings) is not None, allow_unauthenticated)
    check_workers(workers, settings.store_url)
    if not no_index:
        _index(settings)
    multiproc_dir: Optional[str] = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiproc_dir = tempfile.mkdtemp(prefix="wxhelper-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    os.environ["WXHELPER_SERVE_WORKERS"] = str(workers)  # the console refuses re-indexing an embedded Chroma shared by workers
    store = settings.store_url.split("?", 1)[0]
    if "@" in store:  # never print a password
        store = store.split("://", 1)[0] + "://…@" + store.rsplit("@", 1)[1]
    click.echo(f"wxhelper serve: http://{bind_host}:{port} · {workers} worker(s) · store {store}", err=True)
    click.echo(f"wxhelper serve: {said}", err=True)
    own_sockets = workers > 1 and not shared_socket and _own_sockets_here()
    options: dict[str, Any] = dict(factory=True, host=bind_host, port=port, workers=workers, access_log=access_log,
                                   log_level=settings.log_level.lower(), timeout_graceful_shutdown=10)
    try:
        if own_sockets:
            from .workers import run_workers

            with contextlib.suppress(KeyboardInterrupt):
                run_workers(uvicorn.Config(APP, **options))
        else:
            uvicorn.run(APP, **options)
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def _own_sockets_here() -> bool:
    from .workers import reuse_port_available

    why_not = reuse_port_available()
    if why_not is None:
        click.echo("wxhelper serve: each worker accepts on a socket of its own (SO_REUSEPORT)", err=True)
        return True
    click.echo(f"wxhelper serve: the workers share one socket ({why_not}); connections may gather on one worker",
               err=True)
    return False


def _index(settings) -> None:  # type: ignore[no-untyped-def]
    from ..host import Host

    async def go() -> None:
        host = Host(settings)
        await host.start()
        try:
            await host.index()
        finally:
            await host.close()

    try:
        asyncio.run(go())
    except Exception as exc:  # Chroma down: the workers answer without knowledge; /readyz says so
        print(f"wxhelper serve: indexing the corpora failed ({type(exc).__name__}: {exc}); serving anyway",
              file=sys.stderr)

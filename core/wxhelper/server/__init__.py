"""The bot-facing HTTP service (``wxhelper serve``), installed with the ``wxhelper[server]`` extra.

* :mod:`.app` — the FastAPI application (``create_app``) and its routes;
* :mod:`.guard` — bearer-token auth and the request-body limit, as one ASGI middleware;
* :mod:`.metrics` — the Prometheus metrics;
* :mod:`.command` — the ``wxhelper serve`` command (uvicorn, workers, bind checks);
* :mod:`.admin` — the operator console: ``/admin`` (``admin_static/``) and its JSON under ``/admin/api``.

Nothing here is imported by the host itself: without the extra, ``wxhelper`` works and only
``wxhelper serve`` says what to install.
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`wxhelper.server.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)

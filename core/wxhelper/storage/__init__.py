"""History storage: the interface and the backends, picked from a URI scheme."""

from __future__ import annotations

from typing import Callable

from .base import FairQuery, HistoryKey, HistoryStore, StoreError
from .sqlite import SQLiteStore


def _redis(url: str) -> HistoryStore:
    from .redis import RedisStore

    return RedisStore.from_url(url)


BACKENDS: dict[str, Callable[[str], HistoryStore]] = {
    "sqlite": SQLiteStore.from_url,
    "redis": _redis,
    "rediss": _redis,
    "redis+sentinel": _redis,
    "redis+cluster": _redis,
}


def open_store(url: str) -> HistoryStore:
    """Open the backend that ``url``'s scheme names (``sqlite:///path``, ``redis://…``)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        factory = BACKENDS[scheme]
    except KeyError:
        raise ValueError(
            f"store URL scheme {scheme!r} is not supported; use one of {sorted(BACKENDS)}"
        ) from None
    return factory(url)


__all__ = ["FairQuery", "HistoryKey", "HistoryStore", "StoreError", "SQLiteStore", "open_store", "BACKENDS"]

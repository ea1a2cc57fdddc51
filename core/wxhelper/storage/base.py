"""The storage interface every history backend implements.

The host never reads a whole history: a backend answers *fair reads* (the
selection under a record limit and a character budget) and is free to compute
them however is cheapest for it, as long as the result is the one the pure
functions in :mod:`wxhelper.fairness` give for the same data. The contract
suite in ``tests/test_storage_contract.py`` runs against every backend.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Optional

from ..fairness import UserHistory, apply_weights, select
from ..messages import HistoryKind, Record


@dataclass(frozen=True)
class HistoryKey:
    """Names one history: its kind, namespace and, for chat, its source (and bot unless shared).

    ``id`` is an unambiguous encoding (JSON) so that user-controlled parts with
    ``:``, ``{``, ``}`` or ``*`` can never make two keys collide.
    """

    kind: HistoryKind
    namespace: str
    source_id: str = ""
    bot_id: str = ""

    @property
    def id(self) -> str:
        return json.dumps([self.kind, self.namespace, self.source_id, self.bot_id], ensure_ascii=False)

    @classmethod
    def from_id(cls, key_id: str) -> "HistoryKey":
        kind, namespace, source_id, bot_id = json.loads(key_id)
        return cls(kind, namespace, source_id, bot_id)

    @classmethod
    def chat(cls, namespace: str, source_id: str, bot_id: str = "") -> "HistoryKey":
        return cls("chat", namespace, source_id, bot_id)

    @classmethod
    def shared(cls, kind: HistoryKind, namespace: str) -> "HistoryKey":
        return cls(kind, namespace)


#: Picks histories by their key (``HistoryStore.iter_all``'s ``keep``).
KeyFilter = Callable[[HistoryKey], bool]


@dataclass(frozen=True)
class FairQuery:
    """A fair read: at most ``max_records`` records and ``max_chars`` characters, none older than ``since``."""

    max_records: int
    max_chars: int
    since: float = 0.0
    algorithm: str = "max_min"
    weights: tuple[tuple[str, float], ...] = ()
    """Per-user weights (``WXHELPER_USER_WEIGHTS``), used by the ``weighted`` and ``hybrid`` algorithms."""


class StoreError(RuntimeError):
    """The store failed (unreachable, timed out); callers degrade rather than crash."""


class HistoryStore(ABC):
    """A typed, async history store. Backends are picked from a URI scheme by :func:`open_store`."""

    scheme: str = ""

    @abstractmethod
    async def append(self, key: HistoryKey, record: Record, *, max_per_user: int, ttl: float) -> bool:
        """Add ``record``; keep that user's newest ``max_per_user`` in ``key``; expire after ``ttl`` seconds.

        Idempotent on ``record.message_id`` within ``key``: returns False (and
        changes nothing) when a record with that id is already stored there.
        """

    @abstractmethod
    async def candidates(self, key: HistoryKey, query: FairQuery) -> list[UserHistory]:
        """The users a fair read may pick from and their newest records (newest first, not older than ``since``).

        At most ``query.max_records`` users (the most recently active) and
        ``query.max_records`` records each: enough for any algorithm, and a cost
        that does not grow with what is stored.
        """

    async def fair_read(self, key: HistoryKey, query: FairQuery) -> list[Record]:
        """The fair selection, oldest first. Backends may override with a server-side version."""
        if query.max_records <= 0 or query.max_chars <= 0:
            return []
        histories = apply_weights(await self.candidates(key, query), query.weights, query.algorithm)
        return select(histories, query.max_records, query.max_chars, query.algorithm)

    @abstractmethod
    async def count(self, key: HistoryKey) -> int:
        """How many records ``key`` holds (expired ones not yet purged included)."""

    @abstractmethod
    async def clear(self, key: HistoryKey) -> int:
        """Drop every record of ``key``; returns how many were dropped."""

    @abstractmethod
    async def purge_expired(self, before: float) -> int:
        """Delete records older than ``before`` (epoch seconds); returns how many."""

    @abstractmethod
    async def get_binding(self, source_id: str, bot_id: str) -> Optional[str]:
        """The namespace a source is bound to (by a command), if any."""

    @abstractmethod
    async def set_binding(self, source_id: str, bot_id: str, namespace: Optional[str]) -> None:
        """Bind a source to a namespace, or unbind it with None."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreError` when the store cannot be reached."""

    async def append_many(self, key: HistoryKey, records: list[Record], *, max_per_user: int,
                          ttl: float) -> list[bool]:
        """Append records in order (bulk loads, migration); backends may batch the round trips."""
        return [await self.append(key, r, max_per_user=max_per_user, ttl=ttl) for r in records]

    def iter_all(self, keep: Optional[KeyFilter] = None) -> AsyncIterator[tuple[HistoryKey, list[Record]]]:
        """Every history and all its records, oldest first (timestamp, then insertion order): for migration.

        ``keep``: only the histories whose key it accepts. The others' records are never read, so an
        export of one source costs its own histories and the (capped) shared ones, not every chat's.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its histories")

    async def all_bindings(self) -> list[tuple[str, str, str]]:
        """Every binding as ``(source_id, bot_id, namespace)``: for migration."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its bindings")

    async def close(self) -> None:
        """Release connections."""


class Inbox(ABC):
    """The crash-safe inbox: a message is stored before any work and leaves only when it is done.

    States of an entry: ``pending`` (received), ``answered`` (its reply is
    stored, history writes may be incomplete). ``complete`` removes the entry
    and keeps the reply, so a re-delivered message gets the same reply and no
    second history record.
    """

    @abstractmethod
    async def inbox_put(self, bot_id: str, message_id: str, payload: str, received: float) -> Optional[str]:
        """Store a message (its JSON) unless an entry for it already exists.

        Returns the reply already attached to an existing entry (a run that
        crashed after answering), else None.
        """

    @abstractmethod
    async def inbox_answer(self, bot_id: str, message_id: str, reply: str) -> None:
        """Attach the produced reply (JSON) to the entry, before the history writes start."""

    @abstractmethod
    async def inbox_complete(self, bot_id: str, message_id: str, reply: str, expires: float) -> None:
        """Remove the entry and keep ``reply`` as the message's final reply until ``expires``."""

    @abstractmethod
    async def inbox_pending(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str, Optional[str]]]:
        """Entries not completed, oldest first: ``(bot_id, message_id, payload, reply or None)``."""

    @abstractmethod
    async def reply_for(self, bot_id: str, message_id: str) -> Optional[str]:
        """The final reply (JSON) of a completed message, if it is still kept."""

    @abstractmethod
    async def inbox_depth(self) -> int:
        """How many messages wait in the inbox (all bots)."""


class Leases(ABC):
    """Short leases with fencing tokens, so one source is handled by one process at a time."""

    @abstractmethod
    async def acquire_lease(self, name: str, ttl: float) -> Optional[int]:
        """Take the lease for ``ttl`` seconds if it is free or expired; returns a fencing token
        larger than every token issued before for ``name``, or None when someone else holds it."""

    @abstractmethod
    async def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        """Extend a lease still held with ``token``; False when it was lost."""

    @abstractmethod
    async def release_lease(self, name: str, token: int) -> None:
        """Give the lease up if it is still held with ``token``."""


class Categories(ABC):
    """Custom namespaces a bot's owner adds (the seed's 自定义分类), and dropping a namespace's data."""

    @abstractmethod
    async def custom_namespaces(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str]]:
        """``(bot_id, name, title)`` of the custom namespaces of one bot (or all bots)."""

    @abstractmethod
    async def add_custom_namespace(self, bot_id: str, name: str, title: str) -> bool:
        """Add one; False when the bot has it already."""

    @abstractmethod
    async def delete_custom_namespace(self, bot_id: str, name: str) -> bool:
        """Remove one; False when the bot has no such custom namespace."""

    @abstractmethod
    async def clear_namespace(self, namespace: str) -> int:
        """Drop every history (chat of every source, board, friend circle) of ``namespace``."""

"""Keep answering while a remote store (Redis) is down, and lose no record.

:class:`ResilientStore` wraps the remote store. When a call fails, the store
is marked down for a short while and the host carries on with what it can
get: reads return nothing, bindings and custom categories are unknown, the
inbox and source leases use a local SQLite file, and every history write is
spooled to a durable local journal (the same file). A background task pings
the remote store and, once it answers, replays the journal in order (writes
are idempotent on ``message_id``, so a replay interrupted halfway is safe);
while the journal is not empty, new writes queue behind it so order holds.

While the remote store answers, the local file is only consulted when it holds
something of the inbox's, a reply or a live lease (written during an outage, by
any process sharing the file): a probe connection reads SQLite's
``PRAGMA data_version`` (no I/O) at most every ``PROBE_INTERVAL`` and right after
this process wrote there, and the file's contents are re-checked, off the event
loop, only when some connection committed since the last check. So a message
costs no thread hop to the local file in normal operation; what another process
wrote there during an outage of its own is seen within ``PROBE_INTERVAL``. When the remote store is back, the journal is replayed and the replies
given during the outage are moved to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar

from ..fairness import UserHistory
from ..messages import Record
from .base import Categories, FairQuery, HistoryKey, HistoryStore, Inbox, Leases, StoreError
from .sqlite import SQLiteStore
from .turns import HistoryWrite, TurnStart, begin_turn_stepwise, finish_turn_stepwise

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_INTERVAL = 0.25
"""Seconds between two probes of the local file for entries written there by other processes."""

SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hkey TEXT NOT NULL,
    record TEXT NOT NULL,
    max_per_user INTEGER NOT NULL,
    ttl REAL NOT NULL
);
"""


class ResilientStore(HistoryStore, Inbox, Leases, Categories):
    def __init__(self, remote: Any, local: SQLiteStore, retry_interval: float = 1.0) -> None:
        self.remote = remote
        self.local = local
        self.retry_interval = retry_interval
        self.scheme = getattr(remote, "scheme", "")
        self._down_until = 0.0
        self._spooled = 0
        self._order = asyncio.Lock()
        self._flusher: Optional[asyncio.Task] = None
        self.local._conn.executescript(SPOOL_SCHEMA)
        self._spooled = self.local._conn.execute("SELECT count(*) FROM spool").fetchone()[0]
        # A second connection that only reads PRAGMA data_version: it changes whenever any other
        # connection (ours included) commits to the file.
        self._probe = sqlite3.connect(str(local.path), check_same_thread=False, isolation_level=None)
        self._probe_version: Optional[int] = None
        self._probe_next = 0.0
        self._local_state = {"inbox": True, "replies": True, "leases": True}  # unknown: assume it holds all

    # -- state ---------------------------------------------------------------------
    @property
    def outage(self) -> bool:
        """True while the remote store is considered down or the journal still holds writes."""
        return time.monotonic() < self._down_until or self._spooled > 0

    @property
    def spooled(self) -> int:
        """Writes waiting in the local journal for the remote store."""
        return self._spooled

    def _mark_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("store unavailable, degrading (%s)", exc)
        self._down_until = time.monotonic() + self.retry_interval
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            try:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
            except RuntimeError:  # no loop (closing): the next start flushes
                pass

    async def _remote(self, call: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        if time.monotonic() < self._down_until:
            return await fallback()
        try:
            return await call()
        except StoreError as exc:
            self._mark_down(exc)
            return await fallback()

    async def _none(self) -> Any:
        return None

    async def _local_write(self, coro: Awaitable[T]) -> T:
        """A write of the inbox, a reply or a lease to the local file: probe it again at the next check."""
        try:
            return await coro
        finally:
            self._probe_next = 0.0

    async def _local_holds(self, *what: str) -> bool:
        """Does the local file hold inbox entries, replies or live leases (any of ``what``)? Errs towards yes.

        The probe runs at most every ``PROBE_INTERVAL`` seconds (it gives up the GIL, and getting it
        back from a busy thread, such as an embedding, can take a tenth of a millisecond), and right
        after this process wrote to the file itself; what another process writes there (during an
        outage of its own) is seen within that interval.
        """
        now = time.monotonic()
        if now < self._probe_next:
            return any(self._local_state[w] for w in what)
        self._probe_next = now + PROBE_INTERVAL
        try:
            version = self._probe.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            self._probe_next = 0.0
            return True
        if version != self._probe_version:
            try:
                self._local_state = await self.local._run(_local_state)
            except StoreError:
                self._probe_next = 0.0
                return True
            self._probe_version = version  # read before the contents: a later commit re-checks
        return any(self._local_state[w] for w in what)

    # -- history ---------------------------------------------------------------------
    async def append(self, key: HistoryKey, record: Record, *, max_per_user: int, ttl: float) -> bool:
        async with self._order:
            if self._spooled == 0 and time.monotonic() >= self._down_until:
                try:
                    return await self.remote.append(key, record, max_per_user=max_per_user, ttl=ttl)
                except StoreError as exc:
                    self._mark_down(exc)
            await self._spool(key, record, max_per_user, ttl)
            return True

    async def _spool(self, key: HistoryKey, record: Record, max_per_user: int, ttl: float) -> None:
        await self.local._run(lambda c: c.execute(
            "INSERT INTO spool(hkey, record, max_per_user, ttl) VALUES (?,?,?,?)",
            (key.id, record.model_dump_json(), max_per_user, ttl)))
        self._spooled += 1
        self._ensure_flusher()

    async def flush(self) -> int:
        """Replay the journal into the remote store, oldest first; returns how many writes were replayed."""
        done = 0
        while True:
            rows = await self.local._run(lambda c: c.execute(
                "SELECT seq, hkey, record, max_per_user, ttl FROM spool ORDER BY seq LIMIT 200").fetchall())
            if not rows:
                async with self._order:
                    left = await self.local._run(lambda c: c.execute("SELECT count(*) FROM spool").fetchone()[0])
                    self._spooled = left
                if left == 0:
                    await self._move_replies()
                    async with self._order:
                        if self._spooled == 0:
                            self._down_until = 0.0
                            return done
                continue
            for seq, hkey, payload, max_per_user, ttl in rows:
                await self.remote.append(HistoryKey.from_id(hkey), Record.model_validate_json(payload),
                                         max_per_user=max_per_user, ttl=ttl)
                await self.local._run(lambda c, s=seq: c.execute("DELETE FROM spool WHERE seq=?", (s,)))
                self._spooled = max(0, self._spooled - 1)
                done += 1

    async def _move_replies(self) -> None:
        """Give the remote store the replies completed locally during an outage, then drop them here.

        Remote first: a crash in between leaves a copy in both, which is harmless (the remote write
        keeps the first reply). It also completes the message in the remote inbox, where it may
        have been put before the outage.
        """
        now = time.time()
        rows = await self.local._run(lambda c: c.execute(
            "SELECT bot_id, message_id, reply, expires FROM replies WHERE expires>=?", (now,)).fetchall())
        for bot_id, message_id, reply, expires in rows:
            await self.remote.inbox_complete(bot_id, message_id, reply, expires)
            await self.local._run(lambda c, b=bot_id, m=message_id: c.execute(
                "DELETE FROM replies WHERE bot_id=? AND message_id=?", (b, m)))
        await self.local._run(lambda c: c.execute("DELETE FROM replies WHERE expires<?", (now,)))

    async def _flush_loop(self) -> None:
        while self._spooled > 0 or time.monotonic() < self._down_until:
            await asyncio.sleep(self.retry_interval)
            try:
                await self.remote.ping()
                flushed = await self.flush()
                if flushed:
                    log.info("store is back: %d spooled writes replayed in order", flushed)
            except StoreError as exc:
                self._down_until = time.monotonic() + self.retry_interval
                log.debug("store still down: %s", exc)

    # -- a message's turn (wxhelper.storage.turns): the remote's one-call steps while it answers and
    #    the local file holds nothing of the inbox's or the leases'; else one operation at a time ------
    async def begin_turn(self, lease: str, ttl: float, bot_id: str, message_id: str, payload: str,
                         received: float, binding_of: Optional[str] = None,
                         reads: Optional[Sequence[tuple[HistoryKey, FairQuery]]] = None) -> TurnStart:
        if (getattr(self.remote, "fast_turns", False) and time.monotonic() >= self._down_until
                and not await self._local_holds("replies")):
            try:
                return await self.remote.begin_turn(lease, ttl, bot_id, message_id, payload, received, binding_of,
                                                    reads)
            except StoreError as exc:
                self._mark_down(exc)
        return await begin_turn_stepwise(self, lease, ttl, bot_id, message_id, payload, received)

    async def finish_turn(self, lease: str, token: int, ttl: float, bot_id: str, message_id: str, reply: str,
                          expires: float, writes: Sequence[HistoryWrite], *, max_per_user: int,
                          history_ttl: float) -> bool:
        if getattr(self.remote, "fast_turns", False) and not await self._local_holds("inbox", "leases"):
            async with self._order:  # behind any spooled write, like every history write
                if self._spooled == 0 and time.monotonic() >= self._down_until:
                    try:
                        return await self.remote.finish_turn(lease, token, ttl, bot_id, message_id, reply, expires,
                                                             writes, max_per_user=max_per_user,
                                                             history_ttl=history_ttl)
                    except StoreError as exc:
                        self._mark_down(exc)  # the script is atomic: redo it step by step, all idempotent
        return await finish_turn_stepwise(self, lease, token, ttl, bot_id, message_id, reply, expires, writes,
                                          max_per_user=max_per_user, history_ttl=history_ttl)

    async def fair_read_many(self, reads: Sequence[tuple[HistoryKey, FairQuery]]) -> list[list[Record]]:
        many = getattr(self.remote, "fair_read_many", None)
        if many is None:
            return list(await asyncio.gather(*(self.fair_read(key, query) for key, query in reads)))

        async def empty() -> list[list[Record]]:
            return [[] for _ in reads]

        return await self._remote(lambda: many(reads), empty)

    async def candidates(self, key: HistoryKey, query: FairQuery) -> list[UserHistory]:
        return await self._remote(lambda: self.remote.candidates(key, query), self._empty)

    async def fair_read(self, key: HistoryKey, query: FairQuery) -> list[Record]:
        return await self._remote(lambda: self.remote.fair_read(key, query), self._empty)

    async def _empty(self) -> list:
        return []

    async def count(self, key: HistoryKey) -> int:
        return await self.remote.count(key)

    async def clear(self, key: HistoryKey) -> int:
        return await self.remote.clear(key)

    async def purge_expired(self, before: float) -> int:
        purged = await self.local.purge_expired(before)
        return purged + await self._remote(lambda: self.remote.purge_expired(before), self._zero)

    async def _zero(self) -> int:
        return 0

    async def append_many(self, key: HistoryKey, records: list[Record], *, max_per_user: int,
                          ttl: float) -> list[bool]:
        async with self._order:
            if self._spooled == 0 and time.monotonic() >= self._down_until:
                try:
                    return await self.remote.append_many(key, records, max_per_user=max_per_user, ttl=ttl)
                except StoreError as exc:
                    self._mark_down(exc)
            for record in records:
                await self._spool(key, record, max_per_user, ttl)
            return [True] * len(records)

    def iter_all(self, keep=None):  # type: ignore[no-untyped-def]
        return self.remote.iter_all(keep)

    async def all_bindings(self) -> list[tuple[str, str, str]]:
        return await self.remote.all_bindings()

    async def get_binding(self, source_id: str, bot_id: str) -> Optional[str]:
        return await self._remote(lambda: self.remote.get_binding(source_id, bot_id), self._none)

    async def set_binding(self, source_id: str, bot_id: str, namespace: Optional[str]) -> None:
        await self.remote.set_binding(source_id, bot_id, namespace)

    async def ping(self) -> None:
        await self.remote.ping()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        with contextlib.suppress(Exception):
            await self.remote.close()
        with contextlib.suppress(sqlite3.Error):
            self._probe.close()
        await self.local.close()

    # -- inbox: the remote one when it answers, the local file otherwise ---------------------------
    async def inbox_put(self, bot_id: str, message_id: str, payload: str, received: float) -> Optional[str]:
        return await self._remote(lambda: self.remote.inbox_put(bot_id, message_id, payload, received),
                                  lambda: self._local_write(self.local.inbox_put(bot_id, message_id, payload, received)))

    async def inbox_answer(self, bot_id: str, message_id: str, reply: str) -> None:
        if await self._local_holds("inbox"):
            await self._local_write(self.local.inbox_answer(bot_id, message_id, reply))
        await self._remote(lambda: self.remote.inbox_answer(bot_id, message_id, reply), self._none)

    async def inbox_complete(self, bot_id: str, message_id: str, reply: str, expires: float) -> None:
        """Locally first when the entry may be in the local inbox (as it was put during an outage);
        otherwise remotely, and locally only when the remote fails (the reply then waits here, for
        :meth:`reply_for`, until the remote is back and the flusher moves it)."""
        if await self._local_holds("inbox"):
            await self._local_write(self.local.inbox_complete(bot_id, message_id, reply, expires))
            await self._remote(lambda: self.remote.inbox_complete(bot_id, message_id, reply, expires), self._none)
            return
        if not await self._remote(lambda: self._complete_remote(bot_id, message_id, reply, expires), self._false):
            await self._local_write(self.local.inbox_complete(bot_id, message_id, reply, expires))

    async def _complete_remote(self, bot_id: str, message_id: str, reply: str, expires: float) -> bool:
        await self.remote.inbox_complete(bot_id, message_id, reply, expires)
        return True

    async def _false(self) -> bool:
        return False

    async def inbox_pending(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str, Optional[str]]]:
        local = await self.local.inbox_pending(bot_id)
        remote = await self._remote(lambda: self.remote.inbox_pending(bot_id), self._empty)
        seen = {(b, m) for b, m, _, _ in local}
        return local + [entry for entry in remote if (entry[0], entry[1]) not in seen]

    async def reply_for(self, bot_id: str, message_id: str) -> Optional[str]:
        found = await self._remote(lambda: self.remote.reply_for(bot_id, message_id), self._none)
        if found is not None or not await self._local_holds("replies"):
            return found
        return await self.local.reply_for(bot_id, message_id)

    async def inbox_depth(self) -> int:
        local = await self.local.inbox_depth()
        return local + await self._remote(self.remote.inbox_depth, self._zero)

    # -- leases ------------------------------------------------------------------------------------------
    async def acquire_lease(self, name: str, ttl: float) -> Optional[int]:
        return await self._remote(lambda: self.remote.acquire_lease(name, ttl),
                                  lambda: self._local_write(self.local.acquire_lease(name, ttl)))

    async def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        if await self._local_holds("leases") and await self._local_write(self.local.renew_lease(name, token, ttl)):
            return True
        return await self._remote(lambda: self.remote.renew_lease(name, token, ttl), self._true)

    async def _true(self) -> bool:
        return True  # the remote is down: nobody can take the lease there either

    async def release_lease(self, name: str, token: int) -> None:
        if await self._local_holds("leases"):
            await self._local_write(self.local.release_lease(name, token))
        await self._remote(lambda: self.remote.release_lease(name, token), self._none)

    # -- categories --------------------------------------------------------------------------------------
    async def custom_namespaces(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str]]:
        return await self._remote(lambda: self.remote.custom_namespaces(bot_id), self._empty)

    async def add_custom_namespace(self, bot_id: str, name: str, title: str) -> bool:
        return await self.remote.add_custom_namespace(bot_id, name, title)

    async def delete_custom_namespace(self, bot_id: str, name: str) -> bool:
        return await self.remote.delete_custom_namespace(bot_id, name)

    async def clear_namespace(self, namespace: str) -> int:
        return await self.remote.clear_namespace(namespace)


def _local_state(conn: sqlite3.Connection) -> dict[str, bool]:
    """What the local file holds that the hot path must consult (see :meth:`ResilientStore._local_holds`)."""
    now = time.time()

    def exists(sql: str, *args: Any) -> bool:
        return bool(conn.execute(f"SELECT EXISTS({sql})", args).fetchone()[0])

    return {"inbox": exists("SELECT 1 FROM inbox"),
            "replies": exists("SELECT 1 FROM replies WHERE expires>=?", now),
            "leases": exists("SELECT 1 FROM leases WHERE held=1 AND expires>?", now)}


def spool_summary(store: HistoryStore) -> dict[str, Any]:
    """For health checks: is the store degraded, and how many writes wait."""
    if isinstance(store, ResilientStore):
        return {"outage": store.outage, "spooled": store.spooled}
    return {"outage": False, "spooled": 0}


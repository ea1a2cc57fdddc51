"""The embedded default history store: one SQLite file in WAL mode.

SQLite calls block, so every call runs in a worker thread (``asyncio.to_thread``)
on one connection guarded by a lock. Reads use an index on
``(hkey, user_id, timestamp)`` and a per-history table of users by last
activity, so a fair read touches only the users and records it may return.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, TypeVar
from urllib.parse import unquote, urlparse

from ..fairness import UserHistory
from ..messages import Record
from .base import Categories, FairQuery, HistoryKey, HistoryStore, Inbox, KeyFilter, Leases, StoreError

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hkey TEXT NOT NULL,
    user_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    content TEXT NOT NULL,
    timestamp REAL NOT NULL,
    message_id TEXT NOT NULL,
    score REAL NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS records_message ON records(hkey, message_id);
CREATE INDEX IF NOT EXISTS records_user ON records(hkey, user_id, timestamp DESC, id DESC);
CREATE INDEX IF NOT EXISTS records_age ON records(timestamp);
CREATE TABLE IF NOT EXISTS users (
    hkey TEXT NOT NULL,
    user_id TEXT NOT NULL,
    last_active REAL NOT NULL,
    PRIMARY KEY (hkey, user_id)
);
CREATE INDEX IF NOT EXISTS users_recent ON users(hkey, last_active DESC, user_id);
CREATE TABLE IF NOT EXISTS inbox (
    bot_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    reply TEXT,
    received REAL NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (bot_id, message_id)
);
CREATE TABLE IF NOT EXISTS replies (
    bot_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    reply TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (bot_id, message_id)
);
CREATE INDEX IF NOT EXISTS replies_expiry ON replies(expires);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    token INTEGER NOT NULL,
    expires REAL NOT NULL,
    held INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS custom_namespaces (
    bot_id TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (bot_id, name)
);
CREATE TABLE IF NOT EXISTS bindings (
    source_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    PRIMARY KEY (source_id, bot_id)
);
"""


def path_from_url(url: str) -> Path:
    """``sqlite:///abs/path.db`` or ``sqlite:///./rel.db`` → a Path."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite":
        raise ValueError(f"store URL must start with sqlite://, got {url!r}")
    raw = unquote(parsed.netloc + parsed.path)
    if not raw or raw == "/":
        raise ValueError(f"store URL {url!r} names no file")
    return Path(raw)


class SQLiteStore(HistoryStore, Inbox, Leases, Categories):
    scheme = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                     timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> "SQLiteStore":
        return cls(path_from_url(url))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                try:
                    return fn(self._conn)
                except sqlite3.Error as exc:
                    raise StoreError(f"sqlite store {self.path}: {exc}") from exc

        return await asyncio.to_thread(call)

    async def append(self, key: HistoryKey, record: Record, *, max_per_user: int, ttl: float) -> bool:
        hkey = key.id

        def write(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO records(hkey,user_id,source_id,bot_id,content,timestamp,message_id,score)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (hkey, record.user_id, record.source_id, record.bot_id, record.content,
                     record.timestamp, record.message_id, record.score),
                )
                if cur.rowcount == 0:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute(
                    "INSERT INTO users(hkey,user_id,last_active) VALUES (?,?,?)"
                    " ON CONFLICT(hkey,user_id) DO UPDATE SET last_active=max(last_active, excluded.last_active)",
                    (hkey, record.user_id, record.timestamp),
                )
                conn.execute(
                    "DELETE FROM records WHERE id IN (SELECT id FROM records WHERE hkey=? AND user_id=?"
                    " ORDER BY timestamp DESC, id DESC LIMIT -1 OFFSET ?)",
                    (hkey, record.user_id, max_per_user),
                )
                conn.execute("COMMIT")
                return True
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(write)

    async def candidates(self, key: HistoryKey, query: FairQuery) -> list[UserHistory]:
        hkey = key.id
        limit = max(0, query.max_records)

        def read(conn: sqlite3.Connection) -> list[UserHistory]:
            users = conn.execute(
                "SELECT user_id, last_active FROM users WHERE hkey=? AND last_active>=?"
                " ORDER BY last_active DESC, user_id LIMIT ?",
                (hkey, query.since, limit),
            ).fetchall()
            out = []
            for user_id, last_active in users:
                rows = conn.execute(
                    "SELECT user_id,source_id,bot_id,content,timestamp,message_id,score FROM records"
                    " WHERE hkey=? AND user_id=? AND timestamp>=? ORDER BY timestamp DESC, id DESC LIMIT ?",
                    (hkey, user_id, query.since, limit),
                ).fetchall()
                if rows:
                    out.append(UserHistory(user_id, [_record(r) for r in rows], last_active))
            return out

        return await self._run(read)

    async def count(self, key: HistoryKey) -> int:
        return await self._run(
            lambda c: c.execute("SELECT count(*) FROM records WHERE hkey=?", (key.id,)).fetchone()[0]
        )

    async def clear(self, key: HistoryKey) -> int:
        def drop(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("DELETE FROM records WHERE hkey=?", (key.id,)).rowcount
            conn.execute("DELETE FROM users WHERE hkey=?", (key.id,))
            conn.execute("COMMIT")
            return n

        return await self._run(drop)

    async def purge_expired(self, before: float) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("DELETE FROM records WHERE timestamp<?", (before,)).rowcount
            conn.execute("DELETE FROM users WHERE last_active<?", (before,))
            conn.execute("DELETE FROM replies WHERE expires<?", (time.time(),))
            conn.execute("COMMIT")
            return n

        return await self._run(purge)

    async def get_binding(self, source_id: str, bot_id: str) -> Optional[str]:
        row = await self._run(
            lambda c: c.execute(
                "SELECT namespace FROM bindings WHERE source_id=? AND bot_id=?", (source_id, bot_id)
            ).fetchone()
        )
        return row[0] if row else None

    async def set_binding(self, source_id: str, bot_id: str, namespace: Optional[str]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if namespace is None:
                conn.execute("DELETE FROM bindings WHERE source_id=? AND bot_id=?", (source_id, bot_id))
            else:
                conn.execute(
                    "INSERT INTO bindings(source_id,bot_id,namespace) VALUES (?,?,?)"
                    " ON CONFLICT(source_id,bot_id) DO UPDATE SET namespace=excluded.namespace",
                    (source_id, bot_id, namespace),
                )

        await self._run(write)

    async def iter_all(self, keep: Optional[KeyFilter] = None  # type: ignore[override]
                       ) -> AsyncIterator[tuple[HistoryKey, list[Record]]]:
        keys = await self._run(lambda c: [r[0] for r in c.execute("SELECT DISTINCT hkey FROM records ORDER BY hkey")])
        for hkey in keys:
            if keep is not None and not keep(HistoryKey.from_id(hkey)):
                continue
            rows = await self._run(lambda c, h=hkey: c.execute(
                "SELECT user_id,source_id,bot_id,content,timestamp,message_id,score FROM records"
                " WHERE hkey=? ORDER BY timestamp, id", (h,)).fetchall())
            if rows:
                yield HistoryKey.from_id(hkey), [_record(r) for r in rows]

    async def all_bindings(self) -> list[tuple[str, str, str]]:
        return await self._run(lambda c: [tuple(r) for r in c.execute(
            "SELECT source_id, bot_id, namespace FROM bindings ORDER BY source_id, bot_id")])

    async def _rows_of_bot(self, select: str, order: str, bot_id: Optional[str]) -> list:
        """Rows of one bot (or of all bots when ``bot_id`` is None), as tuples."""
        where, args = (" WHERE bot_id=?", (bot_id,)) if bot_id is not None else ("", ())
        rows = await self._run(lambda c: c.execute(f"{select}{where} ORDER BY {order}", args).fetchall())
        return [tuple(r) for r in rows]

    # -- inbox -------------------------------------------------------------------
    async def inbox_put(self, bot_id: str, message_id: str, payload: str, received: float) -> Optional[str]:
        def put(conn: sqlite3.Connection) -> Optional[str]:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT reply FROM inbox WHERE bot_id=? AND message_id=?",
                               (bot_id, message_id)).fetchone()
            if row is None:
                conn.execute("INSERT INTO inbox(bot_id,message_id,payload,reply,received,seq)"
                             " VALUES (?,?,?,NULL,?,(SELECT coalesce(max(seq),0)+1 FROM inbox))",
                             (bot_id, message_id, payload, received))
            conn.execute("COMMIT")
            return row[0] if row else None

        return await self._run(put)

    async def inbox_answer(self, bot_id: str, message_id: str, reply: str) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE inbox SET reply=? WHERE bot_id=? AND message_id=? AND reply IS NULL",
            (reply, bot_id, message_id)))

    async def inbox_complete(self, bot_id: str, message_id: str, reply: str, expires: float) -> None:
        def done(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR IGNORE INTO replies(bot_id,message_id,reply,expires) VALUES (?,?,?,?)",
                         (bot_id, message_id, reply, expires))
            conn.execute("DELETE FROM inbox WHERE bot_id=? AND message_id=?", (bot_id, message_id))
            conn.execute("COMMIT")

        await self._run(done)

    async def inbox_pending(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str, Optional[str]]]:
        return await self._rows_of_bot("SELECT bot_id,message_id,payload,reply FROM inbox", "seq", bot_id)

    async def reply_for(self, bot_id: str, message_id: str) -> Optional[str]:
        row = await self._run(lambda c: c.execute(
            "SELECT reply FROM replies WHERE bot_id=? AND message_id=? AND expires>=?",
            (bot_id, message_id, time.time())).fetchone())
        return row[0] if row else None

    async def inbox_depth(self) -> int:
        return await self._run(lambda c: c.execute("SELECT count(*) FROM inbox").fetchone()[0])

    # -- leases ------------------------------------------------------------------
    async def acquire_lease(self, name: str, ttl: float) -> Optional[int]:
        def take(conn: sqlite3.Connection) -> Optional[int]:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT token, expires, held FROM leases WHERE name=?", (name,)).fetchone()
            if row is not None and row[2] and row[1] > now:
                conn.execute("ROLLBACK")
                return None
            token = (row[0] if row else 0) + 1
            conn.execute("INSERT INTO leases(name,token,expires,held) VALUES (?,?,?,1) ON CONFLICT(name)"
                         " DO UPDATE SET token=excluded.token, expires=excluded.expires, held=1",
                         (name, token, now + ttl))
            conn.execute("COMMIT")
            return token

        return await self._run(take)

    async def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        cur = await self._run(lambda c: c.execute(
            "UPDATE leases SET expires=? WHERE name=? AND token=? AND held=1 AND expires>?",
            (time.time() + ttl, name, token, time.time())))
        return cur.rowcount == 1

    async def release_lease(self, name: str, token: int) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE leases SET held=0 WHERE name=? AND token=?", (name, token)))

    # -- custom namespaces -----------------------------------------------------------
    async def custom_namespaces(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str]]:
        return await self._rows_of_bot("SELECT bot_id,name,title FROM custom_namespaces", "bot_id, name", bot_id)

    async def add_custom_namespace(self, bot_id: str, name: str, title: str) -> bool:
        cur = await self._run(lambda c: c.execute(
            "INSERT OR IGNORE INTO custom_namespaces(bot_id,name,title) VALUES (?,?,?)", (bot_id, name, title)))
        return cur.rowcount == 1

    async def delete_custom_namespace(self, bot_id: str, name: str) -> bool:
        cur = await self._run(lambda c: c.execute(
            "DELETE FROM custom_namespaces WHERE bot_id=? AND name=?", (bot_id, name)))
        return cur.rowcount == 1

    async def clear_namespace(self, namespace: str) -> int:
        def drop(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            keys = [r[0] for r in conn.execute("SELECT DISTINCT hkey FROM users").fetchall()
                    if HistoryKey.from_id(r[0]).namespace == namespace]
            n = 0
            for key in keys:
                n += conn.execute("DELETE FROM records WHERE hkey=?", (key,)).rowcount
                conn.execute("DELETE FROM users WHERE hkey=?", (key,))
            conn.execute("COMMIT")
            return n

        return await self._run(drop)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


def _record(row: Any) -> Record:
    user_id, source_id, bot_id, content, timestamp, message_id, score = row
    return Record(user_id=user_id, source_id=source_id, bot_id=bot_id, content=content,
                  timestamp=timestamp, message_id=message_id, score=score)

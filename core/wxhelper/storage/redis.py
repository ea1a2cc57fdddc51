"""The shared history store on Redis (standalone, Sentinel or Cluster), on ``redis.asyncio``.

Layout (``P`` is the key prefix, ``wx:`` by default; ``T`` is the hash tag of one
history, the SHA-1 of :attr:`HistoryKey.id`, so every key of a history is in one
Cluster slot and no user-controlled text ever reaches a key name)::

    P{T}:meta          hash   id (the HistoryKey id), seq (insertion counter)
    P{T}:users         zset   user_id -> last activity (the index a fair read starts from)
    P{T}:oldest        zset   user_id -> timestamp of that user's oldest stored record (for purging)
    P{T}:mids          zset   message_id -> timestamp (idempotent appends; count)
    P{T}:head          hash   user_id -> "<timestamp>|<newest record>" (a read's first records in one HMGET;
                              "<timestamp> |...": that user's only record)
    P{T}:u:<sha1(uid)> zset   that user's records, scored by timestamp (at most max_per_user)
    Phistories         zset   HistoryKey id -> first write (what purge and migrate walk)
    Pbindings          hash   JSON [source_id, bot_id] -> namespace

A write is one EVALSHA (append, idempotency check, trim, index update, expiry);
a fair read is one EVALSHA that computes the selection server-side (see
:mod:`wxhelper.storage.redis_lua`). Outside Cluster, a message's turn takes three
calls: begin (lease, final-reply check, inbox entry), its three fair reads, and
finish (fenced history writes, completion, release); see :mod:`wxhelper.storage.turns`. Every key of a history expires ``ttl``
after its last write, so abandoned histories vanish without a scan; records
older than the cycle are never read (``since``) and are deleted by
:meth:`RedisStore.purge_expired`, which walks the history registry, not the keyspace.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import Any, AsyncIterator, Awaitable, Optional, Sequence, TypeVar
from urllib.parse import parse_qs, unquote, urlencode, urlparse

from ..fairness import (ALGORITHMS, TIME_DECAY_SCALE, WEIGHTED_ALGORITHMS, UserHistory, apply_weights,
                        chronological, select)
from pydantic import TypeAdapter

from ..messages import Record
from . import redis_lua
from .redis_pack import use_hiredis_packing
from .base import Categories, FairQuery, HistoryKey, HistoryStore, Inbox, KeyFilter, Leases, StoreError
from .turns import HistoryWrite, TurnStart, begin_turn_stepwise, finish_turn_stepwise

T = TypeVar("T")

_timeout = getattr(asyncio, "timeout", None)
SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster")
LUA_ALGORITHMS = frozenset({"max_min", "seed", "weighted", "time_decay", "quality", "hybrid"})
DEFAULT_TIMEOUT = 2.0
DEFAULT_PREFIX = "wx:"


def history_tag(key: HistoryKey) -> str:
    """The Cluster hash tag of one history: hex SHA-1 of its unambiguous id."""
    return hashlib.sha1(key.id.encode("utf-8")).hexdigest()


def user_hash(user_id: str) -> str:
    """What a user id becomes inside a key name (Lua computes the same with ``redis.sha1hex``)."""
    return hashlib.sha1(user_id.encode("utf-8")).hexdigest()


def encode_member(record: Record) -> str:
    """The member of a record without its 16-digit sequence prefix (added by the append script)."""
    score = record.score if math.isfinite(record.score) else 0.0
    payload = json.dumps(
        {"user_id": record.user_id, "source_id": record.source_id, "bot_id": record.bot_id,
         "content": record.content, "timestamp": record.timestamp, "message_id": record.message_id,
         "score": record.score},
        ensure_ascii=False, separators=(",", ":"),
    )
    mid = record.message_id
    return f"{len(record.content)},{score!r},{len(mid.encode('utf-8'))}:{mid}{payload}"


_RECORDS = TypeAdapter(list[Record])


def payload_of(member: bytes) -> bytes:
    """The JSON payload of a stored member (past the sequence number and the header)."""
    b = member.index(b",", member.index(b",", 16) + 1)
    c = member.index(b":", b + 1)
    return member[c + 1 + int(member[b + 1:c]):]


DECODED_CACHE_SIZE = 8192
"""Decoded records kept per process, by their stored member (a few MB at most)."""

_decoded: dict[bytes, Record] = {}


def decode_members(members: list[bytes]) -> list[Record]:
    """Records from stored members; those not seen lately parsed and validated in one go (pydantic's JSON parser).

    A fair read returns mostly the records the previous reads of the same histories returned (a
    namespace's board changes by a record or two per message): in ``wxhelper bench serve`` 97 % of
    the ~50 records a message reads were decoded before, and validating them cost ~3.5 µs each.
    A member is immutable (its sequence number makes it unique in its history)
    and a :class:`Record` is frozen, so a record decoded once is the record those bytes always
    decode to: it is kept by its member, first in first out, at most ``DECODED_CACHE_SIZE``.
    """
    if not members:
        return []
    get = _decoded.get
    out: list[Any] = [get(m) for m in members]
    missing = [m for m, r in zip(members, out) if r is None]
    if missing:
        fresh = iter(_RECORDS.validate_json(b"[" + b",".join(payload_of(m) for m in missing) + b"]"))
        for i, record in enumerate(out):
            if record is None:
                out[i] = record = next(fresh)
                _decoded[members[i]] = record
        _evict(len(_decoded) - DECODED_CACHE_SIZE)
    return out


def _evict(excess: int) -> None:
    """Drop the ``excess`` oldest decoded records (tolerant of another thread evicting meanwhile)."""
    while excess > 0:
        try:
            del _decoded[next(iter(_decoded))]
        except (KeyError, StopIteration, RuntimeError):
            return
        excess -= 1


def decode_member(member: bytes) -> tuple[int, Record]:
    """(seq, record) of a stored member."""
    return int(member[:16], 16), Record.model_validate_json(payload_of(member))


def _hosts(netloc: str, default_port: int) -> tuple[list[tuple[str, int]], Optional[str], Optional[str]]:
    """``[user:pass@]h1:p1,h2:p2`` → ([(h1, p1), (h2, p2)], username, password)."""
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, pw = auth.partition(":")
        username, password = (unquote(user) or None), (unquote(pw) or None)
    hosts = []
    for part in netloc.split(","):
        if not part:
            continue
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
            port = int(port_text) if port_text else default_port
        hosts.append((host, port))
    if not hosts:
        raise ValueError(f"store URL names no host: {netloc!r}")
    return hosts, username, password


class RedisStore(HistoryStore, Inbox, Leases, Categories):
    """The history store on Redis. ``url`` is ``redis://``, ``rediss://``, ``redis+sentinel://`` or ``redis+cluster://``.

    URL query options: ``socket_timeout`` (seconds, every connect and call),
    ``prefix`` (key prefix, default ``wx:``).
    """

    scheme = "redis"

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in SCHEMES:
            raise ValueError(f"store URL must start with one of {', '.join(s + '://' for s in SCHEMES)}, got {url!r}")
        self.scheme = parsed.scheme
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.timeout = float(query.pop("socket_timeout", DEFAULT_TIMEOUT))
        self.prefix = query.pop("prefix", DEFAULT_PREFIX)
        self._url_display = f"{parsed.scheme}://{parsed.hostname or parsed.netloc.rsplit('@', 1)[-1]}"
        self.client = self._connect(parsed, query)
        self._append = self.client.register_script(redis_lua.APPEND)
        self._append_many = self.client.register_script(redis_lua.APPEND_MANY)
        self._read = self.client.register_script(redis_lua.READ)
        self._purge = self.client.register_script(redis_lua.PURGE)
        self._clear = self.client.register_script(redis_lua.CLEAR)
        self.registry = f"{self.prefix}histories"
        self.bindings = f"{self.prefix}bindings"
        self.custom = f"{self.prefix}custom_namespaces"
        inbox = f"{self.prefix}{{inbox}}:"
        self._inbox_keys = [inbox + "payload", inbox + "answered", inbox + "order", inbox + "seq"]
        self._reply_prefix = inbox + "reply:"
        self._inbox_put = self.client.register_script(redis_lua.INBOX_PUT)
        self._inbox_answer = self.client.register_script(redis_lua.INBOX_ANSWER)
        self._inbox_complete = self.client.register_script(redis_lua.INBOX_COMPLETE)
        self._inbox_pending = self.client.register_script(redis_lua.INBOX_PENDING)
        self._lease_acquire = self.client.register_script(redis_lua.LEASE_ACQUIRE)
        self._lease_renew = self.client.register_script(redis_lua.LEASE_RENEW)
        self._lease_release = self.client.register_script(redis_lua.LEASE_RELEASE)
        # One script per step of a message's turn (wxhelper.storage.turns); on Cluster the keys of one
        # step are in different slots, so there the steps are taken one operation at a time.
        self.fast_turns = self.scheme != "redis+cluster"
        self._read_many = self.client.register_script(redis_lua.READ_MANY)
        self._begin_turn = self.client.register_script(redis_lua.BEGIN_TURN)
        self._finish_turn = self.client.register_script(redis_lua.FINISH_TURN)

    @classmethod
    def from_url(cls, url: str) -> "RedisStore":
        return cls(url)

    def _connect(self, parsed: Any, query: dict[str, str]) -> Any:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        common: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 1),
            "health_check_interval": 30,
        }
        if parsed.scheme in ("redis", "rediss"):
            rest = urlencode(query)
            base = parsed._replace(query=rest).geturl()
            return use_hiredis_packing(Redis.from_url(base, **common))
        hosts, username, password = _hosts(parsed.netloc, 26379 if parsed.scheme == "redis+sentinel" else 6379)
        if query.get("ssl") in ("1", "true", "yes"):
            common["ssl"] = True
        if parsed.scheme == "redis+cluster":
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            common.pop("retry")
            return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], username=username,
                                password=password, **common)
        from redis.asyncio.sentinel import Sentinel

        parts = [p for p in parsed.path.split("/") if p]
        if not parts:
            raise ValueError("a redis+sentinel:// URL needs the master name: redis+sentinel://host:port/<master>/<db>")
        master, db = unquote(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": self.timeout,
                                                    "socket_connect_timeout": self.timeout,
                                                    "password": query.get("sentinel_password")},
                            **common)
        return use_hiredis_packing(sentinel.master_for(master, db=db, username=username, password=password))

    # -- plumbing ----------------------------------------------------------------------------
    async def _call(self, what: str, coro: Awaitable[T]) -> T:
        from redis.exceptions import RedisError

        try:
            if _timeout is not None:  # a deadline without a task per call (Python 3.11+)
                async with _timeout(self.timeout * 3 + 1):
                    return await coro
            return await asyncio.wait_for(coro, timeout=self.timeout * 3 + 1)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise StoreError(f"redis store {self._url_display}: {what}: {type(exc).__name__}: {exc}") from exc

    def _keys(self, key: HistoryKey) -> tuple[str, list[str]]:
        """(user key prefix, [meta, users, oldest, mids, head]) of one history."""
        base = f"{self.prefix}{{{history_tag(key)}}}:"
        return base + "u:", [base + "meta", base + "users", base + "oldest", base + "mids", base + "head"]

    # -- the interface ---------------------------------------------------------------------------
    async def append(self, key: HistoryKey, record: Record, *, max_per_user: int, ttl: float) -> bool:
        ukp, keys = self._keys(key)
        ttl_ms = max(1, int(math.ceil(ttl * 1000)))
        stored, unregistered = await self._call("append", self._append(
            keys=keys + [ukp + user_hash(record.user_id)],
            args=[record.user_id, repr(float(record.timestamp)), record.message_id, encode_member(record),
                  max(0, int(max_per_user)), ttl_ms, key.id],
        ))
        if unregistered:
            await self._register(key, keys[0], record.timestamp)
        return bool(stored)

    async def _register(self, key: HistoryKey, meta: str, first: float) -> None:
        """Enter a history in the registry purge and migrate walk, then mark it registered.

        Until the mark is set every append reports the history as unregistered, so a failure
        between the two (or before) is repaired by the next write, duplicates included.
        """
        await self._call("register", self.client.zadd(self.registry, {key.id: first}, nx=True))
        await self._call("register", self.client.hset(meta, "reg", 1))

    async def append_many(self, key: HistoryKey, records: list[Record], *, max_per_user: int, ttl: float,
                          batch: int = 500) -> list[bool]:
        """Append records in order, ``batch`` per script call (bulk loads, migration; works on Cluster too)."""
        ukp, keys = self._keys(key)
        ttl_ms = max(1, int(math.ceil(ttl * 1000)))
        out: list[bool] = []
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            args: list[Any] = [ukp, max(0, int(max_per_user)), ttl_ms, key.id]
            for record in chunk:
                args += [record.user_id, repr(float(record.timestamp)), record.message_id, encode_member(record)]
            *results, unregistered = await self._call("append", self._append_many(keys=keys, args=args))
            out.extend(bool(r) for r in results)
            if unregistered and chunk:
                await self._register(key, keys[0], min(r.timestamp for r in chunk))
        return out

    def _read_args(self, key: HistoryKey, query: FairQuery, algorithm: str) -> tuple[list[str], list[Any]]:
        ukp, keys = self._keys(key)
        args: list[Any] = [ukp, algorithm, int(query.max_records), int(query.max_chars),
                           repr(float(query.since)), repr(TIME_DECAY_SCALE)]
        if algorithm in WEIGHTED_ALGORITHMS:
            for user, weight in query.weights:
                args += [user, repr(float(weight))]
        return [keys[1], keys[4]], args

    async def fair_read(self, key: HistoryKey, query: FairQuery) -> list[Record]:
        if query.algorithm not in ALGORITHMS:
            select([], 1, 1, query.algorithm)  # raises ValueError naming the known ones
        if query.max_records <= 0 or query.max_chars <= 0:
            return []
        if query.algorithm not in LUA_ALGORITHMS:  # registered elsewhere: run it on the candidates
            return await super().fair_read(key, query)
        keys, args = self._read_args(key, query, query.algorithm)
        members = await self._call("fair read", self._read(keys=keys, args=args))
        return chronological(decode_members(members))

    def _can_read_many(self, reads: Sequence[tuple[HistoryKey, FairQuery]]) -> bool:
        """Whether these reads can be one script call (outside Cluster, algorithms the script knows)."""
        return self.fast_turns and all(q.algorithm in LUA_ALGORITHMS for _, q in reads)

    def _read_many_args(self, reads: Sequence[tuple[HistoryKey, FairQuery]]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of several fair reads in one script (an empty budget reads nothing)."""
        keys: list[str] = []
        args: list[Any] = [0]
        for key, query in reads:
            if query.max_records <= 0 or query.max_chars <= 0:
                continue
            read_keys, read_args = self._read_args(key, query, query.algorithm)
            keys += read_keys
            args += [len(read_args), *read_args]
            args[0] += 1
        return keys, args

    @staticmethod
    def _read_many_results(reads: Sequence[tuple[HistoryKey, FairQuery]], results: Sequence[Any]) -> list[list[Record]]:
        out: list[list[Record]] = []
        it = iter(results)
        for _key, query in reads:
            if query.max_records <= 0 or query.max_chars <= 0:
                out.append([])
            else:
                out.append(chronological(decode_members(next(it))))
        return out

    async def fair_read_many(self, reads: Sequence[tuple[HistoryKey, FairQuery]]) -> list[list[Record]]:
        """Several fair reads in one script call (one at a time on Cluster, or for other algorithms)."""
        if not self._can_read_many(reads):
            return list(await asyncio.gather(*(self.fair_read(k, q) for k, q in reads)))
        keys, args = self._read_many_args(reads)
        results = await self._call("fair read", self._read_many(keys=keys, args=args)) if args[0] else []
        return self._read_many_results(reads, results)

    async def candidates(self, key: HistoryKey, query: FairQuery) -> list[UserHistory]:
        if query.max_records <= 0:
            return []
        keys, args = self._read_args(key, query, "__candidates__")
        rows = await self._call("candidates", self._read(keys=keys, args=args))
        out = []
        for row in rows:
            user_id, last_active, *payloads = row
            out.append(UserHistory(user_id.decode("utf-8"), decode_members(payloads), float(last_active)))
        return apply_weights(out, query.weights, query.algorithm) if query.weights else out

    async def count(self, key: HistoryKey) -> int:
        _, keys = self._keys(key)
        return int(await self._call("count", self.client.zcard(keys[3])))

    async def clear(self, key: HistoryKey) -> int:
        ukp, keys = self._keys(key)
        n = await self._call("clear", self._clear(keys=keys, args=[ukp]))
        await self._call("clear", self.client.zrem(self.registry, key.id))
        return int(n)

    async def _history_ids(self) -> list[str]:
        ids: list[str] = []
        cursor = 0
        while True:
            cursor, chunk = await self._call("list histories", self.client.zscan(self.registry, cursor, count=1000))
            ids.extend(member.decode("utf-8") for member, _score in chunk)
            if not cursor:
                return sorted(set(ids))

    async def purge_expired(self, before: float) -> int:
        """Delete records older than ``before`` in every registered history (not a keyspace scan)."""
        ids = await self._history_ids()
        total = 0
        for start in range(0, len(ids), 64):
            batch = ids[start:start + 64]

            async def one(key_id: str) -> int:
                ukp, keys = self._keys(HistoryKey.from_id(key_id))
                n, gone = await self._call("purge", self._purge(keys=keys, args=[ukp, repr(float(before))]))
                if gone:
                    await self._call("purge", self.client.zrem(self.registry, key_id))
                return int(n)

            total += sum(await asyncio.gather(*(one(i) for i in batch)))
        return total

    async def iter_all(self, keep: Optional[KeyFilter] = None  # type: ignore[override]
                       ) -> AsyncIterator[tuple[HistoryKey, list[Record]]]:
        for key_id in await self._history_ids():
            key = HistoryKey.from_id(key_id)
            if keep is not None and not keep(key):
                continue
            ukp, keys = self._keys(key)
            users: set[bytes] = set()
            for zkey in (keys[1], keys[2]):
                users.update(await self._call("dump", self.client.zrange(zkey, 0, -1)))
            found: list[tuple[float, int, Record]] = []
            for user in sorted(users):
                members = await self._call("dump", self.client.zrange(
                    ukp + user_hash(user.decode("utf-8")), 0, -1, withscores=True))
                for member, score in members:
                    seq, record = decode_member(member)
                    found.append((score, seq, record))
            if found:
                found.sort(key=lambda item: (item[0], item[1]))
                yield key, [record for _, _, record in found]

    async def all_bindings(self) -> list[tuple[str, str, str]]:
        raw = await self._call("bindings", self.client.hgetall(self.bindings))
        out = []
        for field, namespace in raw.items():
            source_id, bot_id = json.loads(field)
            out.append((source_id, bot_id, namespace.decode("utf-8")))
        return sorted(out)

    @staticmethod
    def _binding_field(source_id: str, bot_id: str) -> str:
        return json.dumps([source_id, bot_id], ensure_ascii=False)

    async def get_binding(self, source_id: str, bot_id: str) -> Optional[str]:
        value = await self._call("get binding", self.client.hget(self.bindings, self._binding_field(source_id, bot_id)))
        return value.decode("utf-8") if value is not None else None

    async def set_binding(self, source_id: str, bot_id: str, namespace: Optional[str]) -> None:
        field = self._binding_field(source_id, bot_id)
        if namespace is None:
            await self._call("set binding", self.client.hdel(self.bindings, field))
        else:
            await self._call("set binding", self.client.hset(self.bindings, field, namespace))

    # -- the crash-safe inbox (keys {inbox}: payload, answered, order, seq, reply:<sha1>) ---------------
    @staticmethod
    def _inbox_field(bot_id: str, message_id: str) -> str:
        return json.dumps([bot_id, message_id], ensure_ascii=False)

    def _reply_key(self, field: str) -> str:
        return self._reply_prefix + hashlib.sha1(field.encode("utf-8")).hexdigest()

    async def inbox_put(self, bot_id: str, message_id: str, payload: str, received: float) -> Optional[str]:
        field = self._inbox_field(bot_id, message_id)
        result = await self._call("inbox", self._inbox_put(keys=self._inbox_keys, args=[field, payload]))
        return result[1].decode("utf-8") if len(result) > 1 else None

    async def inbox_answer(self, bot_id: str, message_id: str, reply: str) -> None:
        await self._call("inbox", self._inbox_answer(keys=self._inbox_keys[:2],
                                                     args=[self._inbox_field(bot_id, message_id), reply]))

    async def inbox_complete(self, bot_id: str, message_id: str, reply: str, expires: float) -> None:
        field = self._inbox_field(bot_id, message_id)
        await self._call("inbox", self._inbox_complete(
            keys=self._inbox_keys[:3] + [self._reply_key(field)], args=[field, reply, int(expires * 1000)]))

    async def inbox_pending(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str, Optional[str]]]:
        rows = await self._call("inbox", self._inbox_pending(keys=self._inbox_keys[:3]))
        out: list[tuple[str, str, str, Optional[str]]] = []
        for field, payload, reply in rows:
            b, m = json.loads(field)
            if bot_id is None or b == bot_id:
                out.append((b, m, payload.decode("utf-8"), reply.decode("utf-8") if reply else None))
        return out

    async def reply_for(self, bot_id: str, message_id: str) -> Optional[str]:
        value = await self._call("inbox", self.client.get(self._reply_key(self._inbox_field(bot_id, message_id))))
        return value.decode("utf-8") if value is not None else None

    async def inbox_depth(self) -> int:
        return int(await self._call("inbox", self.client.zcard(self._inbox_keys[2])))

    # -- a message's turn in one call per step (wxhelper.storage.turns) ---------------------------------
    async def begin_turn(self, lease: str, ttl: float, bot_id: str, message_id: str, payload: str,
                         received: float, binding_of: Optional[str] = None,
                         reads: Optional[Sequence[tuple[HistoryKey, FairQuery]]] = None) -> TurnStart:
        if not self.fast_turns:
            return await begin_turn_stepwise(self, lease, ttl, bot_id, message_id, payload, received)
        field = self._inbox_field(bot_id, message_id)
        binding_field = self._binding_field(binding_of, bot_id) if binding_of is not None else ""
        keys = [self._lease_key(lease), self._reply_key(field), *self._inbox_keys, self.bindings]
        args: list[Any] = [max(1, int(ttl * 1000)), field, payload, binding_field]
        wanted = 0
        if reads and self._can_read_many(reads):
            read_keys, read_args = self._read_many_args(reads)
            keys += read_keys
            args += read_args
            wanted = read_args[0]
        else:
            reads = None
            args.append(0)
        result = await self._call("begin", self._begin_turn(keys=keys, args=args))
        state = int(result[0])
        if state == 0:
            return TurnStart()
        if state == 1:
            return TurnStart(final=result[1].decode("utf-8"))
        earlier, binding = result[2], result[3]
        read = None
        if reads is not None and state == 2 and (result[4] is not None or not wanted):  # None: a read failed
            read = self._read_many_results(reads, result[4] or [])
        return TurnStart(token=int(result[1]), earlier=earlier.decode("utf-8") if earlier is not None else None,
                         binding=binding.decode("utf-8") if binding is not None else None,
                         binding_read=binding_of is not None, reads=read)

    async def finish_turn(self, lease: str, token: int, ttl: float, bot_id: str, message_id: str, reply: str,
                          expires: float, writes: Sequence[HistoryWrite], *, max_per_user: int,
                          history_ttl: float) -> bool:
        if not self.fast_turns:
            return await finish_turn_stepwise(self, lease, token, ttl, bot_id, message_id, reply, expires, writes,
                                              max_per_user=max_per_user, history_ttl=history_ttl)
        field = self._inbox_field(bot_id, message_id)
        keys = [self._lease_key(lease), *self._inbox_keys[:3], self._reply_key(field), self.registry]
        ttl_ms = max(1, int(math.ceil(history_ttl * 1000)))
        args: list[Any] = [field, reply, int(expires * 1000), int(token), len(writes)]
        for write in writes:
            ukp, history_keys = self._keys(write.key)
            keys += history_keys
            args += [ukp, max(0, int(max_per_user)), ttl_ms, write.key.id,
                     repr(float(min(r.timestamp for r in write.records))), len(write.records)]
            for record in write.records:
                args += [record.user_id, repr(float(record.timestamp)), record.message_id, encode_member(record)]
        result = await self._call("finish", self._finish_turn(keys=keys, args=args))
        return bool(int(result[0]))

    # -- leases (server time, so that every host agrees on expiry) ------------------------------------
    def _lease_key(self, name: str) -> str:
        return f"{self.prefix}lease:{hashlib.sha1(name.encode('utf-8')).hexdigest()}"

    async def acquire_lease(self, name: str, ttl: float) -> Optional[int]:
        token = await self._call("lease", self._lease_acquire(keys=[self._lease_key(name)],
                                                              args=[max(1, int(ttl * 1000))]))
        return int(token) if token else None

    async def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        return bool(await self._call("lease", self._lease_renew(keys=[self._lease_key(name)],
                                                                args=[int(token), max(1, int(ttl * 1000))])))

    async def release_lease(self, name: str, token: int) -> None:
        await self._call("lease", self._lease_release(keys=[self._lease_key(name)], args=[int(token)]))

    # -- custom namespaces ------------------------------------------------------------------------------
    async def custom_namespaces(self, bot_id: Optional[str] = None) -> list[tuple[str, str, str]]:
        raw = await self._call("categories", self.client.hgetall(self.custom))
        out = []
        for field, title in raw.items():
            b, name = json.loads(field)
            if bot_id is None or b == bot_id:
                out.append((b, name, title.decode("utf-8")))
        return sorted(out)

    async def add_custom_namespace(self, bot_id: str, name: str, title: str) -> bool:
        field = json.dumps([bot_id, name], ensure_ascii=False)
        return bool(await self._call("categories", self.client.hsetnx(self.custom, field, title)))

    async def delete_custom_namespace(self, bot_id: str, name: str) -> bool:
        field = json.dumps([bot_id, name], ensure_ascii=False)
        return bool(await self._call("categories", self.client.hdel(self.custom, field)))

    async def clear_namespace(self, namespace: str) -> int:
        """Drop every history of ``namespace`` (walks the history registry, not the keyspace)."""
        total = 0
        for key_id in await self._history_ids():
            key = HistoryKey.from_id(key_id)
            if key.namespace == namespace:
                total += await self.clear(key)
        return total

    async def ping(self) -> None:
        await self._call("ping", self.client.ping())

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a client whose server is gone must not raise
            pass

"""The storage contract, run against every backend: SQLite, a real Redis, a real 3-master Redis Cluster
and a Redis behind a real Sentinel.

The fair-read tests compare each backend with :func:`wxhelper.fairness.select` on
a reference model of the same data (insertion order breaks timestamp ties, as
both backends promise; the candidates are the ``max_records`` most recently active
users, as :meth:`HistoryStore.candidates` says), for every algorithm, on seeded random histories with
many ties in timestamps and activity.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import AsyncIterator

import pytest

from wxhelper.fairness import ALGORITHMS, UserHistory, apply_weights, by_recency, select
from wxhelper.messages import Record
from wxhelper.storage import FairQuery, HistoryKey, HistoryStore, StoreError, open_store

BACKENDS = ["sqlite", "redis", "redis_cluster", "redis_sentinel"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    else:
        base = request.getfixturevalue(f"{request.param}_url")
        url = f"{base}?prefix=t{uuid.uuid4().hex[:12]}:"
    s = open_store(url)
    try:
        yield s
    finally:
        await s.close()


def rec(user: str, mid: str, ts: float, content: str = "hello", source: str = "g", bot: str = "b",
        score: float = 0.0) -> Record:
    return Record(user_id=user, source_id=source, bot_id=bot, content=content, timestamp=ts, message_id=mid,
                  score=score)


NOW = time.time()
KEY = HistoryKey.shared("namespace", "board")


class Model:
    """What a backend must hold: insertion-ordered records, idempotent on message id, trimmed per user."""

    def __init__(self) -> None:
        self.records: list[tuple[int, Record]] = []
        self.seq = 0

    def append(self, record: Record, max_per_user: int) -> bool:
        if any(r.message_id == record.message_id for _, r in self.records):
            return False
        self.seq += 1
        self.records.append((self.seq, record))
        mine = sorted(((r.timestamp, s) for s, r in self.records if r.user_id == record.user_id), reverse=True)
        drop = {s for _, s in mine[max_per_user:]}
        self.records = [(s, r) for s, r in self.records if s not in drop]
        return True

    def candidates(self, since: float, max_records: int) -> list[UserHistory]:
        """The contract's candidates: the ``max_records`` most recently active users (ties: user id)."""
        return by_recency(self.histories(since))[:max_records]

    def histories(self, since: float) -> list[UserHistory]:
        per_user: dict[str, list[tuple[int, Record]]] = {}
        for s, r in self.records:
            per_user.setdefault(r.user_id, []).append((s, r))
        out = []
        for user, items in per_user.items():
            items.sort(key=lambda it: (it[1].timestamp, it[0]), reverse=True)
            last = items[0][1].timestamp
            kept = [r for _, r in items if r.timestamp >= since]
            if last >= since and kept:
                out.append(UserHistory(user, kept, last))
        return out


# -- basics ------------------------------------------------------------------------------------------
async def test_append_is_idempotent_and_counts(store: HistoryStore) -> None:
    assert await store.count(KEY) == 0
    assert await store.append(KEY, rec("u1", "m1", NOW), max_per_user=10, ttl=3600) is True
    assert await store.append(KEY, rec("u1", "m1", NOW, "changed"), max_per_user=10, ttl=3600) is False
    assert await store.append(KEY, rec("u2", "m1", NOW + 1), max_per_user=10, ttl=3600) is False
    assert await store.append(KEY, rec("u2", "m2", NOW + 1), max_per_user=10, ttl=3600) is True
    assert await store.count(KEY) == 2
    other = HistoryKey.chat("board", "g", "b")
    assert await store.append(other, rec("u1", "m1", NOW), max_per_user=10, ttl=3600) is True
    got = await store.fair_read(KEY, FairQuery(10, 1000))
    assert [(r.message_id, r.content) for r in got] == [("m1", "hello"), ("m2", "hello")]


async def test_trim_keeps_each_users_newest(store: HistoryStore) -> None:
    for i in range(6):
        await store.append(KEY, rec("loud", f"l{i}", NOW - 100 + i), max_per_user=3, ttl=3600)
    await store.append(KEY, rec("quiet", "q0", NOW - 500), max_per_user=3, ttl=3600)
    # an old record arriving late is trimmed at once (it is the oldest), and may be sent again
    assert await store.append(KEY, rec("loud", "late", NOW - 1000), max_per_user=3, ttl=3600) is True
    assert await store.count(KEY) == 4
    cands = {h.user_id: [r.message_id for r in h.records] for h in await store.candidates(KEY, FairQuery(10, 10**6))}
    assert cands == {"loud": ["l5", "l4", "l3"], "quiet": ["q0"]}
    assert await store.append(KEY, rec("loud", "late", NOW - 1000), max_per_user=3, ttl=3600) is True


async def test_since_filters_records_and_users(store: HistoryStore) -> None:
    await store.append(KEY, rec("old", "o1", NOW - 1000), max_per_user=10, ttl=3600)
    await store.append(KEY, rec("mixed", "x1", NOW - 900), max_per_user=10, ttl=3600)
    await store.append(KEY, rec("mixed", "x2", NOW - 10), max_per_user=10, ttl=3600)
    for algorithm in ALGORITHMS:
        got = await store.fair_read(KEY, FairQuery(10, 1000, NOW - 500, algorithm))
        assert [r.message_id for r in got] == ["x2"], algorithm
    assert await store.count(KEY) == 3


async def test_purge_and_clear(store: HistoryStore) -> None:
    other = HistoryKey.chat("board", "group:{1}", "bot")
    for i in range(5):
        await store.append(KEY, rec(f"u{i % 2}", f"k{i}", NOW - i * 100), max_per_user=10, ttl=3600)
        await store.append(other, rec("u", f"c{i}", NOW - i * 100), max_per_user=10, ttl=3600)
    assert await store.purge_expired(NOW - 250) == 4
    assert await store.count(KEY) == 3 and await store.count(other) == 3
    got = await store.fair_read(KEY, FairQuery(10, 1000))
    assert sorted(r.message_id for r in got) == ["k0", "k1", "k2"]
    assert await store.purge_expired(NOW + 1) == 6
    assert await store.count(KEY) == 0
    assert await store.fair_read(KEY, FairQuery(10, 1000)) == []
    # the history works again after being emptied
    assert await store.append(KEY, rec("u0", "k0", NOW), max_per_user=10, ttl=3600) is True
    await store.append(other, rec("u", "again", NOW), max_per_user=10, ttl=3600)
    assert await store.clear(KEY) == 1
    assert await store.count(KEY) == 0 and await store.count(other) == 1
    assert await store.fair_read(KEY, FairQuery(10, 1000)) == []
    assert await store.clear(KEY) == 0


async def test_bindings(store: HistoryStore) -> None:
    assert await store.get_binding("g1", "b") is None
    await store.set_binding("g1", "b", "旅游")
    await store.set_binding("g1", "b2", "other")
    assert await store.get_binding("g1", "b") == "旅游"
    await store.set_binding("g1", "b", "car")
    assert await store.get_binding("g1", "b") == "car"
    await store.set_binding("g1", "b", None)
    assert await store.get_binding("g1", "b") is None
    assert await store.get_binding("g1", "b2") == "other"
    await store.ping()


# -- fair reads equal the pure function ---------------------------------------------------------------
def _random_history(rng: random.Random) -> tuple[list[Record], int]:
    users = [f"u{i}" for i in range(rng.randint(1, 14))] + ["vip", "é{*}: 😀"]
    rng.shuffle(users)
    users = users[: rng.randint(1, len(users))]
    out = []
    grid = rng.choice([4, 40])
    for i in range(rng.randint(1, 70)):
        user = rng.choice(users) if rng.random() < 0.6 else users[0]
        ts = NOW - rng.randint(0, grid) * 1800.0 - rng.choice([0.0, 0.0, 0.25, 1e-3])
        content = rng.choice(["短", "hi", "a" * rng.randint(1, 90), "😀" * rng.randint(1, 9), "x y z" * rng.randint(1, 30)])
        out.append(rec(user, f"m{i}", ts, content, score=rng.choice([0.0, 0.0, 1.0, 3.0, 16.0, 2.5])))
    if rng.random() < 0.3:  # a duplicate delivery
        out.append(out[rng.randrange(len(out))])
    return out, rng.choice([2, 3, 5, 50])


async def test_fair_read_equals_select_for_every_algorithm(store: HistoryStore) -> None:
    rng = random.Random(20261121)
    for case in range(40):
        key = HistoryKey.chat("board", f"source {case}", "bot")
        records, max_per_user = _random_history(rng)
        model = Model()
        for r in records:
            expected = model.append(r, max_per_user)
            assert await store.append(key, r, max_per_user=max_per_user, ttl=86400) is expected
        assert await store.count(key) == len(model.records)
        weights = (("vip", 3.0), ("u1", 2.0), ("é{*}: 😀", 0.5))
        for _ in range(4):
            query_since = rng.choice([0.0, NOW - 20 * 1800.0, NOW - 5 * 1800.0])
            m, c = rng.choice([1, 2, 3, 5, 8, 20, 100]), rng.choice([1, 10, 60, 200, 1000, 10000])
            for algorithm in ALGORITHMS:
                query = FairQuery(m, c, query_since, algorithm, weights)
                histories = model.candidates(query_since, m)
                want = select(apply_weights(histories, weights, algorithm), m, c, algorithm)
                if algorithm != "seed":  # seed alone may differ on the full data when activity ties at the cut
                    assert want == select(apply_weights(model.histories(query_since), weights, algorithm), m, c,
                                          algorithm)
                got = await store.fair_read(key, query)
                assert [r.message_id for r in got] == [r.message_id for r in want], (case, algorithm, m, c)
                assert got == want
                assert sum(len(r.content) for r in got) <= c and len(got) <= m


async def test_candidates_are_bounded_and_newest_first(store: HistoryStore) -> None:
    for i in range(30):
        await store.append(KEY, rec(f"u{i % 6}", f"m{i}", NOW - i), max_per_user=50, ttl=3600)
    cands = await store.candidates(KEY, FairQuery(3, 1000))
    assert [h.user_id for h in cands] == ["u0", "u1", "u2"]
    for h in cands:
        assert len(h.records) == 3
        assert [r.timestamp for r in h.records] == sorted((r.timestamp for r in h.records), reverse=True)


# -- hostile ids -------------------------------------------------------------------------------------------
HOSTILE = [":", "{", "}", "*", "{}", "a:b", "a", "a ", " a", "😀", "{tag}*:x", "x" * 256, "y" * 255 + "😀",
           '["chat"', "\\", '"', "u:{1}"]


async def test_hostile_ids_never_collide(store: HistoryStore) -> None:
    keys = []
    for i, text in enumerate(HOSTILE):
        keys += [HistoryKey.shared("namespace", text), HistoryKey.chat(text, text, text),
                 HistoryKey.chat("ns", text, "")]
    keys += [HistoryKey.chat("a:b", "c", ""), HistoryKey.chat("a", "b:c", ""), HistoryKey.chat("a", "b", ":c")]
    assert len({k.id for k in keys}) == len(keys)
    for n, key in enumerate(keys):
        for u, user in enumerate(HOSTILE):
            assert await store.append(key, rec(user, f"{n}/{u}", NOW - u, f"{n}|{user}"), max_per_user=5, ttl=3600)
    for n, key in enumerate(keys):
        assert await store.count(key) == len(HOSTILE)
        got = await store.fair_read(key, FairQuery(100, 10**6))
        assert sorted(r.content for r in got) == sorted(f"{n}|{user}" for user in HOSTILE)
        assert {r.user_id for r in got} == set(HOSTILE)
        cands = await store.candidates(key, FairQuery(100, 10**6))
        assert all(len(h.records) == 1 and h.records[0].user_id == h.user_id for h in cands)
    await store.set_binding("{", "}", "a")
    await store.set_binding("{}", "", "b")
    await store.set_binding("", "{}", "c")
    assert [await store.get_binding(*p) for p in [("{", "}"), ("{}", ""), ("", "{}")]] == ["a", "b", "c"]
    assert await store.clear(keys[0]) == len(HOSTILE)
    assert await store.count(keys[1]) == len(HOSTILE)


# -- failures ------------------------------------------------------------------------------------------------
def _silent_server() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conns.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


async def test_unreachable_redis_raises_store_error_quickly() -> None:
    from servers import RedisServer, free_port

    server = RedisServer()
    url = f"{server.url}?socket_timeout=0.5"
    store = open_store(url)
    await store.append(KEY, rec("u", "m", NOW), max_per_user=5, ttl=60)
    server.stop()
    silent, silent_port = _silent_server()
    try:
        for bad in (store, open_store(f"redis://127.0.0.1:{free_port()}/0?socket_timeout=0.5"),
                    open_store(f"redis://127.0.0.1:{silent_port}/0?socket_timeout=0.5")):
            for call in (bad.ping(), bad.fair_read(KEY, FairQuery(10, 100)), bad.count(KEY),
                         bad.append(KEY, rec("u", "m2", NOW), max_per_user=5, ttl=60),
                         bad.get_binding("s", "b"), bad.purge_expired(NOW)):
                start = time.monotonic()
                with pytest.raises(StoreError):
                    await asyncio.wait_for(call, timeout=10)
                assert time.monotonic() - start < 3.0
            await bad.close()
    finally:
        silent.close()


# -- inbox, leases, custom namespaces (what the host needs besides histories) -------------------------------
async def test_inbox_lifecycle(store: HistoryStore) -> None:
    assert await store.inbox_depth() == 0
    assert await store.inbox_put("b", "m1", '{"n":1}', NOW) is None
    assert await store.inbox_put("b", "m1", '{"n":"again"}', NOW) is None  # pending, no reply yet
    assert await store.inbox_put("b2", "m1", '{"n":2}', NOW) is None  # another bot: another entry
    assert await store.inbox_put("b", "m:{2}", '{"n":3}', NOW) is None
    await store.inbox_answer("b", "m1", '"first"')
    await store.inbox_answer("b", "m1", '"second"')  # the first reply stays
    assert await store.inbox_put("b", "m1", '{"n":1}', NOW) == '"first"'
    assert await store.inbox_pending() == [("b", "m1", '{"n":1}', '"first"'), ("b2", "m1", '{"n":2}', None),
                                           ("b", "m:{2}", '{"n":3}', None)]
    assert [e[1] for e in await store.inbox_pending("b")] == ["m1", "m:{2}"]
    assert await store.inbox_depth() == 3
    await store.inbox_complete("b", "m1", '"final"', time.time() + 60)
    assert await store.reply_for("b", "m1") == '"final"'
    assert await store.reply_for("b2", "m1") is None
    await store.inbox_complete("b2", "m1", '"kept a minute"', time.time() + 60)
    assert [e[1] for e in await store.inbox_pending()] == ["m:{2}"]
    assert await store.inbox_depth() == 1
    await store.inbox_answer("b", "never-put", '"x"')
    assert await store.inbox_depth() == 1


async def test_leases_fence(store: HistoryStore) -> None:
    first = await store.acquire_lease("source:{g1}", 30)
    assert first is not None
    assert await store.acquire_lease("source:{g1}", 30) is None
    assert await store.acquire_lease("source:{g2}", 30) is not None
    assert await store.renew_lease("source:{g1}", first, 30) is True
    assert await store.renew_lease("source:{g1}", first + 1, 30) is False
    await store.release_lease("source:{g1}", first + 1)  # not the holder's token: nothing happens
    assert await store.acquire_lease("source:{g1}", 30) is None
    await store.release_lease("source:{g1}", first)
    second = await store.acquire_lease("source:{g1}", 0.2)
    assert second is not None and second > first
    await asyncio.sleep(0.35)
    third = await store.acquire_lease("source:{g1}", 30)  # the holder let it expire
    assert third is not None and third > second
    assert await store.renew_lease("source:{g1}", second, 30) is False


async def test_custom_namespaces_and_clear_namespace(store: HistoryStore) -> None:
    assert await store.add_custom_namespace("b", "二手房", "二手房") is True
    assert await store.add_custom_namespace("b", "二手房", "again") is False
    assert await store.add_custom_namespace("b2", "pets", "Pets") is True
    assert await store.custom_namespaces("b") == [("b", "二手房", "二手房")]
    assert await store.custom_namespaces() == [("b", "二手房", "二手房"), ("b2", "pets", "Pets")]
    assert await store.delete_custom_namespace("b", "二手房") is True
    assert await store.delete_custom_namespace("b", "二手房") is False
    mine = [HistoryKey.shared("namespace", "pets"), HistoryKey.chat("pets", "g1", "b"),
            HistoryKey.shared("friend_circle", "pets")]
    other = HistoryKey.shared("namespace", "pets2")
    for i, key in enumerate(mine + [other]):
        await store.append(key, rec("u", f"p{i}", NOW), max_per_user=5, ttl=3600)
        await store.append(key, rec("v", f"q{i}", NOW), max_per_user=5, ttl=3600)
    assert await store.clear_namespace("pets") == 6
    assert [await store.count(k) for k in mine] == [0, 0, 0]
    assert await store.count(other) == 2


async def test_registration_is_repaired_by_the_next_write(redis_url: str) -> None:
    """If registering a new history fails after its first record is stored, the next write (even a
    duplicate, as a replayed journal sends) registers it, so purge and migrate still find it."""
    store = open_store(f"{redis_url}?prefix=t{uuid.uuid4().hex[:12]}:")
    try:
        real = store._register  # type: ignore[attr-defined]

        async def failing(*args: object) -> None:
            raise StoreError("registry unreachable")

        store._register = failing  # type: ignore[attr-defined]
        with pytest.raises(StoreError):
            await store.append(KEY, rec("u", "m1", NOW), max_per_user=5, ttl=3600)
        store._register = real  # type: ignore[attr-defined]
        assert [k async for k, _ in store.iter_all()] == []
        assert await store.append(KEY, rec("u", "m1", NOW), max_per_user=5, ttl=3600) is False
        assert [k for k, _ in [item async for item in store.iter_all()]] == [KEY]
        assert await store.purge_expired(NOW + 1) == 1
    finally:
        await store.close()


async def test_a_kept_reply_expires(store: HistoryStore) -> None:
    """Replies are kept for re-deliveries until they expire, on every backend alike."""
    await store.inbox_put("b", "short", "{}", NOW)
    await store.inbox_complete("b", "short", '"bye"', time.time() + 0.3)
    assert await store.reply_for("b", "short") == '"bye"'
    await asyncio.sleep(0.6)
    assert await store.reply_for("b", "short") is None


@pytest.fixture(params=[*BACKENDS, "redis_resilient"])
async def turn_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    """Every backend, and Redis behind the outage wrapper the host puts around a remote store."""
    if request.param == "sqlite":
        s: HistoryStore = open_store(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    else:
        base = request.getfixturevalue(f"{request.param.replace('_resilient', '')}_url")
        s = open_store(f"{base}?prefix=t{uuid.uuid4().hex[:12]}:")
        if request.param.endswith("_resilient"):
            from wxhelper.storage.resilient import ResilientStore
            from wxhelper.storage.sqlite import SQLiteStore

            s = ResilientStore(s, SQLiteStore(tmp_path / "fallback.sqlite3"))
    try:
        yield s
    finally:
        await s.close()


async def test_turn_steps_keep_the_inbox_and_lease_guarantees(turn_store: HistoryStore) -> None:
    from wxhelper.storage.turns import HistoryWrite, begin_turn, fair_read_many, finish_turn

    store = turn_store
    lease, board, chat = "source:{g}", HistoryKey.shared("namespace", "板{*}"), HistoryKey.chat("n", "g", "b")
    first = await begin_turn(store, lease, 30, "b", "m1", '{"n":1}', NOW)
    assert first.token is not None and first.final is None and first.earlier is None
    assert (await begin_turn(store, lease, 30, "b", "m2", '{"n":2}', NOW)).busy  # one message of a source at a time
    assert await store.inbox_depth() == 1
    writes = [HistoryWrite(chat, [rec("u", "m1", NOW - 2), rec("b", "m1#reply", NOW - 1)]),
              HistoryWrite(board, [rec("u", "m1", NOW - 2)])]
    # a stale token (the lease was taken over): nothing is written but the reply on the entry
    assert await finish_turn(store, lease, first.token + 1, 30, "b", "m1", '"r1"', time.time() + 60, writes,
                             max_per_user=10, history_ttl=86400) is False
    assert await store.count(chat) == 0 and await store.count(board) == 0
    assert await store.inbox_pending() == [("b", "m1", '{"n":1}', '"r1"')]
    # a crashed run's reply comes back with the next turn's token
    await store.release_lease(lease, first.token)
    again = await begin_turn(store, lease, 30, "b", "m1", '{"n":1}', NOW)
    assert again.token is not None and again.token > first.token and again.earlier == '"r1"'
    assert await finish_turn(store, lease, again.token, 30, "b", "m1", '"r1"', time.time() + 60, writes,
                             max_per_user=10, history_ttl=86400) is True
    assert await store.inbox_depth() == 0 and await store.reply_for("b", "m1") == '"r1"'
    assert [r.message_id for r in await store.fair_read(chat, FairQuery(10, 1000))] == ["m1", "m1#reply"]
    # the lease was released; a completed message gets its reply and takes no lease
    done = await begin_turn(store, lease, 30, "b", "m1", '{"n":1}', NOW)
    assert done.final == '"r1"' and done.token is None
    await store.set_binding("g", "b", "板{*}")
    nxt = await begin_turn(store, lease, 30, "b", "m2", '{"n":2}', NOW, binding_of="g")
    assert nxt.token is not None and nxt.earlier is None
    assert nxt.binding == ("板{*}" if nxt.binding_read else None)  # read in the same call where the store can
    if getattr(getattr(store, "remote", store), "fast_turns", False):  # Redis outside Cluster, wrapped or not
        assert nxt.binding_read
    # writing the same records again (a replay) adds nothing
    assert await finish_turn(store, lease, nxt.token, 30, "b", "m2", '"r2"', time.time() + 60, writes,
                             max_per_user=10, history_ttl=86400) is True
    assert await store.count(chat) == 2 and await store.count(board) == 1
    # several fair reads at once are the single reads
    queries = [(chat, FairQuery(10, 1000)), (board, FairQuery(5, 100, algorithm="seed")),
               (HistoryKey.shared("friend_circle", "none"), FairQuery(10, 1000)), (board, FairQuery(0, 100))]
    assert await fair_read_many(store, queries) == [await store.fair_read(k, q) for k, q in queries]
    # the histories written in a turn are registered (purge and migrate walk them)
    assert sorted(k.id for k, _ in [item async for item in store.iter_all()]) == sorted([chat.id, board.id])


async def test_iter_all_reads_only_the_histories_kept(turn_store: HistoryStore) -> None:
    """An export of one source walks the keys and reads only its histories (and the shared ones)."""
    mine, theirs = HistoryKey.chat("car", "group:{1}", "bot"), HistoryKey.chat("car", "group:{2}", "bot")
    for i, key in enumerate([mine, theirs, KEY]):
        await turn_store.append(key, rec("u", f"m{i}", NOW + i, source="group:{1}" if key != theirs else "x"),
                                max_per_user=10, ttl=3600)
    asked: list[str] = []

    def keep(key: HistoryKey) -> bool:
        asked.append(key.id)
        return key.kind != "chat" or key.source_id == "group:{1}"

    got = {k.id: [r.message_id for r in records] async for k, records in turn_store.iter_all(keep)}
    assert got == {mine.id: ["m0"], KEY.id: ["m2"]}
    assert sorted(asked) == sorted([mine.id, theirs.id, KEY.id])  # asked once per history
    everything = {k.id async for k, _ in turn_store.iter_all()}
    assert everything == {mine.id, theirs.id, KEY.id}


def test_decoded_records_are_kept_by_member_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis store's decode cache: the same records as a fresh decode, in order, at most its size."""
    from wxhelper.storage import redis as redis_store

    monkeypatch.setattr(redis_store, "_decoded", {})
    monkeypatch.setattr(redis_store, "DECODED_CACHE_SIZE", 50)
    records = [rec(f"u{i % 7}", f"m{i}", NOW - i, "内容 é{*}" * (i % 4 + 1), score=i / 3) for i in range(80)]
    members = [f"{i + 1:016x}{redis_store.encode_member(r)}".encode() for i, r in enumerate(records)]
    fresh = redis_store._RECORDS.validate_json(b"[" + b",".join(map(redis_store.payload_of, members)) + b"]")
    assert fresh == records
    assert redis_store.decode_members(members[:30]) == records[:30]
    mixed = members[10:40][::-1] + members[:5]  # hits and misses interleaved, any order
    assert redis_store.decode_members(mixed) == records[10:40][::-1] + records[:5]
    assert redis_store.decode_members(members) == records
    assert len(redis_store._decoded) == 50  # the oldest went first
    assert set(redis_store._decoded) == set(members[30:])
    first = redis_store.decode_members(members[40:41])[0]
    assert first is redis_store.decode_members(members[40:41])[0]  # decoded once, then kept
    from pydantic import ValidationError

    with pytest.raises(ValidationError):  # frozen: a record shared between reads cannot be changed by one
        first.content = "changed"  # type: ignore[misc]


async def test_begin_turn_makes_the_fair_reads_under_the_lease(turn_store: HistoryStore) -> None:
    from wxhelper.storage.turns import HistoryWrite, begin_turn, fair_read_many, finish_turn

    store = turn_store
    fast = getattr(getattr(store, "remote", store), "fast_turns", False)  # Redis outside Cluster, wrapped or not
    lease, board, chat = "source:{g}", HistoryKey.shared("namespace", "板{*}"), HistoryKey.chat("n", "g", "b")
    for i in range(12):
        await store.append(board, rec(f"u{i % 4}", f"b{i}", NOW - 100 + i, "招聘" * (i + 1)), max_per_user=10, ttl=600)
    reads = [(chat, FairQuery(10, 1000)), (board, FairQuery(5, 40)), (board, FairQuery(0, 100)),
             (HistoryKey.shared("friend_circle", "none"), FairQuery(10, 1000, algorithm="seed"))]
    first = await begin_turn(store, lease, 30, "b", "m1", '{"n":1}', NOW, reads=reads)
    assert first.token is not None
    expected = await fair_read_many(store, reads)
    assert first.reads == (expected if fast else None)
    assert expected[1] and expected[2] == [] and expected[3] == []
    busy = await begin_turn(store, lease, 30, "b", "m2", '{"n":2}', NOW, reads=reads)
    assert busy.busy and busy.reads is None  # nothing is read before the lease is held
    # the previous turn's writes are what the next turn's reads see
    assert await finish_turn(store, lease, first.token, 30, "b", "m1", '"r1"', time.time() + 60,
                             [HistoryWrite(chat, [rec("u", "m1", NOW - 2), rec("b", "m1#reply", NOW - 1)])],
                             max_per_user=10, history_ttl=600) is True
    nxt = await begin_turn(store, lease, 30, "b", "m2", '{"n":2}', NOW, reads=reads)
    assert nxt.token is not None
    if fast:
        assert nxt.reads is not None and [r.message_id for r in nxt.reads[0]] == ["m1", "m1#reply"]
        assert nxt.reads == await fair_read_many(store, reads)
    else:
        assert nxt.reads is None
    # a message a crashed run answered needs no reads: its reply is replayed
    await store.inbox_answer("b", "m2", '"r2"')
    await store.release_lease(lease, nxt.token)
    replay = await begin_turn(store, lease, 30, "b", "m2", '{"n":2}', NOW, reads=reads)
    assert replay.earlier == '"r2"' and replay.reads is None


async def test_a_fair_read_that_fails_in_the_begin_step_leaves_the_turn_begun(redis_url: str) -> None:
    """The reads ride in the begin script after the lease and the inbox entry are written; a read that
    raises there (malformed data) must not fail the turn: it begins, and the caller reads alone (and
    gets the store's error from that read, as it would have without the ride)."""
    from wxhelper.storage.redis import RedisStore, history_tag
    from wxhelper.storage.turns import begin_turn, fair_read_many

    store = RedisStore(f"{redis_url}?prefix=t{uuid.uuid4().hex[:12]}:")
    try:
        board = HistoryKey.shared("namespace", "broken")
        await store.append(board, rec("u1", "b1", NOW - 5), max_per_user=10, ttl=600)
        base = f"{store.prefix}{{{history_tag(board)}}}:"
        await store.client.hset(base + "head", "u1", f"{NOW - 5!r}|not a stored member")  # no header to parse
        reads = [(board, FairQuery(10, 1000))]
        with pytest.raises(StoreError):
            await fair_read_many(store, reads)
        start = await begin_turn(store, "source:{broken}", 30, "b", "m1", '{"n":1}', NOW, reads=reads)
        assert start.token is not None and start.reads is None
        assert await store.inbox_pending() == [("b", "m1", '{"n":1}', None)]
        assert (await begin_turn(store, "source:{broken}", 30, "b", "m2", "{}", NOW)).busy  # the lease is held
    finally:
        await store.close()

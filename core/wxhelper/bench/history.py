"""``wxhelper bench history --store URL``: one fair read of our Redis store next to the seed design.

For each user count, records are loaded cumulatively (1e3, then up to 1e4, …)
into one shared history of our store and into one Redis list of the seed design
(``LPUSH`` of JSON; a read is ``LRANGE 0 -1``, JSON decoding, grouping by user
in Python and the seed's algorithm). At each size both are measured in the same
run against the same server:

* p50 / p99 wall time of one fair read (``max_records`` 100, the default
  character budget of a namespace history) and of one append;
* Redis server time per read and per append, from ``INFO commandstats``;
* bytes moved per read (the server's ``total_net_input_bytes`` +
  ``total_net_output_bytes``, corrected for the ``INFO`` calls themselves);
* round trips per read and per append (commands sent by the client);
* memory per stored record (``used_memory`` before and after loading).

Every key the benchmark writes carries the prefix ``wxbench:`` and is deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any, Optional

import click

from ..fairness import UserHistory, seed_fair
from ..messages import Record
from . import bench

PREFIX = "wxbench:"
_ALPHABET = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处府她" \
            "abcdefghijklmnopqrstuvwxyz 0123456789，。？！"


class SeedRecord:
    """What the seed design keeps per record (a light object: grouping 1e6 pydantic models would be unfair)."""

    __slots__ = ("user_id", "content", "timestamp", "message_id", "source_id", "bot_id")

    def __init__(self, d: dict) -> None:
        self.user_id = d["user_id"]
        self.content = d["content"]
        self.timestamp = d["timestamp"]
        self.message_id = d["message_id"]
        self.source_id = d["source_id"]
        self.bot_id = d["bot_id"]


def seed_read(raw: list[bytes], max_records: int, max_chars: int) -> list:
    """The seed design's read after ``LRANGE 0 -1``: decode, group by user, run the seed's algorithm."""
    per_user: dict[str, list] = {}
    for item in raw:
        r = SeedRecord(json.loads(item))
        per_user.setdefault(r.user_id, []).append(r)
    histories = []
    for user, items in per_user.items():
        items.sort(key=lambda r: r.timestamp, reverse=True)
        histories.append(UserHistory(user, items, items[0].timestamp))
    return seed_fair(histories, max_records, max_chars)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


class Counter:
    """Counts commands sent (round trips) by every redis.asyncio connection while active."""

    def __init__(self) -> None:
        self.sends = 0
        self._orig: Any = None

    def __enter__(self) -> "Counter":
        from redis.asyncio.connection import AbstractConnection

        self._orig = AbstractConnection.send_packed_command
        orig = self._orig
        counter = self

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.sends += 1
            return await orig(conn, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        from redis.asyncio.connection import AbstractConnection

        AbstractConnection.send_packed_command = self._orig  # type: ignore[method-assign]


async def _info(client: Any, section: str) -> dict[str, Any]:
    """INFO of every node (summed for a cluster)."""
    from redis.asyncio.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        per_node = await client.info(section, target_nodes=RedisCluster.PRIMARIES)
        merged: dict[str, Any] = {}
        for info in per_node.values():
            for k, v in info.items():
                if isinstance(v, dict):
                    slot = merged.setdefault(k, {})
                    for kk, vv in v.items():
                        if isinstance(vv, (int, float)):
                            slot[kk] = slot.get(kk, 0) + vv
                elif isinstance(v, (int, float)):
                    merged[k] = merged.get(k, 0) + v
        return merged
    return await client.info(section)


class ServerMeter:
    """Server-side time of named commands and network bytes over a block of operations."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.overhead = 0.0
        self.cpu_overhead = 0.0

    async def snapshot(self) -> tuple[dict, dict, dict]:
        return (await _info(self.client, "commandstats"), await _info(self.client, "stats"),
                await _info(self.client, "cpu"))

    async def calibrate(self) -> None:
        bytes_, cpu = [], []
        for _ in range(5):
            a = await self.snapshot()
            b = await self.snapshot()
            bytes_.append(self._bytes(a, b))
            cpu.append(self._cpu(a, b))
        self.overhead = min(bytes_)
        self.cpu_overhead = sorted(cpu)[len(cpu) // 2]

    @staticmethod
    def _cpu(a: tuple, b: tuple) -> float:
        return ((b[2]["used_cpu_user"] + b[2]["used_cpu_sys"]) - (a[2]["used_cpu_user"] + a[2]["used_cpu_sys"]))

    def cpu_us(self, a: tuple, b: tuple, ops: int) -> float:
        """Redis process CPU (user + sys) per operation, µs: unlike wall time, not inflated by a busy machine."""
        return max(0.0, self._cpu(a, b) - self.cpu_overhead) * 1e6 / ops

    @staticmethod
    def _bytes(a: tuple[dict, dict], b: tuple[dict, dict]) -> float:
        return float((b[1]["total_net_input_bytes"] - a[1]["total_net_input_bytes"])
                     + (b[1]["total_net_output_bytes"] - a[1]["total_net_output_bytes"]))

    def usec(self, a: tuple[dict, dict], b: tuple[dict, dict], *commands: str) -> float:
        total = 0.0
        for c in commands:
            total += b[0].get(f"cmdstat_{c}", {}).get("usec", 0) - a[0].get(f"cmdstat_{c}", {}).get("usec", 0)
        return total

    def moved(self, a: tuple[dict, dict], b: tuple[dict, dict]) -> float:
        return max(0.0, self._bytes(a, b) - self.overhead)


def _make_records(rng: random.Random, start: int, stop: int, users: list[str], t0: float, step: float) -> list[Record]:
    out = []
    for i in range(start, stop):
        n = rng.randint(10, 150)
        content = "".join(rng.choices(_ALPHABET, k=n))
        out.append(Record(user_id=rng.choice(users), source_id="bench-group", bot_id="bench-bot", content=content,
                          timestamp=t0 + i * step, message_id=f"m{i}", score=float(rng.randint(0, 5))))
    return out


async def _run(store_url: str, sizes: list[int], user_counts: list[int], reads: int, writes: int,
               seed_budget: float, max_records: int, max_chars: int, algorithm: str,
               echo: Any) -> list[dict[str, Any]]:
    from ..storage import FairQuery, HistoryKey, open_store
    from ..storage.redis import RedisStore

    sep = "&" if "?" in store_url else "?"
    if "socket_timeout=" not in store_url:  # the seed design's LRANGE of 1e6 records takes seconds
        store_url += f"{sep}socket_timeout=600"
        sep = "&"
    store = open_store(f"{store_url}{sep}prefix={PREFIX}")
    if not isinstance(store, RedisStore):
        raise click.ClickException("bench history needs a redis:// (or rediss://, redis+cluster://) store URL")
    client = store.client
    meter = ServerMeter(client)
    await meter.calibrate()
    rows: list[dict[str, Any]] = []
    rng = random.Random(1)
    largest = max(sizes)
    day = 86400.0
    try:
        for n_users in user_counts:
            users = [f"user{u:05d}" for u in range(n_users)]
            key = HistoryKey.shared("namespace", f"bench-{n_users}")
            seed_key = f"{PREFIX}seed:{{{n_users}}}"
            await store.clear(key)
            await client.delete(seed_key)
            now = time.time()
            t0 = now - 6 * day
            step = 5 * day / largest
            loaded = 0
            mem_ours = mem_seed = 0.0
            for size in sizes:
                # -- load (ours: the real write path, 500 records per script call; seed: pipelined LPUSH)
                records = _make_records(rng, loaded, size, users, t0, step)
                m0 = (await _info(client, "memory"))["used_memory"]
                started = time.perf_counter()
                for i in range(0, len(records), 20000):
                    await store.append_many(key, records[i:i + 20000], max_per_user=10**9, ttl=8 * day)
                load_ours = time.perf_counter() - started
                m1 = (await _info(client, "memory"))["used_memory"]
                started = time.perf_counter()
                for i in range(0, len(records), 10000):
                    pipe = client.pipeline(transaction=False)
                    for r in records[i:i + 10000]:
                        pipe.lpush(seed_key, json.dumps(
                            {"user_id": r.user_id, "content": r.content, "timestamp": r.timestamp,
                             "source_id": r.source_id, "bot_id": r.bot_id, "message_id": r.message_id},
                            ensure_ascii=False))
                    pipe.expire(seed_key, int(8 * day))
                    await pipe.execute()
                load_seed = time.perf_counter() - started
                m2 = (await _info(client, "memory"))["used_memory"]
                mem_ours += m1 - m0
                mem_seed += m2 - m1
                loaded = size
                since = time.time() - 7 * day
                query = FairQuery(max_records, max_chars, since, algorithm)

                # -- our fair read
                for _ in range(20):  # warm-up
                    await store.fair_read(key, query)
                times = []
                chosen = 0
                a = await meter.snapshot()
                cpu0 = time.thread_time()
                with Counter() as rt:
                    for _ in range(reads):
                        t = time.perf_counter()
                        got = await store.fair_read(key, query)
                        times.append(time.perf_counter() - t)
                        chosen = len(got)
                client_cpu = (time.thread_time() - cpu0) / reads
                b = await meter.snapshot()
                ours = {"p50_ms": _pct(times, 0.5) * 1e3, "p99_ms": _pct(times, 0.99) * 1e3,
                        "client_cpu_us": client_cpu * 1e6, "server_cpu_us": meter.cpu_us(a, b, reads),
                        "server_us": meter.usec(a, b, "evalsha", "eval") / reads,
                        "kb": meter.moved(a, b) / reads / 1024, "round_trips": rt.sends / reads,
                        "records": chosen}

                # -- the seed design's read: as many as fit in the time budget, at least one (and three
                #    when they fit)
                times = []
                a = await meter.snapshot()
                cpu0 = time.thread_time()
                with Counter() as rt:
                    budget_end = time.perf_counter() + seed_budget
                    while len(times) < reads and (not times or time.perf_counter() < budget_end
                                                  or (len(times) < 3 and times[0] * 3 < seed_budget)):
                        t = time.perf_counter()
                        raw = await client.lrange(seed_key, 0, -1)
                        picked = seed_read(raw, max_records, max_chars)
                        times.append(time.perf_counter() - t)
                        del raw
                client_cpu = time.thread_time() - cpu0
                b = await meter.snapshot()
                n_seed = len(times)
                seed = {"p50_ms": _pct(times, 0.5) * 1e3, "p99_ms": _pct(times, 0.99) * 1e3,
                        "client_cpu_us": client_cpu / n_seed * 1e6, "server_cpu_us": meter.cpu_us(a, b, n_seed),
                        "server_us": meter.usec(a, b, "lrange") / n_seed, "kb": meter.moved(a, b) / n_seed / 1024,
                        "round_trips": rt.sends / n_seed, "reads": n_seed, "records": len(picked)}

                # -- writes (ours: one EVALSHA; seed: LPUSH + EXPIRE in one pipeline)
                extra = [r.model_copy(update={"timestamp": time.time(), "message_id": f"w{size}-{r.message_id}"})
                         for r in _make_records(rng, loaded, loaded + writes, users, t0, step)]
                wt: list[float] = []
                a = await meter.snapshot()
                with Counter() as rt:
                    for r in extra:
                        t = time.perf_counter()
                        await store.append(key, r, max_per_user=10**9, ttl=8 * day)
                        wt.append(time.perf_counter() - t)
                b = await meter.snapshot()
                append = {"p50_ms": _pct(wt, 0.5) * 1e3, "p99_ms": _pct(wt, 0.99) * 1e3,
                          "server_cpu_us": meter.cpu_us(a, b, writes),
                          "server_us": meter.usec(a, b, "evalsha", "eval") / writes,
                          "round_trips": rt.sends / writes}
                st: list[float] = []
                for r in extra:
                    t = time.perf_counter()
                    pipe = client.pipeline(transaction=False)
                    pipe.lpush(seed_key, json.dumps({"user_id": r.user_id, "content": r.content,
                                                     "timestamp": r.timestamp, "source_id": r.source_id,
                                                     "bot_id": r.bot_id, "message_id": r.message_id},
                                                    ensure_ascii=False))
                    pipe.expire(seed_key, int(8 * day))
                    await pipe.execute()
                    st.append(time.perf_counter() - t)
                row = {"users": n_users, "stored": size, "ours": ours, "seed": seed, "append": append,
                       "seed_append_p50_ms": _pct(st, 0.5) * 1e3,
                       "speedup": seed["p50_ms"] / ours["p50_ms"] if ours["p50_ms"] else float("nan"),
                       "load_s": {"ours": load_ours, "seed": load_seed},
                       "bytes_per_record": {"ours": mem_ours / size, "seed": mem_seed / size}}
                rows.append(row)
                echo(row)
            await store.clear(key)
            await client.delete(seed_key)
    finally:
        await store.close()
    return rows


def _line(r: dict[str, Any]) -> str:
    o, s, a = r["ours"], r["seed"], r["append"]
    return (f"| {r['users']:>6} | {r['stored']:>9,} | {o['p50_ms']:6.3f} | {o['p99_ms']:6.3f} | {o['server_us']:5.0f} "
            f"| {o['server_cpu_us']:5.0f} | {o['client_cpu_us']:5.0f} | {o['kb']:5.1f} | {o['round_trips']:3.1f} "
            f"| {s['p50_ms']:9.1f} | {s['p99_ms']:9.1f} | {s['server_us']:8.0f} | {s['client_cpu_us']:9.0f} "
            f"| {s['kb']:9.1f} | {s['round_trips']:3.1f} | {s['reads']:3d} | {r['speedup']:7.0f}x "
            f"| {a['p50_ms']:5.3f} | {a['p99_ms']:6.3f} | {a['server_us']:4.0f} | {a['round_trips']:3.1f} "
            f"| {r['seed_append_p50_ms']:5.3f} | {r['bytes_per_record']['ours']:5.0f} | {r['bytes_per_record']['seed']:5.0f} |")


HEADER = ("| users | stored | read p50 ms | read p99 ms | srv µs/read | srv CPU µs/read | client CPU µs/read "
          "| KB/read | RT/read | seed p50 ms | seed p99 ms | seed srv µs | seed client CPU µs | seed KB/read "
          "| seed RT | seed reads | seed/ours p50 | append p50 ms | append p99 ms | append srv µs | append RT "
          "| seed append p50 ms | B/record | seed B/record |")
SEPARATOR = "|" + "|".join("---:" for _ in range(HEADER.count("|") - 1)) + "|"


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, evaluated on the rows at the largest and smallest size of each user count."""
    out = []
    for users in sorted({r["users"] for r in rows}):
        mine = sorted((r for r in rows if r["users"] == users), key=lambda r: r["stored"])
        big, small = mine[-1], mine[0]
        o = big["ours"]
        checks = [
            (f"p50 {o['p50_ms']:.3f} ms <= 1.5", o["p50_ms"] <= 1.5),
            (f"p99 {o['p99_ms']:.3f} ms <= 3", o["p99_ms"] <= 3.0),
            (f"p50 at {big['stored']:,} / p50 at {small['stored']:,} = {o['p50_ms'] / small['ours']['p50_ms']:.2f} <= 1.5",
             o["p50_ms"] <= 1.5 * small["ours"]["p50_ms"]),
            (f"seed/ours {big['speedup']:.0f}x >= 1000x", big["speedup"] >= 1000),
            (f"server {o['server_us']:.0f} µs <= 1000", o["server_us"] <= 1000),
            (f"moved {o['kb']:.1f} KB <= 50", o["kb"] <= 50),
            (f"append p50 {big['append']['p50_ms']:.3f} ms <= 0.5", big["append"]["p50_ms"] <= 0.5),
            (f"round trips {o['round_trips']:.0f}/read {big['append']['round_trips']:.0f}/write == 1",
             o["round_trips"] == 1 and big["append"]["round_trips"] == 1),
        ]
        for text, ok in checks:
            out.append(f"{'ok  ' if ok else 'MISS'} {users:>6} users, {big['stored']:,} stored: {text}")
    return out


@bench.command("history")
@click.option("--store", "store_url", required=True, help="A redis://, rediss:// or redis+cluster:// URL.")
@click.option("--sizes", default="1e3,1e4,1e5,1e6", show_default=True, help="Stored records, loaded cumulatively.")
@click.option("--users", "user_counts", default="10,1000,10000", show_default=True)
@click.option("--reads", default=300, show_default=True, help="Timed reads of our store per cell.")
@click.option("--writes", default=200, show_default=True, help="Timed appends per cell.")
@click.option("--seed-budget", default=10.0, show_default=True,
              help="Seconds of seed-design reads per cell (at least one read).")
@click.option("--max-records", default=100, show_default=True)
@click.option("--max-chars", type=int, default=None, help="Default: the namespace history's budget from Settings.")
@click.option("--algorithm", default="max_min", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def history_bench(store_url: str, sizes: str, user_counts: str, reads: int, writes: int, seed_budget: float,
                  max_records: int, max_chars: Optional[int], algorithm: str, as_json: bool) -> None:
    """Fair-read and append cost of our Redis store next to the seed design, at growing sizes."""
    if max_chars is None:
        from ..settings import Settings

        max_chars = Settings().history_budget("namespace")[1]
    size_list = sorted({int(float(s)) for s in sizes.split(",") if s.strip()})
    user_list = [int(float(u)) for u in user_counts.split(",") if u.strip()]
    if not as_json:
        click.echo(f"max_records={max_records} max_chars={max_chars} algorithm={algorithm} reads={reads} "
                   f"writes={writes}")
        click.echo(HEADER)
        click.echo(SEPARATOR)
    rows = asyncio.run(_run(store_url, size_list, user_list, reads, writes, seed_budget, max_records, max_chars,
                            algorithm, (lambda r: None) if as_json else (lambda r: click.echo(_line(r)))))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo("")
    for line in check_targets(rows):
        click.echo(line)

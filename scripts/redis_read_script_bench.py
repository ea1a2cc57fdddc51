"""The fair read's script alone, old against new, on one Redis (issue 6, session 6).

Loads the history data of a ``wxhelper bench serve`` run (an RDB kept at its end, or any Redis with
histories in the store's layout), then calls the session-5 read script (kept in
``tests/data/redis_read_session5.lua``) and the current one alternately on the same data, the order
swapped every call, and reports the medians of the server's own time per call (``SLOWLOG``: the
command's execution in µs, wall time, no network), of the server's CPU time per call (``INFO cpu``
over batches of 50 calls of one script, the batches alternating) and of the round trip. Every pair
of answers must be equal.

    python scripts/redis_read_script_bench.py --port 6379 --calls 1500 [--mark-heads]

``--mark-heads`` first marks the heads of users with one record as the current append script writes
them (data from before session 6 has no marks; the session-5 script reads past them).

Shapes: ``board`` (a namespace history: 100 records, 10 000 chars), ``chat`` (a chat history: 40,
10 000) and ``message`` (the three reads of one message: its chat, its board, the friend circle).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
from pathlib import Path

import redis

from wxhelper.storage import redis_lua

OLD = (Path(__file__).resolve().parents[1] / "tests" / "data" / "redis_read_session5.lua").read_text()
SCALE = repr(86400.0)


def histories(r: redis.Redis, prefix: str) -> dict[str, list[str]]:
    """History tags by kind ('namespace', 'chat', ...), from each meta hash's id."""
    import json

    out: dict[str, list[str]] = {}
    for key in r.scan_iter(match=f"{prefix}{{*}}:meta", count=1000):
        hid = r.hget(key, "id")
        if hid is None:
            continue
        kind = json.loads(hid)[0]
        out.setdefault(kind, []).append(key.decode()[: -len("meta")])
    for v in out.values():
        v.sort()
    return out


def mark_heads(r: redis.Redis, prefix: str) -> int:
    """Mark the heads of one-record users (``<ts> |<member>``), as the append script now writes them."""
    marked = 0
    for head in r.scan_iter(match=f"{prefix}{{*}}:head", count=1000):
        base = head.decode()[: -len("head")]
        for field, value in r.hgetall(head).items():
            ts, rest = value.split(b"|", 1)
            if not ts.endswith(b" ") and r.zcard(base + "u:" + hashlib.sha1(field).hexdigest()) == 1:
                r.hset(head, field, ts + b" |" + rest)
                marked += 1
    return marked


def cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def read_call(base: str, m: int, c: int, since: float, algo: str) -> tuple[list[str], list]:
    return [base + "users", base + "head"], [base + "u:", algo, m, c, repr(since), SCALE]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--prefix", default="wx:")
    ap.add_argument("--calls", type=int, default=1500)
    ap.add_argument("--shapes", default="board,chat,message")
    ap.add_argument("--algorithm", default="max_min")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--mark-heads", action="store_true")
    a = ap.parse_args()
    r = redis.Redis(port=a.port)
    if a.mark_heads:
        print("marked", mark_heads(r, a.prefix), "heads")
    old, new = r.register_script(OLD), r.register_script(redis_lua.READ)
    hs = histories(r, a.prefix)
    boards = [b for b in hs.get("namespace", []) if r.zcard(b + "users") > 0]
    chats = hs.get("chat", [])
    since = time.time() - 7 * 86400.0
    rng = random.Random(a.seed)
    r.config_set("slowlog-max-len", 100000)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"boards {len(boards)} (users {[r.zcard(b + 'users') for b in boards]}), chats {len(chats)}, "
          f"load {' '.join(load)}")
    for shape in a.shapes.split(","):
        calls = []
        for _ in range(a.calls):
            if shape == "board":
                calls.append([read_call(rng.choice(boards), 100, 10000, since, a.algorithm)])
            elif shape == "chat":
                calls.append([read_call(rng.choice(chats), 40, 10000, since, a.algorithm)])
            else:
                board = rng.choice(boards)
                calls.append([read_call(rng.choice(chats), 40, 10000, since, a.algorithm),
                              read_call(board, 100, 10000, since, a.algorithm),
                              read_call(board.replace(board[-42:], "{" + "0" * 40 + "}:"), 100, 10000, since,
                                        a.algorithm)])
        for s in (old, new):  # load both, warm
            for keys, args in calls[0]:
                s(keys=keys, args=args)
        server = {old.sha: [], new.sha: []}
        trip = {old.sha: [], new.sha: []}
        r.config_set("slowlog-log-slower-than", 0)
        r.slowlog_reset()
        for i, reads in enumerate(calls):
            pair = (old, new) if i % 2 == 0 else (new, old)
            answers = []
            for s in pair:
                t0 = time.perf_counter()
                answers.append([s(keys=keys, args=args) for keys, args in reads])
                trip[s.sha].append((time.perf_counter() - t0) * 1e6)
            assert answers[0] == answers[1], (shape, reads)
            if i % 200 == 199 or i == len(calls) - 1:
                r.config_set("slowlog-log-slower-than", -1)
                per: dict[str, list[int]] = {old.sha: [], new.sha: []}
                for entry in r.slowlog_get(-1)[::-1]:
                    cmd = entry["command"].split()
                    if cmd and cmd[0] == b"EVALSHA":
                        per[cmd[1].decode()].append(entry["duration"])
                for sha, ds in per.items():  # sum the reads of one message
                    n = len(reads)
                    server[sha] += [sum(ds[k:k + n]) for k in range(0, len(ds) - n + 1, n)]
                r.slowlog_reset()
                r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-log-slower-than", 10000)
        cpus: dict[str, list[float]] = {old.sha: [], new.sha: []}
        for b, start in enumerate(range(0, len(calls), 50)):
            for s in ((old, new) if b % 2 == 0 else (new, old)):
                c0 = cpu(r)
                for reads in calls[start:start + 50]:
                    for keys, args in reads:
                        s(keys=keys, args=args)
                cpus[s.sha].append((cpu(r) - c0) * 1e6 / len(calls[start:start + 50]))
        co, cn = statistics.median(cpus[old.sha]), statistics.median(cpus[new.sha])
        so, sn = statistics.median(server[old.sha]), statistics.median(server[new.sha])
        to, tn = statistics.median(trip[old.sha]), statistics.median(trip[new.sha])
        print(f"{shape:8s} calls {len(calls)} ({len(server[old.sha])}/{len(server[new.sha])} timed): "
              f"server µs median old {so:.0f} new {sn:.0f} ({(sn - so) / so * 100:+.0f} %); "
              f"server CPU µs old {co:.0f} new {cn:.0f} ({(cn - co) / co * 100:+.0f} %); "
              f"round trip µs old {to:.0f} new {tn:.0f}")
    print(f"load after {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()

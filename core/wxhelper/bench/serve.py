"""``wxhelper bench serve``: the HTTP service's throughput and the host's own overhead, 1 and 2 workers.

Starts, all on loopback and stopped at the end: a ``redis-server`` on a free port (the history
store every worker shares), the stand-in LLM in a process of its own (:mod:`wxhelper.bench.stand_in`,
one asyncio loop; ``--stand-in fakellm``: the tests' :class:`wxhelper.fake_llm.FakeLLM`, as before
session 6), and ``wxhelper serve --workers N``. This process drives it over HTTP (a lean keep-alive HTTP/1.1 client,
a fixed number of requests in flight) with a fixed count of messages across many sources (groups
and private chats) and the four namespaces, after a warm-up that is not counted.

Reported per worker count: messages/s; the host's overhead per message, ``timings.total -
timings.llm`` from each :class:`~wxhelper.messages.Reply` (routing, history reads, retrieval,
rendering, writes), p50 and p99; the LLM's time apart (the stand-in's round trip, p50); and the
client-side latency with the LLM time taken out (adds HTTP, JSON and queueing in the server).
When the Redis store is not importable (or ``--store sqlite``) it runs over SQLite with 1 worker
only and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import click
import orjson

from . import bench

NAMESPACE_TEXTS = {
    "car_client": ["想卖一辆2019年的卡罗拉，6万公里，电话13812345678", "二手车过户要带什么材料？",
                   "收一台准新车，预算十万，联系13912345678", "事故车怎么验车？"],
    "qzzp": ["试用期最长多久？", "招聘前端工程师，月薪2万，电话13712345678", "社保断缴有什么影响？",
             "求职：会计，三年经验，13612345678"],
    "lvyou": ["去日本旅游要签证吗", "五一去云南自驾，有同行的吗？电话13512345678", "三亚住哪里方便？",
              "出境游要带什么证件"],
    "聊天": ["你好，在吗", "今天天气怎么样", "这个助手怎么用？", "推荐一本书吧"],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise click.ClickException(f"the server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"{url} did not answer within {timeout:.0f}s")


def _stop(proc: Optional[subprocess.Popen]) -> None:
    if proc is None or proc.poll() is not None:
        return
    if proc.stdin is not None:  # the stand-in LLM stops when its stdin closes
        proc.stdin.close()
    else:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Redis:
    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise click.ClickException("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise click.ClickException("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


FAKE_LLM_SCRIPT = """
import sys, time
from wxhelper.fake_llm import FakeLLM
fake = FakeLLM(reply=lambda body: "好的，收到。这是替身模型的回答。").start()
print(fake.base_url, flush=True)
sys.stdin.read()
fake.stop()
"""


def _messages(count: int, sources: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    names = list(NAMESPACE_TEXTS)
    out = []
    for i in range(count):
        s = rng.randrange(sources)
        ns = names[i % len(names)]
        group = f"bench-group-{s}" if s % 3 else None  # two thirds groups, one third private chats
        user = f"bench-user-{rng.randrange(sources * 4)}" if group else f"bench-user-{s}"
        out.append({"user_id": user, "group_id": group, "namespace": ns,
                    "content": rng.choice(NAMESPACE_TEXTS[ns]) + f" #{i}"})
    return out


class _Conn:
    """A lean HTTP/1.1 keep-alive client for the driver: it must cost the shared CPU less than the server does."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _drive(port: int, token: str, messages: list[dict[str, Any]], concurrency: int) -> tuple[float, list[dict]]:
    results: list[dict] = []
    bodies = iter([json.dumps(m, ensure_ascii=False).encode("utf-8") for m in messages])

    async def worker() -> None:
        conn = _Conn(port, token)
        try:
            for body in bodies:
                t0 = time.perf_counter()
                status, data = await conn.post(body)
                elapsed = (time.perf_counter() - t0) * 1000.0
                if status != 200:
                    raise click.ClickException(f"POST /v1/messages answered {status}: {data[:300]!r}")
                results.append({"client_ms": elapsed, **orjson.loads(data)["timings"]})  # orjson: the driver's CPU is shared
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, results


_CALIBRATION_DATA = [((i * 7919) % 1000003) / 3.0 for i in range(20000)]


def calibration_ms(rounds: int = 5) -> float:
    """Milliseconds one core takes for a fixed piece of Python work (sorting, JSON, arithmetic), the
    least of ``rounds``: how fast this machine is right now.

    On a shared machine the same code took 15-25 % more CPU a message twenty minutes later
    (docs/performance.md, session 7); a run's figures read against its calibration tell the
    machine's speed from the code's. Lower is faster.
    """
    data = _CALIBRATION_DATA
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        sorted(data)
        json.loads(json.dumps(data[:5000]))
        sum(x * x for x in data)
        best = min(best, time.perf_counter() - started)
    return round(best * 1000.0, 2)


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds user + system), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return procs


def _tree_cpu(pid: int, procs: Optional[dict[int, tuple[int, float]]] = None) -> float:
    """CPU seconds (user + system) of a process and its children (the uvicorn workers)."""
    procs = _proc_table() if procs is None else procs
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in procs:
            total += procs[current][1]
        todo.extend(child for child, (parent, _) in procs.items() if parent == current)
    return total


def _children_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each child of ``pid`` (each uvicorn worker, with its own children)."""
    procs = _proc_table()
    return {child: _tree_cpu(child, procs) for child, (parent, _) in procs.items() if parent == pid}


def _per_worker(before: dict[int, float], after: dict[int, float], messages: int) -> list[float]:
    """CPU ms a measured message of each worker that worked (busiest first): how evenly the workers shared the load."""
    spent = [(after[p] - before.get(p, 0.0)) * 1000.0 / max(1, messages) for p in after]
    return sorted((round(ms, 2) for ms in spent if ms >= 0.05), reverse=True)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


@bench.command("serve")
@click.option("--messages", "count", default=3000, show_default=True, help="Messages measured per run.")
@click.option("--warmup", default=300, show_default=True, help="Messages sent first and not measured.")
@click.option("--sources", default=300, show_default=True, help="Distinct sources (groups and private chats).")
@click.option("--concurrency", default=32, show_default=True, help="Requests in flight.")
@click.option("--quiet", default=300, show_default=True,
              help="Messages sent afterwards one at a time: the host's overhead without queueing.")
@click.option("--workers", "worker_counts", default="1,2", show_default=True, help="Worker counts to run.")
@click.option("--store", type=click.Choice(["redis", "sqlite"]), default="redis", show_default=True)
@click.option("--stand-in", "stand_in", type=click.Choice(["lean", "fakellm"]), default="lean", show_default=True,
              help="The stand-in LLM: lean (wxhelper.bench.stand_in, one asyncio loop) or fakellm (the tests' FakeLLM, "
                   "as in the figures before session 6).")
@click.option("--shared-socket", is_flag=True,
              help="Serve with `wxhelper serve --shared-socket` (the workers accept from one socket, as before session 7).")
@click.option("--json", "as_json", is_flag=True)
def serve_bench(count: int, warmup: int, sources: int, concurrency: int, quiet: int, worker_counts: str, store: str,
                stand_in: str, shared_socket: bool, as_json: bool) -> None:
    """Throughput and host overhead of `wxhelper serve` (Redis, stand-in LLM, loopback) for 1 and 2 workers."""
    counts = [int(w) for w in worker_counts.split(",") if w.strip()]
    note = ""
    if store == "redis":
        try:
            from ..storage.redis import RedisStore  # noqa: F401
        except ImportError as exc:
            store, note = "sqlite", f"the Redis store is not importable ({exc}): SQLite, 1 worker"
    if store == "sqlite":
        counts = [1]
    workdir = Path(tempfile.mkdtemp(prefix="wxhelper-bench-serve-"))
    redis: Optional[_Redis] = None
    fake: Optional[subprocess.Popen] = None
    rows = []
    try:
        if store == "redis":
            redis = _Redis(workdir)
        stand_in_cmd = ([sys.executable, "-m", "wxhelper.bench.stand_in", "--api-key", "test-key"] if stand_in == "lean"
                        else [sys.executable, "-c", FAKE_LLM_SCRIPT])
        fake = subprocess.Popen(stand_in_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert fake.stdout is not None
        llm_url = fake.stdout.readline().strip()
        token = "bench-token"
        env = {**os.environ, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": llm_url,
               "WXHELPER_API_TOKEN": token, "WXHELPER_DATA_DIR": str(workdir / "data"),
               "WXHELPER_LOG_LEVEL": "WARNING"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if redis is not None:
            env["WXHELPER_STORE"] = redis.url
        else:
            env["WXHELPER_STORE"] = f"sqlite:///{workdir / 'history.sqlite3'}"
        for workers in counts:
            if redis is not None:
                redis.flush()
            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "wxhelper", "serve", "--port", str(port),
                                       "--workers", str(workers), *(["--shared-socket"] if shared_socket else [])],
                                      env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(workdir / f"serve-{workers}.log", "w"))
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_http(base + "/readyz", 900, server)  # the first run indexes the corpora
                msgs = _messages(warmup + count + quiet, sources, seed=workers)
                calibration = [calibration_ms()]
                asyncio.run(_drive(port, token, msgs[:warmup], concurrency))
                others = {"llm": fake.pid, **({"redis": redis.proc.pid} if redis is not None else {})}
                cpu0 = {"server": _tree_cpu(server.pid), "driver": time.process_time(),
                        **{name: _tree_cpu(pid) for name, pid in others.items()}}
                workers0 = _children_cpu(server.pid)
                seconds, results = asyncio.run(_drive(port, token, msgs[warmup:warmup + count], concurrency))
                cpu1 = {"server": _tree_cpu(server.pid), "driver": time.process_time(),
                        **{name: _tree_cpu(pid) for name, pid in others.items()}}
                per_worker = _per_worker(workers0, _children_cpu(server.pid), len(results)) if workers > 1 else []
                cpu = {name: round((cpu1[name] - cpu0[name]) * 1000.0 / max(1, len(results)), 2) for name in cpu0}
                _, unloaded = asyncio.run(_drive(port, token, msgs[warmup + count:], 1)) if quiet else (0, [])
                calibration.append(calibration_ms())
            finally:
                _stop(server)
            overhead = [r["total"] - r.get("llm", 0.0) for r in results]
            llm = [r.get("llm", 0.0) for r in results]
            client_ex_llm = [r["client_ms"] - r.get("llm", 0.0) for r in results]
            idle = [r["total"] - r.get("llm", 0.0) for r in unloaded]
            rows.append({
                "cpu_ms_per_msg": cpu,
                "worker_cpu_ms_per_msg": per_worker,
                "calibration_ms": calibration,
                "unloaded_overhead_p50_ms": round(_pct(idle, 0.5), 2) if idle else None,
                "unloaded_overhead_p99_ms": round(_pct(idle, 0.99), 2) if idle else None,
                "workers": workers, "store": store, "messages": len(results), "concurrency": concurrency,
                "msg_per_s": round(len(results) / seconds, 1),
                "overhead_p50_ms": round(_pct(overhead, 0.5), 2), "overhead_p99_ms": round(_pct(overhead, 0.99), 2),
                "llm_p50_ms": round(_pct(llm, 0.5), 2), "llm_p99_ms": round(_pct(llm, 0.99), 2),
                "client_ex_llm_p50_ms": round(_pct(client_ex_llm, 0.5), 2),
                "client_ex_llm_p99_ms": round(_pct(client_ex_llm, 0.99), 2),
                "stage_p50_ms": {stage: round(statistics.median([r.get(stage, 0.0) for r in results]), 2)
                                 for stage in ("history", "retrieval", "assembly")},
            })
    finally:
        _stop(fake)
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    if as_json:
        click.echo(json.dumps({"note": note, "stand_in": stand_in, "shared_socket": shared_socket, "rows": rows,
                               "loadavg": load}, ensure_ascii=False, indent=2))
        return
    if note:
        click.echo(f"note: {note}")
    from ..settings import Settings

    click.echo(f"embedding: {Settings().embedding} (WXHELPER_EMBEDDING); stand-in LLM ({stand_in}) on loopback; "
               f"{sources} sources, 4 namespaces")
    click.echo(f"machine: {os.cpu_count()} CPUs, load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
               "(1 / 5 / 15 min; anything above what this benchmark runs is other work on the machine)")
    click.echo("| workers | store | messages (in flight) | msg/s | CPU ms/msg: server / LLM / redis / driver "
               "| host overhead p50 / p99 ms "
               "| unloaded overhead p50 / p99 ms | LLM p50 / p99 ms | client − LLM p50 / p99 ms "
               "| history / retrieval / assembly p50 ms | each worker's CPU ms/msg | calibration ms before / after |")
    click.echo("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        s, c = r["stage_p50_ms"], r["cpu_ms_per_msg"]
        click.echo(f"| {r['workers']} | {r['store']} | {r['messages']} ({r['concurrency']}) | {r['msg_per_s']} "
                   f"| {c['server']} / {c['llm']} / {c.get('redis', '-')} / {c['driver']} "
                   f"| {r['overhead_p50_ms']} / {r['overhead_p99_ms']} "
                   f"| {r['unloaded_overhead_p50_ms']} / {r['unloaded_overhead_p99_ms']} "
                   f"| {r['llm_p50_ms']} / {r['llm_p99_ms']} "
                   f"| {r['client_ex_llm_p50_ms']} / {r['client_ex_llm_p99_ms']} "
                   f"| {s['history']} / {s['retrieval']} / {s['assembly']} "
                   f"| {' / '.join(map(str, r['worker_cpu_ms_per_msg'])) or '-'} "
                   f"| {' / '.join(map(str, r['calibration_ms']))} |")

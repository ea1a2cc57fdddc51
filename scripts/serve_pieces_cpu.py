"""CPU of three pieces on a message's path in the HTTP worker, as measured for docs/performance.md (session 6).

    python scripts/serve_pieces_cpu.py llm     # LLM.complete against FakeLLM in a thread: the calling thread's CPU a call
    python scripts/serve_pieces_cpu.py pack    # a 66-argument Redis script call: redis-py's packer vs hiredis's, alternating
    python scripts/serve_pieces_cpu.py events  # a console event's three sections (120 records): per_user as first written vs now

To compare two versions of the ``llm`` figure, run it alternately with ``PYTHONPATH=<other checkout>/core``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time


def llm(calls: int = 3000) -> None:
    from wxhelper.fake_llm import FakeLLM
    from wxhelper.llm import LLM
    from wxhelper.settings import Settings

    prompt = [{"role": "system", "content": "你是助手。" * 200}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"第{i}条消息，内容是一些中文文字。" * 3} for i in range(39)]

    async def main() -> float:
        with FakeLLM(reply="好的，收到。这是替身模型的回答。") as fake:
            client = LLM(Settings(openai_api_key=fake.api_key, openai_base_url=fake.base_url))
            for _ in range(200):
                await client.complete(prompt)
            started = time.thread_time()
            for _ in range(calls):
                await client.complete(prompt)
            cpu = (time.thread_time() - started) / calls * 1000
            await client.close()
            return cpu

    try:
        import uvloop
        cpu = uvloop.run(main())
    except ImportError:
        cpu = asyncio.run(main())
    print(f"LLM.complete: {cpu:.3f} ms of the calling thread's CPU a call ({calls} calls)")


def pack(rounds: int = 8, calls: int = 1500) -> None:
    from redis.asyncio import Redis
    from redis.asyncio.connection import Connection
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from wxhelper.storage.redis_pack import hiredis_packing_class, use_hiredis_packing

    args = ["x" * 100] * 30 + [str(i) for i in range(30)] + [3.5, 12]
    plain, fast = Connection(), hiredis_packing_class(Connection)()
    for name, conn in (("redis-py", plain), ("hiredis", fast)):
        started = time.thread_time()
        for _ in range(5000):
            conn.pack_command("EVALSHA", "a" * 40, 1, "key", *args)
        print(f"pack_command, {name}: {(time.thread_time() - started) / 5000 * 1e6:.1f} µs")
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    time.sleep(0.3)

    async def main() -> None:
        common = dict(socket_timeout=2.0, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 1),
                      health_check_interval=30)
        scripts = {"redis-py": Redis.from_url(f"redis://127.0.0.1:{port}/0", **common).register_script("return 1"),
                   "hiredis": use_hiredis_packing(Redis.from_url(f"redis://127.0.0.1:{port}/0", **common))
                   .register_script("return 1")}
        for script in scripts.values():
            for _ in range(300):
                await script(keys=["k"], args=args)
        cpu: dict[str, list[float]] = {name: [] for name in scripts}
        for r in range(rounds):
            for name in (("redis-py", "hiredis") if r % 2 else ("hiredis", "redis-py")):
                started = time.thread_time()
                for _ in range(calls):
                    await scripts[name](keys=["k"], args=args)
                cpu[name].append((time.thread_time() - started) / calls * 1e6)
        for name, values in cpu.items():
            print(f"a script call with {len(args) + 4} arguments, {name}: median {statistics.median(values):.0f} µs "
                  f"of client CPU ({', '.join(f'{v:.0f}' for v in values)})")

    try:
        asyncio.run(main())
    finally:
        proc.terminate()


def events(rounds: int = 5, calls: int = 5000) -> None:
    import random

    from wxhelper.events import _section
    from wxhelper.messages import Record

    def first_version(records: list) -> tuple:
        users: dict = {}
        for record in records:
            entry = users.setdefault(record.user_id, {"user_id": record.user_id, "records": 0, "chars": 0})
            entry["records"] += 1
            entry["chars"] += len(record.content)
        rows = sorted(users.values(), key=lambda u: (-u["chars"], -u["records"], u["user_id"]))
        return sum(len(r.content) for r in records), rows

    rng = random.Random(1)
    records = [Record(user_id=f"u{rng.randrange(30)}", source_id="g", bot_id="b", content="内" * rng.randrange(1, 80),
                      timestamp=1.0 + i, message_id=f"m{i}") for i in range(120)]
    assert first_version(records) == _section(records)
    for _ in range(rounds):
        line = []
        for name, fn in (("first version", first_version), ("now", _section)):
            started = time.thread_time()
            for _ in range(calls):
                fn(records)
            line.append(f"{name} {(time.thread_time() - started) / calls * 1e6:.1f} µs")
        print(", ".join(line))


if __name__ == "__main__":
    {"llm": llm, "pack": pack, "events": events}[sys.argv[1] if len(sys.argv) > 1 else "llm"]()

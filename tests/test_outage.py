"""Redis stopped and restarted during a stream of messages: the bot keeps answering, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from servers import RedisServer

from wxhelper import InboundMessage
from wxhelper.storage import FairQuery, HistoryKey
from wxhelper.testing import host_for

ALL = FairQuery(max_records=10_000, max_chars=10**9)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    return RedisServer("--appendonly", "yes", "--appendfsync", "always", port=port, workdir=workdir)


async def test_redis_outage_spools_writes_and_flushes_them_in_order(data_dir, tmp_path):
    redis_dir = tmp_path / "redis"
    server = start_redis(redis_dir)
    port = server.port
    messages = [InboundMessage(user_id=f"u{i % 6}", group_id=f"g{i % 2}", message_id=f"m{i:02d}",
                               content=f"帖子{i} 电话1381234{i:04d}") for i in range(30)]
    replies = []
    try:
        async with host_for(data_dir, [], store=f"redis://127.0.0.1:{port}/0?socket_timeout=0.5") as host:
            for i, msg in enumerate(messages):
                if i == 10:
                    server.stop()
                if i == 20:
                    server = start_redis(redis_dir, port)
                    await asyncio.sleep(1.5)  # let the store notice it is back
                started = time.monotonic()
                replies.append(await host.handle(msg))
                assert time.monotonic() - started < 5, "an outage must not stall a message"
            during = replies[10:20]
            assert all("store" in r.degraded for r in during)
            assert all(r.text for r in during)
            assert "store" not in replies[5].degraded
            for _ in range(100):
                if host.store.spooled == 0 and not host.store_outage:
                    break
                await asyncio.sleep(0.1)
            assert host.store.spooled == 0
            # every message: exactly one chat record, one reply record, one board record — in Redis
            chat = Counter()
            for source in ("g0", "g1"):
                records = await host.store.fair_read(host.history_key("chat", "聊天", source, ""), ALL)
                chat.update(r.message_id for r in records)
            board = await host.store.fair_read(HistoryKey.shared("namespace", "聊天"), ALL)
            for msg in messages:
                assert chat[msg.message_id] == 1 and chat[msg.message_id + "#reply"] == 1, msg.message_id
            assert sorted(r.message_id for r in board) == [m.message_id for m in messages]
            # a message re-delivered after the outage gets the reply it got during it
            again = await host.handle(messages[15])
            assert again.text == replies[15].text
            assert await host.store.inbox_depth() == 0
    finally:
        server.stop()


async def test_the_local_file_is_read_only_when_it_holds_something(tmp_path, redis_url):
    """In normal operation no reply is copied to the local file; a reply another process gave there
    during an outage is still found (SQLite's data_version tells), and moved to Redis once it is back."""
    from wxhelper.storage import open_store
    from wxhelper.storage.resilient import PROBE_INTERVAL, ResilientStore
    from wxhelper.storage.sqlite import SQLiteStore

    prefix = f"{redis_url}?prefix=wx-local-{tmp_path.name}:"
    a = ResilientStore(open_store(prefix), SQLiteStore(tmp_path / "fallback.sqlite3"))
    b = ResilientStore(open_store(prefix), SQLiteStore(tmp_path / "fallback.sqlite3"))
    try:
        assert await a.inbox_put("bot", "m1", "{}", time.time()) is None
        await a.inbox_answer("bot", "m1", "reply one")
        await a.inbox_complete("bot", "m1", "reply one", time.time() + 60)
        assert await a.reply_for("bot", "m1") == "reply one"
        assert await a.local.reply_for("bot", "m1") is None, "a reply Redis holds is not copied to the file"
        # b answered m2 while Redis was down for it: the reply is only in the shared file
        await b.local.inbox_complete("bot", "m2", "reply two", time.time() + 60)
        assert await a.remote.reply_for("bot", "m2") is None
        await asyncio.sleep(PROBE_INTERVAL)  # another process's write to the file is seen within this
        assert await a.reply_for("bot", "m2") == "reply two"
        await b._move_replies()
        assert await a.remote.reply_for("bot", "m2") == "reply two"
        assert await a.local.reply_for("bot", "m2") is None
        assert await a.reply_for("bot", "m2") == "reply two"
    finally:
        await a.close()
        await b.close()

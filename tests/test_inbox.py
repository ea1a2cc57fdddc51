"""The crash-safe inbox: nothing lost, nothing answered or recorded twice."""

from __future__ import annotations

import random
import signal

import pytest
import time
from collections import Counter

from reliability_helpers import read_log, start_worker, wait_ready, worker_env, write_messages

from wxhelper import InboundMessage
from wxhelper.storage import FairQuery, HistoryKey
from wxhelper.testing import host_for

ALL = FairQuery(max_records=10_000, max_chars=10**9)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request) -> str | None:
    """None: the SQLite default in the data dir; else a fresh key prefix on the session's real Redis."""
    if request.param == "sqlite":
        return None
    import uuid

    return f"{request.getfixturevalue('redis_url')}?prefix=t{uuid.uuid4().hex[:8]}:"


async def chat_message_ids(host, namespace: str, sources: list[str]) -> Counter:
    counts: Counter = Counter()
    for source in sources:
        records = await host.store.fair_read(host.history_key("chat", namespace, source, ""), ALL)
        counts.update(r.message_id for r in records)
    return counts


async def test_a_redelivered_message_gets_the_same_reply_and_no_second_record(data_dir, fake_llm):
    import uuid

    fake_llm_reply = fake_llm  # replies are random, so a second LLM call would be visible
    fake_llm_reply.reply = lambda body: f"reply-{uuid.uuid4().hex}"
    async with host_for(data_dir, [], llm=fake_llm) as host:
        msg = InboundMessage(user_id="u", group_id="g", content="卖车 13812345678", message_id="m-1")
        first = await host.handle(msg)
        second = await host.handle(msg)
        streamed = [item async for item in host.stream(msg)]
        board = await host.history("聊天")
        chat = await chat_message_ids(host, "聊天", ["g"])
    assert second.text == first.text and streamed[-1].text == first.text and streamed[0] == first.text
    assert len(fake_llm.chat_requests()) == 1
    assert len(board) == 1 and chat == Counter({"m-1": 1, "m-1#reply": 1})


async def test_pending_messages_are_processed_on_start(data_dir):
    msg = InboundMessage(user_id="u", content="留下的消息 13812345678", message_id="left-behind")
    async with host_for(data_dir, [], replay_on_start=False) as host:
        await host.store.inbox_put(host.settings.bot_id, msg.message_id, msg.model_dump_json(), time.time())
        assert await host.store.inbox_depth() == 1
    async with host_for(data_dir, []) as host:  # start replays
        assert await host.store.inbox_depth() == 0
        assert await host.store.reply_for(host.settings.bot_id, "left-behind") is not None
        assert [r.message_id for r in await host.history("聊天")] == ["left-behind"]


async def test_a_message_answered_before_a_crash_is_not_answered_again(data_dir, fake_llm):
    msg = InboundMessage(user_id="u", content="问题", message_id="answered-1")
    async with host_for(data_dir, [], replay_on_start=False) as host:
        bot = host.settings.bot_id
        await host.store.inbox_put(bot, msg.message_id, msg.model_dump_json(), time.time())
        from wxhelper import Reply

        earlier = Reply(text="EARLIER-ANSWER", namespace="聊天", source_id="u", message_id="answered-1",
                        recorded=["chat"])
        await host.store.inbox_answer(bot, msg.message_id, earlier.model_dump_json())
    async with host_for(data_dir, [], llm=fake_llm) as host:
        again = await host.handle(msg)
        chat = await host.history("聊天", "chat", source_id="u")
    assert again.text == "EARLIER-ANSWER" and fake_llm.chat_requests() == []
    assert [r.content for r in chat] == ["问题", "EARLIER-ANSWER"]


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(data_dir, tmp_path, fake_llm, store_url):
    import uuid

    fake_llm.reply = lambda body: f"answer-{uuid.uuid4().hex}"
    rng = random.Random(20261121)
    messages = [{"user_id": f"u{i % 5}", "group_id": f"g{i % 3}", "message_id": f"m{i:03d}",
                 "content": f"消息{i}" + (" 电话13812345678" if i % 4 == 0 else "")} for i in range(40)]
    path = write_messages(tmp_path / "messages.jsonl", messages)
    out = tmp_path / "replies.log"
    # a killed worker's lease blocks its source until it expires: keep it short here
    env = worker_env(data_dir, store=store_url, llm=fake_llm, WXHELPER_SOURCE_LEASE_TTL="0.5")
    kills = 0
    for _ in range(10):
        proc = start_worker(path, out, env)
        wait_ready(proc)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    proc = start_worker(path, out, env)
    wait_ready(proc)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert kills >= 5

    replies: dict[str, set] = {}
    for entry in read_log(out):
        replies.setdefault(entry["message_id"], set()).add(entry["text"])
    assert set(replies) == {m["message_id"] for m in messages}
    assert all(len(texts) == 1 for texts in replies.values()), "a message got two different replies"

    import asyncio

    async def check() -> None:
        async with host_for(data_dir, [], store=store_url) as host:
            assert await host.store.inbox_depth() == 0
            counts = await chat_message_ids(host, "聊天", ["g0", "g1", "g2"])
            for m in messages:
                assert counts[m["message_id"]] == 1, m["message_id"]
                assert counts[m["message_id"] + "#reply"] == 1, m["message_id"]
            assert sum(counts.values()) == 2 * len(messages)
            stored = {r.message_id: r.content for src in ("g0", "g1", "g2") for r in
                      await host.store.fair_read(host.history_key("chat", "聊天", src, ""), ALL)}
            for mid, texts in replies.items():
                assert stored[mid + "#reply"] in texts  # the reply recorded is the reply the bot got
            board = await host.store.count(HistoryKey.shared("namespace", "聊天"))
            assert board == sum(1 for m in messages if "电话" in m["content"])

    asyncio.run(check())


def test_one_source_at_a_time_across_two_processes(data_dir, tmp_path, fake_llm, store_url):
    """Two processes send messages to one group concurrently; each message must see every earlier one."""
    fake_llm.reply = lambda body: "ok"
    env = worker_env(data_dir, store=store_url, llm=fake_llm, WXHELPER_CHAT_MAX_RECORDS="500",
                     MAX_USER_RECORD_COUNT="500")
    procs, outs = [], []
    for p in range(2):
        msgs = [{"user_id": f"p{p}", "group_id": "shared-group", "message_id": f"p{p}-{i}", "content": f"p{p}-{i}"}
                for i in range(12)]
        path = write_messages(tmp_path / f"m{p}.jsonl", msgs)
        outs.append(tmp_path / f"out{p}.log")
        procs.append(start_worker(path, outs[-1], env))
    fake_llm.delay_next(0.02, count=24)  # widen the window in which an unserialised read would interleave
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stderr.read()
    seen_counts = []
    for out in outs:
        for entry in read_log(out):
            history = [m for m in entry["prompt"][1:-1] if m["role"] == "user"]
            seen_counts.append(len(history))
    assert sorted(seen_counts) == list(range(24)), sorted(seen_counts)


async def test_lease_expires_when_its_holder_dies(data_dir):
    async with host_for(data_dir, []) as host:
        store = host.store
        token = await store.acquire_lease("x", 0.2)
        assert token is not None and await store.acquire_lease("x", 0.2) is None
        time.sleep(0.25)  # the holder "died": no renewal
        newer = await store.acquire_lease("x", 0.2)
        assert newer is not None and newer > token
        assert await store.renew_lease("x", token, 0.2) is False
        assert await store.renew_lease("x", newer, 0.2) is True
        await store.release_lease("x", newer)
        assert await store.acquire_lease("x", 0.2) == newer + 1


def test_cli_replay(data_dir):
    import asyncio
    import json
    import os
    import subprocess
    import sys

    async def leave_one() -> None:
        async with host_for(data_dir, [], replay_on_start=False) as host:
            msg = InboundMessage(user_id="u", content="留言 13812345678", message_id="cli-left")
            await host.store.inbox_put(host.settings.bot_id, msg.message_id, msg.model_dump_json(), time.time())

    asyncio.run(leave_one())
    env = dict(os.environ, WXHELPER_DATA_DIR=str(data_dir), WXHELPER_LOAD_PLUGINS="", WXHELPER_EMBEDDING="hashed")
    out = subprocess.run([sys.executable, "-m", "wxhelper", "replay", "--json"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=data_dir)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"pending": 1, "replayed": 1}
    again = subprocess.run([sys.executable, "-m", "wxhelper", "replay", "--json"], env=env, capture_output=True,
                           text=True, timeout=120, cwd=data_dir)
    assert json.loads(again.stdout) == {"pending": 0, "replayed": 0}

"""``wxhelper migrate``: SQLite → Redis (standalone and cluster) without loss, counts and checksums printed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from wxhelper.cli import main
from wxhelper.fairness import ALGORITHMS
from wxhelper.messages import Record
from wxhelper.migrate import checksum
from wxhelper.storage import FairQuery, HistoryKey, open_store

NOW = time.time()


def _records(n_users: int, per_user: int, tag: str) -> list[Record]:
    out = []
    for u in range(n_users):
        for k in range(per_user):
            out.append(Record(user_id=f"{tag}-user {u}:{{*}}😀", source_id="g", bot_id="b",
                              content=f"{tag} 第{k}条 " + "内容" * (k % 7), timestamp=NOW - (k // 2) * 60.0,
                              message_id=f"{tag}-{u}-{k}", score=float(k % 4)))
    return out


async def _fill_sqlite(url: str) -> dict[str, list[Record]]:
    store = open_store(url)
    histories = {
        HistoryKey.shared("namespace", "旅游").id: _records(5, 9, "ns"),
        HistoryKey.chat("旅游", "group:{1}", "bot").id: _records(3, 4, "chat"),
        HistoryKey.shared("friend_circle", "x" * 256).id: _records(2, 3, "fc"),
    }
    for key_id, records in histories.items():
        for r in records:
            assert await store.append(HistoryKey.from_id(key_id), r, max_per_user=100, ttl=86400)
    await store.set_binding("group:{1}", "bot", "旅游")
    await store.set_binding("u 2", "", "car")
    await store.close()
    return histories


@pytest.mark.parametrize("target", ["redis_url", "redis_cluster_url"])
def test_migrate_sqlite_to_redis(tmp_path: Path, target: str, request: pytest.FixtureRequest) -> None:
    source = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    histories = asyncio.run(_fill_sqlite(source))
    dest = f"{request.getfixturevalue(target)}?prefix=mig{uuid.uuid4().hex[:8]}:"
    total = sum(len(v) for v in histories.values())

    result = CliRunner().invoke(main, ["migrate", "--from", source, "--to", dest, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["histories"] == 3 and report["records"] == total
    assert report["written"] == total and report["bindings"] == 2
    assert report["source_checksum"] == report["target_checksum"]

    async def verify() -> None:
        src, dst = open_store(source), open_store(dest)
        try:
            for key_id, records in histories.items():
                key = HistoryKey.from_id(key_id)
                assert await dst.count(key) == len(records)
                for algorithm in ALGORITHMS:
                    q = FairQuery(7, 120, 0.0, algorithm)
                    assert await dst.fair_read(key, q) == await src.fair_read(key, q)
            got = {k.id: checksum(v) async for k, v in dst.iter_all()}
            assert got == {k: checksum(v) for k, v in histories.items()}
            assert await dst.get_binding("group:{1}", "bot") == "旅游"
            assert await dst.get_binding("u 2", "") == "car"
        finally:
            await src.close()
            await dst.close()

    asyncio.run(verify())

    # running it again copies nothing twice
    again = CliRunner().invoke(main, ["migrate", "--from", source, "--to", dest])
    assert again.exit_code == 0, again.output
    assert f"records:   {total} (0 written, {total} already there)" in again.stdout
    assert "checksum:  source" in again.stdout


def test_migrate_redis_back_to_sqlite(tmp_path: Path, redis_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    histories = asyncio.run(_fill_sqlite(source))
    mid = f"{redis_url}?prefix=mig{uuid.uuid4().hex[:8]}:"
    back = f"sqlite:///{tmp_path / 'b.sqlite3'}"
    for src, dst in ((source, mid), (mid, back)):
        result = CliRunner().invoke(main, ["migrate", "--from", src, "--to", dst, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["records"] == sum(len(v) for v in histories.values())

    async def dump(url: str) -> dict[str, list[Record]]:
        store = open_store(url)
        try:
            return {k.id: v async for k, v in store.iter_all()}
        finally:
            await store.close()

    assert asyncio.run(dump(back)) == asyncio.run(dump(source))


def test_migrate_reports_bad_urls(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["migrate", "--from", "nope://x", "--to", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code != 0 and "not supported" in result.output

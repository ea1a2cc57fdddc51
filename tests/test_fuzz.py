"""Random input thrown at Host.handle: it is either handled or rejected with a clear error, and a
rejected message changes nothing already stored."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from wxhelper import SyncHost
from wxhelper.routing import UnknownNamespace
from wxhelper.testing import make_settings

IDS = st.one_of(
    st.none(), st.text(max_size=20), st.text(min_size=250, max_size=300),
    st.sampled_from(["u1", "g1", "a:b{c}*", " ", "\x00", "用户😀", "x" * 256, "x" * 257, "a\nb"]),
)
CONTENT = st.one_of(
    st.text(max_size=200), st.just(""), st.just(" \t\n"), st.text(alphabet=st.characters(), min_size=1),
    st.builds(lambda n: "长" * n + " 13812345678", st.integers(0, 12000)),
    st.sampled_from(["{{ 7*7 }}", "{% for x in range(10**9) %}{% endfor %}", "\x00\x01\x7f", "\ud800".encode(
        "utf-16", "surrogatepass").decode("utf-16", "surrogatepass") if False else "\u202e", "/切换|二手车",
        "/删除分类|聊天|确认", "/新增分类|x"]),
    st.integers(), st.none(),
)
MESSAGE = st.fixed_dictionaries(
    {"user_id": IDS, "content": CONTENT},
    optional={
        "group_id": IDS, "bot_id": IDS, "message_id": IDS,
        "namespace": st.one_of(IDS, st.sampled_from(["car_client", "二手车", "nope"])),
        "channel": st.one_of(st.sampled_from(["chat", "friend_circle"]), st.text(max_size=10)),
        "timestamp": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(time.time() + 10**6),
                               st.integers(-5, 2 * 10**9), st.text(max_size=5)),
        "extra_field": st.text(max_size=5),
    },
)


def snapshot(db: Path) -> tuple:
    conn = sqlite3.connect(db)
    try:
        records = conn.execute("SELECT count(*), total(length(content)), group_concat(message_id) FROM "
                               "(SELECT * FROM records ORDER BY id)").fetchone()
        other = tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("users", "inbox", "replies", "bindings", "custom_namespaces"))
        return records + other
    finally:
        conn.close()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz")
    with SyncHost(make_settings(data, ["wxhelper-car-client"], max_single_char=9000)) as h:
        h.handle({"user_id": "seed", "group_id": "g1", "content": "已有的帖子 二手车 13812345678"})
        yield h, data / "history.sqlite3"


@given(MESSAGE)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_random_messages_are_handled_or_cleanly_rejected(host, fields):
    h, db = host
    before = snapshot(db)
    try:
        reply = h.handle(fields)
    except ValidationError as exc:
        assert exc.errors() and all(e["loc"] for e in exc.errors() if e["type"] != "model_type")
        assert snapshot(db) == before, "a rejected message changed the store"
        return
    except UnknownNamespace as exc:
        assert "is not registered" in str(exc)
        assert snapshot(db) == before
        return
    assert reply.message_id
    assert "\x00" not in reply.text
    if reply.command is None and reply.answered:
        assert "chat" in reply.recorded
    conn = sqlite3.connect(db)
    try:
        kept = conn.execute("SELECT count(*) FROM records WHERE user_id='seed'").fetchone()[0]
    finally:
        conn.close()
    assert kept == 2, "an accepted message lost an earlier record (the seed's chat and board records)"

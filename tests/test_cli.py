"""The command line, run as a user runs it: a subprocess with settings in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(data_dir: Path, *args: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, WXHELPER_DATA_DIR=str(data_dir), WXHELPER_LOG_LEVEL="WARNING")
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-m", "wxhelper", *args], env=full_env, capture_output=True,
                         text=True, timeout=180, cwd=data_dir)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def test_ask_answers_in_every_namespace_offline_and_history_shows_the_board(data_dir):
    asks = [("二手车过户要带啥材料？出售卡罗拉 13812345678", "car_client"),
            ("劳动合同试用期多久", "qzzp"),
            ("去泰国旅游需要签证吗", "lvyou"),
            ("你好", "聊天")]
    for text, ns in asks:
        reply = json.loads(run(data_dir, "ask", text, "--user", "alice", "--group", "g1", "--json").stdout)
        assert reply["namespace"] == ns
        assert reply["offline"] is True and reply["retrieved"] or ns == "聊天"
        assert reply["source_id"] == "g1"
        assert {"text", "prompt", "recorded", "retrieved", "offline"} <= set(reply)
    board = json.loads(run(data_dir, "history", "car_client", "--json").stdout)
    assert len(board) == 1
    assert set(board[0]) == {"user_id", "source_id", "bot_id", "content", "timestamp", "message_id"}
    chat = json.loads(run(data_dir, "history", "qzzp", "--kind", "chat", "--source", "g1", "--json").stdout)
    assert [r["user_id"] for r in chat] == ["alice", "wxhelper-bot"]
    plain = run(data_dir, "ask", "二手车估价", "--user", "bob")
    assert plain.stdout.startswith("（离线模式")


def test_ask_friend_circle_and_explicit_ids(data_dir):
    out = run(data_dir, "ask", "拼车去黄山旅游 13912345678", "--user", "f", "--channel", "friend_circle",
              "--message-id", "m-1", "--bot", "botX", "--json")
    reply = json.loads(out.stdout)
    assert reply["answered"] is False and reply["recorded"] == ["friend_circle"] and reply["message_id"] == "m-1"
    circle = json.loads(run(data_dir, "history", "lvyou", "--kind", "friend_circle", "--json").stdout)
    assert circle[0]["bot_id"] == "botX" and circle[0]["message_id"] == "m-1"


def test_history_algorithm_and_limits(data_dir):
    for i in range(5):
        run(data_dir, "ask", f"帖子{i} 电话1381234567{i}", "--user", "loud", "--group", "g")
    run(data_dir, "ask", "安静的帖子 13912345678", "--user", "quiet", "--group", "g")
    fair = json.loads(run(data_dir, "history", "聊天", "--max-records", "2", "--json").stdout)
    assert sorted(r["user_id"] for r in fair) == ["loud", "quiet"]
    seed = json.loads(run(data_dir, "history", "聊天", "--max-records", "2", "--algorithm", "seed", "--json").stdout)
    assert len(seed) == 2
    bad = run(data_dir, "history", "聊天", "--algorithm", "nope", ok=False)
    assert bad.returncode != 0 and "algorithm must be one of" in bad.stderr


def test_bad_input_is_a_clear_error(data_dir):
    out = run(data_dir, "ask", "   ", "--user", "u", ok=False)
    assert out.returncode != 0 and "content" in out.stderr
    out = run(data_dir, "ask", "hi", "--user", "u", "--namespace", "nope", ok=False)
    assert out.returncode != 0 and "namespace 'nope' is not registered" in out.stderr
    out = run(data_dir, "ask", "hi", "--user", "u", env={"MAX_SINGLE_CHAR": "-3"}, ok=False)
    assert out.returncode != 0 and "MAX_SINGLE_CHAR" in out.stderr and "greater than or equal to 1" in out.stderr
    out = run(data_dir, "history", "聊天", "--kind", "chat", ok=False)
    assert out.returncode != 0 and "--source" in out.stderr


def test_index_then_namespaces(data_dir):
    first = run(data_dir, "index").stdout
    assert "car_client" in first and "added" in first
    second = run(data_dir, "index").stdout
    assert second.count("unchanged") >= 4
    rows = json.loads(run(data_dir, "namespaces", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert {"聊天", "car_client", "qzzp", "lvyou"} <= set(by_name)
    assert by_name["car_client"]["title"] == "二手车" and by_name["car_client"]["plugin"] == "wxhelper-car-client"
    assert all(by_name[n]["indexed"] and by_name[n]["passages"] >= 5 for n in ("聊天", "car_client", "qzzp", "lvyou"))
    assert by_name["lvyou"]["embedding"].startswith("wxhelper-use-m3")  # the default embedding, no fallback


def test_dotenv_file_is_read(data_dir):
    (data_dir / ".env").write_text("BOT_ID=bot-from-dotenv\nDEFAULT_NAME_SPACE=闲聊\n", encoding="utf-8")
    reply = json.loads(run(data_dir, "ask", "hello", "--user", "u", "--json").stdout)
    assert reply["namespace"] == "闲聊"
    chat = json.loads(run(data_dir, "history", "闲聊", "--kind", "chat", "--source", "u", "--json").stdout)
    assert chat[-1]["user_id"] == "bot-from-dotenv"

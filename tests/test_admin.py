"""The operator console's JSON API (/admin/api) and page, against a real ``wxhelper serve`` on loopback.

One server with a token and the SQLite store (events in the ring buffer); one with two workers
over a real Redis (events in the capped stream, seen by every worker). The browser drives the
same API in tests/test_console_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from test_server import AUTH, TOKEN, Served, _send, _send_on_fresh_connections  # noqa: F401  (the server fixture lives there)
from wxhelper.events import MemoryEventLog, RedisEventLog, mask, per_user
from wxhelper.fake_llm import FakeLLM
from wxhelper.messages import Record

ROOT = Path(__file__).resolve().parent.parent
PHONE = "13812345678"
MASKED = "138****5678"
ADMIN_ROUTES = [("GET", "/admin/api/session"), ("GET", "/admin/api/namespaces"), ("GET", "/admin/api/events"),
                ("GET", "/admin/api/events/stream"), ("GET", "/admin/api/events/1"),
                ("GET", "/admin/api/fairness/car_client"), ("GET", "/admin/api/categories"),
                ("POST", "/admin/api/categories"), ("DELETE", "/admin/api/categories/x?confirm=x"),
                ("PUT", "/admin/api/bindings"), ("GET", "/admin/api/health"),
                ("POST", "/admin/api/namespaces/qzzp/reindex")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("admin"), llm, extra_env={"WXHELPER_API_TOKEN": TOKEN})
    try:
        yield served
    finally:
        served.stop()


def _event_of(client: httpx.Client, message_id: str, timeout: float = 10.0) -> dict:
    """The console event of one message (the recorder adds it just after the reply)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.get("/admin/api/events", params={"limit": 1000}).json()["events"]:
            if event["message_id"] == message_id:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no console event for {message_id}: {client.get('/admin/api/health').json()['events']} {[(e['id'], e['message_id'], e['content'][:20]) for e in client.get('/admin/api/events').json()['events']]}")


# -- auth and the page -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", ADMIN_ROUTES)
def test_the_console_api_needs_the_token(server: Served, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        resp = httpx.request(method, server.base + path, headers=headers, json={} if method in ("POST", "PUT") else None)
        assert resp.status_code == 401, (path, headers, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")


def test_the_page_and_its_files_need_no_token_and_hold_no_data(server: Served) -> None:
    page = httpx.get(server.base + "/admin")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/admin/static/app.js"' in page.text and TOKEN not in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        asset = httpx.get(f"{server.base}/admin/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert httpx.get(server.base + "/admin/", follow_redirects=False).status_code == 308
    # The open static prefix must not open anything else: a dot-dot path stays inside the static files.
    for sneaky in ("/admin/static/../api/session", "/admin/static/%2e%2e/api/session", "/admin/static/..%2fapi%2fsession"):
        resp = httpx.get(server.base + sneaky)
        assert resp.status_code in (401, 404), (sneaky, resp.status_code)
        assert "bot_id" not in resp.text


def test_session_says_who_serves(client: httpx.Client) -> None:
    session = client.get("/admin/api/session").json()
    assert session["auth"] == "token" and session["store"] == "sqlite" and session["bot_id"] == "wxhelper-bot"
    assert session["events"]["backend"] == "memory" and session["events"]["max_events"] == 200
    assert "seed" in session["algorithms"] and session["algorithm"] == "max_min"


def test_the_routes_stay_out_of_the_openapi_spec(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/admin")]


# -- namespaces and re-indexing ---------------------------------------------------------------------------------
def test_namespaces_with_plugin_status_corpus_and_index(client: httpx.Client) -> None:
    body = client.get("/admin/api/namespaces").json()
    rows = {ns["name"]: ns for ns in body["namespaces"] if not ns["custom"]}
    assert set(rows) == {"聊天", "car_client", "qzzp", "lvyou"}
    for ns in rows.values():
        assert ns["status"] == "loaded" and ns["errors"] == []
        assert ns["passages"] > 0 and ns["indexed"] is True and ns["stored"] == ns["passages"]
        assert ns["embedding"].startswith("wxhelper-hashed")
    assert rows["car_client"]["plugin"] == "wxhelper-car-client" and rows["car_client"]["version"]
    assert {p["name"]: p["status"] for p in body["plugins"]}["wxhelper-qzzp"] == "loaded"
    assert body["reindex_allowed"] is True


def _sse_events(resp: httpx.Response) -> Iterator[tuple[str, dict]]:
    event, data = None, []
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event is not None:
            yield event, json.loads("\n".join(data))
            event, data = None, []


def test_reindex_streams_progress_then_the_summary(client: httpx.Client) -> None:
    with client.stream("POST", "/admin/api/namespaces/求职招聘/reindex", params={"force": "true"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = list(_sse_events(resp))
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    done = events[-1][1]
    progress = [d for k, d in events if k == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == done["total"] > 0
    assert done["rebuilt"] is True and done["added"] == done["total"]  # force: from scratch
    ns = {n["name"]: n for n in client.get("/admin/api/namespaces").json()["namespaces"]}["qzzp"]
    assert ns["indexed"] is True and ns["stored"] == done["total"]
    assert client.post("/admin/api/namespaces/nope/reindex").status_code == 404


def test_a_namespace_whose_template_breaks_shows_as_degraded_with_the_error(tmp_path: Path, llm: FakeLLM) -> None:
    overrides = tmp_path / "templates" / "lvyou"
    overrides.mkdir(parents=True)
    (overrides / "system.j2").write_text("旅游助手 {{ no_such_variable }}", encoding="utf-8")  # StrictUndefined: fails
    served = Served(tmp_path, llm, extra_env={"WXHELPER_API_TOKEN": TOKEN,
                                              "WXHELPER_TEMPLATES_DIR": str(tmp_path / "templates")})
    try:
        with httpx.Client(base_url=served.base, headers=AUTH, timeout=30) as c:
            before = {n["name"]: n for n in c.get("/admin/api/namespaces").json()["namespaces"]}
            assert before["lvyou"]["status"] == "loaded"
            mid = f"t-{uuid.uuid4().hex}"
            reply = _send(c, user_id="eve", namespace="lvyou", content="三亚住哪里方便？", message_id=mid)
            assert "plugin:wxhelper-lvyou" in reply["degraded"]
            _event_of(c, mid)
            rows = {n["name"]: n for n in c.get("/admin/api/namespaces").json()["namespaces"]}
            assert rows["lvyou"]["status"] == "degraded"
            text = "\n".join(rows["lvyou"]["errors"])
            assert "1 message(s) in the last 15 minutes answered degraded" in text
            assert "template system.j2 of namespace 'lvyou' failed: UndefinedError" in text
            assert "answered degraded: plugin:wxhelper-lvyou" in text
            assert all(rows[n]["status"] == "loaded" for n in ("聊天", "car_client", "qzzp"))
            event = c.get(f"/admin/api/events/{_event_of(c, mid)['id']}").json()
            assert event["template"]["origin"] == "host (fallback)" and "UndefinedError" in event["template"]["error"]
    finally:
        served.stop()


# -- live events and the prompt inspector ---------------------------------------------------------------------------
def test_events_mask_phone_numbers_everywhere(client: httpx.Client) -> None:
    mid = f"m-{uuid.uuid4().hex}"
    reply = _send(client, user_id="alice", group_id="console-g1", message_id=mid, namespace="car_client",
                  content=f"想卖一辆2019年的卡罗拉，6万公里，电话{PHONE}")
    assert PHONE in reply["prompt"][-1]["content"]  # the bot's own answer keeps the number
    listed = _event_of(client, mid)
    assert listed["source_id"] == "console-g1" and listed["namespace"] == "car_client"
    assert listed["recorded"] == ["chat", "namespace"] and listed["inspectable"] is True
    assert MASKED in listed["content"] and PHONE not in json.dumps(listed, ensure_ascii=False)
    assert {"assembly", "retrieval", "llm", "total"} <= set(listed["timings"])
    detail = client.get(f"/admin/api/events/{listed['id']}")
    assert detail.status_code == 200
    assert PHONE not in detail.text and MASKED in detail.text
    full = detail.json()
    assert full["prompt"][-1]["content"].startswith("alice：想卖一辆2019年的卡罗拉") and MASKED in full["prompt"][-1]["content"]
    assert [m["role"] for m in full["prompt"]][0] == "system"
    assert full["template"]["name"] == "system.j2" and full["template"]["origin"] == "plugin"
    assert "wxhelper_car_client" in full["template"]["path"]
    assert "{{" in full["template"]["source"] and "knowledge" in full["template"]["source"]  # the jinja2 text
    assert full["retrieved"] and all(p["source"] and p["text"] and p["chars"] >= len(p["text"]) for p in full["retrieved"])
    assert set(full["sections"]) == {"chat", "namespace", "friend_circle"}


def test_inspector_sections_count_records_and_characters_per_user(client: httpx.Client) -> None:
    group = f"sec-{uuid.uuid4().hex[:8]}"
    _send(client, user_id="u1", group_id=group, namespace="lvyou", content="去日本旅游要签证吗？")
    _send(client, user_id="u2", group_id=group, namespace="lvyou", content="三亚五月热不热")
    mid = f"m-{uuid.uuid4().hex}"
    _send(client, user_id="u1", group_id=group, namespace="lvyou", message_id=mid, content="还有推荐的酒店吗")
    full = client.get(f"/admin/api/events/{_event_of(client, mid)['id']}").json()
    chat = full["sections"]["chat"]
    by_user = {u["user_id"]: u for u in chat["users"]}
    # The two earlier messages and the bot's two replies reached the third message's prompt.
    assert by_user["u1"]["records"] == 1 and by_user["u1"]["chars"] == len("去日本旅游要签证吗？")
    assert by_user["u2"]["records"] == 1 and by_user["u2"]["chars"] == len("三亚五月热不热")
    assert by_user["wxhelper-bot"]["records"] == 2
    assert chat["chars"] == sum(u["chars"] for u in chat["users"]) and chat["records"] == 4
    assert chat["max_records"] > 0 and chat["max_chars"] > 0
    turns = [m["content"] for m in full["prompt"][1:-1]]
    assert len(turns) == 4 and "u1：去日本旅游要签证吗？" in turns  # the sections are what the prompt holds


def test_commands_and_friend_circle_posts_are_listed_but_have_no_prompt(client: httpx.Client) -> None:
    post = f"fc-{uuid.uuid4().hex}"
    _send(client, user_id="fiona", namespace="lvyou", channel="friend_circle", message_id=post,
          content=f"周末去千岛湖，拼车，电话{PHONE}")
    command = f"cmd-{uuid.uuid4().hex}"
    _send(client, user_id="fiona", content="/分类", message_id=command)
    listed = _event_of(client, post)
    assert listed["recorded"] == ["friend_circle"] and listed["answered"] is False and listed["inspectable"] is False
    assert MASKED in listed["content"]
    assert "prompt" not in client.get(f"/admin/api/events/{listed['id']}").json()
    listed = _event_of(client, command)
    assert listed["command"] == "分类" and listed["recorded"] == [] and listed["inspectable"] is False


def test_the_live_stream_delivers_new_messages(server: Served, client: httpx.Client) -> None:
    mid = f"live-{uuid.uuid4().hex}"
    got: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as c:
            with c.stream("GET", "/admin/api/events/stream") as resp:
                assert resp.status_code == 200
                for kind, data in _sse_events(resp):
                    if kind == "hello":
                        ready.set()
                    elif kind == "message" and data["message_id"] == mid:
                        got.append(data)
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10)
    _send(client, user_id="bob", content=f"试用期最长多久？我的电话{PHONE}", message_id=mid, namespace="qzzp")
    thread.join(15)
    assert got and got[0]["namespace"] == "qzzp" and got[0]["source_id"] == "bob" and got[0]["group_id"] is None
    assert MASKED in got[0]["content"] and PHONE not in json.dumps(got[0], ensure_ascii=False)


def test_an_open_live_stream_does_not_hold_the_shutdown(tmp_path: Path, llm: FakeLLM) -> None:
    served = Served(tmp_path, llm, extra_env={"WXHELPER_API_TOKEN": TOKEN})
    opened = threading.Event()
    ended: list[str] = []

    def listen() -> None:
        try:
            with httpx.stream("GET", served.base + "/admin/api/events/stream", headers=AUTH, timeout=60) as resp:
                for line in resp.iter_lines():
                    if line.startswith("event: hello"):
                        opened.set()
            ended.append("closed by the server")
        except httpx.HTTPError as exc:
            ended.append(type(exc).__name__)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        assert opened.wait(10)
    finally:
        started = time.monotonic()
        served.stop()  # SIGINT, as Ctrl-C or a service manager would
        took = time.monotonic() - started
    thread.join(5)
    assert ended == ["closed by the server"]
    # Without the console ending its streams, uvicorn waits its graceful timeout (10 s), then says this:
    assert "timeout graceful shutdown exceeded" not in served.log.read_text(), f"shutdown took {took:.1f}s"


def test_unknown_event_is_404(client: httpx.Client) -> None:
    resp = client.get("/admin/api/events/1-999999999")
    assert resp.status_code == 404 and "keeps the last 200" in resp.json()["detail"]


# -- fairness ---------------------------------------------------------------------------------------------------------
def test_fairness_compares_the_current_selection_with_seed_on_the_same_data(client: httpx.Client) -> None:
    # A loud user with long posts and three quiet ones, all on the lvyou board (a phone number each).
    for i in range(12):
        _send(client, user_id="loud", group_id=f"fair-{i}", namespace="lvyou",
              content=f"出租三亚海景房第{i}套，" + "设施齐全交通方便" * 120 + f"，电话1391234{5600 + i}")
    for user in ("q1", "q2", "q3"):
        _send(client, user_id=user, group_id=f"fair-{user}", namespace="lvyou", content=f"求拼车去丽江，电话13712345{ord(user[1]):03d}"[:40])
    body = client.get("/admin/api/fairness/lvyou", params={"compare": "seed"}).json()
    assert body["algorithm"] == "max_min" and body["compare"] == "seed" and body["kind"] == "namespace"
    users = {u["user_id"]: u for u in body["users"]}
    assert {"loud", "q1", "q2", "q3"} <= set(users)
    # The same numbers as the history route gives for each algorithm.
    for which, algorithm in (("current", "max_min"), ("compare", "seed")):
        records = client.get("/v1/namespaces/lvyou/history", params={"algorithm": algorithm}).json()["records"]
        for user, row in users.items():
            mine = [r for r in records if r["user_id"] == user]
            assert row[which] == {"records": len(mine), "chars": sum(len(r["content"]) for r in mine)}, (which, user)
    assert all(users[q]["current"]["records"] == 1 for q in ("q1", "q2", "q3"))
    assert body["totals"]["current"]["chars"] <= body["max_chars"]
    assert not re.search(r"1[3-9]\d{9}", json.dumps(body, ensure_ascii=False))  # no whole phone number anywhere
    assert client.get("/admin/api/fairness/lvyou", params={"kind": "chat"}).status_code == 422
    assert client.get("/admin/api/fairness/nope").status_code == 404
    assert client.get("/admin/api/fairness/lvyou", params={"compare": "bogus"}).status_code == 422


# -- categories and bindings ----------------------------------------------------------------------------------------------
def test_add_and_delete_a_custom_category_with_confirmation(client: httpx.Client) -> None:
    added = client.post("/admin/api/categories", json={"name": "fangchan", "title": "房产"})
    assert added.status_code == 201 and added.json() == {"bot_id": "wxhelper-bot", "name": "fangchan", "title": "房产"}
    assert client.post("/admin/api/categories", json={"name": "fangchan"}).status_code == 409
    assert client.post("/admin/api/categories", json={"name": "car_client"}).status_code == 409
    bad = client.post("/admin/api/categories", json={"name": "has space"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.post("/admin/api/categories", json={"name": "x", "extra": 1}).status_code == 422
    listed = client.get("/admin/api/categories").json()
    assert {"bot_id": "wxhelper-bot", "name": "fangchan", "title": "房产"} in listed["custom"]
    assert {p["name"] for p in listed["preset"]} == {"聊天", "car_client", "qzzp", "lvyou"}
    # A message in the new category is recorded there, then deleting drops it.
    reply = _send(client, user_id="carol", group_id="fc-group", namespace="房产", content=f"出租两居室，电话{PHONE}")
    assert reply["namespace"] == "fangchan" and reply["recorded"] == ["chat", "namespace"]
    unconfirmed = client.delete("/admin/api/categories/fangchan")
    assert unconfirmed.status_code == 409 and unconfirmed.json()["detail"][0]["loc"] == ["query", "confirm"]
    assert any(c["name"] == "fangchan" for c in client.get("/admin/api/categories").json()["custom"])
    deleted = client.delete("/admin/api/categories/fangchan", params={"confirm": "fangchan"})
    assert deleted.status_code == 200 and deleted.json()["dropped"] == 3  # message + reply in chat, the board post
    assert not any(c["name"] == "fangchan" for c in client.get("/admin/api/categories").json()["custom"])
    assert client.delete("/admin/api/categories/car_client", params={"confirm": "car_client"}).status_code == 409
    assert client.delete("/admin/api/categories/nope", params={"confirm": "nope"}).status_code == 404


def test_bind_a_source_then_unbind_it(client: httpx.Client) -> None:
    bound = client.put("/admin/api/bindings", json={"source_id": "bind-g", "namespace": "求职招聘"})
    assert bound.status_code == 200 and bound.json()["namespace"] == "qzzp"
    assert {"source_id": "bind-g", "bot_id": "wxhelper-bot", "namespace": "qzzp", "stale": False} in \
        client.get("/admin/api/categories").json()["bindings"]
    assert _send(client, user_id="dan", group_id="bind-g", content="去日本旅游要签证吗")["namespace"] == "qzzp"
    assert client.put("/admin/api/bindings", json={"source_id": "bind-g", "namespace": None}).json()["namespace"] is None
    assert _send(client, user_id="dan", group_id="bind-g", content="去日本旅游要签证吗")["namespace"] == "lvyou"
    assert client.put("/admin/api/bindings", json={"source_id": "bind-g", "namespace": "nope"}).status_code == 422
    assert client.put("/admin/api/bindings", json={"source_id": ""}).status_code == 422


# -- health -----------------------------------------------------------------------------------------------------------
def test_health_checks_store_chroma_llm_inbox_and_spool(client: httpx.Client, llm: FakeLLM) -> None:
    body = client.get("/admin/api/health").json()
    assert body["store"]["status"] == "ok" and body["store"]["backend"] == "sqlite"
    assert body["chroma"] == {**body["chroma"], "status": "ok", "where": "embedded"}
    assert body["llm"]["status"] == "ok" and body["llm"]["endpoint"] == llm.base_url.rstrip("/") and body["llm"]["http"] == 200
    assert body["inbox"] == {"status": "ok", "depth": 0}
    assert body["spool"] == {"outage": False, "spooled": 0, "status": "ok"}
    assert set(body["plugins"]) >= {"wxhelper-car-client", "wxhelper-qzzp", "wxhelper-lvyou"}
    assert body["events"]["recorded"] > 0 and body["events"]["dropped"] == 0


def test_health_says_when_the_llm_is_unreachable(tmp_path: Path) -> None:
    llm = FakeLLM()
    with llm:
        dead_url = llm.base_url
    fake = type("Dead", (), {"api_key": "k", "base_url": dead_url})()
    served = Served(tmp_path, fake, extra_env={"WXHELPER_API_TOKEN": TOKEN})  # type: ignore[arg-type]
    try:
        body = httpx.get(served.base + "/admin/api/health", headers=AUTH, timeout=30).json()
        assert body["llm"]["status"] == "failed" and "ConnectError" in body["llm"]["error"]
        assert body["store"]["status"] == "ok"
    finally:
        served.stop()


def test_without_a_token_the_console_opens_on_loopback(tmp_path: Path, llm: FakeLLM) -> None:
    served = Served(tmp_path, llm)
    try:
        session = httpx.get(served.base + "/admin/api/session", timeout=30)
        assert session.status_code == 200 and session.json()["auth"] == "none"
        assert "127.0.0.1" in served.log.read_text() and "loopback only" in served.log.read_text()
    finally:
        served.stop()


def test_recording_can_be_turned_off(tmp_path: Path, llm: FakeLLM) -> None:
    served = Served(tmp_path, llm, extra_env={"WXHELPER_API_TOKEN": TOKEN, "WXHELPER_CONSOLE_EVENTS": "0"})
    try:
        with httpx.Client(base_url=served.base, headers=AUTH, timeout=30) as c:
            _send(c, user_id="zoe", content="试用期最长多久？")
            body = c.get("/admin/api/events").json()
            assert body["events"] == [] and body["stats"]["enabled"] is False and body["stats"]["backend"] == "off"
            assert c.get("/admin/api/health").json()["events"]["recorded"] == 0
    finally:
        served.stop()


def test_chroma_unreachable_shows_in_namespaces_and_health(tmp_path: Path, llm: FakeLLM) -> None:
    from servers import free_port

    served = Served(tmp_path, llm, extra_env={"WXHELPER_API_TOKEN": TOKEN,
                                              "CHROMA_URL": f"http://127.0.0.1:{free_port()}"})
    try:
        with httpx.Client(base_url=served.base, headers=AUTH, timeout=60) as c:
            rows = c.get("/admin/api/namespaces").json()["namespaces"]
            assert {r["name"] for r in rows} == {"聊天", "car_client", "qzzp", "lvyou"}
            for row in rows:
                assert row["status"] == "degraded" and row["indexed"] is False
                assert any(e.startswith("index: ") for e in row["errors"]), row["errors"]
            health = c.get("/admin/api/health").json()
            assert health["chroma"]["status"] == "failed" and health["chroma"]["where"].startswith("http://127.0.0.1:")
            assert health["store"]["status"] == "ok" and health["llm"]["status"] == "ok"
    finally:
        served.stop()


# -- several workers over Redis ---------------------------------------------------------------------------------------
def test_every_workers_messages_reach_the_console_over_redis(tmp_path: Path, llm: FakeLLM, redis_url: str) -> None:
    store = f"{redis_url}?prefix=console-{uuid.uuid4().hex[:6]}:"
    served = Served(tmp_path, llm, workers=2, extra_env={"WXHELPER_STORE": store, "WXHELPER_API_TOKEN": TOKEN,
                                                         "WXHELPER_CONSOLE_EVENTS": "50"})
    try:
        sent = [f"w-{i}-{uuid.uuid4().hex[:6]}" for i in range(10)]
        _send_on_fresh_connections(served, [dict(user_id=f"w{i}", group_id="two", namespace="qzzp", content="试用期多久",
                                                 message_id=mid) for i, mid in enumerate(sent)])
        with httpx.Client(base_url=served.base, headers=AUTH, timeout=30) as c:
            assert c.get("/admin/api/session").json()["events"]["backend"] == "redis-stream"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                events = c.get("/admin/api/events", params={"limit": 50}).json()["events"]
                if {e["message_id"] for e in events} >= set(sent):
                    break
                time.sleep(0.1)
            seen = {e["message_id"]: e for e in events}
            assert set(sent) <= set(seen)  # whichever worker handled it, and whichever answers here
            workers = {seen[m]["worker"] for m in sent}
            for mid in sent[:3]:  # and any worker can show any message's prompt
                full = c.get(f"/admin/api/events/{seen[mid]['id']}").json()
                assert "message_id" in full, (seen[mid], full)
                assert full["message_id"] == mid and full["prompt"][-1]["content"] == "w" + mid.split("-")[1] + "：试用期多久"
            assert c.post("/admin/api/namespaces/qzzp/reindex").status_code == 409  # embedded Chroma, 2 workers
        print("workers seen:", workers)
    finally:
        served.stop()


def test_clearing_a_chat_history_clears_its_console_events(client: httpx.Client) -> None:
    """A source whose chat is cleared (a user's deletion request) leaves nothing in the console either;
    other sources, and the source's other namespaces when one namespace is cleared, stay."""
    tag = uuid.uuid4().hex[:8]
    mine, other = f"forget-{tag}", f"keep-{tag}"
    sent = {(src, ns): _send(client, user_id=f"u-{tag}", group_id=src, namespace=ns, content=f"{ns} 问题 {tag}")["message_id"]
            for src in (mine, other) for ns in ("car_client", "lvyou")}
    events = {key: _event_of(client, mid) for key, mid in sent.items()}
    assert client.delete(f"/v1/sources/{mine}/history", params={"namespace": "car_client"}).status_code == 200
    listed = {e["message_id"] for e in client.get("/admin/api/events", params={"limit": 1000}).json()["events"]}
    assert sent[(mine, "car_client")] not in listed
    assert client.get(f"/admin/api/events/{events[(mine, 'car_client')]['id']}").status_code == 404
    assert {sent[(mine, "lvyou")], sent[(other, "car_client")], sent[(other, "lvyou")]} <= listed
    assert client.delete(f"/v1/sources/{mine}/history").status_code == 200  # every namespace
    listed = {e["message_id"] for e in client.get("/admin/api/events", params={"limit": 1000}).json()["events"]}
    assert sent[(mine, "lvyou")] not in listed and {sent[(other, "car_client")], sent[(other, "lvyou")]} <= listed


# -- the event logs, bounded --------------------------------------------------------------------------------------------
async def test_the_ring_buffer_keeps_the_newest() -> None:
    log = MemoryEventLog(3)
    ids = [await log.add({"message_id": f"m{i}", "prompt": [], "n": i}) for i in range(5)]
    assert await log.size() == 3 and [e["message_id"] for e in await log.recent(10)] == ["m4", "m3", "m2"]
    assert await log.get(ids[0]) is None and (await log.get(ids[4]))["n"] == 4
    assert [e["message_id"] for e in await log.after(ids[2], 0.01)] == ["m3", "m4"]
    # A cursor from a former process (the page outlived a restart) starts over rather than waiting forever.
    assert [e["message_id"] for e in await log.after("1-999", 0.01)] == ["m2", "m3", "m4"]


async def test_the_redis_stream_is_capped(redis_url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    key = f"test-{{console}}:{uuid.uuid4().hex}"
    try:
        log = RedisEventLog(client, key, maxlen=50)
        ids = [await log.add({"message_id": f"m{i}", "content": "x" * 100, "n": i}) for i in range(600)]
        size = await log.size()
        assert 50 <= size <= 150  # MAXLEN ~ trims whole nodes (100 entries): approximately, never unbounded
        assert 50 <= await client.xlen(key + ":bodies") <= 150  # the whole events too
        listed = (await log.recent(1))[0]
        assert "n" not in listed and listed["inspectable"] is False  # the list carries summaries, not bodies
        assert [e["message_id"] for e in await log.recent(2)] == ["m599", "m598"]
        assert (await log.get(ids[-1]))["n"] == 599 and await log.get(ids[0]) is None
        assert await log.get("not-an-id") is None
        assert [e["message_id"] for e in await log.after(ids[-3], 0.01)] == ["m598", "m599"]
        # several at once (the recorder's batch of a loop turn): one round trip, in order, each id usable
        many = await log.add_many([{"message_id": f"b{i}", "prompt": [{"role": "user", "content": "问"}], "n": i}
                                   for i in range(3)])
        assert many == sorted(many) and many[0] > ids[-1]
        assert [e["message_id"] for e in await log.recent(3)] == ["b2", "b1", "b0"]
        assert [(await log.get(i))["n"] for i in many] == [0, 1, 2] and (await log.get(many[1]))["prompt"][0]["content"] == "问"
        assert [e["message_id"] for e in await log.after(ids[-1], 0.01)] == ["b0", "b1", "b2"]
    finally:
        await client.delete(key, key + ":bodies")
        await client.aclose()


@pytest.mark.parametrize("which", ["cluster", "sentinel"])
async def test_the_event_stream_works_on_redis_cluster_and_sentinel(which: str, request: pytest.FixtureRequest) -> None:
    from wxhelper.storage.redis import RedisStore

    store = RedisStore(request.getfixturevalue(f"redis_{which}_url"))
    key = f"{store.prefix}{{console}}:events:{uuid.uuid4().hex}"
    try:
        log = RedisEventLog(store.client, key, maxlen=20)
        start = await log.last_id()
        ids = [await log.add({"message_id": f"m{i}", "prompt": [], "n": i}) for i in range(30)]
        assert [e["message_id"] for e in await log.recent(3)] == ["m29", "m28", "m27"] and await log.size() <= 120
        assert (await log.get(ids[-1]))["n"] == 29
        assert [e["message_id"] for e in await log.after(ids[-2], 0.01)] == ["m29"]
        assert len(await log.after(start, 0.01)) >= 20
        assert await log.after(ids[-1], 0.2) == []  # blocks up to the wait, then nothing
        many = await log.add_many([{"message_id": f"b{i}", "prompt": [], "n": i} for i in range(3)])
        assert [(await log.get(i))["n"] for i in many] == [0, 1, 2]
        assert [e["message_id"] for e in await log.after(ids[-1], 0.01)] == ["b0", "b1", "b2"]
    finally:
        await store.client.delete(key)
        await store.client.delete(key + ":bodies")
        await store.close()


async def test_the_recorder_adds_the_events_of_a_loop_turn_in_one_call(data_dir: Path) -> None:
    """Messages handled while the recorder was busy become events added together (one round trip
    over Redis); each keeps its own content, in order."""
    import asyncio

    from wxhelper import Host, Settings
    from wxhelper.events import EventRecorder

    calls: list[int] = []

    class Counting(MemoryEventLog):
        async def add_many(self, events):  # type: ignore[no-untyped-def]
            calls.append(len(events))
            return await super().add_many(events)

    async with Host(Settings(data_dir=str(data_dir), embedding="hashed", console_events=0)) as host:
        handled: list[tuple] = []
        host.add_observer(lambda *args: handled.append(args))
        replies = [await host.handle({"user_id": f"u{i}", "group_id": f"g{i}", "content": f"第{i}条：去日本旅游要签证吗"})
                   for i in range(5)]
        host.settings.console_events = 100
        recorder = EventRecorder(host)
        recorder._log = Counting(100)
        for args in handled:  # five messages observed within one turn of the loop
            recorder(*args)
        await recorder.flush()
        listed = await recorder.log.recent(10)
    assert calls == [5] and recorder.recorded == 5 and recorder.lost == 0
    assert [e["content"] for e in listed] == [f"第{i}条：去日本旅游要签证吗" for i in reversed(range(5))]
    assert {e["message_id"] for e in listed} == {r.message_id for r in replies}


async def test_the_recorder_waits_briefly_for_more_messages_and_keeps_their_times(data_dir: Path) -> None:
    """Messages observed one after another within BATCH_WAIT are added together (each was a round trip
    of its own before, even under load); every event keeps the time its message was handled."""
    import asyncio
    import time

    from wxhelper import Host, Settings
    from wxhelper import events as events_module
    from wxhelper.events import EventRecorder

    calls: list[int] = []

    class Counting(MemoryEventLog):
        async def add_many(self, events):  # type: ignore[no-untyped-def]
            calls.append(len(events))
            return await super().add_many(events)

    assert events_module.BATCH_WAIT >= 0.02
    async with Host(Settings(data_dir=str(data_dir), embedding="hashed", console_events=0)) as host:
        handled: list[tuple] = []
        host.add_observer(lambda *args: handled.append(args))
        for i in range(4):
            await host.handle({"user_id": f"u{i}", "content": f"第{i}条：三亚住哪里方便"})
        host.settings.console_events = 100
        recorder = EventRecorder(host)
        recorder._log = Counting(100)
        observed = []
        for args in handled:  # one message every few milliseconds, each in a loop turn of its own
            observed.append(time.time())
            recorder(*args)
            await asyncio.sleep(events_module.BATCH_WAIT / 8)
        await recorder.flush()
        listed = list(reversed(await recorder.log.recent(10)))
    assert sum(calls) == 4 and len(calls) < 4 and recorder.recorded == 4
    assert [e["content"] for e in listed] == [f"第{i}条：三亚住哪里方便" for i in range(4)]
    assert [e["time"] for e in listed] == pytest.approx(observed, abs=0.005)


async def test_an_observer_that_raises_never_fails_a_message(data_dir: Path) -> None:
    from wxhelper import Host, Settings

    seen: list[tuple[str, bool]] = []

    def broken(msg, reply, turn) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("observer bug")

    async with Host(Settings(data_dir=str(data_dir), embedding="hashed")) as host:
        host.add_observer(broken)
        host.add_observer(lambda msg, reply, turn: seen.append((reply.namespace, turn is None)))
        reply = await host.handle({"user_id": "olive", "group_id": "g", "content": "去日本旅游要签证吗"})
        command = await host.handle({"user_id": "olive", "group_id": "g", "content": "/分类"})
    assert reply.answered and command.command == "分类"
    assert seen == [(reply.namespace, False), (command.namespace, True)]  # the next observer still ran


async def test_a_failed_message_is_listed_with_its_error(data_dir: Path) -> None:
    from wxhelper import Host, InboundMessage, Settings
    from wxhelper.events import EventRecorder
    from wxhelper.storage import StoreError

    async with Host(Settings(data_dir=str(data_dir), embedding="hashed")) as host:
        recorder = EventRecorder(host)  # what the app does; the app calls failed() when the host raises
        msg = InboundMessage(user_id="pat", group_id="g", content=f"电话{PHONE}")
        recorder.failed(msg, StoreError("history store unavailable"))
        await host.handle({"user_id": "pat", "group_id": "g", "content": "你好"})
        await recorder.flush()
        listed = await recorder.log.recent(10)
    assert [e["failed"] for e in listed] == [None, "StoreError: history store unavailable"]
    failed = mask(listed[1])
    assert failed["message_id"] == msg.message_id and failed["answered"] is False and failed["inspectable"] is False
    assert MASKED in failed["content"] and recorder.stats()["recorded"] == 2


def test_mask_and_per_user() -> None:
    assert mask({"a": [f"电话{PHONE}", "订单号 20240512123456789"], "n": 3}) == \
        {"a": [f"电话{MASKED}", "订单号 20240512123456789"], "n": 3}
    ids = {"id": "1795251158647-0", "message_id": "m-ac43a556796542f6b3fb9e437e8d7b5d"}
    assert mask(ids) == ids  # identifiers stay whole, though their digits could parse as a number
    records = [Record(user_id=u, source_id="s", bot_id="b", content=c, timestamp=1.0, message_id=f"m{i}")
               for i, (u, c) in enumerate([("a", "123"), ("b", "0123456789"), ("a", "4567")])]
    assert per_user(records) == [{"user_id": "b", "records": 1, "chars": 10}, {"user_id": "a", "records": 2, "chars": 7}]


# -- package data: a wheel install serves the page ----------------------------------------------------------------------------
def test_a_wheel_install_serves_the_console(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("wxhelper-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("index.html", "app.js", "style.css"):
        assert f"wxhelper/server/admin_static/{name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import wxhelper.server.admin as a; print(a.STATIC_DIR)"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(site / "wxhelper" / "server" / "admin_static")  # the wheel's copy, not the source tree
    probe = ("import sys; from starlette.testclient import TestClient; from wxhelper.server.app import create_app; "
             "from wxhelper.settings import Settings; "
             f"c = TestClient(create_app(Settings(data_dir={str(tmp_path / 'data')!r})));"
             "r1 = c.get('/admin'); r2 = c.get('/admin/static/app.js');"
             "print(r1.status_code, r2.status_code, 'readSSE' in r2.text, 'Prompt inspector' in r1.text)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.split() == ["200", "200", "True", "True"], out.stderr[-2000:]


@pytest.mark.parametrize("which", ["memory", "redis", "cluster", "sentinel"])
async def test_forget_removes_exactly_the_matching_events(which: str, request: pytest.FixtureRequest) -> None:
    """Summaries and whole events both go; ids, order and following are unchanged for the rest."""
    store = client = None
    if which == "memory":
        log: MemoryEventLog | RedisEventLog = MemoryEventLog(50)
    else:
        from wxhelper.storage.redis import RedisStore

        store = RedisStore(request.getfixturevalue("redis_url" if which == "redis" else f"redis_{which}_url"))
        client = store.client
        log = RedisEventLog(client, f"{store.prefix}{{console}}:events:{uuid.uuid4().hex}", maxlen=50)
    try:
        ids = [await log.add({"message_id": f"m{i}", "source_id": "s1" if i % 3 == 0 else "s2",
                              "namespace": "car_client", "prompt": [], "n": i}) for i in range(9)]
        assert await log.forget(lambda e: e.get("source_id") == "s1") == 3
        assert [e["message_id"] for e in await log.recent(20)] == [f"m{i}" for i in reversed(range(9)) if i % 3]
        assert await log.get(ids[0]) is None and await log.get(ids[3]) is None and (await log.get(ids[4]))["n"] == 4
        assert await log.size() == 6
        assert [e["message_id"] for e in await log.after(ids[5], 0.01)] == ["m7", "m8"]
        assert await log.forget(lambda e: e.get("source_id") == "s1") == 0
        later = await log.add({"message_id": "m9", "source_id": "s1", "namespace": "car_client", "prompt": []})
        assert [e["message_id"] for e in await log.after(ids[8], 0.01)] == ["m9"] and (await log.get(later))["message_id"] == "m9"
    finally:
        if store is not None:
            assert isinstance(log, RedisEventLog)
            await client.delete(log.key, log.bodies)
            await store.close()

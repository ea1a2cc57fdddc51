"""The HTTP service, end to end: a real ``wxhelper serve`` subprocess on loopback, driven with plain httpx.

The server answers with the stand-in LLM (FakeLLM, ``OPENAI_BASE_URL``), keeps its SQLite store and
embedded Chroma in a temporary directory and requires a bearer token. One more server runs two
workers over a real Redis to show that they share histories and metrics.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

import fastapi  # noqa: E402,F401  (the [server] extra; scripts/test.sh installs it)
import prometheus_client  # noqa: E402,F401
import httpx  # noqa: E402  (the test extra)

from click.testing import CliRunner  # noqa: E402

from wxhelper.cli import main  # noqa: E402
from wxhelper.fake_llm import FakeLLM  # noqa: E402
from wxhelper.server.command import check_bind, is_loopback  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 64 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``python -m wxhelper serve`` in a subprocess; ``stop()`` sends SIGINT and waits."""

    def __init__(self, data_dir: Path, llm: FakeLLM, *, workers: int = 1, extra_env: Optional[dict] = None,
                 extra_args: tuple[str, ...] | list[str] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"serve-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WXHELPER_", "REDIS_", "OPENAI_"))}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update({"OPENAI_API_KEY": llm.api_key, "OPENAI_BASE_URL": llm.base_url,
                    "WXHELPER_DATA_DIR": str(data_dir), "WXHELPER_EMBEDDING": "hashed",
                    "WXHELPER_LOG_LEVEL": "WARNING", **(extra_env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wxhelper", "serve", "--port", str(self.port), "--workers", str(workers),
             *extra_args],
            env=env, cwd=str(data_dir), stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wxhelper serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"wxhelper serve did not answer in time:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("serve"), llm,
                    extra_env={"WXHELPER_API_TOKEN": TOKEN, "WXHELPER_MAX_BODY": str(MAX_BODY)})
    try:
        yield served
    finally:
        served.stop()


def _send(client: httpx.Client, **fields) -> dict:
    resp = client.post("/v1/messages", json=fields)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _send_on_fresh_connections(served: "Served", messages: list[dict]) -> list[dict]:
    """Each message on a connection of its own, so the kernel spreads them over the server's workers."""
    replies = []
    for fields in messages:
        with httpx.Client(base_url=served.base, headers=AUTH, timeout=30) as fresh:
            replies.append(_send(fresh, **fields))
    return replies


def _sse(resp: httpx.Response) -> list[tuple[str, dict]]:
    events, event, data = [], None, []
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event is not None:
            events.append((event, json.loads("\n".join(data))))
            event, data = None, []
    return events


# -- the end-to-end path a bot outside Python takes ------------------------------------------------------
def test_send_read_history_export_and_clear(client: httpx.Client) -> None:
    reply = _send(client, user_id="alice", group_id="e2e-group", namespace="car_client",
                  content="想卖一辆2019年的卡罗拉，6万公里，电话13812345678")
    assert reply["namespace"] == "car_client" and reply["source_id"] == "e2e-group"
    assert reply["text"].startswith("FAKE-LLM: ") and "卡罗拉" in reply["text"]
    assert reply["recorded"] == ["chat", "namespace"] and not reply["offline"]
    assert {"history", "retrieval", "assembly", "llm", "total"} <= set(reply["timings"])
    _send(client, user_id="bob", group_id="e2e-group", namespace="qzzp", content="试用期最长多久？")

    chat = client.get("/v1/namespaces/car_client/history",
                      params={"kind": "chat", "source_id": "e2e-group"}).json()
    assert [r["user_id"] for r in chat["records"]] == ["alice", "wxhelper-bot"]
    board = client.get("/v1/namespaces/二手车/history").json()  # by title, as users type it
    assert board["namespace"] == "car_client"
    assert any(r["content"].startswith("想卖一辆2019年的卡罗拉") for r in board["records"])
    limited = client.get("/v1/namespaces/car_client/history",
                         params={"kind": "chat", "source_id": "e2e-group", "max_records": 1}).json()
    assert len(limited["records"]) == 1

    exported = client.get("/v1/sources/e2e-group/export", params={"format": "json"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/json")
    assert exported.headers.get("transfer-encoding") == "chunked"  # streamed, not built whole
    rows = exported.json()
    assert {(r["history"], r["namespace"]) for r in rows} == {("chat", "car_client"), ("namespace", "car_client"),
                                                               ("chat", "qzzp")}
    assert all(r["source_id"] == "e2e-group" for r in rows) and len(rows) == 5
    as_csv = client.get("/v1/sources/e2e-group/export", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert len(table) == 5 and {r["content"] for r in table} == {r["content"] for r in rows}

    cleared = client.delete("/v1/sources/e2e-group/history", params={"namespace": "car_client"}).json()
    assert cleared["cleared"] == {"car_client": 2} and cleared["total"] == 2
    assert client.get("/v1/namespaces/car_client/history",
                      params={"kind": "chat", "source_id": "e2e-group"}).json()["records"] == []
    left = client.get("/v1/sources/e2e-group/export").json()
    assert {(r["history"], r["namespace"]) for r in left} == {("namespace", "car_client"), ("chat", "qzzp")}
    everything = client.delete("/v1/sources/e2e-group/history").json()
    assert everything["total"] == 2 and everything["cleared"]["qzzp"] == 2
    assert client.get("/v1/sources/nobody-at-all/export").json() == []


def test_stream_sends_chunks_then_the_whole_reply(client: httpx.Client) -> None:
    body = {"user_id": "carol", "namespace": "lvyou", "content": "去日本旅游要签证吗，五一出发"}
    with client.stream("POST", "/v1/messages", params={"stream": "true"}, json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _sse(resp)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "reply" and kinds.count("reply") == 1 and kinds.count("chunk") >= 3
    reply = events[-1][1]
    assert "".join(d["text"] for e, d in events if e == "chunk") == reply["text"]
    assert reply["text"] == "FAKE-LLM: " + body["content"] and reply["source_id"] == "carol"
    history = client.get("/v1/namespaces/lvyou/history", params={"kind": "chat", "source_id": "carol"}).json()
    assert [r["content"] for r in history["records"]] == [body["content"], reply["text"]]


def test_a_client_that_hangs_up_mid_stream_still_gets_its_message_recorded(client: httpx.Client) -> None:
    content = "三亚住哪里方便？" + "请详细说说，" * 200
    body = {"user_id": "frank", "namespace": "lvyou", "content": content, "message_id": "hang-up-1"}
    with client.stream("POST", "/v1/messages", params={"stream": "true"}, json=body) as resp:
        assert resp.status_code == 200
        next(resp.iter_lines())  # the first event line, then hang up
    deadline = time.monotonic() + 10
    while True:
        records = client.get("/v1/namespaces/lvyou/history",
                             params={"kind": "chat", "source_id": "frank"}).json()["records"]
        if len(records) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [r["message_id"] for r in records] == ["hang-up-1", "hang-up-1#reply"]
    again = _send(client, **body)  # a retry gets the whole reply, and writes nothing twice
    assert again["text"] == "FAKE-LLM: " + content


def test_friend_circle_posts_are_recorded_not_answered(client: httpx.Client) -> None:
    reply = _send(client, user_id="dave", channel="friend_circle", namespace="lvyou",
                  content="云南自驾拼车，电话13512345678")
    assert reply["answered"] is False and reply["recorded"] == ["friend_circle"]
    circle = client.get("/v1/namespaces/lvyou/history", params={"kind": "friend_circle"}).json()
    assert any(r["user_id"] == "dave" for r in circle["records"])


def test_namespaces_and_probes(client: httpx.Client) -> None:
    body = client.get("/v1/namespaces").json()
    assert {n["name"] for n in body["namespaces"]} >= {"聊天", "car_client", "qzzp", "lvyou"}
    assert all(p["status"] == "loaded" for p in body["plugins"])
    assert httpx.get(client.base_url.join("/healthz")).json()["status"] == "ok"  # no token needed
    ready = httpx.get(client.base_url.join("/readyz"))
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["store"]["status"] == checks["chroma"]["status"] == checks["plugins"]["status"] == "ok"


# -- bad input, auth, limits --------------------------------------------------------------------------------
@pytest.mark.parametrize("body, loc", [
    ({"content": "hi"}, ["body", "user_id"]),
    ({"user_id": "u"}, ["body", "content"]),
    ({"user_id": "u", "content": "   "}, ["body", "content"]),
    ({"user_id": "u", "content": "hi", "surprise": 1}, ["body", "surprise"]),
    ({"user_id": "u", "content": "hi", "channel": "email"}, ["body", "channel"]),
    ({"user_id": "u", "content": "hi", "namespace": "no-such-namespace"}, ["body", "namespace"]),
    ({"user_id": "x" * 300, "content": "hi"}, ["body", "user_id"]),
])
def test_bad_messages_get_422_with_field_errors(client: httpx.Client, body: dict, loc: list) -> None:
    resp = client.post("/v1/messages", json=body)
    assert resp.status_code == 422, resp.text
    assert loc in [e["loc"] for e in resp.json()["detail"]]


def test_both_routes_of_post_messages_answer_alike(client: httpx.Client) -> None:
    """A valid JSON message without query parameters takes a lean route; everything else FastAPI's documented
    one (reached here with ``?stream=false``): what they answer, errors included, is the same."""
    body = {"user_id": "gina", "namespace": "qzzp", "content": "试用期最长多久？", "message_id": "both-routes-1"}
    lean = client.post("/v1/messages", json=body)
    documented = client.post("/v1/messages", params={"stream": "false"}, json=body)  # the same message: its reply
    assert lean.status_code == documented.status_code == 200
    assert lean.headers["content-type"] == documented.headers["content-type"] == "application/json"
    assert int(lean.headers["content-length"]) == len(lean.content)
    first, again = lean.json(), documented.json()
    assert first["text"] == "FAKE-LLM: " + body["content"] and first["recorded"] == ["chat"]
    assert {k: v for k, v in first.items() if k != "timings"} == {k: v for k, v in again.items() if k != "timings"}
    other = dict(body, message_id="both-routes-2", content="社保断缴有什么影响？")
    documented_first = client.post("/v1/messages", params={"stream": "false"}, json=other).json()
    assert set(documented_first) == set(first) and documented_first["text"] == "FAKE-LLM: " + other["content"]
    for bad in ({"user_id": "u", "content": "hi", "namespace": "no-such-namespace"}, {"content": "hi"},
                {"user_id": "u", "content": "hi", "surprise": 1}, {"user_id": "u", "content": "hi", "timestamp": "x"},
                [1, 2], "text"):
        a = client.post("/v1/messages", json=bad)
        b = client.post("/v1/messages", params={"stream": "false"}, json=bad)
        assert a.status_code == b.status_code == 422 and a.json() == b.json(), (bad, a.text, b.text)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        a = client.post("/v1/messages", content=json.dumps(body), headers={"content-type": content_type})
        b = client.post("/v1/messages", params={"stream": "false"}, content=json.dumps(body),
                        headers={"content-type": content_type})
        assert a.status_code == b.status_code == 422 and a.json() == b.json()


def test_invalid_json_and_invalid_utf8_get_422(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    bad_utf8 = client.post("/v1/messages", content=b'{"user_id": "u", "content": "\xff\xfe"}', headers=headers)
    assert bad_utf8.status_code == 422
    assert bad_utf8.json()["detail"][0]["loc"] == ["body"] and "UTF-8" in bad_utf8.json()["detail"][0]["msg"]
    broken = client.post("/v1/messages", content=b'{"user_id": ', headers=headers)
    assert broken.status_code == 422
    chat_without_source = client.get("/v1/namespaces/qzzp/history", params={"kind": "chat"})
    assert chat_without_source.status_code == 422
    assert chat_without_source.json()["detail"][0]["loc"] == ["query", "source_id"]
    assert client.get("/v1/sources/x/export", params={"format": "xml"}).status_code == 422
    assert client.get("/v1/namespaces/nowhere/history").status_code == 404


@pytest.mark.parametrize("path", ["/v1/namespaces", "/metrics", "/openapi.json", "/v1/sources/s/export"])
def test_auth_is_required_except_for_probes(server: Served, path: str) -> None:
    assert httpx.get(server.base + path).status_code == 401
    wrong = httpx.get(server.base + path, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(server.base + path, headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    assert httpx.get(server.base + path, headers=AUTH).status_code == 200
    posted = httpx.post(server.base + "/v1/messages", json={"user_id": "u", "content": "hi"})
    assert posted.status_code == 401
    for probe in ("/healthz", "/readyz"):
        assert httpx.get(server.base + probe).status_code == 200


def test_bodies_over_the_limit_get_413(client: httpx.Client) -> None:
    big = json.dumps({"user_id": "u", "content": "长" * MAX_BODY}).encode()
    resp = client.post("/v1/messages", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "WXHELPER_MAX_BODY" in resp.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"user_id": "u", "content": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    streamed = client.post("/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    just_under = json.dumps({"user_id": "u", "content": "a" * (MAX_BODY - 100)}).encode()
    ok = client.post("/v1/messages", content=just_under, headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["truncated"] is True  # over MAX_SINGLE_CHAR, under the body limit


def test_metrics(client: httpx.Client) -> None:
    _send(client, user_id="erin", namespace="qzzp", content="招聘前端工程师，电话13712345678")
    text = client.get("/metrics").text
    assert 'wxhelper_messages_total{namespace="qzzp",outcome="answered"}' in text
    for stage in ("assembly", "retrieval", "llm", "overhead"):
        assert f'wxhelper_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert "wxhelper_inbox_depth " in text
    assert "# TYPE wxhelper_degradations_total counter" in text
    assert 'wxhelper_rejected_requests_total{reason="invalid"}' in text or "wxhelper_rejected_requests" in text


def test_startup_says_how_it_is_protected(server: Served) -> None:
    log = server.log.read_text()
    assert "bearer token required" in log and "1 worker(s)" in log


# -- the command's refusals (no server started) ------------------------------------------------------
def test_no_token_means_loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    assert "loopback only" in check_bind("127.0.0.1", token_set=False, allow_unauthenticated=False)
    assert "NONE" in check_bind("0.0.0.0", token_set=False, allow_unauthenticated=True)
    monkeypatch.delenv("WXHELPER_API_TOKEN", raising=False)
    monkeypatch.setenv("WXHELPER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--no-index"])
    assert result.exit_code != 0 and "WXHELPER_API_TOKEN" in result.output
    monkeypatch.setenv("WXHELPER_API_TOKEN", "  ")  # blank is no token, not a token everyone knows
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--no-index"])
    assert result.exit_code != 0 and "WXHELPER_API_TOKEN" in result.output


def test_several_workers_over_sqlite_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WXHELPER_STORE", "REDIS_URL", "REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WXHELPER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["serve", "--workers", "2", "--no-index"])
    assert result.exit_code != 0
    assert "--workers 2" in result.output and "SQLite" in result.output and "redis://" in result.output


# -- the OpenAPI spec, fuzzed ---------------------------------------------------------------------------------
def test_openapi_spec_survives_schemathesis(server: Served) -> None:
    import schemathesis  # the test extra installs it
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(server.base + "/openapi.json", headers=AUTH)
    # No 5xx, and every answer is one the spec documents. Not negative_data_rejection: unknown query
    # parameters are ignored, as most HTTP APIs do.
    wanted = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
              checks.response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/messages", "GET /v1/namespaces", "GET /v1/namespaces/{namespace}/history",
        "DELETE /v1/sources/{source_id}/history", "GET /v1/sources/{source_id}/export",
        "GET /healthz", "GET /readyz", "GET /metrics"}
    calls = 0
    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case) -> None:  # type: ignore[no-untyped-def]
                nonlocal calls
                calls += 1
                response = case.call(base_url=server.base, headers=AUTH, timeout=30)
                case.validate_response(response, checks=wanted)  # raises, with a curl line to reproduce

            try:
                run()
            except Unsatisfiable:  # e.g. no way to make GET /healthz invalid
                pass
    assert calls > 200


# -- two workers over Redis ---------------------------------------------------------------------------------
def test_two_workers_over_redis_share_everything(tmp_path: Path, llm: FakeLLM, redis_url: str) -> None:
    served = Served(tmp_path, llm, workers=2, extra_env={"WXHELPER_STORE": redis_url, "WXHELPER_API_TOKEN": TOKEN})
    try:
        assert "2 worker(s)" in served.log.read_text()
        with httpx.Client(base_url=served.base, headers=AUTH, timeout=30) as c:
            _send_on_fresh_connections(served, [{"user_id": f"w{i}", "group_id": "two-workers", "namespace": "qzzp",
                                                 "content": f"第{i}条：试用期多久"} for i in range(12)])
            records = c.get("/v1/namespaces/qzzp/history",
                            params={"kind": "chat", "source_id": "two-workers", "max_records": 100}).json()["records"]
            assert len(records) == 24  # every message and reply, whichever worker handled it
            total = 0.0
            for line in c.get("/metrics").text.splitlines():
                if line.startswith('wxhelper_messages_total{namespace="qzzp",outcome="answered"}'):
                    total = float(line.rsplit(" ", 1)[1])
            assert total == 12  # summed over both workers' values
    finally:
        served.stop()


# -- each worker accepts on a socket of its own (SO_REUSEPORT) ------------------------------------------------
def _tcp_sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, inode, remote port) of every TCP socket on local ``port``, from /proc/net (states: 0A listen, 01 established)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.append((fields[3], int(fields[9]), int(fields[2].rsplit(":", 1)[1], 16)))
    return found


def _worker_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if ppid == parent and b"spawn_main" in cmdline:
                pids.append(int(entry.name))
    return sorted(pids)


def _socket_owner(pids: list[int]) -> dict[int, int]:
    """Socket inode -> the pid (of ``pids``) holding it."""
    owner = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[int(link[8:-1])] = pid
    return owner


def _listeners(served: Served) -> dict[int, int]:
    """Listening socket inode -> worker pid, once every worker listens."""
    deadline = time.monotonic() + 60
    while True:
        workers = _worker_pids(served.proc.pid)
        owner = _socket_owner(workers)
        listening = {inode: owner.get(inode, 0) for state, inode, _ in _tcp_sockets(served.port) if state == "0A"}
        if len(workers) == 2 and len(listening) == 2 and all(listening.values()):
            return listening
        if time.monotonic() > deadline:
            return listening
        time.sleep(0.2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux")
def test_two_workers_each_listen_and_keep_alive_connections_are_spread(tmp_path: Path, llm: FakeLLM,
                                                                     redis_url: str) -> None:
    """A bot opening its keep-alive connections at once: with one shared socket 24-30 of 32 landed on one worker."""
    served = Served(tmp_path, llm, workers=2, extra_env={"WXHELPER_STORE": redis_url, "WXHELPER_API_TOKEN": TOKEN})
    try:
        assert "a socket of its own" in served.log.read_text()
        listening = _listeners(served)
        assert len(listening) == 2 and len(set(listening.values())) == 2, listening  # one socket per worker
        conns = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(64)]
        try:
            request = (f"GET /v1/namespaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode()
            for c in conns:
                c.sendall(request)
            for c in conns:  # each connection answered: it was accepted by a worker
                c.settimeout(30)
                assert c.recv(64).startswith(b"HTTP/1.1 200")
            mine = {c.getsockname()[1] for c in conns}
            owner = _socket_owner(sorted(set(listening.values())))
            per_worker: dict[int, int] = {}
            for state, inode, remote in _tcp_sockets(served.port):
                if state == "01" and remote in mine:
                    per_worker[owner[inode]] = per_worker.get(owner[inode], 0) + 1
            assert sum(per_worker.values()) == 64, per_worker
            # the kernel's hash: each gets Binomial(64, 1/2), under 16 with probability ~6e-5
            assert len(per_worker) == 2 and min(per_worker.values()) >= 16, per_worker
        finally:
            for c in conns:
                c.close()
    finally:
        served.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux")
def test_a_killed_worker_is_replaced_and_listens_again(tmp_path: Path, llm: FakeLLM, redis_url: str) -> None:
    served = Served(tmp_path, llm, workers=2, extra_env={"WXHELPER_STORE": redis_url, "WXHELPER_API_TOKEN": TOKEN})
    try:
        before = _listeners(served)
        assert len(before) == 2
        victim = sorted(set(before.values()))[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            after = _listeners(served)
            if len(after) == 2 and victim not in after.values():
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.5)
        assert len(set(after.values())) == 2
        replies = _send_on_fresh_connections(served, [{"user_id": f"k{i}", "group_id": "killed", "namespace": "qzzp",
                                                       "content": f"第{i}条"} for i in range(8)])
        assert len(replies) == 8 and all(r["source_id"] == "killed" for r in replies)
    finally:
        served.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; a socket per worker is Linux's")
def test_shared_socket_is_one_listener_and_a_taken_port_is_refused(tmp_path: Path, llm: FakeLLM,
                                                                   redis_url: str) -> None:
    served = Served(tmp_path, llm, workers=2, extra_env={"WXHELPER_STORE": redis_url, "WXHELPER_API_TOKEN": TOKEN},
                    extra_args=["--shared-socket"])
    try:
        time.sleep(1)
        assert [state for state, _, _ in _tcp_sockets(served.port)].count("0A") == 1  # uvicorn's one socket
        assert "a socket of its own" not in served.log.read_text()
        _send_on_fresh_connections(served, [{"user_id": "s", "group_id": "shared", "content": "你好"}])
        # the port is served: a second `wxhelper serve --workers 2` on it is refused, not joined to it
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WXHELPER_", "REDIS_"))}
        env.update({"WXHELPER_STORE": redis_url, "WXHELPER_API_TOKEN": TOKEN, "WXHELPER_DATA_DIR": str(tmp_path)})
        second = subprocess.run([sys.executable, "-m", "wxhelper", "serve", "--port", str(served.port), "--workers",
                                 "2", "--no-index"], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        assert f"cannot serve 127.0.0.1:{served.port}" in second.stderr and "already accepts" in second.stderr
    finally:
        served.stop()


def test_a_uvicorn_whose_supervisor_differs_gets_the_shared_socket(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from uvicorn.supervisors import multiprocess

    from wxhelper.server import workers
    from wxhelper.server.command import _own_sockets_here

    if sys.platform.startswith("linux"):
        assert workers.reuse_port_available() is None and _own_sockets_here()
    monkeypatch.setattr(workers, "_Multiprocess", lambda config, target, sockets: None)  # uvicorn < 0.30's signature
    assert "differs" in (workers.reuse_port_available() or "")
    assert not _own_sockets_here()
    assert "share one socket" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(workers, "OwnSocketProcess", None)
    assert workers.reuse_port_available() is not None
    original = multiprocess.Process
    with pytest.raises(RuntimeError), workers._workers_are(object):  # the supervisor's own class comes back
        assert multiprocess.Process is object
        raise RuntimeError("supervisor failed")
    assert multiprocess.Process is original

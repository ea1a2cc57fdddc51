"""Server mode: a real ``chroma run`` on loopback (the CLI ships with the chromadb package).

Indexing, search and the host's answer go through ``chromadb.HttpClient``; a server that is
stopped, or a wrong port, degrades the answer to one without knowledge, quickly, never a crash.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from servers import stop_process

from wxhelper import Host, InboundMessage, Settings
from wxhelper.knowledge import KnowledgeBase
from wxhelper.knowledge.index import collection_name

CHROMA = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChromaServer:
    """``chroma run --path <tmp> --host 127.0.0.1 --port <free>``; stopped by :meth:`stop`."""

    def __init__(self) -> None:
        if not Path(CHROMA).exists():
            raise RuntimeError(f"the chroma CLI (from the chromadb package) is not at {CHROMA}")
        self.dir = Path(tempfile.mkdtemp(prefix="wxhelper-chroma-"))
        self.port = free_port()
        self.log = open(self.dir / "chroma.log", "wb")
        self.proc = subprocess.Popen([CHROMA, "run", "--path", str(self.dir / "db"), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited: {(self.dir / 'chroma.log').read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("chroma run did not answer its heartbeat within 60 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def chroma_server() -> Iterator[ChromaServer]:
    server = ChromaServer()
    try:
        yield server
    finally:
        server.stop()


def _settings(data_dir: Path, url: str, **kw) -> Settings:
    return Settings(data_dir=data_dir, chroma_url=url, load_plugins="wxhelper-car-client", **kw)


async def test_index_search_and_answer_against_a_real_chroma_server(chroma_server, data_dir):
    settings = _settings(data_dir, chroma_server.url)
    async with Host(settings) as host:
        ns = host.namespace("car_client")
        summary = (await host.index("car_client"))[0]
        assert summary.total >= 100 and summary.added == summary.total
        assert "use-m3" in summary.embedding
        # the server holds the collection, the data dir holds no embedded Chroma
        assert not (data_dir / "chroma").exists()
        again = (await host.index("car_client"))[0]
        assert again.unchanged
        passages = await host.knowledge.search(ns, "车子过户要带啥", 3, 5000)
        assert passages and passages[0].source == "transfer-process.md"
        reply = await host.handle(InboundMessage(user_id="u1", content="二手车过户需要准备哪些材料？", namespace="car_client"))
        assert "knowledge" not in reply.degraded
        assert any(p.source == "transfer-process.md" for p in reply.retrieved)
    # a fresh client (another process, say) finds the collection with our embedding
    kb = KnowledgeBase(settings)
    status = kb.status(ns)
    assert status["indexed"] is True and status["stored"] == summary.total
    collection = kb.client().get_collection(collection_name("car_client"))
    assert type(collection.configuration["embedding_function"]).__name__ == "USEEmbedding"


async def test_a_stopped_server_degrades_quickly_and_recovers_nothing_crashes(data_dir):
    server = ChromaServer()
    try:
        settings = _settings(data_dir, server.url, chroma_timeout=2.0)
        async with Host(settings) as host:
            await host.index("car_client")
            server.stop()
            started = time.monotonic()
            reply = await host.handle(InboundMessage(user_id="u1", content="过户要带什么", namespace="car_client"))
            assert time.monotonic() - started < 10
            assert "knowledge" in reply.degraded and reply.retrieved == []
            assert reply.text  # still an answer (offline, without knowledge)
    finally:
        server.stop()


async def test_a_wrong_port_degrades_quickly(data_dir, caplog):
    settings = _settings(data_dir, f"http://127.0.0.1:{free_port()}", chroma_timeout=1.0)
    async with Host(settings) as host:
        host.knowledge.resolved  # load the embedding first: the time measured is Chroma's
        started = time.monotonic()
        reply = await host.handle(InboundMessage(user_id="u1", content="过户要带什么", namespace="car_client"))
        assert time.monotonic() - started < 5
        assert "knowledge" in reply.degraded
        assert reply.text
        ns = host.namespace("car_client")
        status = host.knowledge.status(ns)
        assert status["indexed"] is False and "error" in status
    assert any("knowledge search" in r.getMessage() for r in caplog.records)


def test_wxhelper_index_says_clearly_when_the_server_is_unreachable(data_dir):
    import os

    env = dict(os.environ, WXHELPER_DATA_DIR=str(data_dir), WXHELPER_LOG_LEVEL="WARNING",
               CHROMA_URL=f"http://127.0.0.1:{free_port()}", WXHELPER_LOAD_PLUGINS="wxhelper-car-client")
    out = subprocess.run([sys.executable, "-m", "wxhelper", "index", "car_client"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=data_dir)
    assert out.returncode != 0
    assert "cannot be reached" in out.stderr and "CHROMA_URL" in out.stderr
    assert "Traceback" not in out.stderr


def test_question_lines_work_against_a_real_chroma_server(chroma_server, tmp_path):
    """Server mode: the blended vectors and the questions (one metadata string) live in the server;
    a question that only the answer's question line matches finds it, and the text stays the passage's."""
    from test_corpus_questions import SECTIONS, make_ns

    ns = make_ns(tmp_path, {"car.md": SECTIONS["car.md"].format(
        q="<!-- 问法: 车被大水淹过咋认出来 | 怎么认出泡过水的车 -->")}, name="server-questions")
    kb = KnowledgeBase(Settings(data_dir=tmp_path, chroma_url=chroma_server.url, embedding="use", vector_cache="off"))
    assert kb.index(ns).added == 4
    assert not (tmp_path / "chroma").exists()
    found = kb.search_sync(ns, "被大水淹过的车咋认出来", 2, 10000)
    assert found[0].heading == "用车常识 › 泡水车鉴别"
    assert found[0].text == "检查座椅滑轨和安全带根部有没有锈迹、泥沙。"
    stored = KnowledgeBase(Settings(data_dir=tmp_path, chroma_url=chroma_server.url)).client() \
        .get_collection(collection_name("server-questions")).get(include=["metadatas"])
    questions = [m.get("questions") for m in stored["metadatas"]]
    assert sorted(q for q in questions if q) == ["车被大水淹过咋认出来\n怎么认出泡过水的车"]

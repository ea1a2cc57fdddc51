"""Shared fixtures: a temporary data directory, the stand-in LLM, and real servers started on loopback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from wxhelper.testing import FakeLLM

# Tests must not read a developer's .env or environment for the host's settings.
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WXHELPER_STORE", "REDIS_URL", "REDIS_HOST", "CHROMA_URL",
              "WXHELPER_LOAD_PLUGINS", "WXHELPER_TEMPLATES_DIR", "WXHELPER_DATA_DIR", "WXHELPER_EMBEDDING"):
    os.environ.pop(_name, None)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM(reply=lambda body: "LLM-ANSWER: " + body["messages"][-1]["content"]) as llm:
        yield llm


# --- real Redis servers (issue 3): started once per session, stopped at its end ----------------
@pytest.fixture(scope="session")
def redis_server() -> Iterator["RedisServer"]:
    from servers import RedisServer

    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: "RedisServer") -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    from servers import RedisCluster

    cluster = RedisCluster(3)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel_url() -> Iterator[str]:
    from servers import RedisSentinel

    sentinel = RedisSentinel()
    try:
        yield sentinel.url
    finally:
        sentinel.stop()


# -- a real `wxhelper serve` (tests/test_server.py, test_admin.py, test_console_browser.py) -------------
# Each of those modules defines its own module-scoped ``server`` (the env it needs); these two are shared.

@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    """One stand-in LLM per module, streaming in small chunks so SSE tests see several pieces."""
    with FakeLLM(chunk_size=4) as fake:
        yield fake


@pytest.fixture()
def client(server):  # type: ignore[no-untyped-def]
    """An httpx client with the test token against the module's ``server``."""
    import httpx

    from test_server import AUTH

    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as c:
        yield c

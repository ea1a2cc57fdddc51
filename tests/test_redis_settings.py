"""Choosing the history store from Settings (WXHELPER_STORE > REDIS_URL > REDIS_HOST > SQLite) and user weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from wxhelper.settings import Settings
from wxhelper.storage import open_store
from wxhelper.storage.redis import RedisStore


def test_store_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    assert Settings(data_dir=tmp_path).store_url.startswith("sqlite:///")
    assert Settings(redis_host="cache").store_url == "redis://cache:6379/0?socket_timeout=2"
    assert (Settings(redis_host="cache", redis_port=6380, redis_db=3, redis_password="p@ss:/").store_url
            == "redis://:p%40ss%3A%2F@cache:6380/3?socket_timeout=2")
    assert Settings(redis_host="cache", redis_url="redis://other:1/2").store_url == "redis://other:1/2?socket_timeout=2"
    assert (Settings(store="redis+cluster://a:1,b:2", redis_url="redis://other:1/2",
                     redis_socket_timeout=0.5).store_url == "redis+cluster://a:1,b:2?socket_timeout=0.5")
    assert Settings(store="sqlite:///x.db", redis_host="cache").store_url == "sqlite:///x.db"
    assert Settings(redis_url="redis://h/0?prefix=bot1:&socket_timeout=9").store_url.endswith("socket_timeout=9")


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_HOST", "10.0.0.5")
    monkeypatch.setenv("REDIS_PASSWORD", "secret")
    monkeypatch.setenv("WXHELPER_USER_WEIGHTS", "vip1=3, vip2=2.5")
    monkeypatch.setenv("WXHELPER_FAIR_ALGORITHM", "hybrid")
    s = Settings()
    assert s.store_url == "redis://:secret@10.0.0.5:6379/0?socket_timeout=2"
    assert s.user_weight_map == (("vip1", 3.0), ("vip2", 2.5))
    assert s.fair_algorithm == "hybrid"


@pytest.mark.parametrize("bad", ["vip1", "vip1=x", "=3", "vip1=0", "vip1=-2", "vip1=inf"])
def test_bad_weights_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(user_weights=bad)


@pytest.mark.parametrize("name", ["weighted", "time_decay", "quality", "hybrid", "max_min", "seed"])
def test_every_algorithm_is_selectable(name: str) -> None:
    assert Settings(fair_algorithm=name).fair_algorithm == name


def test_store_urls_open_the_redis_backend() -> None:
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1,127.0.0.1:2",
                "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2?socket_timeout=0.5&prefix=x:"):
        store = open_store(url)
        assert isinstance(store, RedisStore) and store.scheme == url.split("://")[0]
    store = open_store("redis+sentinel://127.0.0.1:26379/mymaster/2?socket_timeout=0.5&prefix=x:")
    assert store.timeout == 0.5 and store.prefix == "x:"
    with pytest.raises(ValueError):
        open_store("redis+sentinel://127.0.0.1:26379")

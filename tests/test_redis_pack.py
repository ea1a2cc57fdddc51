"""Commands packed by hiredis (wxhelper.storage.redis_pack): the same bytes as redis-py's packer, or its own path."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given, settings, strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from wxhelper.storage.redis import RedisStore
from wxhelper.storage.redis_pack import HiredisPacking, hiredis_packing_class

plain = Connection()
fast = hiredis_packing_class(Connection)()

ARGS = st.lists(st.one_of(st.text(), st.binary(), st.integers(), st.floats(allow_nan=False),
                          st.floats(allow_infinity=False), st.just(float("nan"))), max_size=80)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["EVALSHA", "SET", "XADD", "get"]), args=ARGS)
def test_the_bytes_are_redis_pys(name, args):
    assert b"".join(fast.pack_command(name, *args)) == b"".join(plain.pack_command(name, *args))


def test_large_values_and_unicode_are_the_same_bytes():
    args = ("FCALL", "中文" * 5000, b"\x00" * 7000, 2 ** 80, -0.0, 1e-7)
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("args", [("SET", "k", Color.RED), ("SET", "k", memoryview(b"ab")), ("CONFIG GET", "x"),
                                  (b"SET", "k", "v")])
def test_what_the_c_packer_would_write_differently_takes_redis_pys_path(args):
    assert fast.pack_command(*args) == plain.pack_command(*args)


@pytest.mark.parametrize("bad", [True, None, [1]])
def test_redis_pys_errors_stay(bad):
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", bad)


def test_a_non_default_encoding_takes_redis_pys_path():
    latin = hiredis_packing_class(Connection)(encoding="latin-1")
    assert latin.pack_command("SET", "k", "é") == Connection(encoding="latin-1").pack_command("SET", "k", "é")


async def test_the_store_packs_with_hiredis_and_round_trips(redis_url):
    store = RedisStore.from_url(redis_url)
    try:
        assert issubclass(store.client.connection_pool.connection_class, HiredisPacking)
        await store.client.set("wx-test:pack", "中文值")
        assert await store.client.get("wx-test:pack") == "中文值".encode()
        await store.client.delete("wx-test:pack")
    finally:
        await store.close()

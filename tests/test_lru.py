"""The knowledge base's vector caches (knowledge/lru.py)."""

import threading

import numpy as np

from wxhelper.knowledge.lru import LRU


def test_least_recently_used_goes_first_when_over_the_count():
    cache: LRU[int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_bounded_by_bytes_and_a_key_keeps_its_first_value():
    cache: LRU[np.ndarray] = LRU(3 * 512 * 4, weigh=lambda v: v.nbytes)
    vectors = {k: np.full(512, i, dtype=np.float32) for i, k in enumerate("abcd")}
    for key, vec in vectors.items():
        cache.put(key, vec)
    assert len(cache) == 3 and cache.get("a") is None
    cache.put("d", np.zeros(512, dtype=np.float32))
    assert cache.get("d") is vectors["d"]
    cache.clear()
    assert len(cache) == 0 and cache.get("d") is None
    cache.put("e", vectors["a"])  # the weight was reset: room for three again
    cache.put("f", vectors["b"])
    cache.put("g", vectors["c"])
    assert len(cache) == 3


def test_threads_never_exceed_the_limit():
    cache: LRU[np.ndarray] = LRU(64 * 16, weigh=lambda v: v.nbytes)

    def work(base: int) -> None:
        for i in range(500):
            cache.put((base, i), np.zeros(4, dtype=np.float32))
            cache.get((base, i - 3))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 64

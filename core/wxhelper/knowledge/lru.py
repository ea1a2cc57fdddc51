"""A small thread-safe LRU for vectors, bounded by a count or by bytes.

The knowledge base keeps two per process (passage vectors and question vectors); both are read
from the event loop and from worker threads, hence the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Optional, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """Least recently used entries go first once the summed ``weigh(value)`` exceeds ``limit``."""

    def __init__(self, limit: int, weigh: Callable[[V], int] = lambda _value: 1) -> None:
        self.limit = limit
        self._weigh = weigh
        self._items: "OrderedDict[Hashable, V]" = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value``; a key already held keeps its value (a key names one value for good)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            self._items[key] = value
            self._weight += self._weigh(value)
            while self._weight > self.limit and self._items:
                _, old = self._items.popitem(last=False)
                self._weight -= self._weigh(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0

    def __len__(self) -> int:
        return len(self._items)

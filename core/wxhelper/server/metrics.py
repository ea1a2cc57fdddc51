"""Prometheus metrics of the HTTP service (prometheus-client).

| metric | type | labels |
|---|---|---|
| ``wxhelper_messages_total`` | counter | ``namespace``, ``outcome`` (answered, offline, recorded, failed) |
| ``wxhelper_stage_duration_seconds`` | histogram | ``stage``: history, retrieval, assembly, llm, record, total, overhead |
| ``wxhelper_degradations_total`` | counter | ``dependency`` (llm, knowledge, plugin:<name>) |
| ``wxhelper_rejected_requests_total`` | counter | ``reason`` (unauthorized, too_large, invalid) |
| ``wxhelper_inbox_depth`` | gauge | — (messages waiting in the host's inbox; 0 without one) |

``overhead`` is ``total`` minus ``llm``: what the host itself spent on a message.

With several workers (``wxhelper serve --workers N``) the command sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, every worker writes its
values there, and a scrape of any worker sums them all (prometheus-client's
multiprocess mode). The inbox depth is read at scrape time from a callable.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Awaitable, Callable, Iterable, Optional, Union

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily

from ..messages import Reply

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGES = ("history", "retrieval", "assembly", "llm", "record", "total")

disable_created_metrics()  # no *_created samples: they double the scrape for nothing a dashboard uses

DepthSource = Callable[[], Union[float, int, None, Awaitable[Union[float, int, None]]]]


class _InboxDepth:
    """A collector whose value is refreshed from a callable before each scrape."""

    def __init__(self) -> None:
        self.value = 0.0

    def collect(self) -> Iterable[Any]:
        yield GaugeMetricFamily("wxhelper_inbox_depth", "Messages waiting in the host's inbox", value=self.value)

    def describe(self) -> Iterable[Any]:
        return self.collect()


class Metrics:
    """Every metric of one app; a registry of its own, so several apps in one process never clash."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, inbox_depth: Optional[DepthSource] = None) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        target = None if self.multiprocess else self.registry
        self.messages = Counter("wxhelper_messages", "Messages handled, by namespace and outcome",
                                ["namespace", "outcome"], registry=target)
        self.stages = Histogram("wxhelper_stage_duration_seconds",
                                "Seconds per stage of a message (overhead = total - llm)", ["stage"],
                                buckets=BUCKETS, registry=target)
        self.degradations = Counter("wxhelper_degradations", "Dependencies that failed while handling a message",
                                    ["dependency"], registry=target)
        self.rejected = Counter("wxhelper_rejected_requests", "Requests refused before the host saw them",
                                ["reason"], registry=target)
        self._stage = {stage: self.stages.labels(stage) for stage in (*STAGES, "overhead")}
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
        self.inbox = _InboxDepth()
        self.registry.register(self.inbox)
        self.inbox_source = inbox_depth

    def observe(self, reply: Reply) -> None:
        """Count one handled message and observe its stage timings (``Reply.timings``, in ms)."""
        if not reply.answered:
            outcome = "recorded"
        elif reply.offline:
            outcome = "offline"
        else:
            outcome = "answered"
        self.messages.labels(reply.namespace, outcome).inc()
        timings = reply.timings
        for stage, ms in timings.items():
            hist = self._stage.get(stage)
            if hist is not None:
                hist.observe(ms / 1000.0)
        if "total" in timings:
            self._stage["overhead"].observe(max(0.0, timings["total"] - timings.get("llm", 0.0)) / 1000.0)
        for dependency in reply.degraded:
            self.degradations.labels(dependency).inc()

    def failed(self, namespace: str = "") -> None:
        self.messages.labels(namespace, "failed").inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    async def render(self) -> bytes:
        """The exposition text; refreshes the inbox depth first (its source may be async)."""
        if self.inbox_source is not None:
            try:
                value = self.inbox_source()
                if inspect.isawaitable(value):
                    value = await value
                self.inbox.value = float(value or 0)
            except Exception:  # a failing depth source must not break the scrape
                self.inbox.value = float("nan")
        return generate_latest(self.registry)


def inbox_depth_of(host: Any) -> DepthSource:
    """A depth source for ``host``: its store's ``inbox_depth()`` (the crash-safe inbox) when the store has one.

    Reads 0 for a store without an inbox (or whose backend does not implement it yet).
    """

    async def depth() -> float:
        try:
            store = host.store
        except RuntimeError:  # not started yet
            return 0.0
        fn = getattr(store, "inbox_depth", None)
        if fn is None:
            return 0.0
        try:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
        except NotImplementedError:
            return 0.0
        return float(value or 0)

    return depth

"""Handled-message events for the operator console: what each message went through, kept bounded.

The host calls an observer after each message (:meth:`wxhelper.host.Host.add_observer`). The
:class:`EventRecorder` only queues what it is given there (no I/O, no copying on the message's
path); a background task turns it into an event — source, namespace, histories recorded, the
latency split, the exact prompt, the retrieved passages and each history section with who
contributed what — and adds it to an :class:`EventLog`:

* :class:`MemoryEventLog`, a ring buffer in the process (the SQLite store: one process);
* :class:`RedisEventLog`, a capped Redis stream (``XADD … MAXLEN ~ N``) shared by every worker
  of ``wxhelper serve --workers N``, so the console shows every worker's messages.

Both keep at most ``WXHELPER_CONSOLE_EVENTS`` events (the stream trims approximately, a little
over). Events hold the text as it was sent; phone numbers are masked when they are read out
(:func:`mask`), so no console view and no console answer ever shows a whole number. An event's
long texts are cut at :data:`MAX_TEXT_CHARS` so one event stays well under a megabyte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Optional

import orjson

from .messages import InboundMessage, Record, Reply
from .phone import mask_phone_numbers

if TYPE_CHECKING:
    from .host import Host, _Turn

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20000
"""Longest text kept in an event (a prompt message, the reply); longer ones are cut with a note."""
PREVIEW_CHARS = 240
"""Characters of the message and the reply in an event's summary (the live list)."""
QUEUE_SIZE = 1000
"""Messages waiting to become events; beyond it they are dropped (and counted), never awaited."""
BATCH = 64
"""Events added to the log in one round trip at most (those queued when the recorder wakes up)."""
BATCH_WAIT = 0.05
"""Seconds the recorder waits after a message for others to add with it. Without it every event was a
round trip of its own even under load (the recorder woke up for each message as it came: 1 092
calls for 1 092 events in a run at ~140 messages/s); the console shows a message this much later."""
TEMPLATE_CHECK_SECONDS = 2.0
"""How long which ``system.j2`` a namespace renders is remembered (the renderer re-reads a template as often)."""
SECTIONS = ("chat", "namespace", "friend_circle")

_worker: tuple[int, str] = (0, "")


def worker_name() -> str:
    global _worker
    pid = os.getpid()
    if _worker[0] != pid:  # once per process (a forked worker asks again)
        _worker = (pid, f"{socket.gethostname()}:{pid}")
    return _worker[1]


def dumps(value: Any) -> bytes:
    """An event as JSON (UTF-8, not ASCII-escaped); anything JSON has no type for becomes its ``str``."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def _cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters not kept by the console]"


def per_user(records: list[Record]) -> list[dict[str, Any]]:
    """Records and characters per user in one history section, largest share first.

    Only the counts are kept: the records' text is in the prompt already (the board and friend
    circle inside the system prompt, the chat as turns), and copying it again doubled an event.
    """
    return _section(records)[1]


def _section(records: list[Record]) -> tuple[int, list[dict[str, Any]]]:
    """(characters, :func:`per_user`) of one history section, counted in one pass.

    Every handled message's event counts its three sections (~100 records): one small list per user
    and one sort of the totals, instead of a new dict per record and a sort key per row (~0.1 ms an
    event less).
    """
    counts: dict[str, list[int]] = {}
    total = 0
    for record in records:
        chars = len(record.content)
        total += chars
        entry = counts.get(record.user_id)
        if entry is None:
            counts[record.user_id] = [1, chars]
        else:
            entry[0] += 1
            entry[1] += chars
    ranked = sorted(counts.items(), key=_largest_share_first)
    return total, [{"user_id": user, "records": n, "chars": chars} for user, (n, chars) in ranked]


def _largest_share_first(item: tuple[str, list[int]]) -> tuple[int, int, str]:
    return -item[1][1], -item[1][0], item[0]


def template_origin(host: "Host", turn: "_Turn") -> dict[str, Any]:
    """Which ``system.j2`` rendered the prompt: the operator's override, the plugin's, or the host's."""
    from .prompt import DEFAULT_TEMPLATES, SYSTEM_TEMPLATE

    if turn.template_error is not None:
        return {"name": SYSTEM_TEMPLATE, "origin": "host (fallback)", "path": str(DEFAULT_TEMPLATES / SYSTEM_TEMPLATE),
                "error": turn.template_error}
    origin, path = _template_file(host, turn.ns)
    return {"name": SYSTEM_TEMPLATE, "origin": origin, "path": path, "error": None}


_template_files: dict[tuple[int, str], tuple[float, str, str]] = {}


def _template_file(host: "Host", ns: Any) -> tuple[str, str]:
    """(origin, path) of the namespace's ``system.j2``; looked up on disk at most every TEMPLATE_CHECK_SECONDS."""
    from .prompt import DEFAULT_TEMPLATES, SYSTEM_TEMPLATE

    renderer = host.renderer
    key = (id(renderer), ns.name)
    now = time.monotonic()
    cached = _template_files.get(key)
    if cached is not None and cached[0] > now:
        return cached[1], cached[2]
    path: Optional[Path] = None
    origin = "host"
    for candidate in renderer.search_path(ns):
        if (candidate / SYSTEM_TEMPLATE).is_file():
            path = candidate / SYSTEM_TEMPLATE
            break
    if path is not None and renderer.override_dir is not None and path.parent == renderer.override_dir / ns.name:
        origin = "operator"
    elif path is not None and path.parent != DEFAULT_TEMPLATES:
        origin = "plugin"
    if len(_template_files) > 1000:
        _template_files.clear()
    _template_files[key] = (now + TEMPLATE_CHECK_SECONDS, origin, str(path) if path else "")
    return origin, str(path) if path else ""


def build_event(host: "Host", msg: InboundMessage, reply: Reply, turn: Optional["_Turn"],
                at: Optional[float] = None) -> dict[str, Any]:
    """The console's record of one handled message (unmasked; :func:`mask` before showing it); ``at``:
    when it was handled (default: now)."""
    settings = host.settings
    event: dict[str, Any] = {
        "time": time.time() if at is None else at, "worker": worker_name(),
        "bot_id": msg.bot_id or settings.bot_id, "message_id": msg.message_id, "user_id": msg.user_id,
        "group_id": msg.group_id, "source_id": reply.source_id, "channel": msg.channel,
        "namespace": reply.namespace, "content": _cut(msg.content), "reply": _cut(reply.text),
        "recorded": list(reply.recorded), "offline": reply.offline, "answered": reply.answered,
        "degraded": list(reply.degraded), "command": reply.command, "truncated": reply.truncated,
        "timings": dict(reply.timings), "algorithm": settings.fair_algorithm,
    }
    if turn is None:  # a command: never sent to the LLM
        return event
    event["plugin"] = turn.ns.plugin or ""
    if not reply.prompt:  # a friend-circle post: recorded, not answered, no prompt to inspect
        return event
    event["template"] = template_origin(host, turn)
    event["prompt"] = [{"role": m.get("role", ""), "content": _cut(m.get("content", ""))} for m in reply.prompt]
    event["retrieved"] = [{"source": p.source, "heading": p.heading, "score": round(p.score, 4),
                           "text": p.text[:PREVIEW_CHARS], "chars": len(p.text)} for p in reply.retrieved]
    sections = {}
    for kind, records in zip(SECTIONS, (turn.chat, turn.board, turn.circle)):
        max_records, max_chars = settings.history_budget(kind)
        chars, users = _section(records)
        sections[kind] = {"max_records": max_records, "max_chars": max_chars, "records": len(records),
                          "chars": chars, "users": users}
    event["sections"] = sections
    return event


def failure_event(host: "Host", msg: InboundMessage, error: BaseException,
                  at: Optional[float] = None) -> dict[str, Any]:
    """A message the host failed on (the bot got a 5xx): what came in and the error."""
    return {"time": time.time() if at is None else at, "worker": worker_name(), "bot_id": msg.bot_id or host.settings.bot_id,
            "message_id": msg.message_id, "user_id": msg.user_id, "group_id": msg.group_id,
            "source_id": msg.source_id, "channel": msg.channel, "namespace": msg.namespace or "",
            "content": _cut(msg.content), "reply": "", "recorded": [], "offline": False, "answered": False,
            "degraded": [], "command": None, "timings": {}, "failed": f"{type(error).__name__}: {error}"[:2000]}


def summary(event: dict[str, Any]) -> dict[str, Any]:
    """What the live list shows (no prompt, about 1 KB): small enough to list and stream for every message."""
    keys = ("id", "time", "worker", "bot_id", "message_id", "user_id", "group_id", "source_id", "channel",
            "namespace", "recorded", "offline", "answered", "degraded", "command", "timings")
    out = {k: event.get(k) for k in keys}
    out["content"] = (event.get("content") or "")[:PREVIEW_CHARS]
    out["reply"] = (event.get("reply") or "")[:PREVIEW_CHARS]
    out["inspectable"] = "prompt" in event
    out["template_error"] = (event.get("template") or {}).get("error")
    out["failed"] = event.get("failed")
    return out


UNMASKED_KEYS = frozenset({"id", "after", "message_id"})
"""Identifiers, never masked: a Redis stream id is a millisecond timestamp and a message id is often
a hex string, and either can hold a run of digits that parses as a phone number."""


def mask(value: Any) -> Any:
    """Every string inside ``value`` with its phone numbers' middle digits replaced by ``*`` (event ids excepted)."""
    if isinstance(value, str):
        return mask_phone_numbers(value) if _may_hold_number(value) else value
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, dict):
        return {k: v if k in UNMASKED_KEYS else mask(v) for k, v in value.items()}
    return value


def _may_hold_number(text: str) -> bool:
    digits = 0
    for ch in text:
        if ch.isdigit():
            digits += 1
            if digits >= 7:
                return True
    return False


# -- where events are kept ---------------------------------------------------------------------------
#: Picks events by their summary (:meth:`EventLog.forget`).
EventMatch = Callable[[dict[str, Any]], bool]


class EventLog(ABC):
    """A bounded, ordered log of events. An id is an opaque cursor to pass back to :meth:`after`: it
    does not sort as a string (a ring buffer's "…-10" is newer than its "…-9").

    Listing and following give each event's :func:`summary` (about 1 KB); :meth:`get` gives the
    whole event (tens of KB: the prompt), so an open console costs little per message.
    """

    backend = "none"

    @abstractmethod
    async def add(self, event: dict[str, Any]) -> str:
        raise NotImplementedError

    async def add_many(self, events: list[dict[str, Any]]) -> list[str]:
        """Add several events in order (one round trip where the log is remote)."""
        return [await self.add(event) for event in events]

    @abstractmethod
    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The summaries of the newest ``limit`` events, newest first."""
        raise NotImplementedError

    @abstractmethod
    async def get(self, event_id: str) -> Optional[dict[str, Any]]:
        """One whole event."""
        raise NotImplementedError

    @abstractmethod
    async def last_id(self) -> str:
        raise NotImplementedError

    @abstractmethod
    async def after(self, event_id: str, wait: float) -> list[dict[str, Any]]:
        """Summaries of the events added after ``event_id``, oldest first; waits up to ``wait`` seconds for one."""
        raise NotImplementedError

    @abstractmethod
    async def size(self) -> int:
        raise NotImplementedError

    @abstractmethod
    async def forget(self, match: EventMatch) -> int:
        """Remove every event whose summary ``match`` accepts (a cleared source's messages); returns how many."""
        raise NotImplementedError

    async def follow(self, after: Optional[str] = None, wait: float = 1.0) -> AsyncIterator[dict[str, Any]]:
        """Every event added after ``after`` (default: from now on), as it comes; never ends by itself."""
        cursor = after if after else await self.last_id()
        while True:
            for event in await self.after(cursor, wait):
                cursor = event["id"]
                yield event


class MemoryEventLog(EventLog):
    """A ring buffer of the last ``maxlen`` events of this process."""

    backend = "memory"

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._events: deque[dict[str, Any]] = deque(maxlen=max(1, maxlen))
        self._seq = 0
        self._boot = str(int(time.time() * 1000))  # a page still holding a cursor of a former process starts over
        self._changed = asyncio.Event()

    async def add(self, event: dict[str, Any]) -> str:
        self._seq += 1
        event = dict(event, id=f"{self._boot}-{self._seq}")
        self._events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()
        return event["id"]

    def _seq_of(self, event_id: str) -> int:
        boot, _, seq = event_id.partition("-")
        return int(seq) if boot == self._boot and seq.isdigit() else 0

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        return [summary(e) for e in reversed(list(self._events)[-limit:])] if limit > 0 else []

    async def get(self, event_id: str) -> Optional[dict[str, Any]]:
        for event in self._events:
            if event["id"] == event_id:
                return event
        return None

    async def last_id(self) -> str:
        return f"{self._boot}-{self._seq}"

    async def after(self, event_id: str, wait: float) -> list[dict[str, Any]]:
        seq = self._seq_of(event_id)
        if self._seq <= seq:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        return [summary(e) for e in self._events if self._seq_of(e["id"]) > seq]

    async def size(self) -> int:
        return len(self._events)

    async def forget(self, match: EventMatch) -> int:
        kept = [e for e in self._events if not match(summary(e))]
        removed = len(self._events) - len(kept)
        self._events = deque(kept, maxlen=self._events.maxlen)
        return removed


# Both streams in one hash slot (Redis Cluster); each event added to both together, atomically, with
# one id; ARGV: maxlen, then body and summary of each event (several events: one round trip).
_ADD = """
local ids = {}
for i = 2, #ARGV - 1, 2 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 's', ARGV[i + 1])
  ids[#ids + 1] = id
end
return ids
"""


class RedisEventLog(EventLog):
    """Two capped Redis streams every worker adds to and reads from (``XADD … MAXLEN ~ maxlen``).

    ``<key>:bodies`` holds the whole events, ``<key>`` their summaries under the same ids: the
    live list and its stream read only the summaries, the inspector one body.
    """

    backend = "redis-stream"

    def __init__(self, client: Any, key: str, maxlen: int, block_ms: int = 1000) -> None:
        self.client = client
        self.key = key
        self.bodies = f"{key}:bodies"
        self.maxlen = maxlen
        self.block_ms = block_ms
        self._add = client.register_script(_ADD)

    async def add(self, event: dict[str, Any]) -> str:
        return (await self.add_many([event]))[0]

    async def add_many(self, events: list[dict[str, Any]]) -> list[str]:
        args: list[Any] = [max(1, self.maxlen)]
        for event in events:
            args += (dumps(event), dumps(summary(event)))
        ids = await self._add(keys=[self.bodies, self.key], args=args)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    @staticmethod
    def _decode(entry: Any, field: str) -> dict[str, Any]:
        event_id, fields = entry
        raw = fields.get(field.encode()) or fields.get(field) or b"{}"
        event = json.loads(raw)
        event["id"] = event_id.decode() if isinstance(event_id, bytes) else str(event_id)
        return event

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        return [self._decode(e, "s") for e in await self.client.xrevrange(self.key, count=limit)]

    async def get(self, event_id: str) -> Optional[dict[str, Any]]:
        if not _stream_id(event_id):
            return None
        entries = await self.client.xrange(self.bodies, min=event_id, max=event_id, count=1)
        return self._decode(entries[0], "e") if entries else None

    async def last_id(self) -> str:
        entries = await self.client.xrevrange(self.key, count=1)
        if not entries:
            return "0-0"
        event_id = entries[0][0]
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    async def after(self, event_id: str, wait: float) -> list[dict[str, Any]]:
        cursor = event_id if _stream_id(event_id) else "0-0"
        answer = await self.client.xread({self.key: cursor}, count=100, block=max(1, int(wait * 1000)))
        out: list[dict[str, Any]] = []
        for _key, entries in answer or []:
            out.extend(self._decode(e, "s") for e in entries)
        return out

    async def size(self) -> int:
        return int(await self.client.xlen(self.key))

    async def forget(self, match: EventMatch) -> int:
        # the summaries are the small stream (about maxlen entries): read them, delete the matches' ids
        # from both streams; an event added meanwhile is newer than the clear and stays
        ids = [e["id"] for e in (self._decode(entry, "s") for entry in await self.client.xrange(self.key))
               if match(e)]
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            await self.client.xdel(self.key, *batch)
            await self.client.xdel(self.bodies, *batch)
        return len(ids)


def _stream_id(value: str) -> bool:
    first, _, second = value.partition("-")
    return first.isdigit() and (second == "" or second.isdigit())


def event_log_for(host: "Host") -> EventLog:
    """A Redis stream when the history store is Redis (shared by every worker), else a ring buffer."""
    from .storage.redis import RedisStore

    maxlen = host.settings.console_events
    remote = getattr(host.store, "remote", host.store)
    if isinstance(remote, RedisStore):
        return RedisEventLog(remote.client, f"{remote.prefix}{{console}}:events", maxlen)
    return MemoryEventLog(maxlen)


class EventRecorder:
    """The host's observer: queues each handled message; a task builds the event and adds it to the log."""

    def __init__(self, host: "Host") -> None:
        self.host = host
        self.enabled = host.settings.console_events > 0
        self._log: Optional[EventLog] = None
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self.dropped = 0
        self.lost = 0  # events that could not be added (the log's store failed)
        self.recorded = 0
        if self.enabled:
            host.add_observer(self)

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = event_log_for(self.host) if self.enabled else MemoryEventLog(0)
        return self._log

    def failed(self, msg: InboundMessage, error: BaseException) -> None:
        """A message the host raised on: listed too, so the live view shows failures, not only answers."""
        if self.enabled:
            self._enqueue((msg, None, error, time.time()))

    def __call__(self, msg: InboundMessage, reply: Reply, turn: Optional["_Turn"]) -> None:
        self._enqueue((msg, reply, turn, time.time()))

    def _enqueue(self, item: tuple[Any, Any, Any, float]) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_SIZE)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _drain(self) -> None:
        """Turn what is queued into events: what comes within BATCH_WAIT (up to BATCH) goes to the log in one call."""
        assert self._queue is not None
        queue = self._queue
        while True:
            items = [await queue.get()]
            if BATCH_WAIT > 0 and queue.qsize() < BATCH - 1:
                await asyncio.sleep(BATCH_WAIT)
            while len(items) < BATCH and not queue.empty():
                items.append(queue.get_nowait())
            events: list[dict[str, Any]] = []
            for msg, reply, turn, at in items:
                try:
                    events.append(failure_event(self.host, msg, turn, at) if reply is None
                                  else build_event(self.host, msg, reply, turn, at))
                except Exception as exc:  # the console is best effort: an event lost is never a message lost
                    self._lose(str(msg.message_id), exc)
            try:
                if events:
                    await self.log.add_many(events)
                    self.recorded += len(events)
            except Exception as exc:
                self.lost += len(events) - 1
                self._lose(", ".join(str(e.get("message_id")) for e in events[:5])
                           + (" …" if len(events) > 5 else ""), exc)
            finally:
                for _ in items:
                    queue.task_done()

    def _lose(self, message_ids: str, exc: BaseException) -> None:
        self.lost += 1
        log.warning("console event for message %s not recorded: %s: %s", message_ids, type(exc).__name__, exc)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued message is in the log (tests, shutdown)."""
        if self._queue is not None and self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    async def forget_chat(self, source_id: str, namespaces: Optional[list[str]], bot_id: Optional[str]) -> int:
        """Drop a source's messages in ``namespaces`` (every namespace when None; of ``bot_id``, or of
        every bot when None) from the console, once what is queued is in the log: clearing a chat
        history clears what the console shows of it too. Best effort, like every console write: a
        failure is logged, never raised."""
        if not self.enabled:
            return 0
        await self.flush()
        wanted = None if namespaces is None else set(namespaces)

        def match(event: dict[str, Any]) -> bool:
            return (event.get("source_id") == source_id and (wanted is None or event.get("namespace") in wanted)
                    and (bot_id is None or event.get("bot_id") == bot_id))

        try:
            return await self.log.forget(match)
        except Exception as exc:
            log.warning("console events of source %r not removed: %s: %s", source_id, type(exc).__name__, exc)
            return 0

    async def close(self) -> None:
        await self.flush(2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def stats(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "backend": self.log.backend if self.enabled else "off",
                "max_events": self.host.settings.console_events, "recorded": self.recorded,
                "dropped": self.dropped, "failed": self.lost,
                "queued": self._queue.qsize() if self._queue is not None else 0}

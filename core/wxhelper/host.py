"""The host: one message in, one reply out.

A message is resolved to its source, routed to a namespace, and answered from
a prompt assembled from the namespace's templates, its indexed corpus and
three fair history selections; then the histories it belongs to are written.
Everything that does I/O is async; Chroma and SQLite run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Union

from .commands import Command, CommandContext, CommandSet, build_commands, run_command
from .knowledge import KnowledgeBase
from .llm import LLM, LLMError
from .messages import HistoryKind, InboundMessage, Passage, Record, Reply
from .namespace import Namespace
from .offline import offline_answer
from .ordering import LeaseLost, SourceGate, Turn
from .phone import has_phone_number
from .plugins import LoadedPlugins, PluginStatus, load_plugins
from .prompt import PromptRenderer
from .routing import UnknownNamespace, choose_namespace, lookup
from .settings import Settings
from .storage import FairQuery, HistoryKey, HistoryStore, SQLiteStore, open_store
from .storage.resilient import ResilientStore
from .storage.turns import HistoryWrite, TurnStart, begin_turn, fair_read_many, finish_turn

log = logging.getLogger(__name__)

PURGE_INTERVAL = 3600.0
CATEGORY_CACHE_SECONDS = 2.0
BINDINGS_REMEMBERED = 10000
"""Sources whose bound namespace a host remembers (to guess a message's namespace before its turn begins)."""
APOLOGY = "抱歉，大模型暂时无法回答，先给你资料库里的相关内容："
TRUNCATED_NOTICE = "（你的消息超过 {limit} 字，已截断为前 {limit} 字保存。）"


class Host:
    """The plugin host. Use as ``async with Host(settings) as host: reply = await host.handle(msg)``."""

    def __init__(self, settings: Optional[Settings] = None, *, store: Optional[HistoryStore] = None) -> None:
        self.settings = settings or Settings()
        self._store = store
        self.plugins: Optional[LoadedPlugins] = None
        self.knowledge = KnowledgeBase(self.settings)
        self.handling = 0
        """Messages being handled now (from their start to their answer, streams included): the
        knowledge base's question batching reads it (:class:`wxhelper.knowledge.batching.LoopBatcher`)."""
        self.knowledge.company = lambda: self.handling
        self.llm = LLM(self.settings)
        self.renderer = PromptRenderer(self.settings.templates_dir)
        self._purger: Optional[asyncio.Task] = None
        self._started = False
        self.commands = CommandSet()
        self._gate: Optional[SourceGate] = None
        self._categories: dict[str, tuple[float, list[tuple[str, str, str]]]] = {}
        self._observers: list[Observer] = []
        self._bindings: dict[tuple[str, str], Optional[str]] = {}  # (source, bot) -> bound namespace, as last read

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> "Host":
        if self._started:
            return self
        self.plugins = await asyncio.to_thread(load_plugins, self.settings)
        self.commands = build_commands(self.plugins.manager, self.plugins.statuses)
        if self._store is None:
            self._store = self._open_store()
        self._gate = SourceGate(self._store, self.settings.source_lease_ttl,  # type: ignore[arg-type]
                                self.settings.source_lease_ttl * 2)
        await self.purge_expired()
        self._purger = asyncio.create_task(self._purge_periodically())
        self._started = True
        if self.settings.replay_on_start:
            await self.replay()
        return self

    def _open_store(self) -> HistoryStore:
        """The configured store; a remote one is wrapped so an outage degrades instead of failing."""
        store = open_store(self.settings.store_url)
        if isinstance(store, SQLiteStore):
            return store
        fallback = SQLiteStore(Path(self.settings.data_dir) / "fallback.sqlite3")
        return ResilientStore(store, fallback)

    @property
    def store_outage(self) -> bool:
        """True while a remote store is down or its journal still holds writes."""
        return isinstance(self._store, ResilientStore) and self._store.outage

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.llm.close()
        if self._store is not None:
            await self._store.close()
        self._started = False

    async def __aenter__(self) -> "Host":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                await self.purge_expired()
            except Exception:
                log.exception("purging expired records failed")

    async def purge_expired(self) -> int:
        """Delete records older than ``CLEAR_CYCLE``; also runs at start and hourly."""
        return await self.store.purge_expired(time.time() - self.settings.clear_cycle_seconds)

    # -- accessors -------------------------------------------------------------------
    @property
    def store(self) -> HistoryStore:
        if self._store is None:
            raise RuntimeError("Host is not started: use 'async with Host(...)' or 'await host.start()'")
        return self._store

    @property
    def gate(self) -> SourceGate:
        if self._gate is None:
            raise RuntimeError("Host is not started")
        return self._gate

    def _chat_bot(self, bot_id: str) -> str:
        """The bot part of chat keys and source leases ('' when bots share chats)."""
        return "" if self.settings.share_chat_across_bots else bot_id

    async def namespaces_for(self, bot_id: str) -> dict[str, Namespace]:
        """The preset namespaces (plugins) plus the custom ones this bot's owners added.

        Custom ones are cached for ``CATEGORY_CACHE_SECONDS`` (a change made in this process is
        seen at once; one made by another process within that time), sparing a round trip per message.
        """
        cached = self._categories.get(bot_id)
        if cached is None or cached[0] < time.monotonic():
            cached = (time.monotonic() + CATEGORY_CACHE_SECONDS, await self.store.custom_namespaces(bot_id))
            self._categories[bot_id] = cached
        namespaces = dict(self.namespaces)
        for _bot, name, title in cached[1]:
            if name not in namespaces:
                namespaces[name] = custom_namespace(name, title)
        return namespaces

    def forget_categories(self, bot_id: str) -> None:
        """Drop the cached custom categories of a bot (after adding or deleting one)."""
        self._categories.pop(bot_id, None)

    @staticmethod
    def find_namespace(namespaces: Mapping[str, Namespace], name_or_title: str) -> Optional[Namespace]:
        return lookup(namespaces, name_or_title)

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        if self.plugins is None:
            raise RuntimeError("Host is not started")
        return self.plugins.namespaces

    @property
    def plugin_statuses(self) -> Mapping[str, PluginStatus]:
        if self.plugins is None:
            raise RuntimeError("Host is not started")
        return self.plugins.statuses

    def namespace(self, name_or_title: str) -> Namespace:
        ns = lookup(self.namespaces, name_or_title)
        if ns is None:
            raise UnknownNamespace(name_or_title, sorted(self.namespaces))
        return ns

    def history_key(self, kind: HistoryKind, namespace: str, source_id: str = "", bot_id: str = "") -> HistoryKey:
        if kind == "chat":
            if not source_id:
                raise ValueError("source_id is required for the chat history")
            return HistoryKey.chat(namespace, source_id, self._chat_bot(bot_id or self.settings.bot_id))
        return HistoryKey.shared(kind, namespace)

    # -- observers (the operator console) ----------------------------------------------------
    def add_observer(self, observer: "Observer") -> None:
        """Call ``observer(message, reply, turn)`` after each handled message (``turn`` is None for commands).

        Observers run on the event loop after the writes; they must be cheap and must not block
        (the console's only queues the data). One that raises is logged, never fails the message.
        """
        self._observers.append(observer)

    def _observe(self, msg: InboundMessage, reply: Reply, turn: Optional["_Turn"]) -> None:
        for observer in self._observers:
            try:
                observer(msg, reply, turn)
            except Exception:
                log.exception("an observer of handled messages raised")

    # -- the main job ---------------------------------------------------------------
    async def handle(self, message: Union[InboundMessage, Mapping[str, Any]]) -> Reply:
        """Handle one message: route, assemble a fair prompt, answer, record.

        Idempotent on ``message_id`` per bot: a message handled before gets its
        first reply again and writes nothing.
        """
        reply: Optional[Reply] = None
        async for item in self._run(message, streaming=False):
            if isinstance(item, Reply):
                reply = item
        assert reply is not None
        return reply

    async def stream(self, message: Union[InboundMessage, Mapping[str, Any]]) -> AsyncIterator[Union[str, Reply]]:
        """Handle one message, yielding text pieces as the LLM produces them, then the final :class:`Reply`.

        The pieces joined are the reply's text. When the LLM fails before
        its first piece, the offline answer (with an apology) is yielded
        instead; when it breaks midway, the apology follows what was sent.
        """
        run = self._run(message, streaming=True)
        try:
            async for item in run:
                yield item
        finally:  # a consumer that stops early ends the turn now (its lease, its count), not when collected
            await run.aclose()

    async def _run(self, message: Union[InboundMessage, Mapping[str, Any]],
                   streaming: bool) -> AsyncIterator[Union[str, Reply]]:
        if not self._started:
            await self.start()
        self.handling += 1
        try:
            started = time.perf_counter()
            msg = message if isinstance(message, InboundMessage) else InboundMessage.model_validate(message)
            bot_id = msg.bot_id or self.settings.bot_id
            namespaces = await self.namespaces_for(bot_id)
            if msg.namespace is not None and lookup(namespaces, msg.namespace) is None:
                raise UnknownNamespace(msg.namespace, sorted(namespaces))  # before the inbox: a bad message leaves no trace
            payload = msg.model_dump_json()
            ahead = self._ahead(msg, bot_id, namespaces)

            async def begin(lease: str, ttl: float) -> TurnStart:
                # the lease, the final-reply check, the inbox entry, (without an explicit namespace) the
                # source's binding and the fair reads of the namespace guessed: one round trip where the store can
                t0 = time.perf_counter()
                start = await begin_turn(self.store, lease, ttl, bot_id, msg.message_id, payload, time.time(),
                                         msg.source_id if msg.namespace is None else None,
                                         ahead.reads if ahead is not None else None)
                if ahead is not None:
                    ahead.begin_ms = _ms(t0)
                return start

            try:
                async with self.gate.turn(self._chat_bot(bot_id), msg.source_id, begin) as turn:
                    if turn.final is None:
                        async for item in self._process(msg, bot_id, turn, started, streaming,
                                                        Reply.model_validate_json(turn.earlier) if turn.earlier else None,
                                                        ahead):
                            yield item
                        return
            finally:
                if ahead is not None:
                    ahead.discard()
            cached = Reply.model_validate_json(turn.final)
            if streaming and cached.text:
                yield cached.text
            yield cached
        finally:
            self.handling -= 1

    def _ahead(self, msg: InboundMessage, bot_id: str, namespaces: Mapping[str, Namespace]) -> Optional["_Ahead"]:
        """Start what a chat message needs that does not depend on its turn, before the turn begins.

        The namespace is guessed with the binding this host last read for the source (none when it
        has not seen it): the knowledge search starts at once, so it runs while the turn's first
        round trip is out (on the loop, the question's embedding is most of a message's latency), and
        the fair reads ride with that round trip, under the lease. A wrong guess (the source was
        bound or rebound elsewhere) only costs the work done for it: the turn then reads and
        searches for the namespace it really has (:meth:`_prepare`).
        """
        if msg.channel != "chat" or self.commands.parse(msg.content) is not None:
            return None
        bound = None if msg.namespace is not None else self._bindings.get((msg.source_id, bot_id))
        ns = namespaces[choose_namespace(namespaces, msg.content, self.settings.default_namespace, msg.namespace,
                                         bound)]
        content = msg.content[: self.settings.max_single_char]
        search = None
        if self._searches(content):
            search = asyncio.get_running_loop().create_task(self._timed_retrieval(ns, content))
        return _Ahead(ns, self._history_reads(ns, msg, bot_id), search)

    def _remember_binding(self, msg: InboundMessage, bot_id: str, turn: Turn) -> None:
        if turn.start is None or not turn.start.binding_read:
            return
        key = (msg.source_id, bot_id)
        if key not in self._bindings and len(self._bindings) >= BINDINGS_REMEMBERED:
            self._bindings.pop(next(iter(self._bindings)), None)
        self._bindings[key] = turn.start.binding

    async def _process(self, msg: InboundMessage, bot_id: str, turn: Turn, started: float, streaming: bool,
                       earlier: Optional[Reply], ahead: Optional["_Ahead"] = None) -> AsyncIterator[Union[str, Reply]]:
        """The work of one message inside its source's turn; ``earlier`` is a reply a crashed run produced."""
        if earlier is not None:  # answered before a crash: only the writes may be missing
            await self._commit(turn, bot_id, msg, earlier)
            if streaming and earlier.text:
                yield earlier.text
            yield earlier
            return
        command = self.commands.parse(msg.content) if msg.channel == "chat" else None
        if command is not None:
            reply = await self._command(msg, bot_id, *command)
            await self._commit(turn, bot_id, msg, reply)
            if self._observers:
                self._observe(msg, reply, None)
            if streaming:
                yield reply.text
            yield reply
            return
        state = await self._prepare(msg, bot_id, started, turn, ahead)
        if msg.channel == "friend_circle":
            reply = self._build_reply(state, "", offline=True, answered=False)
            await self._commit(turn, bot_id, msg, reply, state)
            if self._observers:
                self._observe(msg, reply, state)
            yield reply
            return
        llm_started = time.perf_counter()
        if streaming:
            pieces: list[str] = []
            offline = False
            async for piece, is_offline in self._answer_stream(state):
                pieces.append(piece)
                offline = offline or is_offline
                yield piece
            text = "".join(pieces)
        else:
            text, offline = await self._answer(state.prompt, state.content, state.passages, state.board,
                                               state.degraded)
        state.timings["llm"] = _ms(llm_started)
        reply = self._build_reply(state, text, offline)
        await self._commit(turn, bot_id, msg, reply, state)
        if self._observers:
            self._observe(msg, reply, state)
        if streaming and reply.truncated:
            yield reply.text[len(text):]
        yield reply

    async def _answer_stream(self, state: "_Turn") -> AsyncIterator[tuple[str, bool]]:
        if not self.llm.available:
            yield offline_answer(state.content, state.passages, state.board), True
            return
        sent = False
        try:
            async for piece in self.llm.stream(state.prompt):
                sent = True
                yield piece, False
        except LLMError as exc:
            log.error("LLM stream failed: %s", exc)
            state.degraded.append("llm")
            fallback = offline_answer(state.content, state.passages, state.board, notice=APOLOGY)
            yield (f"\n\n{fallback}" if sent else fallback), True

    async def _command(self, msg: InboundMessage, bot_id: str, command: Command, args: list[str]) -> Reply:
        ctx = CommandContext(self, msg, bot_id, msg.source_id, msg.user_id in self.settings.owner_ids)
        degraded: list[str] = []
        try:
            text = await run_command(command, ctx, args)
        except Exception as exc:
            log.error("command /%s of %s raised %s", command.name, command.plugin, type(exc).__name__)
            degraded.append(f"plugin:{command.plugin}")
            text = f"命令 /{command.name} 执行失败，请稍后再试。"
        bound = await self.store.get_binding(msg.source_id, bot_id)
        return Reply(text=text, namespace=bound or self.settings.default_namespace, source_id=msg.source_id,
                     message_id=msg.message_id, offline=True, command=command.name, degraded=degraded)

    async def _prepare(self, msg: InboundMessage, bot_id: str, started: float, turn: Turn,
                       ahead: Optional["_Ahead"] = None) -> "_Turn":
        namespaces = await self.namespaces_for(bot_id)
        bound = None
        if msg.namespace is None:  # the binding, unless the store read it when the turn began
            if turn.start is not None and turn.start.binding_read:
                bound = turn.start.binding
                self._remember_binding(msg, bot_id, turn)
            else:
                bound = await self.store.get_binding(msg.source_id, bot_id)
        ns = namespaces[choose_namespace(namespaces, msg.content, self.settings.default_namespace,
                                         msg.namespace, bound)]
        content = msg.content
        truncated = len(content) > self.settings.max_single_char
        if truncated:
            content = content[: self.settings.max_single_char]
        state = _Turn(msg=msg, bot_id=bot_id, ns=ns, content=content, truncated=truncated, started=started)
        state.accepted = self._accepts(ns, content, state.degraded)
        if msg.channel == "chat":
            if ahead is not None and ahead.ns.name != ns.name:  # guessed wrong: read and search again
                ahead.discard()
                ahead = None
            await self._assemble(state, ahead, turn.start.reads if ahead is not None and turn.start else None)
        return state

    def _build_reply(self, state: "_Turn", text: str, offline: bool, answered: bool = True) -> Reply:
        recorded: list[HistoryKind] = []
        if answered:
            recorded.append("chat")
            if state.accepted:
                recorded.append("namespace")
            if state.truncated:
                text = f"{text}\n\n{TRUNCATED_NOTICE.format(limit=self.settings.max_single_char)}"
        elif state.accepted:
            recorded.append("friend_circle")
        state.timings["total"] = _ms(state.started)
        if self.store_outage and "store" not in state.degraded:
            state.degraded.append("store")
        return Reply(text=text, namespace=state.ns.name, source_id=state.msg.source_id,
                     message_id=state.msg.message_id, recorded=recorded, prompt=state.prompt,
                     retrieved=state.passages, offline=offline, truncated=state.truncated, answered=answered,
                     degraded=state.degraded, timings=state.timings)

    async def _commit(self, turn: Turn, bot_id: str, msg: InboundMessage, reply: Reply,
                      state: Optional["_Turn"] = None) -> None:
        """Attach the reply to the inbox entry; then, while the lease is ours, write the histories it
        names, complete the entry and release the lease (one round trip where the store can)."""
        payload = reply.model_dump_json()
        started = time.perf_counter()
        if turn.lost:  # the renewal found the lease taken: keep the reply for the replay, write nothing
            await self.store.inbox_answer(bot_id, msg.message_id, payload)
            raise LeaseLost(turn.name)
        content = msg.content[: self.settings.max_single_char]
        ns = reply.namespace
        writes: list[HistoryWrite] = []
        if "friend_circle" in reply.recorded:
            writes.append(HistoryWrite(self.history_key("friend_circle", ns), [self._record_of(msg, bot_id, content)]))
        if "chat" in reply.recorded:  # the message and its reply
            writes.append(HistoryWrite(self.history_key("chat", ns, msg.source_id, bot_id), [
                self._record_of(msg, bot_id, content),
                self._record_of(msg, bot_id, reply.text, user_id=bot_id, message_id=f"{msg.message_id}#reply",
                                timestamp=max(time.time(), msg.timestamp + 0.001))]))
        if "namespace" in reply.recorded:
            writes.append(HistoryWrite(self.history_key("namespace", ns), [self._record_of(msg, bot_id, content)]))
        cycle = self.settings.clear_cycle_seconds
        held = await finish_turn(self.store, turn.name, turn.token, self.gate.ttl,  # type: ignore[arg-type]
                                 bot_id, msg.message_id, payload, time.time() + cycle, writes,
                                 max_per_user=self.settings.max_user_record_count, history_ttl=cycle)
        if not held:
            turn.lost = True
            raise LeaseLost(turn.name)
        turn.released = True
        if state is not None:  # the caller's copy; the stored one was fixed before the writes
            reply.timings["record"] = _ms(started)
            reply.timings["total"] = _ms(state.started)

    async def replay(self) -> int:
        """Process every message left in the inbox by a crash; returns how many. Runs at start."""
        count = 0
        for bot_id, message_id, payload, _reply in await self.store.inbox_pending():
            try:
                await self.handle(InboundMessage.model_validate_json(payload))
                count += 1
            except Exception:
                log.exception("replaying message %s of bot %s failed; it stays in the inbox", message_id, bot_id)
        if count:
            log.info("replayed %d messages from the inbox", count)
        return count

    def _accepts(self, ns: Namespace, content: str, degraded: list[str]) -> bool:
        """The namespace's record filter; a filter that raises records nothing in the shared histories."""
        try:
            return bool(ns.record_filter(content))
        except Exception as exc:
            log.error("record filter of namespace %s (plugin %s) raised %s", ns.name, ns.plugin, type(exc).__name__)
            degraded.append(f"plugin:{ns.plugin}")
            return False

    def _history_reads(self, ns: Namespace, msg: InboundMessage, bot_id: str) -> list[tuple[HistoryKey, FairQuery]]:
        """The three fair selections a chat message's prompt gets: its chat, the board, the friend circle."""
        since = time.time() - self.settings.clear_cycle_seconds
        algorithm = self.settings.fair_algorithm

        def query(kind: HistoryKind) -> FairQuery:
            records, chars = self.settings.history_budget(kind)
            return FairQuery(records, chars, since, algorithm, self.settings.user_weight_map)

        return [(self.history_key("chat", ns.name, msg.source_id, bot_id), query("chat")),
                (self.history_key("namespace", ns.name), query("namespace")),
                (self.history_key("friend_circle", ns.name), query("friend_circle"))]

    async def _assemble(self, turn: "_Turn", ahead: Optional["_Ahead"] = None,
                        reads: Optional[list[list[Record]]] = None) -> None:
        """Read the three fair selections and the knowledge passages concurrently, then render.

        ``ahead`` (for this namespace) holds the search started before the turn; ``reads``, the
        fair selections the store made when the turn began.
        """
        ns, msg, bot_id = turn.ns, turn.msg, turn.bot_id
        started = time.perf_counter()

        async def histories() -> list[list[Record]]:
            if reads is not None and ahead is not None:  # made in the turn's first round trip
                turn.timings["history"] = ahead.begin_ms
                return reads
            t0 = time.perf_counter()
            result = await fair_read_many(self.store, self._history_reads(ns, msg, bot_id))
            turn.timings["history"] = _ms(t0)
            return result

        async def retrieval() -> list[Passage]:
            if ahead is not None:
                if ahead.search is None:
                    return []
                passages, degraded, ms = await ahead.search
                turn.degraded.extend(degraded)
                turn.timings["retrieval"] = ms
                return passages
            return (await self._timed_retrieval(ns, turn.content, turn))[0]

        if reads is not None and ahead is not None:
            (chat, board, circle), passages = await histories(), await retrieval()
        else:
            (chat, board, circle), passages = await asyncio.gather(histories(), retrieval())
        context = {
            "namespace": ns, "message": msg, "bot_id": bot_id,
            "now": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "knowledge": passages, "board": board, "friend_circle": circle,
            "extra": self._prompt_context(ns, msg, turn.degraded),
        }
        system, error = self.renderer.render_system(ns, context)
        if error:
            turn.degraded.append(f"plugin:{ns.plugin}")
            turn.template_error = error
        prompt = [{"role": "system", "content": system}]
        for record in chat:
            if record.user_id == bot_id:
                prompt.append({"role": "assistant", "content": record.content})
            else:
                speaker = f"{record.user_id}：" if msg.is_group else ""
                prompt.append({"role": "user", "content": f"{speaker}{record.content}"})
        speaker = f"{msg.user_id}：" if msg.is_group else ""
        prompt.append({"role": "user", "content": f"{speaker}{turn.content}"})
        turn.prompt, turn.passages, turn.board = prompt, passages, board
        turn.chat, turn.circle = chat, circle
        turn.timings["assembly"] = _ms(started)

    def _searches(self, content: str) -> bool:
        return self.settings.knowledge_top_k > 0 and self.settings.knowledge_chars > 0 and bool(content.strip())

    async def _timed_retrieval(self, ns: Namespace, content: str,
                               turn: Optional["_Turn"] = None) -> tuple[list[Passage], list[str], float]:
        """(passages, degradations, milliseconds); with ``turn``, those are also entered in it."""
        t0 = time.perf_counter()
        degraded: list[str] = []
        passages = await self._retrieve(ns, content, degraded)
        ms = _ms(t0)
        if turn is not None:
            turn.degraded.extend(degraded)
            turn.timings["retrieval"] = ms
        return passages, degraded, ms

    async def _retrieve(self, ns: Namespace, content: str, degraded: list[str]) -> list[Passage]:
        if not self._searches(content):
            return []  # nothing to search for: spare the hop to a worker thread
        try:
            return await self.knowledge.search(ns, content, self.settings.knowledge_top_k,
                                               self.settings.knowledge_chars)
        except Exception as exc:
            log.error("knowledge search for namespace %s failed: %s: %s", ns.name, type(exc).__name__, exc)
            degraded.append("knowledge")
            return []

    def _prompt_context(self, ns: Namespace, msg: InboundMessage, degraded: list[str]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        assert self.plugins is not None
        for impl in self.plugins.manager.hook.prompt_context.get_hookimpls():
            kwargs = {"namespace": ns, "message": msg}
            try:
                result = impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                log.error("plugin %s: prompt_context raised %s", impl.plugin_name, type(exc).__name__)
                degraded.append(f"plugin:{impl.plugin_name}")
                continue
            if isinstance(result, dict):
                for key, value in result.items():
                    extra.setdefault(str(key), value)
        return extra

    async def _answer(self, prompt: list[dict[str, str]], content: str, passages: list[Passage],
                      board: list[Record], degraded: list[str]) -> tuple[str, bool]:
        if not self.llm.available:
            return offline_answer(content, passages, board), True
        try:
            return await self.llm.complete(prompt), False
        except LLMError as exc:
            log.error("LLM failed: %s", exc)
            degraded.append("llm")
            return offline_answer(content, passages, board, notice=APOLOGY), True

    @staticmethod
    def _record_of(msg: InboundMessage, bot_id: str, content: str, *, user_id: Optional[str] = None,
                   message_id: Optional[str] = None, timestamp: Optional[float] = None) -> Record:
        return Record(user_id=user_id or msg.user_id, source_id=msg.source_id, bot_id=bot_id, content=content,
                      timestamp=timestamp if timestamp is not None else msg.timestamp,
                      message_id=message_id or msg.message_id)

    # -- reading and maintenance ----------------------------------------------------------
    async def history(self, namespace: str, kind: HistoryKind = "namespace", *, source_id: str = "",
                      bot_id: str = "", max_records: Optional[int] = None, max_chars: Optional[int] = None,
                      algorithm: Optional[str] = None) -> list[Record]:
        """The fair selection of one history, exactly as a prompt would get it (oldest first)."""
        if not self._started:
            await self.start()
        namespaces = await self.namespaces_for(bot_id or self.settings.bot_id)
        ns = lookup(namespaces, namespace)
        if ns is None:
            raise UnknownNamespace(namespace, sorted(namespaces))
        default_records, default_chars = self.settings.history_budget(kind)
        query = FairQuery(
            default_records if max_records is None else max_records,
            default_chars if max_chars is None else max_chars,
            time.time() - self.settings.clear_cycle_seconds,
            algorithm or self.settings.fair_algorithm,
            self.settings.user_weight_map,
        )
        from .fairness import ALGORITHMS

        if query.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {query.algorithm!r}")
        return await self.store.fair_read(self.history_key(kind, ns.name, source_id, bot_id), query)

    async def index(self, namespace: Optional[str] = None,
                    progress: Optional[Callable[[str, int, int], None]] = None) -> list:
        """(Re-)index one namespace's corpus, or all; unchanged corpora do no work."""
        if not self._started:
            await self.start()
        targets = [self.namespace(namespace)] if namespace else list(self.namespaces.values())
        out = []
        for ns in targets:
            cb = (lambda done, total, _n=ns.name: progress(_n, done, total)) if progress else None
            out.append(await asyncio.to_thread(self.knowledge.index, ns, cb))
        return out


def custom_namespace(name: str, title: str) -> Namespace:
    """A category an owner added: the host's default templates and the phone filter, no corpus."""
    return Namespace(name=name, title=title, description="自定义分类", keywords=(title,),
                     record_filter=has_phone_number, plugin="custom")


@dataclass
class _Turn:
    """What the host knows about one message between preparing and finishing it."""

    msg: InboundMessage
    bot_id: str
    ns: Namespace
    content: str
    truncated: bool
    started: float
    accepted: bool = False
    degraded: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    prompt: list[dict[str, str]] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    board: list[Record] = field(default_factory=list)
    chat: list[Record] = field(default_factory=list)
    circle: list[Record] = field(default_factory=list)
    template_error: Optional[str] = None


@dataclass
class _Ahead:
    """What a chat message's turn starts before it holds the lease (:meth:`Host._ahead`)."""

    ns: Namespace
    """The namespace guessed; what follows is for it."""
    reads: list[tuple[HistoryKey, FairQuery]]
    """The fair reads asked of the turn's first step."""
    search: Optional["asyncio.Task[tuple[list[Passage], list[str], float]]"]
    """The knowledge search, running (None: nothing to search)."""
    begin_ms: float = 0.0
    """How long the turn's first step took (it carried the fair reads)."""

    def discard(self) -> None:
        if self.search is not None and not self.search.done():
            self.search.cancel()


Observer = Callable[[InboundMessage, Reply, Optional[_Turn]], None]
"""What :meth:`Host.add_observer` takes: ``(message, reply, turn or None)``."""


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)


class SyncHost:
    """A blocking wrapper for scripts: ``with SyncHost() as host: print(host.handle({...}).text)``."""

    def __init__(self, settings: Optional[Settings] = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.host = Host(settings, **kwargs)
        self._run(self.host.start())

    def _run(self, coro: Awaitable[Any]) -> Any:
        return self._loop.run_until_complete(coro)

    def handle(self, message: Union[InboundMessage, Mapping[str, Any]]) -> Reply:
        return self._run(self.host.handle(message))

    def history(self, namespace: str, kind: HistoryKind = "namespace", **kwargs: Any) -> list[Record]:
        return self._run(self.host.history(namespace, kind, **kwargs))

    def close(self) -> None:
        self._run(self.host.close())
        self._loop.close()

    def __enter__(self) -> "SyncHost":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

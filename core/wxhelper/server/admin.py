"""The operator console: ``/admin`` (a static page) and the JSON it reads under ``/admin/api``.

The page (``admin_static/``: plain HTML, JS and CSS shipped as package data, no build step) holds
no data, so it is served without the token; everything it shows comes from ``/admin/api/*``,
which the :class:`~wxhelper.server.guard.Guard` protects exactly like the bot API (bearer token,
or loopback only when none is configured). Live messages are Server-Sent Events read with
``fetch`` (EventSource cannot send the ``Authorization`` header), so the token is never in a URL
and never in a log. Phone numbers are masked in every answer here (:func:`wxhelper.events.mask`).

These routes are left out of the OpenAPI spec: they serve the console and may change with it.
docs/console.md describes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path as FsPath
from typing import Any, AsyncIterator, Optional

import httpx
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from ..commands import CategoryError, create_category, remove_category
from ..events import EventRecorder, mask, worker_name
from ..fairness import ALGORITHMS, apply_weights, select
from ..host import Host
from ..messages import MAX_ID_CHARS, _check_id
from ..routing import UnknownNamespace
from ..storage import FairQuery
from ..storage.resilient import spool_summary

log = logging.getLogger("wxhelper.server")

STATIC_DIR = FsPath(__file__).parent / "admin_static"
HEARTBEAT_SECONDS = 15.0
CHECK_TIMEOUT = 3.0
RECENT_PROBLEM_SECONDS = 900
"""A namespace whose messages were answered degraded this recently shows as degraded, with the errors."""
PROBLEM_SCAN = 500
"""At most this many of the newest console events are read for that."""
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64)
    title: Optional[str] = Field(None, max_length=64)
    bot_id: Optional[str] = Field(None, max_length=MAX_ID_CHARS)


class BindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_id: str = Field(..., min_length=1, max_length=MAX_ID_CHARS)
    bot_id: Optional[str] = Field(None, max_length=MAX_ID_CHARS)
    namespace: Optional[str] = Field(None, max_length=MAX_ID_CHARS, description="None unbinds the source")


def _error(status: int, loc: list[str], msg: str) -> JSONResponse:
    return JSONResponse({"detail": [{"type": "value_error", "loc": loc, "msg": msg}]}, status_code=status)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode("utf-8")


class Shutdown:
    """Notices the server being asked to stop, so open live streams end instead of holding the shutdown.

    uvicorn waits for open responses (up to its graceful timeout, 10 s under ``wxhelper serve``)
    before it shuts the app down, and a console tab keeps a stream open. The handlers uvicorn
    installed for SIGINT and SIGTERM are wrapped (chained, not replaced): the flag is set, then
    uvicorn's handler runs as before. Outside the main thread (a test client) nothing is wrapped.
    """

    def __init__(self) -> None:
        self.closing = False

    def watch(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous = signal.getsignal(sig)
                if not callable(previous):
                    continue

                def handler(signum: int, frame: Any, _previous: Any = previous) -> None:
                    self.closing = True
                    _previous(signum, frame)

                signal.signal(sig, handler)
            except (ValueError, OSError):  # not the main thread
                return


def install(app: FastAPI, host: Host, token: Optional[str]) -> EventRecorder:
    """Add the console's routes and static files to ``app``; returns the recorder (close it on shutdown)."""
    recorder = EventRecorder(host)
    shutdown = Shutdown()
    shutdown.watch()
    settings = host.settings
    router = APIRouter(prefix="/admin/api", include_in_schema=False)

    def bot_of(bot_id: Optional[str]) -> str:
        return bot_id or settings.bot_id

    def bad_id(value: Optional[str], loc: list[str]) -> Optional[JSONResponse]:
        try:
            _check_id(value, loc[-1])
        except ValueError as exc:
            return _error(422, loc, str(exc))
        return None

    # -- who am I talking to ------------------------------------------------------------------------
    @router.get("/session")
    async def session() -> Any:
        return {"auth": "token" if token else "none", "bot_id": settings.bot_id,
                "worker": worker_name(), "store": host.store.scheme, "events": recorder.stats(),
                "algorithm": settings.fair_algorithm, "algorithms": sorted(ALGORITHMS), "version": app.version,
                "workers": int(os.environ.get("WXHELPER_SERVE_WORKERS", "1") or 1)}

    # -- namespaces -------------------------------------------------------------------------------------
    async def runtime_problems() -> dict[str, dict[str, Any]]:
        """Per namespace: its recent messages answered degraded (a plugin's template, filter or hook, Chroma)."""
        since = time.time() - RECENT_PROBLEM_SECONDS
        problems: dict[str, dict[str, Any]] = {}
        try:
            recent = await recorder.log.recent(min(settings.console_events, PROBLEM_SCAN))
        except Exception as exc:  # the console's own store is down: say nothing rather than fail the view
            log.warning("console: recent events unreadable: %s", exc)
            return problems
        for event in recent:  # newest first
            if (event.get("time") or 0) < since:
                break
            labels = [d for d in event.get("degraded") or [] if d.startswith("plugin:") or d == "knowledge"]
            if not labels:
                continue
            entry = problems.setdefault(event["namespace"], {"messages": 0, "last": event.get("time"), "errors": []})
            entry["messages"] += 1
            error = event.get("template_error")
            for text in ([error] if error else []) + [f"answered degraded: {d}" for d in labels]:
                if text not in entry["errors"] and len(entry["errors"]) < 5:
                    entry["errors"].append(text)
        return problems

    @router.get("/namespaces")
    async def namespaces() -> Any:
        rows = []
        statuses = host.plugin_statuses
        problems = await runtime_problems()
        for ns in host.namespaces.values():
            index = await asyncio.to_thread(host.knowledge.status, ns)
            plugin = statuses.get(ns.plugin or "")
            errors = list(plugin.errors) if plugin is not None else []
            if index.get("error"):
                errors.append(f"index: {index['error']}")
            recent = problems.get(ns.name)
            if recent:
                errors.append(f"{recent['messages']} message(s) in the last {RECENT_PROBLEM_SECONDS // 60} minutes "
                              f"answered degraded, the last at {time.strftime('%H:%M:%S', time.localtime(recent['last']))}")
                errors.extend(recent["errors"])
            rows.append({"name": ns.name, "title": ns.title, "plugin": ns.plugin or "",
                         "version": ns.version or (plugin.version if plugin else ""),
                         "status": "degraded" if errors else "loaded", "errors": errors,
                         "passages": index.get("passages"), "stored": index.get("stored"),
                         "indexed": index.get("indexed"), "embedding": index.get("embedding"),
                         "built_with": index.get("built_with"), "custom": False})
        for owner, name, title in await host.store.custom_namespaces(None):
            rows.append({"name": name, "title": title, "plugin": "custom", "version": "", "status": "loaded",
                         "errors": [], "passages": 0, "stored": 0, "indexed": None, "embedding": None,
                         "custom": True, "bot_id": owner})
        plugins = [{"name": s.name, "version": s.version, "status": s.status, "errors": list(s.errors),
                    "namespaces": list(s.namespaces)} for s in statuses.values()]
        return mask({"namespaces": rows, "plugins": plugins, "reindex_allowed": reindex_refusal() is None})

    def reindex_refusal() -> Optional[str]:
        workers = int(os.environ.get("WXHELPER_SERVE_WORKERS", "1") or 1)
        if workers > 1 and not settings.chroma_url:
            return (f"re-indexing from the console needs a Chroma server (CHROMA_URL) when {workers} workers share "
                    "the embedded Chroma; run `wxhelper index` with the service stopped instead")
        return None

    @router.post("/namespaces/{namespace}/reindex")
    async def reindex(namespace: str = Path(..., max_length=MAX_ID_CHARS),
                      force: bool = Query(False, description="Rebuild from scratch")) -> Any:
        try:
            ns = host.namespace(namespace)
        except UnknownNamespace as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        refusal = reindex_refusal()
        if refusal:
            return JSONResponse({"detail": refusal}, status_code=409)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("progress", {"done": done, "total": total}))

        async def run() -> None:
            try:
                result = await asyncio.to_thread(host.knowledge.index, ns, progress, force)
                queue.put_nowait(("done", {"namespace": ns.name, "total": result.total, "added": result.added,
                                           "removed": result.removed, "rebuilt": result.rebuilt,
                                           "seconds": round(result.seconds, 3), "embedding": result.embedding}))
            except Exception as exc:
                log.error("re-indexing %s failed: %s: %s", ns.name, type(exc).__name__, exc)
                queue.put_nowait(("error", {"detail": f"{type(exc).__name__}: {exc}"}))

        task = asyncio.create_task(run())  # runs to the end even if the page goes away
        background.add(task)
        task.add_done_callback(background.discard)

        async def events() -> AsyncIterator[bytes]:
            yield _sse("start", {"namespace": ns.name, "force": force})
            while True:
                kind, data = await queue.get()
                yield _sse(kind, data)
                if kind in ("done", "error"):
                    return

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    background: set[asyncio.Task] = set()

    # -- live messages and the prompt inspector -----------------------------------------------------------
    @router.get("/events")
    async def events(limit: int = Query(50, ge=1, le=1000)) -> Any:
        found = await recorder.log.recent(limit)
        return {"events": [mask(e) for e in found], "stats": recorder.stats()}

    @router.get("/events/stream")
    async def stream(request: Request, after: Optional[str] = Query(None, max_length=40)) -> Any:
        cursor = after or await recorder.log.last_id()

        async def sse() -> AsyncIterator[bytes]:
            nonlocal cursor
            yield _sse("hello", {"after": cursor, "worker": worker_name()})
            last_beat = time.monotonic()
            while not shutdown.closing and not await request.is_disconnected():
                try:
                    batch = await recorder.log.after(cursor, 1.0)
                except Exception as exc:  # the store is down: say so and keep trying
                    yield _sse("problem", {"detail": f"{type(exc).__name__}: {exc}"})
                    await asyncio.sleep(2.0)
                    continue
                for event in batch:
                    cursor = event["id"]
                    yield _sse("message", mask(event))
                if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                    last_beat = time.monotonic()
                    yield b": keep-alive\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/events/{event_id}")
    async def event(event_id: str = Path(..., max_length=40)) -> Any:
        found = await recorder.log.get(event_id)
        if found is None:
            return JSONResponse({"detail": f"no console event {event_id!r} (the console keeps the last "
                                           f"{settings.console_events} messages)"}, status_code=404)
        if found.get("template"):
            found["template"]["source"] = await asyncio.to_thread(template_source, found)
        return mask(found)

    def template_source(event: dict[str, Any]) -> Optional[str]:
        """The text of the template the event names, as it is on disk now; only a file the renderer would use.

        The path is looked up again from the namespace, never taken from the event, so a forged
        event cannot make the console read another file.
        """
        from ..prompt import DEFAULT_TEMPLATES, SYSTEM_TEMPLATE

        ns = host.namespaces.get(event.get("namespace") or "")
        if event["template"].get("error") or ns is None:
            path = DEFAULT_TEMPLATES / SYSTEM_TEMPLATE
        else:
            path = next((d / SYSTEM_TEMPLATE for d in host.renderer.search_path(ns) if (d / SYSTEM_TEMPLATE).is_file()),
                        DEFAULT_TEMPLATES / SYSTEM_TEMPLATE)
        try:
            return path.read_text(encoding="utf-8")[:20000]
        except OSError:
            return None

    # -- fairness -----------------------------------------------------------------------------------------
    @router.get("/fairness/{namespace}")
    async def fairness(namespace: str = Path(..., max_length=MAX_ID_CHARS),
                       kind: str = Query("namespace", pattern="^(namespace|friend_circle|chat)$"),
                       source_id: str = Query("", max_length=MAX_ID_CHARS),
                       bot_id: str = Query("", max_length=MAX_ID_CHARS),
                       compare: str = Query("seed", max_length=32)) -> Any:
        if compare not in ALGORITHMS:
            return _error(422, ["query", "compare"], f"compare must be one of {sorted(ALGORITHMS)}")
        for value, loc in ((source_id, ["query", "source_id"]), (bot_id, ["query", "bot_id"])):
            if value and (problem := bad_id(value, loc)):
                return problem
        known = await host.namespaces_for(bot_of(bot_id))
        ns = host.find_namespace(known, namespace)
        if ns is None:
            return JSONResponse({"detail": str(UnknownNamespace(namespace, sorted(known)))}, status_code=404)
        if kind == "chat" and not source_id:
            return _error(422, ["query", "source_id"], "source_id is required with kind=chat")
        key = host.history_key(kind, ns.name, source_id, bot_id)  # type: ignore[arg-type]
        max_records, max_chars = settings.history_budget(kind)
        current = settings.fair_algorithm
        query = FairQuery(max_records, max_chars, time.time() - settings.clear_cycle_seconds, current,
                          settings.user_weight_map)
        candidates = await host.store.candidates(key, query)  # the same data for both algorithms

        def picks(algorithm: str) -> dict[str, dict[str, int]]:
            chosen = select(apply_weights(candidates, query.weights, algorithm), max_records, max_chars, algorithm)
            out: dict[str, dict[str, int]] = {}
            for record in chosen:
                entry = out.setdefault(record.user_id, {"records": 0, "chars": 0})
                entry["records"] += 1
                entry["chars"] += len(record.content)
            return out

        fair, other = picks(current), picks(compare)
        users = []
        for history in candidates:
            records = list(history.records)
            users.append({"user_id": history.user_id,
                          "available": {"records": len(records), "chars": sum(len(r.content) for r in records)},
                          "current": fair.get(history.user_id, {"records": 0, "chars": 0}),
                          "compare": other.get(history.user_id, {"records": 0, "chars": 0})})
        users.sort(key=lambda u: (-u["available"]["chars"], u["user_id"]))

        def totals(which: str) -> dict[str, int]:
            return {"records": sum(u[which]["records"] for u in users), "chars": sum(u[which]["chars"] for u in users)}

        return mask({"namespace": ns.name, "title": ns.title, "kind": kind, "source_id": source_id,
                     "algorithm": current, "compare": compare, "max_records": max_records, "max_chars": max_chars,
                     "users": users, "totals": {"current": totals("current"), "compare": totals("compare"),
                                                "available": totals("available")}})

    # -- categories and bindings ------------------------------------------------------------------------
    @router.get("/categories")
    async def categories() -> Any:
        custom = [{"bot_id": b, "name": n, "title": t} for b, n, t in await host.store.custom_namespaces(None)]
        try:
            bindings = [{"source_id": s, "bot_id": b, "namespace": n} for s, b, n in await host.store.all_bindings()]
        except NotImplementedError:
            bindings = []
        preset = [{"name": ns.name, "title": ns.title, "plugin": ns.plugin or ""} for ns in host.namespaces.values()]
        known = {name for name in host.namespaces} | {(c["bot_id"], c["name"]) for c in custom}  # type: ignore[operator]
        for b in bindings:  # a binding to a deleted category is ignored by routing: say so
            b["stale"] = b["namespace"] not in known and (b["bot_id"], b["namespace"]) not in known
        return mask({"bot_id": settings.bot_id, "preset": preset, "custom": custom,
                     "bindings": sorted(bindings, key=lambda b: (b["namespace"], b["source_id"]))})

    @router.post("/categories", status_code=201)
    async def add_category(body: CategoryIn) -> Any:
        if body.bot_id and (problem := bad_id(body.bot_id, ["body", "bot_id"])):
            return problem
        try:
            name = await create_category(host, bot_of(body.bot_id), body.name.strip(), body.title)
        except CategoryError as exc:
            status = 409 if "已经存在" in str(exc) else 422
            return _error(status, ["body", "name"], str(exc))
        return JSONResponse({"bot_id": bot_of(body.bot_id), "name": name, "title": body.title or name},
                            status_code=201)

    @router.delete("/categories/{name}")
    async def delete_category(name: str = Path(..., max_length=64),
                              bot_id: str = Query("", max_length=MAX_ID_CHARS),
                              confirm: str = Query("", max_length=64,
                                                   description="The category's name again: deleting drops its histories")) -> Any:
        if bot_id and (problem := bad_id(bot_id, ["query", "bot_id"])):
            return problem
        if confirm != name:
            return _error(409, ["query", "confirm"],
                          f"deleting category {name!r} drops all its histories: repeat its name in ?confirm= to do it")
        try:
            title, dropped = await remove_category(host, bot_of(bot_id), name)
        except CategoryError as exc:
            status = 404 if "没有名为" in str(exc) else 409
            return _error(status, ["path", "name"], str(exc))
        return {"bot_id": bot_of(bot_id), "name": name, "title": title, "dropped": dropped}

    @router.put("/bindings")
    async def bind(body: BindingIn) -> Any:
        for value, loc in ((body.source_id, ["body", "source_id"]), (body.bot_id, ["body", "bot_id"])):
            if value and (problem := bad_id(value, loc)):
                return problem
        bot = bot_of(body.bot_id)
        target = None
        if body.namespace:
            ns = host.find_namespace(await host.namespaces_for(bot), body.namespace)
            if ns is None:
                return _error(422, ["body", "namespace"], f"unknown namespace {body.namespace!r} for bot {bot!r}")
            target = ns.name
        await host.store.set_binding(body.source_id, bot, target)
        return {"source_id": body.source_id, "bot_id": bot, "namespace": target}

    # -- health ------------------------------------------------------------------------------------------------
    @router.get("/health")
    async def health() -> Any:
        store, chroma, llm, depth = await asyncio.gather(check_store(), check_chroma(), check_llm(), inbox_depth())
        spool = spool_summary(host.store)
        plugins = {s.name: {"status": s.status, "errors": list(s.errors)} for s in host.plugin_statuses.values()}
        return {"store": store, "chroma": chroma, "llm": llm, "inbox": depth,
                "spool": {**spool, "status": "failed" if spool["outage"] else "ok"},
                "plugins": plugins, "events": recorder.stats(), "worker": worker_name(), "time": time.time()}

    async def check_store() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(host.store.ping(), CHECK_TIMEOUT)
        except Exception as exc:
            return {"status": "failed", "backend": host.store.scheme, "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "backend": host.store.scheme, "ms": _ms(started)}

    async def check_chroma() -> dict[str, Any]:
        started = time.perf_counter()
        where = settings.chroma_url or "embedded"
        try:
            await asyncio.wait_for(asyncio.to_thread(lambda: host.knowledge.client().heartbeat()), CHECK_TIMEOUT)
        except Exception as exc:
            return {"status": "failed", "where": where, "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "where": where, "ms": _ms(started)}

    async def check_llm() -> dict[str, Any]:
        if not host.llm.available:
            return {"status": "offline", "detail": "no OPENAI_API_KEY: answers come from the knowledge (offline)"}
        base = (settings.openai_base_url or "https://api.openai.com/v1").rstrip("/")
        key = settings.openai_api_key or ""
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
                resp = await client.get(base + "/models", headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            return {"status": "failed", "endpoint": base, "error": f"{type(exc).__name__}: {exc}"}
        if resp.status_code in (401, 403):
            return {"status": "failed", "endpoint": base, "error": f"the API key was refused (HTTP {resp.status_code})"}
        return {"status": "ok", "endpoint": base, "model": settings.model, "http": resp.status_code,
                "ms": _ms(started)}

    async def inbox_depth() -> dict[str, Any]:
        try:
            depth = await asyncio.wait_for(host.store.inbox_depth(), CHECK_TIMEOUT)
        except Exception as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "depth": depth}

    app.include_router(router)

    # -- the page ----------------------------------------------------------------------------------------------
    page_headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

    @app.get("/admin", include_in_schema=False)
    async def admin_page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=page_headers)

    @app.get("/admin/", include_in_schema=False)
    async def admin_slash() -> Response:
        return RedirectResponse("/admin", status_code=308)

    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")
    return recorder


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)

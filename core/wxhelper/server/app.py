"""The FastAPI application: a bot in any language talks to one :class:`~wxhelper.host.Host` over HTTP.

Routes (all but the probes need the bearer token when ``WXHELPER_API_TOKEN`` is set):

* ``POST /v1/messages`` — an :class:`InboundMessage` in, the :class:`Reply` out;
  ``?stream=true`` answers Server-Sent Events: ``chunk`` events with text, then one ``reply`` event;
* ``GET /v1/namespaces``; ``GET /v1/namespaces/{ns}/history`` — the fair selection;
* ``DELETE /v1/sources/{source_id}/history`` — clear a source's chat history;
* ``GET /v1/sources/{source_id}/export?format=json|csv`` — a source's records, streamed;
* ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

docs/http.md has a curl example for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import io
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Literal, Optional
from urllib.parse import quote

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.routing import Route

from ..blas import one_blas_thread
from ..fairness import ALGORITHMS
from ..host import Host
from ..messages import MAX_ID_CHARS, InboundMessage, Record, Reply, _check_id
from ..routing import UnknownNamespace, lookup
from ..settings import Settings
from ..storage import HistoryKey, StoreError
from . import admin
from .guard import Guard
from .metrics import Metrics, inbox_depth_of

log = logging.getLogger("wxhelper.server")

READY_TIMEOUT = 3.0
EXPORT_FIELDS = ("history", "namespace", "bot_id", "user_id", "source_id", "message_id", "timestamp", "time",
                 "content")

AlgorithmName = Literal[tuple(sorted(ALGORITHMS))]  # type: ignore[valid-type]


# -- response models (documentation of the JSON; replies are serialised by pydantic directly) --------
class ErrorBody(BaseModel):
    detail: Any = Field(description="A message, or FastAPI's list of field errors (loc, msg, type)")


class NamespaceInfo(BaseModel):
    name: str
    title: str
    plugin: str
    version: str = ""
    keywords: list[str] = []
    passages: Optional[int] = None
    indexed: Optional[bool] = None
    embedding: Optional[str] = None
    custom_for_bot: Optional[str] = Field(None, description="Set for a custom namespace: the bot whose owners added it")


class PluginInfo(BaseModel):
    name: str
    version: str = ""
    status: str
    errors: list[str] = []
    namespaces: list[str] = []


class NamespacesBody(BaseModel):
    namespaces: list[NamespaceInfo]
    plugins: list[PluginInfo]


class HistoryBody(BaseModel):
    namespace: str
    kind: str
    source_id: str = ""
    records: list[Record]


class ClearedBody(BaseModel):
    source_id: str
    bot_id: str
    cleared: dict[str, int] = Field(description="Records dropped per namespace")
    total: int


class CheckBody(BaseModel):
    status: Literal["ok", "failed"]
    checks: dict[str, Any] = {}


SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "description": "One Server-Sent Event: `chunk` (data: {\"text\": piece}) as the LLM writes, then one `reply` "
                   "(data: the whole Reply); `error` (data: {\"detail\"}) if the host fails after the first chunk",
    "properties": {"event": {"type": "string", "enum": ["chunk", "reply", "error"]},
                   "data": {"type": "string", "description": "JSON"}},
}
E401 = {401: {"model": ErrorBody, "description": "Missing or wrong bearer token"}}
E404 = {404: {"model": ErrorBody, "description": "Unknown namespace"}}
E422 = {422: {"model": ErrorBody, "description": "Invalid input: field errors"}}
E503 = {503: {"model": ErrorBody, "description": "The history store is unavailable"}}


def _validation_error(loc: tuple[Any, ...], msg: str, value: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def _check_path_id(value: str, where: str, name: str) -> str:
    try:
        return _check_id(value, name) or value
    except ValueError as exc:
        raise _validation_error((where, name), str(exc), value) from None


def create_app(settings: Optional[Settings] = None, *, host: Optional[Host] = None,
               freeze_gc: bool = False) -> FastAPI:
    """The app; it starts ``host`` (or a new ``Host(settings)``) on startup and closes it on shutdown.

    ``freeze_gc`` (the ``wxhelper serve`` worker's): :func:`freeze_startup_objects` once the host has started.
    """
    settings = settings or (host.settings if host is not None else Settings())
    host = host or Host(settings)
    metrics = Metrics(inbox_depth_of(host))
    background: set[asyncio.Task] = set()  # streams whose client hung up, finishing on their own

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await host.start()
        if freeze_gc:
            freeze_startup_objects()
        try:
            yield
        finally:
            if background:
                await asyncio.wait(background, timeout=30)
            await console.close()
            await host.close()

    app = FastAPI(
        title="wxhelper", version=_version(), lifespan=lifespan,
        description="The bot-facing HTTP service of the wxhelper host. Send messages, stream replies, "
                    "read fair histories, export and clear a source. docs/http.md has curl examples.",
    )
    app.state.host = host
    app.state.metrics = metrics
    token = api_token(settings)
    app.add_middleware(Guard, token=token, max_body=settings.max_body, on_reject=metrics.reject)
    console = admin.install(app, host, token)  # the operator console: /admin and /admin/api (docs/console.md)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.reject("invalid")
        errors = []
        for e in exc.errors():
            e = dict(e)
            e.pop("url", None)
            e["loc"] = list(e.get("loc", ()))
            if "ctx" in e:
                e["ctx"] = {k: str(v) for k, v in e["ctx"].items()}
            errors.append(e)
        return JSONResponse({"detail": _jsonable(errors)}, status_code=422)

    @app.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store failed: %s", exc)
        return JSONResponse({"detail": f"history store unavailable: {exc}"}, status_code=503)

    def namespace_or_404(name: str) -> str:
        try:
            return host.namespace(name).name
        except UnknownNamespace as exc:
            raise _NotFound(str(exc)) from None

    @app.exception_handler(_NotFound)
    async def not_found(request: Request, exc: _NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    # -- messages ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _failures_of(message: InboundMessage) -> Any:
        """An unknown namespace is the caller's 422; any other failure is counted and shown in the console."""
        try:
            yield
        except UnknownNamespace as exc:
            raise _validation_error(("body", "namespace"), str(exc), message.namespace) from None
        except Exception as exc:
            metrics.failed()
            console.failed(message, exc)
            raise

    @app.post("/v1/messages", tags=["messages"], summary="Send a message; get the reply (or stream it)",
              responses={200: {"model": Reply, "description": "The Reply; with stream=true, Server-Sent Events",
                               "content": {"text/event-stream": {"schema": SSE_EVENT}}},
                         **E401, 413: {"model": ErrorBody, "description": "Body over WXHELPER_MAX_BODY"},
                         **E422, **E503})
    async def post_message(message: InboundMessage,
                           stream: bool = Query(False, description="Answer Server-Sent Events: `chunk` events "
                                                "({\"text\"}) as the LLM writes, then one `reply` event")) -> Response:
        if stream:
            return await _stream(message)
        return Response(await answer(message), media_type="application/json")

    async def _stream(message: InboundMessage) -> Response:
        pieces = host.stream(message).__aiter__()
        with _failures_of(message):  # the first piece comes after routing and assembly: their errors still get a status code
            first = await pieces.__anext__()
        # The rest is pulled by a task of its own: a client that hangs up mid-stream does not cancel
        # the host half-way, so the message is still answered, recorded and completed in the inbox
        # (a retry with the same message_id then gets the whole reply).
        queue: asyncio.Queue = asyncio.Queue()
        queue.put_nowait(first)

        async def produce() -> None:
            try:
                if not isinstance(first, Reply):
                    async for item in pieces:
                        queue.put_nowait(item)
            except Exception as exc:
                metrics.failed()
                console.failed(message, exc)
                log.exception("streaming a reply failed")
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(_END)

        task = asyncio.create_task(produce())
        background.add(task)
        task.add_done_callback(background.discard)

        async def events() -> AsyncIterator[bytes]:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, Reply):
                    metrics.observe(item)
                    yield b"event: reply\ndata: " + item.model_dump_json().encode("utf-8") + b"\n\n"
                elif isinstance(item, Exception):  # headers are sent: say so in the stream
                    detail = json.dumps({"detail": f"{type(item).__name__}: {item}"}, ensure_ascii=False)
                    yield b"event: error\ndata: " + detail.encode("utf-8") + b"\n\n"
                elif item:
                    yield b"event: chunk\ndata: " + json.dumps({"text": item}, ensure_ascii=False).encode() + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def answer(message: InboundMessage) -> bytes:
        """What both routes of POST /v1/messages do with a valid message (not streamed)."""
        with _failures_of(message):
            reply = await host.handle(message)
        metrics.observe(reply)
        return reply.model_dump_json().encode("utf-8")

    documented = next(r for r in app.router.routes if getattr(r, "path", None) == "/v1/messages")
    app.router.routes.insert(0, Route("/v1/messages", _MessagesFastPath(documented, answer), methods=["POST"],
                                      include_in_schema=False))

    # -- namespaces and histories ---------------------------------------------------------------------
    @app.get("/v1/namespaces", tags=["namespaces"], response_model=NamespacesBody, responses={**E401},
             summary="Namespaces (name, title, plugin, index state) and the plugins' load status")
    async def get_namespaces(bot_id: Optional[str] = Query(None, max_length=MAX_ID_CHARS,
                                                          description="Only this bot's custom namespaces")) -> Any:
        if bot_id is not None:
            _check_path_id(bot_id, "query", "bot_id")
        rows = []
        for ns in host.namespaces.values():
            index = await asyncio.to_thread(host.knowledge.status, ns)
            rows.append(NamespaceInfo(name=ns.name, title=ns.title, plugin=ns.plugin or "", version=ns.version or "",
                                      keywords=list(ns.keywords), passages=index.get("passages"),
                                      indexed=index.get("indexed"), embedding=index.get("embedding")))
        custom = getattr(host.store, "custom_namespaces", None)
        for owner, name, title in (await custom(bot_id) if custom is not None else []):
            rows.append(NamespaceInfo(name=name, title=title, plugin="custom", keywords=[title], custom_for_bot=owner))
        plugins = [PluginInfo(name=s.name, version=s.version, status=s.status, errors=s.errors,
                              namespaces=list(s.namespaces)) for s in host.plugin_statuses.values()]
        return NamespacesBody(namespaces=rows, plugins=plugins)

    @app.get("/v1/namespaces/{namespace}/history", tags=["histories"], response_model=HistoryBody,
             responses={**E401, **E404, **E422, **E503},
             summary="The fair selection of one history, oldest first, exactly as a prompt would get it")
    async def get_history(
        namespace: str = Path(..., max_length=MAX_ID_CHARS, description="Namespace name or title"),
        kind: Literal["namespace", "friend_circle", "chat"] = Query("namespace"),
        source_id: str = Query("", max_length=MAX_ID_CHARS, description="Required with kind=chat"),
        bot_id: str = Query("", max_length=MAX_ID_CHARS, description="Chat history of this bot (default BOT_ID)"),
        max_records: Optional[int] = Query(None, ge=0, le=10_000),
        max_chars: Optional[int] = Query(None, ge=0, le=10_000_000),
        algorithm: Optional[AlgorithmName] = Query(None),
    ) -> Any:
        name = namespace_or_404(namespace)
        if kind == "chat":
            if not source_id:
                raise _validation_error(("query", "source_id"), "source_id is required with kind=chat", source_id)
            _check_path_id(source_id, "query", "source_id")
        if bot_id:
            _check_path_id(bot_id, "query", "bot_id")
        records = await host.history(name, kind, source_id=source_id if kind == "chat" else "", bot_id=bot_id,
                                     max_records=max_records, max_chars=max_chars, algorithm=algorithm)
        return HistoryBody(namespace=name, kind=kind, source_id=source_id if kind == "chat" else "", records=records)

    @app.delete("/v1/sources/{source_id}/history", tags=["sources"], response_model=ClearedBody,
                responses={**E401, **E404, **E422, **E503},
                summary="Clear a source's chat history (one namespace, or all)")
    async def clear_history(
        source_id: str = Path(..., max_length=MAX_ID_CHARS),
        namespace: Optional[str] = Query(None, max_length=MAX_ID_CHARS, description="Omit for every namespace"),
        bot_id: str = Query("", max_length=MAX_ID_CHARS, description="The bot whose chat history (default BOT_ID)"),
    ) -> Any:
        _check_path_id(source_id, "path", "source_id")
        if bot_id:
            _check_path_id(bot_id, "query", "bot_id")
        bot = bot_id or settings.bot_id
        known = await host.namespaces_for(bot) if hasattr(host, "namespaces_for") else dict(host.namespaces)
        if namespace is not None:
            found = lookup(known, namespace)
            if found is None:
                raise _NotFound(str(UnknownNamespace(namespace, sorted(known))))
            names = [found.name]
        else:
            names = list(known)
        cleared = {}
        for name in names:
            cleared[name] = await host.store.clear(host.history_key("chat", name, source_id, bot_id))
        await console.forget_chat(source_id, None if namespace is None else names,
                                  None if settings.share_chat_across_bots else bot)
        return ClearedBody(source_id=source_id, bot_id="" if settings.share_chat_across_bots else bot, cleared=cleared, total=sum(cleared.values()))

    @app.get("/v1/sources/{source_id}/export", tags=["sources"],
             responses={200: {"description": "The source's records, streamed (a JSON array, or CSV with a header)",
                              "content": {"application/json": {"schema": {"type": "array", "items": {
                                  "type": "object"}}}, "text/csv": {"schema": {"type": "string"}}}},
                        **E401, **E404, **E422, **E503},
             summary="Export a source's records: its chat histories and its posts on the shared histories")
    async def export(
        source_id: str = Path(..., max_length=MAX_ID_CHARS),
        format: Literal["json", "csv"] = Query("json"),
        namespace: Optional[str] = Query(None, max_length=MAX_ID_CHARS, description="Only this namespace"),
        since: Optional[float] = Query(None, ge=0, description="Only records at or after (epoch seconds)"),
        until: Optional[float] = Query(None, ge=0, description="Only records before (epoch seconds)"),
    ) -> Response:
        _check_path_id(source_id, "path", "source_id")
        only = namespace_or_404(namespace) if namespace is not None else None
        try:
            histories = host.store.iter_all(
                lambda key: (only is None or key.namespace == only)
                and (key.kind != "chat" or key.source_id == source_id)).__aiter__()
        except NotImplementedError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=501)

        async def rows() -> AsyncIterator[dict[str, Any]]:
            async for key, records in histories:
                if only is not None and key.namespace != only:
                    continue
                if key.kind == "chat" and key.source_id != source_id:
                    continue
                for r in records:
                    if r.source_id != source_id:
                        continue
                    if (since is not None and r.timestamp < since) or (until is not None and r.timestamp >= until):
                        continue
                    yield _export_row(key, r)

        it = rows().__aiter__()
        try:  # the first row before the headers: a store failure is still a 503
            first: Optional[dict[str, Any]] = await it.__anext__()
        except StopAsyncIteration:
            first = None
        filename = quote(f"wxhelper-{source_id}.{format}", safe="")
        headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{filename}"}
        if format == "csv":
            return StreamingResponse(_csv(first, it), media_type="text/csv; charset=utf-8", headers=headers)
        return StreamingResponse(_json_array(first, it), media_type="application/json", headers=headers)

    # -- probes and metrics -----------------------------------------------------------------------------
    @app.get("/healthz", tags=["probes"], response_model=CheckBody, summary="Liveness: the process answers")
    async def healthz() -> Any:
        return CheckBody(status="ok")

    @app.get("/readyz", tags=["probes"], response_model=CheckBody,
             responses={503: {"model": CheckBody, "description": "A check failed"}},
             summary="Readiness: the history store, Chroma and the plugins are checked")
    async def readyz() -> Any:
        checks = await asyncio.gather(_check_store(), _check_chroma())
        plugins = {s.name: s.status for s in host.plugin_statuses.values()}
        failed = sorted(name for name, status in plugins.items() if status == "failed")
        body: dict[str, Any] = {
            "store": checks[0], "chroma": checks[1],
            "plugins": {"status": "failed" if failed else "ok", "failed": failed, "loaded": len(plugins) - len(failed),
                        "namespaces": len(host.namespaces)},
        }
        ok = all(c["status"] == "ok" for c in body.values())
        result = CheckBody(status="ok" if ok else "failed", checks=body)
        return JSONResponse(result.model_dump(), status_code=200 if ok else 503)

    async def _check_store() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(host.store.ping(), READY_TIMEOUT)
        except Exception as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "backend": host.store.scheme}
        return {"status": "ok", "backend": host.store.scheme, "ms": round((time.perf_counter() - started) * 1000, 3)}

    async def _check_chroma() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.to_thread(lambda: host.knowledge.client().heartbeat()), READY_TIMEOUT)
        except Exception as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        where = settings.chroma_url or "embedded"
        return {"status": "ok", "chroma": where, "ms": round((time.perf_counter() - started) * 1000, 3)}

    @app.get("/metrics", tags=["probes"], responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                                             "description": "Prometheus text format"}, **E401},
             response_class=Response, summary="Prometheus metrics")
    async def get_metrics() -> Response:
        return Response(await metrics.render(), media_type=metrics.content_type)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        if token is not None:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer", "description": "WXHELPER_API_TOKEN"}
            schema["security"] = [{"bearer": []}]
            for path in ("/healthz", "/readyz"):
                for op in schema["paths"].get(path, {}).values():
                    op["security"] = []
        for path, ops in schema["paths"].items():  # FastAPI documents 422 itself; add what the guard answers
            for op in ops.values():
                if token is not None and path not in ("/healthz", "/readyz"):
                    op.setdefault("responses", {}).setdefault("401", {
                        "description": "Missing or wrong bearer token",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def api_token(settings: Settings) -> Optional[str]:
    """The bearer token, or None; an empty or blank ``WXHELPER_API_TOKEN`` counts as unset (never as "")."""
    if settings.api_token is None:
        return None
    return settings.api_token.get_secret_value().strip() or None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wxhelper")
    except PackageNotFoundError:
        return "0"


class _NotFound(Exception):
    pass


class _MessagesFastPath:
    """POST /v1/messages for what nearly every request is: a valid JSON message, no query parameters.

    FastAPI's route (the documented one, with its OpenAPI schema) parses the body with ``json.loads``,
    then validates the dict, solving the route's dependencies on the way: ~0.15 ms of CPU a request
    (docs/performance.md, "HTTP service"). Here the body is validated straight from its bytes
    (pydantic's JSON parser) and the reply's JSON is written as the documented route writes it.
    Anything else — a query string (``?stream=true``), another content type, a body that does not
    validate — is handed to the documented route with the body replayed, so its answers (the 422
    field errors included) are FastAPI's, unchanged. Errors the host raises take the app's handlers
    (422 for an unknown namespace, 503 for the store) as they do from the documented route.
    """

    def __init__(self, documented: Any, answer: Any) -> None:
        self.documented = documented
        self.answer = answer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("query_string") or not _json_content(scope):
            await self._documented(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            inbound = InboundMessage.model_validate_json(body)
        except ValueError:  # pydantic's ValidationError included: the documented route says what is wrong
            await self._documented(scope, _replay(body, receive), send)
            return
        data = await self.answer(inbound)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(data)).encode("latin-1")),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    async def _documented(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        _match, child = self.documented.matches(scope)
        scope.update(child)
        await self.documented.handle(scope, receive, send)


def _json_content(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


_END = object()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def _export_row(key: HistoryKey, r: Record) -> dict[str, Any]:
    return {"history": key.kind, "namespace": key.namespace, "bot_id": r.bot_id, "user_id": r.user_id,
            "source_id": r.source_id, "message_id": r.message_id, "timestamp": r.timestamp,
            "time": datetime.fromtimestamp(r.timestamp, timezone.utc).isoformat(), "content": r.content}


async def _json_array(first: Optional[dict[str, Any]], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    if first is None:
        yield b"[]\n"
        return
    yield b"[\n" + json.dumps(first, ensure_ascii=False).encode("utf-8")
    async for row in rest:
        yield b",\n" + json.dumps(row, ensure_ascii=False).encode("utf-8")
    yield b"\n]\n"


async def _csv(first: Optional[dict[str, Any]], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\r\n")

    def take() -> bytes:
        data = buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
        return data

    writer.writeheader()
    if first is not None:
        writer.writerow(first)
    yield "\ufeff".encode("utf-8") + take()  # a BOM, so spreadsheet programs read the Chinese right
    async for row in rest:
        writer.writerow(row)
        if buf.tell() > 16384:
            yield take()
    tail = take()
    if tail:
        yield tail


GC_YOUNG_THRESHOLD = 7000
"""Allocations between two collections of the youngest generation in a server worker (Python's default: 700)."""

def freeze_startup_objects() -> None:
    """Move everything alive after start (plugins, the embedding model, Chroma's client: ~200 000
    objects) out of the cyclic garbage collector's reach, and collect the young generation less often.

    A message allocates thousands of short-lived objects, so the young generation was collected
    about every other message, and each full collection walked every object of the process again
    (~80 ms each; 0.9 s of collections in a 2 300-message run, 0.36 s after this, docs/performance.md). Objects frozen here live as long as the process anyway;
    reference counting still frees everything else at once, and cycles made later are still collected.
    """
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])


def app_from_env() -> FastAPI:
    """The factory ``wxhelper serve`` gives uvicorn: settings from the environment, like every command."""
    from ..cli import _settings

    one_blas_thread()
    return create_app(_settings(), freeze_gc=True)

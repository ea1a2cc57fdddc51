"""The ``wxhelper`` command line: ask, chat, namespaces, history, index (and bench).

Each command builds :class:`Settings` from the environment and runs one
:class:`Host`; output is human-readable by default and JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any, Optional

import click
from pydantic import ValidationError

from .host import Host
from .messages import InboundMessage
from .routing import UnknownNamespace
from .settings import Settings


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(_validation_text(exc)) from exc
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except UnknownNamespace as exc:
        raise click.ClickException(str(exc)) from exc


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@click.group()
@click.version_option(package_name="wxhelper")
def main() -> None:
    """wxhelper: a plugin host for LLM chat bots."""


@main.command()
@click.argument("text")
@click.option("--user", "user_id", required=True, help="Sender's user id.")
@click.option("--group", "group_id", default=None, help="Group id (omit in a private chat).")
@click.option("--bot", "bot_id", default=None, help="Bot id (default: BOT_ID).")
@click.option("--namespace", default=None, help="Explicit namespace (name or title).")
@click.option("--channel", type=click.Choice(["chat", "friend_circle"]), default="chat")
@click.option("--message-id", default=None, help="Message id (default: generated).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole Reply as JSON.")
def ask(text: str, user_id: str, group_id: Optional[str], bot_id: Optional[str], namespace: Optional[str],
        channel: str, message_id: Optional[str], as_json: bool) -> None:
    """Handle one message and print the reply."""
    settings = _settings()
    fields: dict[str, Any] = {"user_id": user_id, "group_id": group_id, "bot_id": bot_id, "content": text,
                              "namespace": namespace, "channel": channel}
    if message_id is not None:
        fields["message_id"] = message_id
    try:
        msg = InboundMessage(**fields)
    except ValidationError as exc:
        raise click.ClickException(_validation_text(exc)) from exc

    async def go() -> Any:
        async with Host(settings) as host:
            return await host.handle(msg)

    reply = _run(go())
    if as_json:
        _dump(reply.model_dump(mode="json"))
    elif reply.answered:
        click.echo(reply.text)
    else:
        click.echo(f"recorded in {', '.join(reply.recorded) or 'nothing'} of {reply.namespace} (not answered)")


@main.command()
@click.option("--user", "user_id", default="me", show_default=True)
@click.option("--group", "group_id", default=None)
@click.option("--bot", "bot_id", default=None)
@click.option("--namespace", default=None)
def chat(user_id: str, group_id: Optional[str], bot_id: Optional[str], namespace: Optional[str]) -> None:
    """An interactive session: type messages, read replies; empty line or Ctrl-D quits."""
    settings = _settings()

    async def go() -> None:
        async with Host(settings) as host:
            click.echo(f"namespaces: {', '.join(host.namespaces)}; {'online' if host.llm.available else 'offline'}")
            while True:
                try:
                    line = await asyncio.to_thread(input, "> ")
                except (EOFError, KeyboardInterrupt):
                    break
                if not line.strip():
                    break
                try:
                    msg = InboundMessage(user_id=user_id, group_id=group_id, bot_id=bot_id, content=line,
                                         namespace=namespace)
                except ValidationError as exc:
                    click.echo(f"error: {_validation_text(exc)}")
                    continue
                reply = await host.handle(msg)
                click.echo(f"[{reply.namespace}] {reply.text}")

    _run(go())


@main.command()
@click.option("--json", "as_json", is_flag=True)
def namespaces(as_json: bool) -> None:
    """List namespaces (name, title, plugin, status) and plugins that failed to load."""
    settings = _settings()

    async def go() -> list[dict[str, Any]]:
        async with Host(settings) as host:
            rows: list[dict[str, Any]] = []
            lost = {(name, s.name): winner for s in host.plugin_statuses.values() for name, winner in s.clashes.items()}
            for ns in host.namespaces.values():
                status = host.plugin_statuses[ns.plugin]
                index = await asyncio.to_thread(host.knowledge.status, ns)
                rows.append({"name": ns.name, "title": ns.title, "plugin": ns.plugin, "version": ns.version,
                             "status": "loaded", "errors": status.errors, "keywords": list(ns.keywords),
                             "clashes": sorted(p for (n, p) in lost if n == ns.name),
                             "passages": index.get("passages"), "indexed": index.get("indexed"),
                             "embedding": index.get("embedding"), "index_error": index.get("error")})
            for (name, plugin), winner in lost.items():  # a clash: first registration wins, the rest are listed
                status = host.plugin_statuses[plugin]
                rows.append({"name": name, "title": None, "plugin": plugin, "version": status.version,
                             "status": "clashed", "winner": winner,
                             "errors": [f"namespace {name!r} is already registered by {winner!r}; this one is ignored"]})
            for bot_id, name, title in await host.store.custom_namespaces():
                rows.append({"name": name, "title": title, "plugin": "custom", "version": "", "status": "loaded",
                             "errors": [], "keywords": [title], "bot_id": bot_id, "passages": 0,
                             "indexed": True, "embedding": host.knowledge.label})
            for status in host.plugin_statuses.values():
                if status.status != "loaded" or (not status.namespaces and not status.clashes and status.errors):
                    rows.append({"name": None, "title": None, "plugin": status.name, "version": status.version,
                                 "status": status.status, "errors": status.errors})
            return rows

    rows = _run(go())
    if as_json:
        _dump(rows)
        return
    for row in rows:
        if row["status"] == "clashed":
            click.echo(f"! {row['name']}\t{row['plugin']} {row['version']}\tclashed\t{row['errors'][0]}")
        elif row["name"] is None:
            click.echo(f"! {row['plugin']}: {row['status']}: {'; '.join(row['errors'])}")
        else:
            note = f"  ({'; '.join(row['errors'])})" if row["errors"] else ""
            if row.get("index_error"):  # Chroma unreachable, a malformed corpus file
                note += f"  (index: {row['index_error']})"
            if row.get("clashes"):
                note += f"  (also offered by {', '.join(row['clashes'])}: ignored, first registration wins)"
            state = "indexed" if row["indexed"] else "not indexed"
            click.echo(f"{row['name']}\t{row['title']}\t{row['plugin']} {row['version']}\t{row['status']}\t"
                       f"{row['passages']} passages, {state}, {row['embedding']}{note}")


@main.command()
@click.argument("namespace")
@click.option("--kind", type=click.Choice(["namespace", "friend_circle", "chat"]), default="namespace")
@click.option("--source", "source_id", default="", help="Source id (required for --kind chat).")
@click.option("--bot", "bot_id", default="")
@click.option("--max-records", type=click.IntRange(min=0), default=None)
@click.option("--max-chars", type=click.IntRange(min=0), default=None)
@click.option("--algorithm", default=None, help="max_min (default), seed, weighted, time_decay, quality or hybrid.")
@click.option("--json", "as_json", is_flag=True)
def history(namespace: str, kind: str, source_id: str, bot_id: str, max_records: Optional[int],
            max_chars: Optional[int], algorithm: Optional[str], as_json: bool) -> None:
    """Print the fair selection of one history, oldest first."""
    settings = _settings()
    if kind == "chat" and not source_id:
        raise click.UsageError("--source is required with --kind chat")

    async def go() -> list[Any]:
        async with Host(settings) as host:
            return await host.history(namespace, kind, source_id=source_id, bot_id=bot_id,  # type: ignore[arg-type]
                                      max_records=max_records, max_chars=max_chars, algorithm=algorithm)

    try:
        records = _run(go())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [r.model_dump(include={"user_id", "source_id", "bot_id", "content", "timestamp", "message_id"})
            for r in records]
    if as_json:
        _dump(rows)
        return
    from .prompt import format_timestamp

    for r in rows:
        click.echo(f"[{format_timestamp(r['timestamp'])}] {r['user_id']} @ {r['source_id']}: {r['content']}")
    click.echo(f"({len(rows)} records)", err=True)


@main.command()
@click.argument("namespace", required=False)
@click.option("--force", is_flag=True, help="Rebuild even if nothing changed.")
def index(namespace: Optional[str], force: bool) -> None:
    """Index the corpora into Chroma (all namespaces, or one); unchanged corpora do no work."""
    settings = _settings()

    async def go() -> list[Any]:
        async with Host(settings) as host:
            targets = [host.namespace(namespace)] if namespace else list(host.namespaces.values())
            out = []
            for ns in targets:
                with click.progressbar(length=1, label=f"{ns.name:<12}", show_pos=True) as bar:
                    def progress(done: int, total: int, _bar: Any = bar) -> None:
                        _bar.length = max(total, 1)
                        _bar.update(done - _bar.pos)

                    out.append(await asyncio.to_thread(host.knowledge.index, ns, progress, force))
            return out

    from .knowledge.corpus import CorpusError
    from .knowledge.index import ChromaUnavailable

    try:
        summaries = _run(go())
    except (ChromaUnavailable, CorpusError) as exc:  # a server down, a malformed corpus line: say which
        raise click.ClickException(str(exc)) from exc
    for s in summaries:
        what = "unchanged" if s.unchanged else f"{s.added} added, {s.removed} removed" + (", rebuilt" if s.rebuilt else "")
        click.echo(f"{s.namespace}: {s.total} passages, {what} ({s.embedding})")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def replay(as_json: bool) -> None:
    """Process the messages a crash left in the inbox (the host also does this when it starts)."""
    settings = _settings().model_copy(update={"replay_on_start": False})

    async def go() -> tuple[int, int]:
        async with Host(settings) as host:
            before = await host.store.inbox_depth()
            done = await host.replay()
            return before, done

    before, done = _run(go())
    if as_json:
        _dump({"pending": before, "replayed": done})
    else:
        click.echo(f"{done} of {before} pending messages replayed")


def _register_optional_commands() -> None:
    """Commands that live in their own modules (bench, serve, migrate) attach themselves here."""
    from .bench import bench
    from .server.command import serve

    main.add_command(bench)
    main.add_command(serve)
    from .check import check  # wxhelper check [DISTRIBUTION]…
    main.add_command(check)
    from .scaffold import new_plugin  # wxhelper new-plugin
    main.add_command(new_plugin)
    from .migrate import migrate  # wxhelper migrate --from URL --to URL
    main.add_command(migrate)


_register_optional_commands()

"""``wxhelper migrate --from URL --to URL``: copy every history and binding between stores, without loss.

Records are copied oldest first (timestamp, then insertion order), so ties keep
their order; nothing is trimmed on the way (each history's per-user cap at the
target is at least what the source holds). Appends are idempotent on the
message id, so a migration that was interrupted can simply be run again.
Afterwards every copied history is read back from the target and its count and
checksum (SHA-256 over the records in a canonical order) are compared with the
source's; a mismatch makes the command fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import click

from .messages import Record
from .storage import HistoryStore, open_store


def checksum(records: Iterable[Record]) -> str:
    """SHA-256 over the records sorted by (timestamp, message_id), each as canonical JSON."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.timestamp, r.message_id)):
        digest.update(json.dumps([r.user_id, r.source_id, r.bot_id, r.content, repr(float(r.timestamp)),
                                  r.message_id, repr(float(r.score))], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class MigrationReport:
    histories: int = 0
    records: int = 0
    written: int = 0
    already_there: int = 0
    bindings: int = 0
    source_checksum: str = ""
    target_checksum: str = ""
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.source_checksum == self.target_checksum

    def as_dict(self) -> dict[str, Any]:
        return {"histories": self.histories, "records": self.records, "written": self.written,
                "already_there": self.already_there, "bindings": self.bindings,
                "source_checksum": self.source_checksum, "target_checksum": self.target_checksum,
                "mismatches": self.mismatches, "ok": self.ok}


async def migrate_stores(source: HistoryStore, target: HistoryStore, *, ttl: float,
                         max_per_user: Optional[int] = None,
                         progress: Optional[Any] = None) -> MigrationReport:
    """Copy everything from ``source`` to ``target`` and verify it; see the module docstring."""
    report = MigrationReport()
    copied: dict[str, tuple[set[str], str]] = {}
    all_source = hashlib.sha256()
    async for key, records in source.iter_all():
        per_user: dict[str, int] = {}
        for r in records:
            per_user[r.user_id] = per_user.get(r.user_id, 0) + 1
        cap = max(max(per_user.values(), default=1), max_per_user or 0)
        results = await target.append_many(key, records, max_per_user=cap, ttl=ttl)
        report.histories += 1
        report.records += len(records)
        report.written += sum(results)
        report.already_there += len(results) - sum(results)
        digest = checksum(records)
        copied[key.id] = ({r.message_id for r in records}, digest)
        all_source.update(f"{key.id}\t{digest}\n".encode("utf-8"))
        if progress:
            progress(key, len(records))
    for source_id, bot_id, namespace in await source.all_bindings():
        await target.set_binding(source_id, bot_id, namespace)
        report.bindings += 1

    # read back: every copied record must be at the target, unchanged
    all_target = hashlib.sha256()
    seen: set[str] = set()
    async for key, records in target.iter_all():
        if key.id not in copied:
            continue
        seen.add(key.id)
        mids, want = copied[key.id]
        mine = [r for r in records if r.message_id in mids]  # the target may hold more of its own
        got = checksum(mine)
        all_target.update(f"{key.id}\t{got}\n".encode("utf-8"))
        if got != want:
            report.mismatches.append(f"{key.id}: {len(mine)} records, checksum {got[:12]} != {want[:12]}")
    for key_id in copied.keys() - seen:
        report.mismatches.append(f"{key_id}: missing at the target")
    report.source_checksum = all_source.hexdigest()
    report.target_checksum = all_target.hexdigest() if not report.mismatches else "mismatch"
    bindings_at_target = set(await target.all_bindings())
    for b in await source.all_bindings():
        if b not in bindings_at_target:
            report.mismatches.append(f"binding {b} missing at the target")
    return report


@click.command("migrate")
@click.option("--from", "source_url", required=True, help="Source store URL (sqlite:///…, redis://…).")
@click.option("--to", "target_url", required=True, help="Target store URL.")
@click.option("--ttl", type=float, default=None, help="Seconds the copied histories live (default: CLEAR_CYCLE).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def migrate(source_url: str, target_url: str, ttl: Optional[float], as_json: bool) -> None:
    """Copy every history and binding from one store to another, then verify counts and checksums."""
    if ttl is None:
        from .settings import Settings

        try:
            ttl = Settings().clear_cycle_seconds
        except Exception:
            ttl = 7 * 86400.0

    async def go() -> MigrationReport:
        source, target = open_store(source_url), open_store(target_url)
        try:
            return await migrate_stores(source, target, ttl=ttl,
                                        progress=None if as_json else
                                        lambda k, n: click.echo(f"  {n:>8} records  {k.id}", err=True))
        finally:
            await source.close()
            await target.close()

    try:
        report = asyncio.run(go())
    except Exception as exc:  # StoreError, ValueError (bad URL), NotImplementedError
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(f"histories: {report.histories}")
        click.echo(f"records:   {report.records} ({report.written} written, {report.already_there} already there)")
        click.echo(f"bindings:  {report.bindings}")
        click.echo(f"checksum:  source {report.source_checksum}")
        click.echo(f"           target {report.target_checksum}")
        for m in report.mismatches:
            click.echo(f"MISMATCH {m}", err=True)
    if not report.ok:
        sys.exit(1)

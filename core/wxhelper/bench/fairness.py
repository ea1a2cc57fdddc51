"""``wxhelper bench fairness``: what the fair algorithms give a quiet user next to loud ones."""

from __future__ import annotations

import json
import random
import statistics
import time

import click

from ..fairness import ALGORITHMS, UserHistory
from ..messages import Record
from . import bench


def scenario(loud: int, quiet: int, loud_records: int, loud_chars: int, seed: int = 7) -> list[UserHistory]:
    """``loud`` users with many long records, ``quiet`` users with two short ones each."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for u in range(loud + quiet):
        is_loud = u < loud
        n = loud_records if is_loud else 2
        records = [Record(user_id=f"u{u}", source_id="g", bot_id="b",
                          content=("长" * loud_chars) if is_loud else f"短消息{u}-{k}",
                          timestamp=now - k * 60 - rng.random(), message_id=f"{u}-{k}") for k in range(n)]
        out.append(UserHistory(f"u{u}", records, records[0].timestamp))
    return out


@bench.command("fairness")
@click.option("--max-records", default=100, show_default=True)
@click.option("--max-chars", default=10000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def fairness_bench(max_records: int, max_chars: int, as_json: bool) -> None:
    """Quiet users' coverage and selection time for each algorithm on loud/quiet mixes."""
    rows = []
    for loud, quiet, loud_chars in [(2, 20, 2000), (5, 50, 500), (1, 150, 9000), (10, 10, 50)]:
        histories = scenario(loud, quiet, 50, loud_chars)
        for name, fn in ALGORITHMS.items():
            times = []
            for _ in range(20):
                start = time.perf_counter()
                picked = fn(histories, max_records, max_chars)
                times.append(time.perf_counter() - start)
            quiet_users = {f"u{u}" for u in range(loud, loud + quiet)}
            covered = {r.user_id for r in picked} & quiet_users
            rows.append({
                "scenario": f"{loud} loud x{loud_chars}c + {quiet} quiet", "algorithm": name,
                "records": len(picked), "chars": sum(len(r.content) for r in picked),
                "quiet_users_covered": f"{len(covered)}/{len(quiet_users)}",
                "p50_ms": round(statistics.median(times) * 1000, 3),
            })
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    click.echo(f"{'scenario':<28}{'algorithm':<10}{'records':>8}{'chars':>8}{'quiet covered':>15}{'p50 ms':>9}")
    for r in rows:
        click.echo(f"{r['scenario']:<28}{r['algorithm']:<10}{r['records']:>8}{r['chars']:>8}"
                   f"{r['quiet_users_covered']:>15}{r['p50_ms']:>9}")

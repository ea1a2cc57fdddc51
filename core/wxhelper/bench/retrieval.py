"""``wxhelper bench retrieval``: does knowledge find the right passage, and how fast.

For each embedding (and, with ``--hybrid``, each embedding fused with BM25 by
reciprocal rank) the plugins' corpora are indexed into a fresh embedded Chroma
in a temporary directory, then every query of the labelled evaluation sets is
searched in its namespace. Seven sets are kept in ``tests/data/``:
``retrieval_eval.jsonl``, the set that retrieval was tuned on;
``retrieval_tuning2.jsonl`` (session 6), 240 more tuning questions written
blind, on which a sweep of the three weights found no setting worth trying;
``retrieval_heldout.jsonl``, written and committed before any tuning and never
tuned on (a change is adopted only when it helps on both);
``retrieval_heldout2.jsonl``, written blind to the corpora's question lines and
to the other sets, which confirmed the question weight chosen on the first two;
``retrieval_heldout3.jsonl`` (session 4), written blind as well, which
rejected the document score chosen on the tuning set (docs/performance.md); and
``retrieval_heldout4.jsonl`` (session 5), written blind as well, which
rejected session 6's eight question items per section; and
``retrieval_heldout5.jsonl`` (session 6), written blind as well, not yet used
to decide anything.
Reported per set:

* recall@1, recall@3 and MRR (first relevant passage within the top 10), for
  all queries and separately for the paraphrases and the English ones;
* index throughput (passages and characters embedded and added per second,
  model loaded: smaller passages must not pass for a speed-up) and each
  plugin's whole-corpus first index time (fresh collection);
* query p50/p99 (embedding the query + the search + the re-rank and budget
  pass), with the query-vector cache emptied before every search, and the CPU
  time of the searching threads per search, one at a time and with 8 searches
  in flight (what the HTTP host pays per message; Chroma's background threads,
  busy after indexing, are not counted).

A passage is relevant to a query when its source file matches one the label
names and, if the label names a heading, when the passage's heading (or its
last ``›`` segment) is that heading; so re-splitting a section keeps labels valid.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import click

from . import bench

EVAL_NAME = "retrieval_eval.jsonl"
TUNING2_NAME = "retrieval_tuning2.jsonl"
HELDOUT_NAME = "retrieval_heldout.jsonl"
HELDOUT2_NAME = "retrieval_heldout2.jsonl"
HELDOUT3_NAME = "retrieval_heldout3.jsonl"
HELDOUT4_NAME = "retrieval_heldout4.jsonl"
HELDOUT5_NAME = "retrieval_heldout5.jsonl"
SEARCH_K = 10
#: Searches in flight for the concurrent CPU figure (as the HTTP host does, from worker threads).
CONCURRENT = 8


@dataclass
class EvalItem:
    id: str
    namespace: str
    kind: str  # direct | paraphrase | english
    query: str
    relevant: list[dict[str, str]]
    group: str = ""  # which evaluation set (file stem) the item comes from


def default_eval_path(name: str = EVAL_NAME) -> Path:
    candidates = [Path.cwd() / "tests" / "data" / name,
                  Path(__file__).resolve().parents[3] / "tests" / "data" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise click.ClickException(f"no {name} found (looked in {', '.join(map(str, candidates))}); use --eval")


def load_eval(path: Path) -> list[EvalItem]:
    items = []
    group = Path(path).stem
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            items.append(EvalItem(raw["id"], raw["namespace"], raw.get("kind", "direct"), raw["query"],
                                  raw["relevant"], group))
    return items


def is_relevant(source: str, heading: str, labels: Iterable[dict[str, str]]) -> bool:
    last = heading.split(" › ")[-1] if heading else ""
    for label in labels:
        if label["source"] != source:
            continue
        wanted = label.get("heading")
        if not wanted or wanted in (heading, last):
            return True
    return False


@dataclass
class EvalResult:
    embedding: str
    hybrid: bool
    ranks: dict[str, Optional[int]] = field(default_factory=dict)  # item id -> 1-based rank or None
    kinds: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # item id -> evaluation set
    query_ms: dict[str, list[float]] = field(default_factory=dict)  # per evaluation set
    index_seconds: dict[str, float] = field(default_factory=dict)
    passages: dict[str, int] = field(default_factory=dict)
    chars: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    #: CPU time of the searching threads per search, new questions: one at a time, and CONCURRENT at a time
    cpu_ms_sequential: float = 0.0
    cpu_ms_concurrent: float = 0.0

    def metrics(self, kind: Optional[str] = None, group: Optional[str] = None) -> dict[str, float]:
        ranks = [r for i, r in self.ranks.items()
                 if (kind is None or self.kinds[i] == kind) and (group is None or self.groups[i] == group)]
        n = max(len(ranks), 1)
        return {
            "n": len(ranks),
            "recall@1": sum(1 for r in ranks if r == 1) / n,
            "recall@3": sum(1 for r in ranks if r is not None and r <= 3) / n,
            "mrr": sum(1.0 / r for r in ranks if r is not None) / n,
        }

    def misses(self, at: int = 3, group: Optional[str] = None) -> list[str]:
        return [i for i, r in self.ranks.items() if (r is None or r > at) and (group is None or self.groups[i] == group)]

    @property
    def passages_per_second(self) -> float:
        total = sum(self.index_seconds.values())
        return sum(self.passages.values()) / total if total else 0.0

    @property
    def chars_per_second(self) -> float:
        total = sum(self.index_seconds.values())
        return sum(self.chars.values()) / total if total else 0.0

    def percentile(self, q: float, group: Optional[str] = None) -> float:
        values = sorted(v for g, ms in self.query_ms.items() if group is None or g == group for v in ms)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def evaluate(embedding: str, items: list[EvalItem], data_dir: Path, hybrid: bool = False,
             namespaces: Optional[dict[str, Any]] = None, repeats: int = 1) -> EvalResult:
    """Index the namespaces the items use into ``data_dir`` with ``embedding`` and rank every query."""
    from ..knowledge import KnowledgeBase, load_corpus
    from ..plugins import load_plugins
    from ..settings import Settings

    settings = Settings(data_dir=data_dir, embedding=embedding, knowledge_min_score=-1.0,
                        knowledge_hybrid=hybrid, vector_cache="off")  # measure embedding, not caches
    if namespaces is None:
        namespaces = load_plugins(settings).namespaces
    kb = KnowledgeBase(settings)
    started = time.perf_counter()
    resolved = kb.resolved  # loads the model
    result = EvalResult(resolved.display, hybrid, load_seconds=time.perf_counter() - started)
    from ..knowledge.index import clear_query_cache, clear_vector_cache

    for name in sorted({item.namespace for item in items}):
        ns = namespaces[name]
        clear_vector_cache()  # measure embedding, not the process's cache
        summary = kb.index(ns, force=True)
        result.index_seconds[name] = summary.seconds
        result.passages[name] = summary.total
        result.chars[name] = sum(len(p.embed_text) + sum(map(len, p.questions)) for p in load_corpus(ns))
    cpu, searches = 0.0, 0
    for item in items:
        ns = namespaces[item.namespace]
        for _ in range(max(1, repeats)):
            clear_query_cache()  # a new question each time: the embedding's cost is part of a search
            t0, c0 = time.perf_counter(), time.thread_time()
            found = kb.search_sync(ns, item.query, SEARCH_K, 10**9)
            cpu += time.thread_time() - c0
            result.query_ms.setdefault(item.group, []).append((time.perf_counter() - t0) * 1000)
            searches += 1
        rank = next((i for i, p in enumerate(found, start=1) if is_relevant(p.source, p.heading, item.relevant)), None)
        if item.id in result.ranks:
            raise click.ClickException(f"evaluation item id {item.id!r} appears twice")
        result.ranks[item.id] = rank
        result.kinds[item.id] = item.kind
        result.groups[item.id] = item.group
    result.cpu_ms_sequential = cpu * 1000 / max(searches, 1)
    result.cpu_ms_concurrent = _concurrent_cpu_ms(kb, namespaces, items, repeats)
    return result


def _concurrent_cpu_ms(kb: Any, namespaces: dict[str, Any], items: list[EvalItem], repeats: int) -> float:
    """CPU per search when CONCURRENT searches are in flight (worker threads), new questions each round."""
    from concurrent.futures import ThreadPoolExecutor

    from ..knowledge.index import clear_query_cache

    def one(item: EvalItem) -> float:
        started = time.thread_time()  # this thread's CPU: Chroma's own background threads are not a search's
        kb.search_sync(namespaces[item.namespace], item.query, SEARCH_K, 10**9)
        return time.thread_time() - started

    total = 0.0
    with ThreadPoolExecutor(CONCURRENT) as pool:
        for _ in range(max(1, repeats)):
            clear_query_cache()
            total += sum(pool.map(one, items))
    return total * 1000 / (max(1, repeats) * max(len(items), 1))


def _row(result: EvalResult, group: Optional[str] = None) -> dict[str, Any]:
    row: dict[str, Any] = {"embedding": result.embedding + (" + BM25 (RRF)" if result.hybrid else ""),
                           "set": group or "all"}
    for kind, tag in ((None, ""), ("paraphrase", "para_"), ("english", "en_")):
        m = result.metrics(kind, group)
        row[f"{tag}r@1"], row[f"{tag}r@3"], row[f"{tag}mrr"] = (round(m["recall@1"], 3), round(m["recall@3"], 3),
                                                                round(m["mrr"], 3))
        row[f"{tag}n"] = m["n"]
    row["passages_per_s"] = round(result.passages_per_second)
    row["chars_per_s"] = round(result.chars_per_second)
    row["first_index_s"] = {k: round(v, 2) for k, v in result.index_seconds.items()}
    row["passages"] = result.passages
    row["model_load_s"] = round(result.load_seconds, 2)
    row["query_p50_ms"] = round(result.percentile(0.5, group), 2)
    row["query_p99_ms"] = round(result.percentile(0.99, group), 2)
    row["query_cpu_ms"] = round(result.cpu_ms_sequential, 2)
    row[f"query_cpu_ms_{CONCURRENT}_concurrent"] = round(result.cpu_ms_concurrent, 2)
    row["misses@3"] = result.misses(3, group)
    return row


def default_eval_paths() -> list[Path]:
    """The tuning sets, and the held-out sets that are there."""
    paths = [default_eval_path(EVAL_NAME)]
    for name in (TUNING2_NAME, HELDOUT_NAME, HELDOUT2_NAME, HELDOUT3_NAME, HELDOUT4_NAME, HELDOUT5_NAME):
        try:
            paths.append(default_eval_path(name))
        except click.ClickException:
            pass
    return paths


@bench.command("retrieval")
@click.option("--embedding", "embeddings", multiple=True,
              help="Embedding spec to measure (repeatable). Default: use, use:int8 and hashed.")
@click.option("--hybrid/--no-hybrid", default=True, show_default=True,
              help="Also measure each embedding fused with BM25 by reciprocal rank.")
@click.option("--eval", "eval_paths", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help=f"A labelled set (repeatable; default: tests/data/{EVAL_NAME}, {TUNING2_NAME}, {HELDOUT_NAME}, {HELDOUT2_NAME} "
                   f"{HELDOUT3_NAME}, {HELDOUT4_NAME} and {HELDOUT5_NAME}).")
@click.option("--repeats", default=3, show_default=True, help="Searches per query for the latency figures.")
@click.option("--json", "as_json", is_flag=True)
def retrieval_bench(embeddings: tuple[str, ...], hybrid: bool, eval_paths: tuple[Path, ...], repeats: int,
                    as_json: bool) -> None:
    """Recall@1/@3 and MRR per embedding and evaluation set (all, paraphrases, English), index and query speed."""
    import os

    from ..blas import one_blas_thread

    # searches as `wxhelper serve` makes them: with one BLAS thread (else a 4096-dimension `hashed`
    # search swings from 0.07 to 8 ms as OpenBLAS's threads fight the machine's other work)
    blas = "1 BLAS thread, as in `wxhelper serve`" if one_blas_thread() else "BLAS threads as the environment sets them"
    sets = {Path(p).stem: load_eval(p) for p in (eval_paths or default_eval_paths())}
    items = [item for group in sets.values() for item in group]
    specs = list(embeddings) or ["use", "use:int8", "hashed"]
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="wxhelper-bench-") as tmp:
        for i, spec in enumerate(specs):
            for h in ((False, True) if hybrid else (False,)):
                result = evaluate(spec, items, Path(tmp) / f"{i}-{int(h)}", hybrid=h, repeats=repeats)
                rows.extend(_row(result, group) for group in sets)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    click.echo("passages: " + ", ".join(f"{k} {v}" for k, v in rows[0]["passages"].items()) + "\n")
    for group, group_items in sets.items():
        para = sum(1 for i in group_items if i.kind == "paraphrase")
        eng = sum(1 for i in group_items if i.kind == "english")
        click.echo(f"{group}: {len(group_items)} queries ({para} paraphrases, {eng} English)\n")
        click.echo("| embedding | R@1 | R@3 | MRR | para R@1 | para R@3 | en R@1 | en R@3 | index passages/s "
                   "| index chars/s | first index s (per plugin) | query p50 ms | p99 ms |")
        click.echo("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r["set"] == group):
            first = ", ".join(f"{k} {v}" for k, v in r["first_index_s"].items())
            click.echo(f"| {r['embedding']} | {r['r@1']:.3f} | {r['r@3']:.3f} | {r['mrr']:.3f} | {r['para_r@1']:.3f} "
                       f"| {r['para_r@3']:.3f} | {r['en_r@1']:.3f} | {r['en_r@3']:.3f} | {r['passages_per_s']} "
                       f"| {r['chars_per_s']} | {first} | {r['query_p50_ms']} | {r['query_p99_ms']} |")
        click.echo("")
        for r in (r for r in rows if r["set"] == group):
            click.echo(f"{r['embedding']}: model load {r['model_load_s']} s; misses@3: "
                       f"{', '.join(r['misses@3']) or 'none'}")
        click.echo("")
    click.echo("CPU per search (CPU time of the searching threads, all sets, new questions), one at a time and "
               f"{CONCURRENT} concurrent (worker threads, as the HTTP host searches):")
    for r in (r for r in rows if r["set"] == next(iter(sets))):
        click.echo(f"  {r['embedding']}: {r['query_cpu_ms']} ms; {CONCURRENT} concurrent: "
                   f"{r[f'query_cpu_ms_{CONCURRENT}_concurrent']} ms")
    click.echo("")
    click.echo(f"(p50/p99 over {repeats} searches per query, query-vector cache emptied before each; "
               f"{os.cpu_count()} CPUs, {blas}, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: "
               "speeds fall with the machine's load)")

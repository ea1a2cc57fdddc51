"""The Chroma side of knowledge: one collection per namespace, indexed on first use.

Chroma's client blocks, so every call runs in a worker thread behind one lock.
A collection records a fingerprint of its passages and the embedding that
built it; when both match the corpus, indexing does no work, and when only
some passages changed, only those are added or removed. A collection built
with another embedding (its metadata label, or the embedding function Chroma
persisted in its configuration) is rebuilt, never queried with the wrong one.

``CHROMA_URL`` selects a Chroma server (``chromadb.HttpClient``); its calls
carry a timeout (``WXHELPER_CHROMA_TIMEOUT``) so a server that is down or
hanging fails fast and the host answers without knowledge.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..messages import Passage
from ..namespace import Namespace
from ..settings import Settings
from .corpus import CorpusError, CorpusPassage, load_corpus
from .embedding import ResolvedEmbedding, features, resolve_embedding
from .batching import LoopBatcher, QueryBatcher
from .lru import LRU
from .rerank import LEXICAL_WEIGHT, RERANK_CANDIDATES, LexicalOverlap

log = logging.getLogger(__name__)

BATCH = 128
RRF_K = 60
#: A passage's vector is its text's (heading + body) plus this share of its heading's alone,
#: normalised: the section title says what a passage answers, which a long body dilutes. On the
#: evaluation set this lifts the default embedding's recall@3 from 0.86 to 0.94 (see docs/performance.md).
HEADING_WEIGHT = 0.3
#: A passage with question lines (see :mod:`.corpus`) gets this share of its questions' mean vector:
#: normalise(passage + QUESTION_WEIGHT * normalise(mean(question vectors))), so a colloquial question
#: lands near the passage it is listed under while the passage's own wording still counts (equal
#: shares). Chosen by a rule written down beforehand: the most questions answered first over the
#: tuning and the first held-out set pooled without losing a recall@3 target (1.0; 0.3 before), then
#: confirmed on a third set written blind to the question lines (recall@1 0.68 -> 0.77, recall@3
#: 0.88 -> 0.95 there). Max-sim (each question a vector of its own) did worse. See docs/performance.md.
QUESTION_WEIGHT = 1.0
#: Whether the lexical re-rank (and BM25) also read a passage's questions. Off: on the tuning set it
#: lifted recall@1 (0.79 -> 0.85) but on the held-out set it lowered recall@1 (0.83 -> 0.79) and
#: paraphrase recall@3 (0.89 -> 0.83), so it does not help on both sets. Question lines are written in
#: users' colloquial words (咋办, 多少钱, 能不能), which many sections' questions share: as words they
#: point at many sections, while their meaning (the vectors) points at one.
RERANK_READS_QUESTIONS = False
PASSAGE_RECIPE = f"text+{HEADING_WEIGHT:g}*heading+{QUESTION_WEIGHT:g}*questions"
#: Passage vectors already computed in this process, by (index label, passage id): a passage id
#: hashes its namespace, file, heading and text, so a hit is the same vector. Rebuilding a
#: collection (``--force``, a Chroma server that lost its data, several hosts in one process, the
#: tests) then costs no embedding. Bounded; ``clear_vector_cache()`` empties it.
VECTOR_CACHE_BYTES = 64 * 1024 * 1024
_vector_cache: LRU[np.ndarray] = LRU(VECTOR_CACHE_BYTES, weigh=lambda vec: vec.nbytes)


def clear_vector_cache() -> None:
    _vector_cache.clear()


Progress = Callable[[int, int], None]


class ChromaUnavailable(RuntimeError):
    """The Chroma server (``CHROMA_URL``) cannot be reached."""


#: Question vectors already computed in this process, by (embedding label, question text).
QUERY_CACHE_SIZE = 2048
_query_cache: LRU[np.ndarray] = LRU(QUERY_CACHE_SIZE)
#: How often (seconds) a search over embedded Chroma checks that no other process rebuilt or
#: re-indexed the collection it holds in memory (one cheap ``get_collection``). Changes made by
#: this process are seen at once.
SNAPSHOT_RECHECK_SECONDS = 2.0
#: Per (Chroma store, collection) a counter bumped by every write this process makes, so that each
#: KnowledgeBase of the process re-reads a collection another one changed.
_generations: dict[tuple[str, str], int] = {}
_generations_lock = threading.Lock()


def _generation(key: tuple[str, str]) -> int:
    with _generations_lock:
        return _generations.get(key, 0)


def _bump_generation(key: tuple[str, str]) -> None:
    with _generations_lock:
        _generations[key] = _generations.get(key, 0) + 1


def clear_query_cache() -> None:
    _query_cache.clear()


@dataclass
class _Snapshot:
    """One namespace's collection as this process searches it, read once after indexing.

    ``matrix`` holds the passages' normalised vectors (embedded Chroma only), so a search is one
    matrix product; ``lexical`` the terms of each passage for the re-rank. Chroma stays the store:
    the snapshot is re-read whenever the collection changes (see ``KnowledgeBase._current``).
    """

    collection: Any
    metadata: dict
    ids: list[str]
    texts: list[str]
    metas: list[dict]
    matrix: Optional[np.ndarray]
    lexical: LexicalOverlap
    generation: int
    checked: float
    bm25: Optional["Lexical"] = None
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {pid: i for i, pid in enumerate(self.ids)}


@dataclass
class IndexSummary:
    namespace: str
    total: int
    added: int = 0
    removed: int = 0
    rebuilt: bool = False
    embedding: str = ""
    seconds: float = 0.0

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.rebuilt)


def collection_name(namespace: str) -> str:
    """Chroma wants 3-63 chars of ``[a-zA-Z0-9._-]``; namespace names may be Chinese."""
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=10).hexdigest()
    return f"wxhelper-ns-{digest}"


def fingerprint(passages: list[CorpusPassage], label: str) -> str:
    digest = hashlib.blake2b(label.encode("utf-8"), digest_size=16)
    for pid in sorted(p.id for p in passages):
        digest.update(pid.encode("ascii"))
    return digest.hexdigest()


def persisted_label(collection: Any) -> Optional[str]:
    """The label of the embedding function Chroma persisted with the collection (None if none)."""
    try:
        ef = (collection.configuration_json or {}).get("embedding_function") or {}
    except Exception:
        return None
    name, config = ef.get("name"), ef.get("config")
    if not name or not isinstance(config, dict):
        return None
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in sorted(config.items())) + ")"


def default_vector_cache_path() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wxhelper" / "vectors.sqlite3"


class VectorCache:
    """Passage vectors on disk, shared by the processes of this machine (SQLite, WAL).

    Keyed by (index label, passage id), so a hit is exactly the vector the embedding would give;
    a new process indexing an unchanged corpus into a fresh or rebuilt collection embeds nothing.
    Any error (a read-only disk, a corrupt file) disables it for this process: it is only a cache.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._broken = False

    def _db(self) -> Any:
        if self._conn is None:
            import sqlite3

            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=5, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS vectors (label TEXT NOT NULL, pid TEXT NOT NULL, "
                         "vec BLOB NOT NULL, PRIMARY KEY (label, pid)) WITHOUT ROWID")
            self._conn = conn
        return self._conn

    def get_many(self, label: str, pids: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self._broken or not pids:
            return out
        try:
            with self._lock:
                db = self._db()
                for start in range(0, len(pids), 500):
                    chunk = pids[start:start + 500]
                    rows = db.execute(f"SELECT pid, vec FROM vectors WHERE label = ? AND pid IN "
                                      f"({','.join('?' * len(chunk))})", [label, *chunk]).fetchall()
                    out.update((pid, np.frombuffer(vec, dtype=np.float32).copy()) for pid, vec in rows)
        except Exception as exc:
            self._disable(exc)
        return out

    def put_many(self, label: str, items: list[tuple[str, np.ndarray]]) -> None:
        if self._broken or not items:
            return
        try:
            with self._lock:
                self._db().executemany("INSERT OR IGNORE INTO vectors (label, pid, vec) VALUES (?, ?, ?)",
                                       [(label, pid, np.asarray(v, dtype=np.float32).tobytes()) for pid, v in items])
        except Exception as exc:
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        log.warning("vector cache %s disabled for this process: %s: %s", self.path, type(exc).__name__, exc)
        self._broken = True


class Lexical:
    """BM25 over CJK unigrams/bigrams and Latin words, for the optional hybrid (RRF) retrieval."""

    k1, b = 1.2, 0.75

    def __init__(self, ids: list[str], texts: list[str]) -> None:
        self.ids = ids
        self.docs = [Counter(features(t)) for t in texts]
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.avg = float(self.lengths.mean()) if len(self.docs) else 1.0
        df: Counter = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def rank(self, query: str, n: int) -> list[str]:
        terms = sorted(t for t in set(features(query)) if t in self.idf)  # one order: the same float sums every run
        if not terms:
            return []
        scores = np.zeros(len(self.docs))
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.avg, 1e-9))
        for i, doc in enumerate(self.docs):
            s = 0.0
            for t in terms:
                f = doc.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm[i])
            scores[i] = s
        order = np.argsort(-scores)[:n]
        return [self.ids[i] for i in order if scores[i] > 0]


class KnowledgeBase:
    """Index and search the namespaces' corpora."""

    def __init__(self, settings: Settings, embedding: Optional[ResolvedEmbedding] = None) -> None:
        self.settings = settings
        self._resolved = embedding
        self._lock = threading.RLock()
        self._client: Any = None
        self._ready: dict[str, _Snapshot] = {}
        self._store: Optional[str] = None
        self._batcher: Optional[QueryBatcher] = None
        self._loop_batcher: Optional[LoopBatcher] = None
        #: how many messages the process is handling (the host sets it): questions asked on the event
        #: loop wait for each other only while enough others are (see :class:`.batching.LoopBatcher`)
        self.company: Callable[[], int] = lambda: 0
        spec = settings.vector_cache
        self.vector_cache: Optional[VectorCache] = (
            None if spec is not None and spec.strip().lower() in ("", "off", "none", "false", "0")
            else VectorCache(Path(spec) if spec else default_vector_cache_path()))

    # -- the embedding (resolved lazily: loading the default takes a second) ----------------
    @property
    def resolved(self) -> ResolvedEmbedding:
        with self._lock:
            if self._resolved is None:
                self._resolved = resolve_embedding(self.settings.embedding, self.settings)
            return self._resolved

    @property
    def embedding(self) -> Any:
        return self.resolved.function

    @property
    def label(self) -> str:
        return self.resolved.label

    @property
    def index_label(self) -> str:
        """What a collection's vectors were made with: the embedding and how passages are embedded."""
        return f"{self.label}; {PASSAGE_RECIPE}"

    def passage_vectors(self, passages: list[CorpusPassage]) -> list[np.ndarray]:
        """Each passage's vector: normalise(embed(heading + text) + HEADING_WEIGHT * embed(heading)), blended
        with its section's questions (``QUESTION_WEIGHT``) when it has question lines."""
        label = self.index_label
        cached = [_vector_cache.get((label, p.id)) for p in passages]
        if self.vector_cache is not None:
            on_disk = self.vector_cache.get_many(label, [p.id for p, v in zip(passages, cached) if v is None])
            cached = [v if v is not None else on_disk.get(p.id) for p, v in zip(passages, cached)]
        todo = [p for p, v in zip(passages, cached) if v is None]
        computed = self._embed_passages(todo)
        if self.vector_cache is not None:
            self.vector_cache.put_many(label, [(p.id, v) for p, v in zip(todo, computed)])
        fresh = iter(computed)
        out = []
        for p, vec in zip(passages, cached):
            if vec is None:
                vec = next(fresh)
            _vector_cache.put((label, p.id), vec)
            out.append(vec)
        return out

    def _embed_passages(self, passages: list[CorpusPassage]) -> list[np.ndarray]:
        if not passages:
            return []
        full = np.asarray(self.embedding([p.embed_text for p in passages]), dtype=np.float32)
        head_texts = [p.heading or p.text[:40] for p in passages]
        unique = list(dict.fromkeys(head_texts))  # sections split in several passages share a heading
        head_vectors = dict(zip(unique, np.asarray(self.embedding(unique), dtype=np.float32)))
        heads = np.stack([head_vectors[t] for t in head_texts])
        vectors = _normalised_rows(full + HEADING_WEIGHT * heads)
        asked = [i for i, p in enumerate(passages) if p.questions]
        if asked:
            # the sections' questions, each embedded once (a section split in passages shares them)
            unique_q = list(dict.fromkeys(q for i in asked for q in passages[i].questions))
            q_vectors = dict(zip(unique_q, np.asarray(self.embedding(unique_q), dtype=np.float32)))
            means = _normalised_rows(np.stack([np.mean([q_vectors[q] for q in passages[i].questions], axis=0)
                                               for i in asked]))
            vectors[asked] = _normalised_rows(vectors[asked] + QUESTION_WEIGHT * means)
        return list(vectors)

    @property
    def min_score(self) -> float:
        floor = self.settings.knowledge_min_score
        return self.embedding.min_score if floor is None else floor

    # -- client ---------------------------------------------------------------
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                chroma_settings = ChromaSettings(anonymized_telemetry=False)
                if self.settings.chroma_url:
                    try:
                        self._client = self._http_client(chromadb, chroma_settings)
                    except Exception as exc:
                        raise ChromaUnavailable(f"the Chroma server at {self.settings.chroma_url} cannot be reached "
                                                f"({type(exc).__name__}: {exc}); check CHROMA_URL") from exc
                else:
                    path = Path(self.settings.data_dir) / "chroma"
                    path.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
            return self._client

    def _http_client(self, chromadb: Any, chroma_settings: Any) -> Any:
        from urllib.parse import urlparse

        import httpx

        url = urlparse(self.settings.chroma_url or "")
        host, port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 8000)
        timeout = self.settings.chroma_timeout
        # The client's constructor already talks to the server, with no timeout: probe first.
        with socket.create_connection((host, port), timeout=timeout):
            pass
        client = chromadb.HttpClient(host=host, port=port, ssl=url.scheme == "https", settings=chroma_settings)
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is not None:  # chromadb's httpx session has timeout=None: never hang a request
            session.timeout = httpx.Timeout(timeout, connect=min(timeout, 2.0))
        return client

    def _open(self, ns: Namespace) -> tuple[Any, bool]:
        """The namespace's collection with our embedding; (collection, rebuilt?)."""
        from chromadb.errors import NotFoundError

        client = self.client()
        name = collection_name(ns.name)
        rebuilt = False
        try:
            existing = client.get_collection(name, embedding_function=None)
        except NotFoundError:
            existing = None
        except ValueError as exc:  # an older chromadb that says "does not exist" this way
            if "does not exist" not in str(exc):
                raise
            existing = None
        if existing is not None:
            built_with = (existing.metadata or {}).get("embedding")
            persisted = persisted_label(existing)
            if (built_with is not None and built_with != self.index_label) or (persisted not in (None, self.label)):
                log.warning("namespace %s: collection was built with %s; rebuilding it with %s",
                            ns.name, built_with or persisted, self.label)
                client.delete_collection(name)
                _bump_generation(self._store_key(name))
                rebuilt = True
        collection = client.get_or_create_collection(
            name=name,
            embedding_function=self.embedding,
            metadata={"namespace": ns.name, "plugin": ns.plugin or "-"},
            configuration={"hnsw": {"space": "cosine"}},
        )
        return collection, rebuilt

    # -- indexing ---------------------------------------------------------------
    def index(self, ns: Namespace, progress: Optional[Progress] = None, force: bool = False) -> IndexSummary:
        """Bring the namespace's collection in line with its corpus; blocking."""
        started = time.perf_counter()
        passages = load_corpus(ns)
        with self._lock:
            label = self.index_label
            wanted = fingerprint(passages, label)
            summary = IndexSummary(ns.name, total=len(passages), embedding=self.resolved.display)
            collection, summary.rebuilt = self._open(ns)
            meta = dict(collection.metadata or {})
            if not force and meta.get("fingerprint") == wanted and meta.get("embedding") == label:
                self._ready[ns.name] = self._snapshot(ns, collection)
                if progress:
                    progress(len(passages), len(passages))
                return summary
            if force and not summary.rebuilt:
                self.client().delete_collection(collection_name(ns.name))
                _bump_generation(self._store_key(collection_name(ns.name)))
                collection, _ = self._open(ns)
                meta = dict(collection.metadata or {})
                summary.rebuilt = True
            existing = set(collection.get(include=[])["ids"])
            by_id = {p.id: p for p in passages}
            stale = sorted(existing - by_id.keys())
            missing = [p for p in passages if p.id not in existing]
            for start in range(0, len(stale), BATCH):
                collection.delete(ids=stale[start:start + BATCH])
            summary.removed = len(stale)
            done = len(passages) - len(missing)
            if progress:
                progress(done, len(passages))
            for start in range(0, len(missing), BATCH):
                batch = missing[start:start + BATCH]
                collection.add(
                    ids=[p.id for p in batch],
                    documents=[p.text for p in batch],
                    embeddings=self.passage_vectors(batch),
                    metadatas=[_metadata(p, ns) for p in batch],
                )
                done += len(batch)
                if progress:
                    progress(done, len(passages))
            summary.added = len(missing)
            meta.update(fingerprint=wanted, embedding=label, namespace=ns.name)
            collection.modify(metadata=meta)
            _bump_generation(self._store_key(collection.name))
            self._ready[ns.name] = self._snapshot(ns, collection)
        summary.seconds = time.perf_counter() - started
        log.info("indexed namespace %s with %s: %d passages, %d added, %d removed%s in %.2fs",
                 ns.name, summary.embedding, summary.total, summary.added, summary.removed,
                 " (rebuilt)" if summary.rebuilt else "", summary.seconds)
        return summary

    async def ensure_indexed(self, ns: Namespace) -> None:
        if ns.name not in self._ready:
            await asyncio.to_thread(self.index, ns)

    # -- retrieval ----------------------------------------------------------------
    def search_sync(self, ns: Namespace, query: str, k: int, max_chars: int,
                    hybrid: Optional[bool] = None) -> list[Passage]:
        """The top ``k`` passages at or above the relevance floor whose texts fit in ``max_chars``."""
        if k <= 0 or max_chars <= 0 or not query.strip():
            return []
        from chromadb.errors import NotFoundError

        hybrid = self.settings.knowledge_hybrid if hybrid is None else hybrid
        query_vec = self.query_vector(query)
        with self._lock:
            for attempt in (1, 2):
                snap = self._current(ns)
                try:
                    return self._search(ns, snap, query, query_vec, k, max_chars, hybrid)
                except NotFoundError:
                    # rebuilt or wiped behind our back (another process, a new server): re-open, re-check
                    self._ready.pop(ns.name, None)
                    if attempt == 2:
                        raise
        return []

    @property
    def batcher(self) -> QueryBatcher:
        """Concurrent questions are embedded together (see :mod:`.batching`)."""
        with self._lock:
            if self._batcher is None:
                embedding = self.embedding
                self._batcher = QueryBatcher(lambda texts: embedding(list(texts)))
            return self._batcher

    def query_vector(self, query: str) -> np.ndarray:
        """The question's vector, from a bounded per-process LRU: people ask the same things often."""
        key = (self.label, query)
        vec = _query_cache.get(key)
        if vec is None:
            vec = self.batcher.embed(query)
            _query_cache.put(key, vec)
        return vec

    # -- the in-memory snapshot each search uses ---------------------------------------
    def _store_key(self, name: str) -> tuple[str, str]:
        if self._store is None:
            self._store = self.settings.chroma_url or str((Path(self.settings.data_dir) / "chroma").resolve())
        return self._store, name

    def _snapshot(self, ns: Namespace, collection: Any) -> "_Snapshot":
        """Read the collection once: ids, texts, metadata, and (embedded Chroma) its normalised vectors."""
        embedded = not self.settings.chroma_url
        got = collection.get(include=["documents", "metadatas", "embeddings"] if embedded
                             else ["documents", "metadatas"])
        ids = list(got["ids"])
        texts = list(got["documents"] or [])
        metas = [dict(m or {}) for m in (got["metadatas"] or [])]
        matrix = None
        if embedded:
            matrix = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(ids), -1) if ids else \
                np.zeros((0, 1), dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms > 0, norms, 1.0)
        lexical = LexicalOverlap([lexical_text(t, m) for t, m in zip(texts, metas)])
        return _Snapshot(collection=collection, metadata=dict(collection.metadata or {}), ids=ids, texts=texts,
                         metas=metas, matrix=matrix, lexical=lexical,
                         generation=_generation(self._store_key(collection.name)), checked=time.monotonic())

    def _current(self, ns: Namespace) -> "_Snapshot":
        """The namespace's snapshot, re-read when this process changed the collection (at once) or
        another process did (noticed within ``SNAPSHOT_RECHECK_SECONDS``, embedded Chroma only: in
        server mode every search asks the server, which raises NotFoundError for a rebuilt one)."""
        snap = self._ready.get(ns.name)
        if snap is not None and snap.generation != _generation(self._store_key(snap.collection.name)):
            snap = None
        if snap is not None and not self.settings.chroma_url and \
                time.monotonic() - snap.checked > SNAPSHOT_RECHECK_SECONDS:
            snap = snap if self._still_current(snap) else None
        if snap is None:
            self._ready.pop(ns.name, None)
            self.index(ns)
            snap = self._ready[ns.name]
        return snap

    def _still_current(self, snap: "_Snapshot") -> bool:
        from chromadb.errors import NotFoundError

        try:
            live = self.client().get_collection(snap.collection.name, embedding_function=None)
        except NotFoundError:
            return False
        meta = live.metadata or {}
        same = (live.id == snap.collection.id and meta.get("fingerprint") == snap.metadata.get("fingerprint")
                and meta.get("embedding") == snap.metadata.get("embedding"))
        if same:
            snap.checked = time.monotonic()
        return same

    def _search(self, ns: Namespace, snap: "_Snapshot", query: str, query_vec: np.ndarray, k: int,
                max_chars: int, hybrid: bool) -> list[Passage]:
        n_total = len(snap.ids)
        if n_total == 0:
            return []
        n = min(max(k * 3, RERANK_CANDIDATES), n_total)
        candidates = self._vector_candidates(snap, query_vec, n)
        order = self._rerank(snap, query, candidates)
        if hybrid:
            order = self._fuse_bm25(snap, query, query_vec, order, candidates, n)
        floor = self.min_score
        out: list[Passage] = []
        used = 0
        for pid in order:
            text, meta, score = candidates[pid]
            if len(out) >= k:
                break
            if score < floor or used + len(text) > max_chars:
                continue
            used += len(text)
            out.append(Passage(text=text, source=str(meta.get("source", "")),
                               heading=str(meta.get("heading", "")), score=round(score, 4)))
        return out

    def _vector_candidates(self, snap: "_Snapshot", query_vec: np.ndarray,
                           n: int) -> dict[str, tuple[str, dict, float]]:
        """The ``n`` nearest passages by cosine, best first: pid -> (text, metadata, cosine).

        Embedded Chroma: one matrix product over the snapshot (a few microseconds for a few hundred
        passages, against about a millisecond of CPU for Chroma's query). Server mode: the server's
        query, so the server stays the one truth that every host process shares.
        """
        if snap.matrix is not None:
            scores = snap.matrix @ query_vec
            top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
            top = top[np.argsort(-scores[top], kind="stable")]
            return {snap.ids[i]: (snap.texts[i], snap.metas[i], float(scores[i])) for i in top}
        result = snap.collection.query(query_embeddings=[query_vec], n_results=n,
                                       include=["documents", "metadatas", "distances"])
        return {pid: (text, meta or {}, 1.0 - float(distance))
                for pid, text, meta, distance in zip(result["ids"][0], result["documents"][0],
                                                     result["metadatas"][0], result["distances"][0])}

    def _rerank(self, snap: "_Snapshot", query: str, candidates: dict[str, tuple[str, dict, float]]) -> list[str]:
        """Candidates by cosine + LEXICAL_WEIGHT * lexical coverage (see :mod:`.rerank`)."""
        rows = snap.row_of
        known = [rows[pid] for pid in candidates if pid in rows]
        coverage = snap.lexical.coverage(query, known)
        if not coverage and known:
            return list(candidates)  # no lexical signal: the vector order stands

        def combined(pid: str) -> float:
            text, meta, score = candidates[pid]
            row = rows.get(pid)
            lex = coverage.get(row, 0.0) if row is not None else \
                snap.lexical.coverage_of_text(query, lexical_text(text, meta))
            return score + LEXICAL_WEIGHT * lex

        return sorted(candidates, key=lambda pid: -combined(pid))

    def _fuse_bm25(self, snap: "_Snapshot", query: str, query_vec: np.ndarray, order: list[str],
                   candidates: dict[str, tuple[str, dict, float]], n: int) -> list[str]:
        """``WXHELPER_KNOWLEDGE_HYBRID``: fuse the ranking with BM25's by reciprocal rank."""
        if snap.bm25 is None:
            snap.bm25 = Lexical(snap.ids, [lexical_text(t, m) for t, m in zip(snap.texts, snap.metas)])
        lexical_rank = snap.bm25.rank(query, n)
        rows = snap.row_of
        for pid in lexical_rank:
            if pid not in candidates:
                i = rows[pid]
                vec = snap.matrix[i] if snap.matrix is not None else None
                if vec is None:
                    got = snap.collection.get(ids=[pid], include=["embeddings"])
                    vec = np.asarray(got["embeddings"][0], dtype=np.float32)
                    vec = vec / (float(np.linalg.norm(vec)) or 1.0)
                candidates[pid] = (snap.texts[i], snap.metas[i], float(np.dot(query_vec, vec)))
        fused: dict[str, float] = {}
        for ranking in (order, lexical_rank):
            for r, pid in enumerate(ranking):
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + r + 1)
        return sorted(fused, key=lambda pid: -fused[pid])

    async def search(self, ns: Namespace, query: str, k: int, max_chars: int,
                     hybrid: Optional[bool] = None) -> list[Passage]:
        """:meth:`search_sync` for the event loop: on the loop itself when that needs no I/O, else in a thread.

        On the loop (measured in docs/performance.md, "HTTP service": a worker thread's wake-ups and
        GIL hand-overs cost more CPU per question than the search itself) when the embedding is pure
        CPU (``on_loop``: the default and ``hashed``), the namespace's in-memory snapshot is current
        without asking Chroma, and no other thread holds the knowledge base (indexing). The questions
        of one loop turn are embedded together (:class:`.batching.LoopBatcher`).
        """
        hybrid = self.settings.knowledge_hybrid if hybrid is None else hybrid
        resolved = self._resolved
        if k > 0 and max_chars > 0 and query.strip() and resolved is not None \
                and getattr(resolved.function, "on_loop", False):
            if self._snapshot_on_loop(ns, hybrid) is not None:
                key = (resolved.label, query)
                vec = _query_cache.get(key)
                if vec is None:
                    vec = await self._loop_batcher_for(resolved).embed(query)
                    _query_cache.put(key, vec)
                found = self._search_on_loop(ns, query, vec, k, max_chars, hybrid)
                if found is not None:
                    return found
        return await asyncio.to_thread(self.search_sync, ns, query, k, max_chars, hybrid)

    def _loop_batcher_for(self, resolved: ResolvedEmbedding) -> LoopBatcher:
        if self._loop_batcher is None:
            function = resolved.function
            self._loop_batcher = LoopBatcher(lambda texts: function(list(texts)), company=lambda: self.company(),
                                             hold=self.settings.knowledge_batch_wait_ms / 1000.0)
        return self._loop_batcher

    def _snapshot_on_loop(self, ns: Namespace, hybrid: bool) -> Optional["_Snapshot"]:
        """The namespace's snapshot if searching it needs no I/O now (else None: the caller uses a thread)."""
        if self.settings.chroma_url:  # server mode: the search is a request to the server
            return None
        snap = self._ready.get(ns.name)
        if (snap is None or snap.matrix is None or (hybrid and snap.bm25 is None)
                or snap.generation != _generation(self._store_key(snap.collection.name))
                or time.monotonic() - snap.checked > SNAPSHOT_RECHECK_SECONDS):
            return None
        return snap

    def _search_on_loop(self, ns: Namespace, query: str, query_vec: np.ndarray, k: int, max_chars: int,
                        hybrid: bool) -> Optional[list[Passage]]:
        """The search over the in-memory snapshot, never waiting for the lock (None when it would)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            snap = self._snapshot_on_loop(ns, hybrid)  # again: the embedding was awaited
            return None if snap is None else self._search(ns, snap, query, query_vec, k, max_chars, hybrid)
        finally:
            self._lock.release()

    def status(self, ns: Namespace) -> dict[str, Any]:
        """Corpus size and index state, for ``wxhelper namespaces``."""
        display = self.resolved.display
        try:
            passages = load_corpus(ns)
        except CorpusError as exc:  # a malformed corpus file: report it, don't crash the listing
            return {"passages": 0, "indexed": False, "error": str(exc), "embedding": display}
        with self._lock:
            try:
                from chromadb.errors import NotFoundError

                try:
                    collection = self.client().get_collection(collection_name(ns.name), embedding_function=None)
                except NotFoundError:
                    return {"passages": len(passages), "indexed": False, "stored": 0, "embedding": display}
                meta = collection.metadata or {}
                indexed = (meta.get("fingerprint") == fingerprint(passages, self.index_label)
                           and meta.get("embedding") == self.index_label)
                count = collection.count()
            except Exception as exc:  # Chroma down: report, don't crash the listing
                return {"passages": len(passages), "indexed": False, "error": str(exc), "embedding": display}
        return {"passages": len(passages), "indexed": indexed, "stored": count, "embedding": display,
                "built_with": meta.get("embedding")}


def _normalised_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _metadata(p: CorpusPassage, ns: Namespace) -> dict[str, Any]:
    """Chroma metadata holds scalars only: a section's questions are one string, a question a line."""
    meta: dict[str, Any] = {"namespace": ns.name, "plugin": ns.plugin or "-", "source": p.source,
                            "heading": p.heading}
    if p.questions:
        meta["questions"] = "\n".join(p.questions)
    meta.update({f"x_{k}": v for k, v in p.metadata.items()})
    return meta


def lexical_text(text: str, meta: dict) -> str:
    """What the lexical re-rank (and BM25) read of a passage: heading and text (and, with
    ``RERANK_READS_QUESTIONS``, its section's questions)."""
    if RERANK_READS_QUESTIONS:
        return f"{meta.get('heading', '')}\n{text}\n{meta.get('questions', '')}"
    return f"{meta.get('heading', '')}\n{text}"

"""The Chroma side of knowledge: one collection per namespace, indexed on first use.

Chroma's client blocks, so every call runs in a worker thread behind one lock.
A collection records a fingerprint of its passages and the embedding that
built it; when both match the corpus, indexing does no work, and when only
some passages changed, only those are added or removed. A collection built
with another embedding is rebuilt, never queried with the wrong one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..messages import Passage
from ..namespace import Namespace
from ..settings import Settings
from .corpus import CorpusPassage, load_corpus
from .embedding import embedding_label, make_embedding

log = logging.getLogger(__name__)

BATCH = 128
Progress = Callable[[int, int], None]


@dataclass
class IndexSummary:
    namespace: str
    total: int
    added: int = 0
    removed: int = 0
    rebuilt: bool = False
    embedding: str = ""

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


class KnowledgeBase:
    """Index and search the namespaces' corpora."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedding = make_embedding(settings.embedding)
        self.label = embedding_label(settings.embedding)
        self._lock = threading.RLock()
        self._client: Any = None
        self._ready: dict[str, Any] = {}

    # -- client ---------------------------------------------------------------
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                chroma_settings = ChromaSettings(anonymized_telemetry=False)
                if self.settings.chroma_url:
                    from urllib.parse import urlparse

                    url = urlparse(self.settings.chroma_url)
                    self._client = chromadb.HttpClient(
                        host=url.hostname or "127.0.0.1", port=url.port or 8000,
                        ssl=url.scheme == "https", settings=chroma_settings,
                    )
                else:
                    path = Path(self.settings.data_dir) / "chroma"
                    path.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
            return self._client

    def _collection(self, ns: Namespace) -> Any:
        return self.client().get_or_create_collection(
            name=collection_name(ns.name),
            embedding_function=self.embedding,
            metadata={"namespace": ns.name, "plugin": ns.plugin or "-"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    # -- indexing ---------------------------------------------------------------
    def index(self, ns: Namespace, progress: Optional[Progress] = None, force: bool = False) -> IndexSummary:
        """Bring the namespace's collection in line with its corpus; blocking."""
        passages = load_corpus(ns)
        wanted = fingerprint(passages, self.label)
        summary = IndexSummary(ns.name, total=len(passages), embedding=self.label)
        with self._lock:
            collection = self._collection(ns)
            meta = dict(collection.metadata or {})
            if not force and meta.get("fingerprint") == wanted:
                self._ready[ns.name] = collection
                if progress:
                    progress(len(passages), len(passages))
                return summary
            if meta.get("embedding") not in (None, self.label) or force:
                self.client().delete_collection(collection_name(ns.name))
                collection = self._collection(ns)
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
                    embeddings=self.embedding([p.embed_text for p in batch]),
                    metadatas=[_metadata(p, ns) for p in batch],
                )
                done += len(batch)
                if progress:
                    progress(done, len(passages))
            summary.added = len(missing)
            meta.update(fingerprint=wanted, embedding=self.label, namespace=ns.name)
            collection.modify(metadata=meta)
            self._ready[ns.name] = collection
        log.info("indexed namespace %s: %d passages, %d added, %d removed",
                 ns.name, summary.total, summary.added, summary.removed)
        return summary

    async def ensure_indexed(self, ns: Namespace) -> None:
        if ns.name not in self._ready:
            await asyncio.to_thread(self.index, ns)

    # -- retrieval ----------------------------------------------------------------
    def search_sync(self, ns: Namespace, query: str, k: int, max_chars: int) -> list[Passage]:
        if k <= 0 or max_chars <= 0:
            return []
        with self._lock:
            collection = self._ready.get(ns.name)
            if collection is None:
                self.index(ns)
                collection = self._ready[ns.name]
            if collection.count() == 0:
                return []
            result = collection.query(
                query_embeddings=self.embedding([query]),
                n_results=min(k * 2, collection.count()),
                include=["documents", "metadatas", "distances"],
            )
        out: list[Passage] = []
        used = 0
        for text, meta, distance in zip(result["documents"][0], result["metadatas"][0], result["distances"][0]):
            score = 1.0 - float(distance)
            if score < self.settings.knowledge_min_score or len(out) >= k:
                continue
            if used + len(text) > max_chars:
                continue
            used += len(text)
            out.append(Passage(text=text, source=str(meta.get("source", "")),
                               heading=str(meta.get("heading", "")), score=round(score, 4)))
        return out

    async def search(self, ns: Namespace, query: str, k: int, max_chars: int) -> list[Passage]:
        return await asyncio.to_thread(self.search_sync, ns, query, k, max_chars)

    def status(self, ns: Namespace) -> dict[str, Any]:
        """Corpus size and index state, for ``wxhelper namespaces``."""
        passages = load_corpus(ns)
        with self._lock:
            try:
                collection = self._collection(ns)
                meta = collection.metadata or {}
                indexed = meta.get("fingerprint") == fingerprint(passages, self.label)
                count = collection.count()
            except Exception as exc:  # Chroma down: report, don't crash the listing
                return {"passages": len(passages), "indexed": False, "error": str(exc), "embedding": self.label}
        return {"passages": len(passages), "indexed": indexed, "stored": count, "embedding": self.label}


def _metadata(p: CorpusPassage, ns: Namespace) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns.name, "plugin": ns.plugin or "-", "source": p.source,
                            "heading": p.heading}
    meta.update({f"x_{k}": v for k, v in p.metadata.items()})
    return meta

"""Embeddings that Chroma stores with each collection.

The default must work on a fresh machine with no download, so the host ships a
hashed character n-gram embedding: CJK characters and bigrams, Latin words,
hashed with blake2b (stable across processes, unlike ``hash()``) into a fixed
number of signed buckets, log-scaled and L2-normalised. It implements Chroma's
``EmbeddingFunction`` protocol and is registered, so a collection remembers it
and is reopened with it; Chroma never falls back to its own default embedding
(which downloads a model at first use).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Dict, List

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

_LATIN_WORD = re.compile(r"[a-z0-9]+")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0xF900 <= code <= 0xFAFF)


def features(text: str) -> list[str]:
    """CJK unigrams and bigrams (within runs of CJK), and lower-cased Latin words and digit runs."""
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    run: list[str] = []

    def flush_run() -> None:
        out.extend(run)
        out.extend(a + b for a, b in zip(run, run[1:]))
        run.clear()

    for ch in text:
        if _is_cjk(ch):
            run.append(ch)
        else:
            flush_run()
    flush_run()
    out.extend("w:" + w for w in _LATIN_WORD.findall(text))
    return out


def _bucket(feature: str, dims: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dims, (1.0 if (value >> 63) & 1 else -1.0)


@register_embedding_function
class HashedEmbedding(EmbeddingFunction[Documents]):
    """Offline lexical embedding; recall suffers on paraphrases, but it is always available."""

    def __init__(self, dims: int = 4096) -> None:
        self.dims = int(dims)

    def __call__(self, input: Documents) -> Embeddings:
        return [self.embed_one(text) for text in input]

    def embed_one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dims, dtype=np.float32)
        counts: dict[tuple[int, float], int] = {}
        for feat in features(text):
            key = _bucket(feat, self.dims)
            counts[key] = counts.get(key, 0) + 1
        for (index, sign), n in counts.items():
            vec[index] += sign * (1.0 + np.log(n))
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            vec /= norm
        return vec

    @staticmethod
    def name() -> str:
        return "wxhelper-hashed"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def supported_spaces(self) -> List[str]:  # type: ignore[override]
        return ["cosine"]

    def get_config(self) -> Dict[str, Any]:
        return {"dims": self.dims}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "HashedEmbedding":
        return HashedEmbedding(dims=int(config.get("dims", 4096)))

    def is_legacy(self) -> bool:
        return False


def make_embedding(spec: str) -> EmbeddingFunction:
    """Build the embedding ``WXHELPER_EMBEDDING`` names. ``hashed`` (or ``hashed:<dims>``) for now."""
    kind, _, arg = spec.partition(":")
    if kind == "hashed":
        return HashedEmbedding(int(arg) if arg else 4096)
    raise ValueError(f"WXHELPER_EMBEDDING {spec!r} is not supported; use 'hashed' or 'hashed:<dims>'")


def embedding_label(spec: str) -> str:
    """A stable label of the embedding and its configuration, stored with each collection."""
    ef = make_embedding(spec)
    config = ",".join(f"{k}={v}" for k, v in sorted(ef.get_config().items()))
    return f"{ef.name()}({config})"

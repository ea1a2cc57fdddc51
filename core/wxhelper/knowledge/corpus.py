"""Reading a plugin's corpus and splitting it into passages.

Markdown is split on headings, then on paragraphs when a section is longer
than the passage limit; text files on paragraphs; JSON lines are one passage
per line (``{"text": …, "title": …}`` plus any metadata). A passage id is a
hash of its namespace, file, heading and text, so an unchanged passage keeps
its id and re-indexing it is no work.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..namespace import Namespace

MAX_PASSAGE_CHARS = 600
CORPUS_SUFFIXES = (".md", ".markdown", ".txt", ".jsonl")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;.])")


@dataclass(frozen=True)
class CorpusPassage:
    id: str
    namespace: str
    source: str
    heading: str
    text: str
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def embed_text(self) -> str:
        """What gets embedded: the heading carries the topic words a short passage may lack."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def passage_id(namespace: str, source: str, heading: str, text: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (namespace, source, heading, text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def corpus_files(corpus_dir: Path) -> list[Path]:
    return sorted(p for p in corpus_dir.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)


def load_corpus(ns: Namespace, max_chars: int = MAX_PASSAGE_CHARS) -> list[CorpusPassage]:
    """Every passage of the namespace's corpus, in file order; empty when it has none."""
    if ns.corpus_dir is None:
        return []
    root = Path(ns.corpus_dir)
    out: list[CorpusPassage] = []
    seen: set[str] = set()
    for path in corpus_files(root):
        source = path.relative_to(root).as_posix()
        for heading, text, meta in _split_file(path, max_chars):
            pid = passage_id(ns.name, source, heading, text)
            if pid in seen:
                continue
            seen.add(pid)
            out.append(CorpusPassage(pid, ns.name, source, heading, text, meta))
    return out


def _split_file(path: Path, max_chars: int) -> Iterator[tuple[str, str, dict]]:
    raw = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _split_jsonl(raw, path, max_chars)
    elif suffix in (".md", ".markdown"):
        yield from _split_markdown(raw, max_chars)
    else:
        for chunk in _chunks(_paragraphs(raw), max_chars):
            yield "", chunk, {}


def _split_jsonl(raw: str, path: Path, max_chars: int) -> Iterator[tuple[str, str, dict]]:
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f"{path}:{lineno}: each line must be an object with a string 'text'")
        heading = str(item.get("title") or item.get("heading") or "")
        meta = {k: v for k, v in item.items() if k not in ("text", "title", "heading")
                and isinstance(v, (str, int, float, bool))}
        for chunk in _chunks(_paragraphs(item["text"]), max_chars):
            yield heading, chunk, meta


def _split_markdown(raw: str, max_chars: int) -> Iterator[tuple[str, str, dict]]:
    titles: list[str] = []
    body: list[str] = []

    def flush() -> Iterator[tuple[str, str, dict]]:
        text = "\n".join(body).strip()
        if text:
            heading = " › ".join(t for t in titles if t)
            for chunk in _chunks(_paragraphs(text), max_chars):
                yield heading, chunk, {}
        body.clear()

    for line in raw.splitlines():
        match = _HEADING.match(line)
        if match:
            yield from flush()
            level = len(match.group(1))
            titles[:] = titles[: level - 1] + [""] * max(0, level - 1 - len(titles)) + [match.group(2)]
        else:
            body.append(line)
    yield from flush()


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _chunks(paragraphs: list[str], max_chars: int) -> Iterator[str]:
    """Pack paragraphs into chunks of at most ``max_chars``; split an over-long paragraph by sentences."""
    current = ""
    for para in paragraphs:
        pieces = [para] if len(para) <= max_chars else list(_sentences(para, max_chars))
        for piece in pieces:
            if current and len(current) + 1 + len(piece) > max_chars:
                yield current
                current = piece
            else:
                current = f"{current}\n{piece}" if current else piece
    if current:
        yield current


def _sentences(text: str, max_chars: int) -> Iterator[str]:
    current = ""
    for sentence in (s for s in _SENTENCE_END.split(text) if s):
        while len(sentence) > max_chars:
            if current:
                yield current
                current = ""
            yield sentence[:max_chars]
            sentence = sentence[max_chars:]
        if len(current) + len(sentence) > max_chars:
            yield current
            current = sentence
        else:
            current += sentence
    if current:
        yield current

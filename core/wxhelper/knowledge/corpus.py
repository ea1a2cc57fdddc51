"""Reading a plugin's corpus and splitting it into passages.

Markdown is split on headings, then on paragraphs when a section is longer
than the passage limit; text files on paragraphs; JSON lines are one passage
per line (``{"text": …, "title": …}`` plus any metadata). A passage id is a
hash of its namespace, file, heading, text and questions, so an unchanged
passage keeps its id and re-indexing it is no work.

Question lines. Users ask in words the document does not use ("车子过户要带啥"
for a section on 二手车过户所需材料), so an author may list, directly under a
markdown heading, how people ask about that section::

    <!-- 问法: 过户要带啥 | 过户材料有哪些 | What do I need to transfer a car? -->

(``问法：`` and ``questions:`` work too; items separated by ``|``.) In JSON
lines the same is a ``"questions": [...]`` field. The questions belong to every
passage of the section (``CorpusPassage.questions``): the index embeds them with
the passage and the lexical re-rank reads their words, but they are never part
of the passage text the LLM sees. An HTML comment, the line is invisible when
the markdown is rendered.
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
#: Limits of a section's question list: a few typical questions, not a second document.
MAX_QUESTIONS = 12
MAX_QUESTION_CHARS = 200
CORPUS_SUFFIXES = (".md", ".markdown", ".txt", ".jsonl")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;.])")
#: A line that means to be a question line: an HTML comment opening with 问法 or questions.
_QUESTION_START = re.compile(r"^\s*<!--\s*(问法|questions)(?=\s|[:：]|-->|$)", re.IGNORECASE)
_QUESTION_LINE = re.compile(r"^\s*<!--\s*(?:问法|questions)\s*[:：]\s*(.*?)\s*-->\s*$", re.IGNORECASE)


class CorpusError(ValueError):
    """A corpus file that cannot be read as intended; the message names the file and the line."""


@dataclass(frozen=True)
class CorpusPassage:
    id: str
    namespace: str
    source: str
    heading: str
    text: str
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
    #: How users ask about this passage's section (question lines); embedded, never shown to the LLM.
    questions: tuple[str, ...] = ()

    @property
    def embed_text(self) -> str:
        """What gets embedded: the heading carries the topic words a short passage may lack."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def passage_id(namespace: str, source: str, heading: str, text: str, questions: tuple[str, ...] = ()) -> str:
    """Content hash: changing a passage's text or its section's questions gives it a new id (re-embedded)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (namespace, source, heading, text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    for question in questions:  # a passage without questions keeps the id it always had
        digest.update(b"\x01")
        digest.update(question.encode("utf-8"))
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
        for heading, text, meta, questions in _split_file(path, max_chars):
            pid = passage_id(ns.name, source, heading, text, questions)
            if pid in seen:
                continue
            seen.add(pid)
            out.append(CorpusPassage(pid, ns.name, source, heading, text, meta, questions))
    return out


_Piece = tuple[str, str, dict, tuple[str, ...]]  # heading, text, metadata, questions


def _split_file(path: Path, max_chars: int) -> Iterator[_Piece]:
    raw = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _split_jsonl(raw, path, max_chars)
    elif suffix in (".md", ".markdown"):
        yield from _split_markdown(raw, path, max_chars)
    else:
        for chunk in _chunks(_paragraphs(raw), max_chars):
            yield "", chunk, {}, ()


def _split_jsonl(raw: str, path: Path, max_chars: int) -> Iterator[_Piece]:
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{lineno}: not JSON: {exc}") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise CorpusError(f"{path}:{lineno}: each line must be an object with a string 'text'")
        heading = str(item.get("title") or item.get("heading") or "")
        raw_questions = item.get("questions", [])
        if not isinstance(raw_questions, list) or not all(isinstance(q, str) for q in raw_questions):
            raise CorpusError(f"{path}:{lineno}: 'questions' must be a list of strings")
        questions = _checked_questions(raw_questions, f"{path}:{lineno}: 'questions'")
        meta = {k: v for k, v in item.items() if k not in ("text", "title", "heading", "questions")
                and isinstance(v, (str, int, float, bool))}
        for chunk in _chunks(_paragraphs(item["text"]), max_chars):
            yield heading, chunk, meta, questions


def _split_markdown(raw: str, path: Path, max_chars: int) -> Iterator[_Piece]:
    titles: list[str] = []
    body: list[str] = []
    questions: tuple[str, ...] = ()
    heading_line = 0  # the line of the current section's heading; 0 before the first heading

    def flush() -> Iterator[_Piece]:
        text = "\n".join(body).strip()
        if text:
            heading = " › ".join(t for t in titles if t)
            for chunk in _chunks(_paragraphs(text), max_chars):
                yield heading, chunk, {}, questions
        body.clear()

    for lineno, line in enumerate(raw.splitlines(), start=1):
        match = _HEADING.match(line)
        if match:
            yield from flush()
            level = len(match.group(1))
            titles[:] = titles[: level - 1] + [""] * max(0, level - 1 - len(titles)) + [match.group(2)]
            questions, heading_line = (), lineno
        elif _QUESTION_START.match(line):
            where = f"{path}:{lineno}"
            problem = ("comes before any heading" if not heading_line else
                       f"is a second one for the heading on line {heading_line}" if questions else
                       "follows text" if any(b.strip() for b in body) else "")
            if problem:
                raise CorpusError(f"{where}: a question line must come directly under its heading, one per "
                                  f"section; this one {problem}")
            questions = _parse_question_line(line, where)
        else:
            body.append(line)
    yield from flush()


def _parse_question_line(line: str, where: str) -> tuple[str, ...]:
    match = _QUESTION_LINE.match(line)
    if not match:
        raise CorpusError(f"{where}: a question line is one line '<!-- 问法: q1 | q2 | q3 -->' "
                          f"(问法: or questions:, items separated by ' | ', closed by -->)")
    return _checked_questions(re.split(r"[|｜]", match.group(1)), f"{where}: question line")


def _checked_questions(items: list[str], where: str) -> tuple[str, ...]:
    questions = tuple(" ".join(q.split()) for q in items)
    if any(not q for q in questions):
        raise CorpusError(f"{where}: an empty question (items are separated by ' | ')")
    if len(questions) > MAX_QUESTIONS:
        raise CorpusError(f"{where}: {len(questions)} questions; at most {MAX_QUESTIONS} per section")
    long = next((q for q in questions if len(q) > MAX_QUESTION_CHARS), None)
    if long is not None:
        raise CorpusError(f"{where}: a question of {len(long)} characters ({long[:30]}…); "
                          f"at most {MAX_QUESTION_CHARS}")
    return tuple(dict.fromkeys(questions))  # the same question twice adds nothing


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

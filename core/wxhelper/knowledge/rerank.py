"""A second signal for the vector ranking: how much of the question's wording a passage shares.

USE ranks the right document first for most questions, but within a document it often prefers
a sibling section (the introduction that names every topic of the document, or the neighbouring
heading) over the section whose words the user actually typed ("合同必须写清哪些内容" against
"合同必须写清的内容"). Re-ranking the vector search's top candidates by

    score = cosine + LEXICAL_WEIGHT * coverage

where ``coverage`` is the IDF-weighted share of the question's CJK bigrams (and Latin words)
that occur in the passage (heading + text), moves those sections up without letting a shared
word alone beat a semantic match: the cosine still dominates. On the tuning set this lifted the
default embedding's recall@1 from 0.69 to 0.78 and, on the held-out set written before any
tuning, from 0.63 to 0.73 (recall@3 0.73 to 0.88); see docs/performance.md.

A passage's question lines (see :mod:`.corpus`) are in its vector but not in what this re-rank
reads: as words they did not help on both evaluation sets (``index.RERANK_READS_QUESTIONS``).

Terms that occur in no passage carry no information about which passage answers, so they count
neither way. A question with no CJK bigram (an English question against Chinese passages) gets
no lexical signal at all: its Latin words would only match stray English in the corpus
("Visa" cards for "Do I need a visa").
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Iterable, Optional, Sequence

#: Weight of the lexical coverage (0..1) added to the cosine. 0.2 was best on the tuning set;
#: the held-out set preferred 0.2-0.4, so the lower end is kept.
LEXICAL_WEIGHT = 0.2
#: How many of the vector search's best passages are re-ranked (at least ``3 * k``). Re-ranking
#: the top 20 or all passages gave the same ranks on both evaluation sets.
RERANK_CANDIDATES = 30


_CJK_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]+")
_LATIN_WORD = re.compile(r"[a-z0-9]+")


def terms(text: str) -> frozenset[str]:
    """CJK bigrams (within runs of CJK) and lower-cased Latin words/digit runs, after NFKC.

    The bigrams and words of :func:`.embedding.features`, without its unigrams (too common to tell
    passages apart), computed with regular expressions: indexing reads every passage through it.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    out = {run[i:i + 2] for run in _CJK_RUN.findall(text) for i in range(len(run) - 1)}
    out.update("w:" + w for w in _LATIN_WORD.findall(text))
    return frozenset(out)


def has_cjk_terms(query_terms: Iterable[str]) -> bool:
    return any(not t.startswith("w:") for t in query_terms)


class LexicalOverlap:
    """IDF-weighted coverage of a question's terms by each passage of one namespace.

    The weights are added in the terms' sorted order. Terms are sets, whose order changes with
    ``PYTHONHASHSEED``, and sums in set order gave a full coverage of 1.0000000000000002 on one run
    and ties broken differently on the next. One order makes a coverage, and so a ranking, the same
    on every run; and since a passage's sum adds a subsequence of the total's additions in the same
    order (rounding is monotone), it is never above the total: a coverage is at most exactly 1.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        self.docs = [terms(t) for t in texts]
        df: Counter = Counter()
        for d in self.docs:
            df.update(d)
        n = max(len(self.docs), 1)
        self.idf = {t: math.log(1 + n / c) for t, c in df.items()}

    def _weights(self, query: str) -> Optional[tuple[list[tuple[str, float]], float]]:
        """The question's known terms with their IDF, in sorted order, and their total; None without a signal."""
        wanted = terms(query)
        if not has_cjk_terms(wanted):
            return None
        idf = self.idf
        items = sorted((t, idf[t]) for t in wanted if t in idf)
        total = 0.0
        for _, weight in items:
            total += weight
        return (items, total) if total > 0 else None

    def coverage(self, query: str, rows: Iterable[int]) -> dict[int, float]:
        """Coverage (0..1) of ``query`` by each passage row in ``rows``; empty when it says nothing."""
        weighted = self._weights(query)
        if weighted is None:
            return {}
        items, total = weighted
        docs = self.docs
        return {row: _covered(items, docs[row]) / total for row in rows}

    def coverage_of_text(self, query: str, text: str) -> float:
        """Coverage of ``query`` by a passage that is not (yet) in this index (server mode)."""
        weighted = self._weights(query)
        if weighted is None:
            return 0.0
        items, total = weighted
        return _covered(items, terms(text)) / total


def _covered(items: list[tuple[str, float]], doc: frozenset[str]) -> float:
    """The weights of the terms ``doc`` holds, added in ``items``' order (see :class:`LexicalOverlap`)."""
    covered = 0.0
    for term, weight in items:
        if term in doc:
            covered += weight
    return covered

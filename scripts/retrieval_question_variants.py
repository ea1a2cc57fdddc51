"""Reproduce docs/performance.md's "What was tried" table for question lines (session 3).

A numpy prototype of the default retrieval (FastUSE vectors, heading-weighted passage vectors, the
lexical re-rank of the vector top 30) with the ways of using a section's question lines that were
compared. It reads the installed plugins' corpora and the two evaluation sets:

    python scripts/retrieval_question_variants.py              # the tuning set
    python scripts/retrieval_question_variants.py --heldout    # the held-out set (look once)

The adopted variant is what ``KnowledgeBase`` does (its figures equal ``wxhelper bench retrieval``'s).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np

from wxhelper.bench.retrieval import is_relevant, load_eval
from wxhelper.knowledge import load_corpus
from wxhelper.knowledge.embedding import resolve_embedding
from wxhelper.knowledge.index import HEADING_WEIGHT, RERANK_CANDIDATES
from wxhelper.knowledge.rerank import LEXICAL_WEIGHT, LexicalOverlap
from wxhelper.plugins import load_plugins
from wxhelper.settings import Settings

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
PLUGINS = "wxhelper-car-client,wxhelper-qzzp,wxhelper-lvyou"


def normalised(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)


class Prototype:
    def __init__(self, heldout: bool) -> None:
        self.items = load_eval(DATA / ("retrieval_heldout.jsonl" if heldout else "retrieval_eval.jsonl"))
        self.embedding = resolve_embedding("use", Settings()).function
        self._cache: dict[str, np.ndarray] = {}
        namespaces = load_plugins(Settings(load_plugins=PLUGINS)).namespaces
        self.data = {}
        for name in sorted({item.namespace for item in self.items}):
            passages = load_corpus(namespaces[name])
            full = self.embed([p.embed_text for p in passages])
            head = self.embed([p.heading or p.text[:40] for p in passages])
            questions = [normalised(self.embed(list(p.questions))) if p.questions else None for p in passages]
            self.data[name] = (passages, normalised(full + HEADING_WEIGHT * head), questions)
        self.query = {item.id: normalised(self.embed([item.query]))[0] for item in self.items}

    def embed(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            self._cache.update(zip(todo, np.asarray(self.embedding(todo), dtype=np.float32)))
        return np.stack([self._cache[t] for t in texts])

    def run(self, mode: str, weight: float = 0.0, lam: float = 1.0, rerank_questions: bool = False,
            lexical_weight: float = LEXICAL_WEIGHT) -> dict[str, Optional[int]]:
        """Rank of the first relevant passage per question (None beyond 10).

        mode: ``blend`` (one vector: v + weight * mean of the question vectors), ``maxsim`` (max of
        the passage cosine and lam * the best question cosine), ``meansim`` (max of the passage
        cosine and lam * the cosine of the questions' mean vector).
        """
        ranks: dict[str, Optional[int]] = {}
        for name, (passages, base, questions) in self.data.items():
            texts = [f"{p.heading}\n{p.text}" + ("\n" + "\n".join(p.questions) if rerank_questions else "")
                     for p in passages]
            lexical = LexicalOverlap(texts)
            matrix = base.copy()
            if mode == "blend":
                for i, q in enumerate(questions):
                    if q is not None:
                        matrix[i] = normalised(matrix[i] + weight * normalised(q.mean(0)))
            for item in (x for x in self.items if x.namespace == name):
                qv = self.query[item.id]
                scores = matrix @ qv
                for i, q in enumerate(questions):
                    if q is None or mode == "blend":
                        continue
                    other = float((q @ qv).max()) if mode == "maxsim" else float(normalised(q.mean(0)) @ qv)
                    scores[i] = max(scores[i], lam * other)
                top = list(np.argsort(-scores)[:RERANK_CANDIDATES])
                coverage = lexical.coverage(item.query, top)
                order = sorted(top, key=lambda i: -(scores[i] + lexical_weight * coverage.get(i, 0.0)))[:10]
                ranks[item.id] = next((r for r, i in enumerate(order, 1)
                                       if is_relevant(passages[i].source, passages[i].heading, item.relevant)), None)
        return ranks

    def summary(self, ranks: dict[str, Optional[int]]) -> str:
        def m(kind: Optional[str]) -> tuple[float, float, float]:
            rs = [ranks[i.id] for i in self.items if kind is None or i.kind == kind]
            n = len(rs)
            return (sum(r == 1 for r in rs) / n, sum(r is not None and r <= 3 for r in rs) / n,
                    sum(1 / r for r in rs if r) / n)
        a, p, e = m(None), m("paraphrase"), m("english")
        return (f"R@1 {a[0]:.3f} R@3 {a[1]:.3f} MRR {a[2]:.3f} | para R@1 {p[0]:.3f} R@3 {p[1]:.3f} "
                f"| en R@1 {e[0]:.3f} R@3 {e[1]:.3f}")


VARIANTS: list[tuple[str, dict]] = [
    ("none (question lines ignored)", dict(mode="blend", weight=0.0)),
    *[(f"(a) blend, weight {w}, re-rank on heading + text", dict(mode="blend", weight=w))
      for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5)],
    *[(f"(a) blend, weight {w}, re-rank reads the questions", dict(mode="blend", weight=w, rerank_questions=True))
      for w in (0.2, 0.3, 0.5, 0.7, 1.0, 1.5)],
    *[(f"(a) blend 0.3, re-rank reads the questions, lexical weight {lw}",
       dict(mode="blend", weight=0.3, rerank_questions=True, lexical_weight=lw)) for lw in (0.1, 0.3)],
    ("re-rank reads the questions, vectors as before", dict(mode="blend", weight=0.0, rerank_questions=True)),
    *[(f"(b) max-sim, lambda {lam}, re-rank reads the questions", dict(mode="maxsim", lam=lam, rerank_questions=True))
      for lam in (0.7, 0.8, 0.9, 1.0)],
    *[(f"(b) max-sim, lambda {lam}, re-rank on heading + text", dict(mode="maxsim", lam=lam))
      for lam in (0.7, 0.8, 0.9, 1.0)],
    *[(f"mean-question vector as a second vector, lambda {lam}", dict(mode="meansim", lam=lam, rerank_questions=True))
      for lam in (0.9, 1.0)],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", action="store_true", help="the held-out set instead of the tuning set")
    args = parser.parse_args()
    proto = Prototype(args.heldout)
    for label, kwargs in VARIANTS:
        print(f"{label:62s} {proto.summary(proto.run(**kwargs))}")


if __name__ == "__main__":
    main()

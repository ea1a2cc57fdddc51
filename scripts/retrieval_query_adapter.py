"""Session 6: a linear query adapter learned from the corpora's own question items, on the two tuning
sets only (not a candidate: below the +7 margin of "Session 6, part 2").

    python scripts/retrieval_query_adapter.py

The corpora's question items are colloquial questions paired with the section that answers them, so
they can teach a map from how users ask to where the answers sit: ridge regression of each item's
USE vector onto its section's passage vector, shrunk towards the identity (``W = argmin |QW - P|^2 +
lam |W - I|^2``), learned per namespace or over all; the question is then searched as
``normalise(q + beta * normalise(q W))`` against the default's passage vectors and re-ranked as usual.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_question_variants import Prototype, normalised  # noqa: E402

from wxhelper.bench.retrieval import is_relevant  # noqa: E402
from wxhelper.knowledge.index import QUESTION_WEIGHT, RERANK_CANDIDATES  # noqa: E402
from wxhelper.knowledge.rerank import LEXICAL_WEIGHT, LexicalOverlap  # noqa: E402

SETS = ("retrieval_eval", "retrieval_tuning2")


def adapter(proto: Prototype, names: list[str], lam: float) -> np.ndarray:
    items, targets = [], []
    for name in names:
        _, base, questions = proto.data[name]
        for i, q in enumerate(questions):
            if q is not None:
                items.extend(q)
                targets.extend([base[i]] * len(q))
    Q, P = np.asarray(items), np.asarray(targets)
    eye = np.eye(Q.shape[1], dtype=Q.dtype)
    return np.linalg.solve(Q.T @ Q + lam * eye, Q.T @ P + lam * eye)


def ranks(proto: Prototype, lam: float, beta: float, per_namespace: bool) -> dict:
    out = {}
    shared = None if per_namespace else adapter(proto, list(proto.data), lam)
    for name, (passages, base, questions) in proto.data.items():
        w = adapter(proto, [name], lam) if per_namespace else shared
        lexical = LexicalOverlap([f"{p.heading}\n{p.text}" for p in passages])
        matrix = proto.blended(name, QUESTION_WEIGHT)
        for item in (x for x in proto.items if x.namespace == name):
            qv = proto.query[item.id]
            if beta:
                qv = normalised(qv + beta * normalised(qv @ w))
            scores = matrix @ qv
            top = list(np.argsort(-scores)[:RERANK_CANDIDATES])
            coverage = lexical.coverage(item.query, top)
            order = sorted(top, key=lambda i: -(scores[i] + LEXICAL_WEIGHT * coverage.get(i, 0.0)))[:10]
            out[item.id] = next((r for r, i in enumerate(order, 1)
                                 if is_relevant(passages[i].source, passages[i].heading, item.relevant)), None)
    return out


def main() -> None:
    proto = Prototype(SETS)

    def line(r: dict) -> str:
        first = sum(1 for i in proto.items if r[i.id] == 1)
        top3 = sum(1 for i in proto.items if r[i.id] and r[i.id] <= 3)
        return f"first {first} top 3 {top3} of {len(proto.items)} || " + " || ".join(
            f"{g}: {proto.summary(r, g)}" for g in SETS)

    print(f"{'current':40s} {line(ranks(proto, 1.0, 0.0, False))}")
    for per_namespace in (False, True):
        for lam in (0.1, 1.0, 10.0):
            for beta in (0.5, 1.0, 3.0):
                label = f"{'per namespace' if per_namespace else 'all namespaces'}, lam {lam:g}, beta {beta:g}"
                print(f"{label:40s} {line(ranks(proto, lam, beta, per_namespace))}")


if __name__ == "__main__":
    main()

"""Session 4: a document score for retrieval, developed on the tuning set, validated blind once.

A numpy prototype of the default retrieval (FastUSE vectors, heading-weighted passage vectors blended
with their question lines at ``QUESTION_WEIGHT``, the lexical re-rank of the cosine top 30) with the
ways of scoring a passage's document that were compared (docs/performance.md, "A document score"):

    python scripts/retrieval_document_score.py              # the tuning set: every option, and what changed
    python scripts/retrieval_document_score.py --validate   # the candidate and the default, all four sets, the rule

``--validate`` prints aggregate figures only (no question of a held-out set by name) and applies the
rule written in docs/performance.md before the fourth set (``retrieval_heldout3.jsonl``) was read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_question_variants import DATA, HELDOUT, HELDOUT2, TUNING, Prototype, Ranks, normalised  # noqa: E402

from wxhelper.bench.retrieval import is_relevant  # noqa: E402
from wxhelper.knowledge.index import QUESTION_WEIGHT  # noqa: E402
from wxhelper.knowledge.rerank import LEXICAL_WEIGHT, RERANK_CANDIDATES, LexicalOverlap  # noqa: E402

HELDOUT3 = "retrieval_heldout3"
#: The candidate, chosen on the tuning set alone (the smallest weight with the most questions answered first there).
CANDIDATE_WEIGHT = 0.7
WEIGHTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0)

Scorer = Callable[[np.ndarray, dict], np.ndarray]  # (query vector, namespace data) -> score per passage


def document_key(source: str, heading: str) -> str:
    return f"{source}\x00{heading.split(' › ')[0] if heading else ''}"


class DocumentPrototype(Prototype):
    def __init__(self, sets: tuple[str, ...]) -> None:
        super().__init__(sets)
        self.ns: dict[str, dict] = {}
        for name, (passages, base, questions) in self.data.items():
            matrix = base.copy()
            for i, q in enumerate(questions):
                if q is not None:
                    matrix[i] = normalised(matrix[i] + QUESTION_WEIGHT * normalised(q.mean(0)))
            keys = [document_key(p.source, p.heading) for p in passages]
            groups: dict[str, list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(key, []).append(i)
            centroid, question_centroid = np.zeros_like(matrix), np.zeros_like(matrix)
            for rows in groups.values():
                centroid[rows] = normalised(matrix[rows].mean(0))
                asked = [questions[i] for i in rows if questions[i] is not None]
                question_centroid[rows] = normalised(np.concatenate(asked).mean(0)) if asked else centroid[rows[0]]
            intro = np.array([" › " not in (p.heading or "") for p in passages], dtype=np.float32)
            self.ns[name] = dict(passages=passages, matrix=matrix, centroid=centroid, question_centroid=question_centroid,
                                 groups=list(groups.values()), intro=intro,
                                 lexical=LexicalOverlap([f"{p.heading}\n{p.text}" for p in passages]))

    def rank(self, extra: Optional[Scorer] = None, lexical_weight: float = LEXICAL_WEIGHT,
             fold: float = 0.0) -> Ranks:
        """Candidates: the cosine top 30; then cosine + extra + lexical_weight * coverage (the default has no extra).

        ``fold``: the document centroid folded into the stored vector instead, normalise(v + fold * doc)."""
        ranks: Ranks = {}
        for item in self.items:
            d = self.ns[item.namespace]
            qv = self.query[item.id]
            matrix = normalised(d["matrix"] + fold * d["centroid"]) if fold else d["matrix"]
            cosine = matrix @ qv
            top = list(np.argsort(-cosine, kind="stable")[:RERANK_CANDIDATES])
            bonus = extra(qv, d) if extra is not None else np.zeros_like(cosine)
            coverage = d["lexical"].coverage(item.query, top)
            order = sorted(top, key=lambda i: -(cosine[i] + bonus[i] + lexical_weight * coverage.get(i, 0.0)))[:10]
            passages = d["passages"]
            ranks[item.id] = next((r for r, i in enumerate(order, 1)
                                   if is_relevant(passages[i].source, passages[i].heading, item.relevant)), None)
        return ranks


def centroid_score(weight: float, which: str = "centroid") -> Scorer:
    return lambda qv, d: weight * (d[which] @ qv)


def aggregate_score(weight: float, how: str) -> Scorer:
    """weight * an aggregate of the cosines of the passage's document's passages."""
    def score(qv: np.ndarray, d: dict) -> np.ndarray:
        cosine = d["matrix"] @ qv
        out = np.zeros_like(cosine)
        for rows in d["groups"]:
            v = cosine[rows]
            if how == "max":
                out[rows] = v.max()
            elif how == "top2":
                out[rows] = np.sort(v)[-2:].mean()
            elif how == "lse":
                out[rows] = v.max() + 0.05 * np.log(np.exp((v - v.max()) / 0.05).sum())
            else:
                out[rows] = v.mean()
        return weight * out
    return score


def intro_prior(weight: float) -> Scorer:
    return lambda qv, d: weight * d["intro"]


def tuning() -> None:
    proto = DocumentPrototype((TUNING,))
    before = proto.rank()

    def show(label: str, ranks: Ranks) -> None:
        changed = ", ".join(f"{i} {before[i]}->{ranks[i]}" for i in before if ranks[i] != before[i])
        print(f"{label:58s} {proto.metrics(ranks)['hits@1']:2d}/81 {proto.summary(ranks)}  {changed}")

    show("current default", before)
    for w in WEIGHTS:
        show(f"+ {w:g} * cos(q, document centroid)", proto.rank(centroid_score(w)))
    for w in (0.1, 0.2, 0.3, 0.5):
        show(f"+ {w:g} * cos(q, centroid of the document's questions)", proto.rank(centroid_score(w, "question_centroid")))
    for w in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        show(f"folded: normalise(v + {w:g} * document centroid)", proto.rank(fold=w))
    for how in ("max", "top2", "lse", "mean"):
        for w in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
            show(f"+ {w:g} * {how} of the document's passage cosines", proto.rank(aggregate_score(w, how)))
    for w in (-0.05, -0.03, -0.02, 0.02):
        show(f"+ {w:g} on an introduction passage", proto.rank(intro_prior(w)))
    for w in (0.5, 0.7, 1.0):
        for lw in (0.15, 0.25, 0.3):
            show(f"+ {w:g} * centroid, lexical weight {lw:g}", proto.rank(centroid_score(w), lexical_weight=lw))


def validate() -> None:
    """The candidate and the default on all four sets, side by side, aggregates only; the rule's verdict."""
    sets = (TUNING, HELDOUT, HELDOUT2, HELDOUT3)
    missing = [s for s in sets if not (DATA / f"{s}.jsonl").is_file()]
    if missing:
        raise SystemExit(f"missing evaluation sets: {', '.join(missing)}")
    proto = DocumentPrototype(sets)
    default, candidate = proto.rank(), proto.rank(centroid_score(CANDIDATE_WEIGHT))
    for group in sets:
        for label, ranks in (("default", default), (f"document {CANDIDATE_WEIGHT:g}", candidate)):
            m = proto.metrics(ranks, group=group)
            print(f"{group:20s} {label:13s} {m['hits@1']:3d}/{m['n']} {proto.summary(ranks, group)}")
    pooled = {label: sum(proto.metrics(r, group=g)["hits@1"] for g in sets[:3])
              for label, r in (("default", default), ("candidate", candidate))}
    print(f"\npooled over {', '.join(sets[:3])}: answered first {pooled['default']} (default), "
          f"{pooled['candidate']} (candidate)")
    new3, old3 = proto.metrics(candidate, group=HELDOUT3), proto.metrics(default, group=HELDOUT3)
    checks = {
        "1. fourth set R@1 not below": new3["r@1"] >= old3["r@1"] - 1e-9,
        "1. fourth set R@3 not below by more than one question": new3["r@3"] >= old3["r@3"] - 1 / new3["n"] - 1e-9,
        "2. pooled answered-first rises": pooled["candidate"] > pooled["default"],
        "3. no set's R@3 below by more than one question": all(
            proto.metrics(candidate, group=g)["r@3"] >= proto.metrics(default, group=g)["r@3"]
            - 1 / proto.metrics(default, group=g)["n"] - 1e-9 for g in sets),
    }
    for name, ok in checks.items():
        print(f"  {'yes' if ok else 'NO '}  {name}")
    print(f"\nverdict: {'adopt DOCUMENT_WEIGHT ' + format(CANDIDATE_WEIGHT, 'g') if all(checks.values()) else 'keep the default'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validate", action="store_true", help="the candidate and the default on all four sets, once")
    args = parser.parse_args()
    validate() if args.validate else tuning()


if __name__ == "__main__":
    main()

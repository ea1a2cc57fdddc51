"""Where the default's rank-1 misses go, on the tuning sets (never run it on a held-out set: reading
a held-out set's misses is tuning on it).

    python scripts/retrieval_misses.py                  # counts by kind of miss, then every miss
    python scripts/retrieval_misses.py retrieval_eval   # one set

A miss is "another document" when the passage ranked first comes from a file that no label of the
question names, "a sibling" when it is another section of a labelled file, "the introduction" when
it is that file's text under its title. Uses the numpy prototype of the default retrieval, whose
figures equal `wxhelper bench retrieval`'s.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_question_variants import Prototype  # noqa: E402

from wxhelper.bench.retrieval import is_relevant  # noqa: E402
from wxhelper.knowledge.index import QUESTION_WEIGHT, RERANK_CANDIDATES  # noqa: E402
from wxhelper.knowledge.rerank import LEXICAL_WEIGHT, LexicalOverlap  # noqa: E402

TUNING_SETS = ("retrieval_eval", "retrieval_tuning2")


def main(sets: tuple[str, ...]) -> None:
    if any("heldout" in s for s in sets):
        raise SystemExit("the held-out sets' misses are not read (that would be tuning on them)")
    proto = Prototype(sets)
    kinds: Counter[tuple[str, str]] = Counter()
    rows = []
    for name, (passages, base, questions) in proto.data.items():
        lexical = LexicalOverlap([f"{p.heading}\n{p.text}" for p in passages])
        matrix = proto.blended(name, QUESTION_WEIGHT)
        for item in (x for x in proto.items if x.namespace == name):
            scores = matrix @ proto.query[item.id]
            top = list(np.argsort(-scores)[:RERANK_CANDIDATES])
            coverage = lexical.coverage(item.query, top)
            order = sorted(top, key=lambda i: -(scores[i] + LEXICAL_WEIGHT * coverage.get(i, 0.0)))[:10]
            rank = next((r for r, i in enumerate(order, 1)
                         if is_relevant(passages[i].source, passages[i].heading, item.relevant)), None)
            if rank == 1:
                continue
            first = passages[order[0]]
            if not any(label["source"] == first.source for label in item.relevant):
                kind = "another document"
            else:
                kind = "a sibling" if " › " in (first.heading or "") else "the introduction"
            kinds[(kind, "in the top 3" if rank and rank <= 3 else "not in the top 3")] += 1
            rows.append(f"{item.id:12s} {item.kind:10s} rank {rank}  {kind:16s} {item.query}  ->  "
                        f"{first.source} / {first.heading}")
    print(f"{len(proto.items)} questions, {len(rows)} not answered first:")
    for (kind, where), n in sorted(kinds.items()):
        print(f"  first is {kind}, the answer {where}: {n}")
    print("\n".join(rows))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or TUNING_SETS)

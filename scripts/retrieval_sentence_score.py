"""Session 5: a passage's best sentence as a second score (tried on the tuning and earlier sets; not a candidate).

Each passage's text is split into sentences (。！？；, line breaks; 6 characters or more), each
embedded alone; a passage's score becomes its cosine plus mu times its best sentence's cosine,
then the usual lexical re-rank. mu = 0 is the default (its figures equal the bench's):

    MUS="0 0.2 0.3 0.5 0.6" python scripts/retrieval_sentence_score.py retrieval_eval retrieval_heldout \
        retrieval_heldout2 retrieval_heldout3

The fifth set (retrieval_heldout4.jsonl) was not read: no candidate came out of this.
"""
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_question_variants import Prototype, normalised, TUNING, HELDOUT, HELDOUT2
from wxhelper.bench.retrieval import is_relevant
from wxhelper.knowledge.index import QUESTION_WEIGHT, RERANK_CANDIDATES
from wxhelper.knowledge.rerank import LEXICAL_WEIGHT, LexicalOverlap

def sentences(text):
    parts = [s.strip(" -•*#\t") for s in re.split(r"[。！？!?；;\n]+", text)]
    return [s for s in parts if len(s) >= 6]

class P(Prototype):
    def prepare(self):
        self.sent = {}
        for name, (passages, base, questions) in self.data.items():
            rows, owner = [], []
            for i, p in enumerate(passages):
                for s in sentences(p.text):
                    rows.append(s); owner.append(i)
            self.sent[name] = (normalised(self.embed(rows)), np.array(owner))
    def rank(self, mu, mode):
        ranks = {}
        for name, (passages, base, questions) in self.data.items():
            lexical = LexicalOverlap([f"{p.heading}\n{p.text}" for p in passages])
            matrix = self.blended(name, QUESTION_WEIGHT)
            sv, owner = self.sent[name]
            for item in (x for x in self.items if x.namespace == name):
                qv = self.query[item.id]
                scores = matrix @ qv
                if mu:
                    best = np.full(len(passages), -1.0, dtype=np.float32)
                    np.maximum.at(best, owner, sv @ qv)
                    has = best > -1
                    if mode == "add":
                        scores[has] += mu * best[has]
                    else:
                        scores[has] = np.maximum(scores[has], mu * best[has])
                top = list(np.argsort(-scores)[:RERANK_CANDIDATES])
                cov = lexical.coverage(item.query, top)
                order = sorted(top, key=lambda i: -(scores[i] + LEXICAL_WEIGHT * cov.get(i, 0.0)))[:10]
                ranks[item.id] = next((r for r, i in enumerate(order, 1) if is_relevant(passages[i].source, passages[i].heading, item.relevant)), None)
        return ranks

sets = tuple(sys.argv[1:]) or (TUNING,)
p = P(sets); p.prepare()
print("sentences:", {k: len(v[1]) for k, v in p.sent.items()})
for mode, mus in (("add", tuple(float(x) for x in os.environ.get("MUS", "0 0.5").split())),):
    for mu in mus:
        r = p.rank(mu, mode)
        print(mode, mu, " || ".join(f"{g}: {p.summary(r, g)}" for g in sets))

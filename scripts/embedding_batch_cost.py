"""CPU per question of the default embedding for batches of 1 to 16 of the bench's questions.

    python scripts/embedding_batch_cost.py [embedding]     # default: use; three rounds, medians of 40 calls

Why the loop batcher waits for company under load (core/wxhelper/knowledge/batching.py): one
question alone costs two to three times what each of four embedded together costs.
"""

from __future__ import annotations

import statistics
import sys
import time

from wxhelper.bench.serve import _messages
from wxhelper.knowledge.embedding import make_embedding

SIZES = (1, 2, 3, 4, 6, 8, 16)


def main(spec: str = "use") -> None:
    embed = make_embedding(spec)
    texts = [m["content"] for m in _messages(4000, 200, seed=3)]
    embed(texts[:50])  # load and warm up
    per_size: dict[int, list[float]] = {b: [] for b in SIZES}
    for rnd in range(3):
        for size in SIZES:
            at = 100 + rnd * 1000
            costs = []
            for _ in range(40):
                batch = texts[at:at + size]
                at += size
                started = time.process_time()
                embed(batch)
                costs.append((time.process_time() - started) / size)
            per_size[size].append(statistics.median(costs) * 1000.0)
    print(f"{spec}: CPU ms per question, by batch size (three rounds)")
    for size, costs in per_size.items():
        print(f"{size:3d}  " + "  ".join(f"{c:.3f}" for c in costs))


if __name__ == "__main__":
    main(*sys.argv[1:2])

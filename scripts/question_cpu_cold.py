"""CPU of embedding one question when the caches are cold, as in a busy server, per embedding.

    python scripts/question_cpu_cold.py use use:int8     # median and p90 of 200 alternating questions each

Between two questions a 32 MB array is rewritten, so the model's weights leave the CPU caches the
way the server's other work makes them leave (a tight loop keeps them cached and hides the cost).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from wxhelper.blas import one_blas_thread
from wxhelper.knowledge.embedding import make_embedding

QUESTIONS = ("车子过户要带啥", "老板一直拖着不发钱咋办", "去三亚玩几天合适，预算多少",
             "What documents do I need to transfer a car?", "试用期可以不交社保吗", "丽江古城住哪里方便")


def main(specs: list[str]) -> None:
    one_blas_thread()
    embeddings = {spec: make_embedding(spec) for spec in specs}
    for ef in embeddings.values():
        ef(list(QUESTIONS))  # loads; fills the per-token rows
    junk = np.ones(8_000_000, dtype=np.float32)
    times: dict[str, list[float]] = {spec: [] for spec in specs}
    for r in range(200):
        order = specs if r % 2 else specs[::-1]
        for spec in order:
            junk += 1.0
            t0 = time.process_time()
            embeddings[spec]([QUESTIONS[r % len(QUESTIONS)]])
            times[spec].append(time.process_time() - t0)
    for spec, values in times.items():
        print(f"{spec}: median {statistics.median(values) * 1e3:.3f} ms, p90 {np.percentile(values, 90) * 1e3:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1:] or ["use", "use:int8"])

"""CPU time of a whole first index of the installed plugins' corpora, in this process.

    python scripts/index_cpu.py [--embedding use]        # prints one JSON line

Compare two versions by running it alternately with ``PYTHONPATH=<checkout>/core``; the vector
cache is off and the data directory fresh, so every passage is embedded. CPU time, not wall time:
these machines are shared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from wxhelper import Settings
from wxhelper.blas import one_blas_thread
from wxhelper.knowledge import KnowledgeBase
from wxhelper.plugins import load_plugins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedding", default="use")
    args = parser.parse_args()
    one_blas_thread()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedding=args.embedding, vector_cache="off")
        kb = KnowledgeBase(settings)
        t0 = time.process_time()
        label = kb.resolved.label  # loads the model
        load = time.process_time() - t0
        passages = 0
        t0, w0 = time.process_time(), time.perf_counter()
        for ns in load_plugins(settings).namespaces.values():
            passages += kb.index(ns).total
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    print(json.dumps({"embedding": label, "passages": passages, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                      "passages_per_cpu_s": round(passages / cpu, 1), "model_load_cpu_s": round(load, 2)}))


if __name__ == "__main__":
    main()

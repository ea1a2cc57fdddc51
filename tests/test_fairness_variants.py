"""Property tests of the fair-algorithm variants: weighted, time_decay, quality, hybrid.

Each variant is max-min progressive filling with a per-record factor on the level
(see :mod:`wxhelper.fairness`), so each must keep the budgets, hand every user a
newest-first prefix, depend only on the ``max_records`` most recently active
users and their newest ``max_records`` records (the storage backends rely on
that), reduce to ``max_min`` when its extra signal is neutral, and keep a
guarantee of the max-min kind for the signal it adds.
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from wxhelper.fairness import (ALGORITHMS, TIME_DECAY_SCALE, UserHistory, apply_weights, by_recency,
                               hybrid_fair, max_min_fair, quality_fair, quality_value, select, time_decay_fair,
                               weighted_fair)
from wxhelper.messages import Record

VARIANTS = ["weighted", "time_decay", "quality", "hybrid"]
NOW = 1_763_700_000.0


@st.composite
def histories(draw: st.DrawFn, *, same_time: bool = False, zero_scores: bool = False,
              unit_weights: bool = False, uniform_scores: bool = False) -> list[UserHistory]:
    n_users = draw(st.integers(1, 8))
    out = []
    mid = 0
    for u in range(n_users):
        n = draw(st.integers(0, 12))
        ages = sorted(draw(st.lists(st.sampled_from([0.0, 60.0, 3600.0, 43200.0, 86400.0, 3 * 86400.0, 6 * 86400.0]),
                                    min_size=n, max_size=n)))
        user_score = draw(st.sampled_from([0.0, 1.0, 4.0, 9.0, 100.0]))
        records = []
        for k in range(n):
            mid += 1
            score = 0.0 if zero_scores else (user_score if uniform_scores else
                                             draw(st.sampled_from([0.0, 0.0, 1.0, 4.0, 9.0, 100.0, -3.0])))
            records.append(Record(user_id=f"u{u}", source_id="g", bot_id="b",
                                  content="x" * draw(st.integers(1, 40)),
                                  timestamp=NOW if same_time else NOW - ages[k], message_id=f"m{mid}", score=score))
        last = records[0].timestamp if records else NOW - draw(st.integers(0, 10)) * 3600.0
        weight = 1.0 if unit_weights else draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0]))
        out.append(UserHistory(f"u{u}", records, last, weight))
    return out


budgets = st.tuples(st.integers(1, 15), st.integers(1, 300))


def considered(hs: list[UserHistory], m: int) -> list[UserHistory]:
    return [h for h in by_recency(hs) if h.records][:m]


# -- what every variant promises -----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(hs=histories(), mc=budgets, name=st.sampled_from(VARIANTS), seed=st.integers(0, 2**16))
def test_budgets_prefixes_and_candidates(hs: list[UserHistory], mc: tuple[int, int], name: str, seed: int) -> None:
    m, c = mc
    picked = select(hs, m, c, name)
    assert len(picked) <= m and sum(len(r.content) for r in picked) <= c
    assert picked == sorted(picked, key=lambda r: (r.timestamp, r.user_id, r.message_id))
    users = {h.user_id: h for h in considered(hs, m)}
    for user in {r.user_id for r in picked}:
        assert user in users  # only the m most recently active users
        mine = {r.message_id for r in picked if r.user_id == user}
        prefix = [r.message_id for r in users[user].records[: len(mine)]]
        assert set(prefix) == mine  # a newest-first prefix of that user's records
    # the order of the input does not matter
    shuffled = list(hs)
    random.Random(seed).shuffle(shuffled)
    assert select(shuffled, m, c, name) == picked
    # only the m most recently active users and their m newest records matter (what stores return)
    window = [replace(h, records=list(h.records[:m])) for h in considered(hs, m)]
    assert select(window, m, c, name) == picked


@settings(max_examples=40, deadline=None)
@given(hs=histories(), name=st.sampled_from(VARIANTS))
def test_everything_is_taken_when_it_all_fits(hs: list[UserHistory], name: str) -> None:
    everything = [r for h in hs for r in h.records]
    m = max(1, len(everything), len(hs))
    c = max(1, sum(len(r.content) for r in everything))
    assert sorted(r.message_id for r in select(hs, m, c, name)) == sorted(r.message_id for r in everything)


# -- each variant reduces to max_min when its signal is neutral ----------------------------------------------
@settings(max_examples=60, deadline=None)
@given(hs=histories(), mc=budgets)
def test_weighted_is_max_min_with_the_same_weights(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    assert weighted_fair(hs, *mc) == max_min_fair(hs, *mc)


@settings(max_examples=40, deadline=None)
@given(hs=histories(unit_weights=True), mc=budgets)
def test_weighted_with_unit_weights_is_max_min(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    assert weighted_fair(hs, *mc) == max_min_fair(hs, *mc)


@settings(max_examples=40, deadline=None)
@given(hs=histories(same_time=True), mc=budgets)
def test_time_decay_without_age_differences_is_max_min(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    assert time_decay_fair(hs, *mc) == max_min_fair(hs, *mc)


@settings(max_examples=40, deadline=None)
@given(hs=histories(), mc=budgets)
def test_time_decay_with_an_endless_scale_is_max_min(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    assert time_decay_fair(hs, *mc, scale=1e300) == max_min_fair(hs, *mc)


@settings(max_examples=40, deadline=None)
@given(hs=histories(zero_scores=True), mc=budgets)
def test_quality_without_scores_is_max_min(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    assert quality_fair(hs, *mc) == max_min_fair(hs, *mc)


@settings(max_examples=40, deadline=None)
@given(hs=histories(), mc=budgets)
def test_hybrid_reduces_to_each_part(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    unit = [replace(h, weight=1.0) for h in hs]
    no_scores = [replace(h, records=[r.model_copy(update={"score": 0.0}) for r in h.records]) for h in hs]
    same_time = [replace(h, records=[r.model_copy(update={"timestamp": NOW}) for r in h.records], last_active=NOW)
                 for h in hs]
    unit_no_scores = [replace(h, weight=1.0) for h in no_scores]
    assert hybrid_fair(unit_no_scores, *mc) == time_decay_fair(unit_no_scores, *mc)
    same_unit = [replace(h, weight=1.0) for h in same_time]
    assert hybrid_fair(same_unit, *mc) == quality_fair(same_unit, *mc)
    same_no_scores = [replace(h, records=[r.model_copy(update={"score": 0.0}) for r in h.records])
                      for h in same_time]
    assert hybrid_fair(same_no_scores, *mc) == weighted_fair(same_no_scores, *mc)
    assert hybrid_fair(unit, *mc, scale=1e300) == quality_fair(unit, *mc)


# -- the guarantee each signal brings -----------------------------------------------------------------------
def _fits(h: UserHistory, m: int, c: int, share: float, factor=lambda k, r: 1.0) -> bool:
    chars = 0
    for k, r in enumerate(h.records[:m], start=1):
        chars += len(r.content)
        if max(k / m, chars / c) * factor(k, r) > share * (1 - 1e-9):
            return False
    return True


@settings(max_examples=80, deadline=None)
@given(hs=histories(), mc=budgets)
def test_weighted_guarantee(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    """A user whose records fit within w / Σw of both budgets gets all of them (VIP x3 gets 3 shares)."""
    m, c = mc
    users = considered(hs, m)
    total = sum(h.weight for h in users)
    picked = {r.message_id for r in weighted_fair(hs, m, c)}
    for h in users:
        if _fits(h, m, c, h.weight / total):
            assert {r.message_id for r in h.records[:m]} <= picked


@settings(max_examples=80, deadline=None)
@given(hs=histories(unit_weights=True), mc=budgets)
def test_time_decay_guarantee(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    """A user whose records, each counted (1 + age/scale) times, fit within 1/N of both budgets gets them all."""
    m, c = mc
    users = considered(hs, m)
    if not users:
        return
    t_ref = max(h.records[0].timestamp for h in users)
    picked = {r.message_id for r in time_decay_fair(hs, m, c)}
    for h in users:
        if _fits(h, m, c, 1 / len(users), lambda k, r: 1.0 + (t_ref - r.timestamp) / TIME_DECAY_SCALE):
            assert {r.message_id for r in h.records[:m]} <= picked


@settings(max_examples=80, deadline=None)
@given(hs=histories(unit_weights=True, uniform_scores=True), mc=budgets)
def test_quality_guarantee(hs: list[UserHistory], mc: tuple[int, int]) -> None:
    """With one score per user, quality is weighted max-min with weight 1 + sqrt(score): a user whose
    records fit within their value's share of both budgets gets all of them."""
    m, c = mc
    users = considered(hs, m)
    value = {h.user_id: quality_value(h.records[0].score) for h in users}
    total = sum(value.values())
    picked = {r.message_id for r in quality_fair(hs, m, c)}
    for h in users:
        if _fits(h, m, c, value[h.user_id] / total):
            assert {r.message_id for r in h.records[:m]} <= picked


def test_quality_prefers_the_liked_user() -> None:
    def user(name: str, likes: float) -> UserHistory:
        records = [Record(user_id=name, source_id="g", bot_id="b", content="x" * 10, timestamp=NOW - k,
                          message_id=f"{name}{k}", score=likes) for k in range(20)]
        return UserHistory(name, records, NOW)

    picked = quality_fair([user("liked", 16.0), user("plain", 0.0)], 12, 10_000)
    counts = {n: sum(r.user_id == n for r in picked) for n in ("liked", "plain")}
    assert counts == {"liked": 10, "plain": 2}  # values 5 : 1 (ties at the cut go to the more recent user)
    assert [r.user_id for r in max_min_fair([user("liked", 16.0), user("plain", 0.0)], 12, 10_000)].count("liked") == 6


def test_time_decay_prefers_recent_users() -> None:
    def user(name: str, age: float) -> UserHistory:
        records = [Record(user_id=name, source_id="g", bot_id="b", content="x" * 10, timestamp=NOW - age - k,
                          message_id=f"{name}{k}") for k in range(20)]
        return UserHistory(name, records, records[0].timestamp)

    hs = [user("today", 0.0), user("last_week", 6 * 86400.0)]
    picked = time_decay_fair(hs, 16, 10_000)
    counts = {n: sum(r.user_id == n for r in picked) for n in ("today", "last_week")}
    assert counts == {"today": 14, "last_week": 2}  # the week-old records cost 7x as much
    assert [r.user_id for r in max_min_fair(hs, 16, 10_000)].count("today") == 8


def test_weights_apply_only_to_the_weighted_algorithms() -> None:
    hs = [UserHistory("vip", [], NOW), UserHistory("other", [], NOW)]
    for name in ALGORITHMS:
        weighted = apply_weights(hs, {"vip": 3.0}, name)
        assert [h.weight for h in weighted] == ([3.0, 1.0] if name in ("weighted", "hybrid") else [1.0, 1.0])


def test_vip_gets_three_shares() -> None:
    def user(name: str) -> UserHistory:
        records = [Record(user_id=name, source_id="g", bot_id="b", content="x" * 10, timestamp=NOW - k,
                          message_id=f"{name}{k}") for k in range(40)]
        return UserHistory(name, records, NOW)

    hs = apply_weights([user("vip1"), user("a"), user("b")], (("vip1", 3.0),), "weighted")
    counts = {n: sum(r.user_id == n for r in weighted_fair(hs, 25, 10_000)) for n in ("vip1", "a", "b")}
    assert counts == {"vip1": 15, "a": 5, "b": 5}


def test_scale_is_a_parameter() -> None:
    fn = functools.partial(time_decay_fair, scale=3600.0)
    hs = [UserHistory("a", [Record(user_id="a", source_id="g", bot_id="b", content="x", timestamp=NOW,
                                   message_id="1")], NOW)]
    assert [r.message_id for r in fn(hs, 5, 100)] == ["1"]

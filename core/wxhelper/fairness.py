"""Fair history assembly: which records of a shared history reach the prompt.

A prompt has room for ``max_records`` records and ``max_chars`` characters of a
history. A few loud users must not crowd out the rest, so the default algorithm
is max-min fair over *both* resources (dominant-resource progressive filling):

* every user's records are taken newest first (a user is represented by what
  they said last);
* a user's k-th newest record, with c characters in that user's newest k, has a
  *level* ``max(k / max_records, c / max_chars)``: the larger of the shares of the
  two budgets the user would then hold;
* records are admitted in order of level (ties: the more recently active user
  first), so every user's holdings rise together, like water filling vessels;
  a user whose next record does not fit in what is left stops (their records
  stay a newest-first prefix) and the rest is left to the others;
* with more users than record slots only the ``max_records`` most recently
  active users are considered, and each gets one record if its characters fit.

The guarantee this gives, and that the property tests check: a user whose
records fit within ``1/N`` of both budgets (N = users considered) gets all of
them, whatever the others wrote; quota a quiet user cannot use goes to the
others; the budgets are never exceeded.

The seed's algorithm (``Q = max(1, M // N)``, then merge and cut, with the
character budget applied after the choice) is kept as ``seed`` for comparison.
Both are pure functions of the data so that every storage backend returns the
same selection for the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Callable, Mapping, Protocol, Sequence


class HasContent(Protocol):
    user_id: str
    content: str
    timestamp: float
    message_id: str


@dataclass(frozen=True)
class UserHistory:
    """One user's records in one history, newest first, and when they were last active."""

    user_id: str
    records: Sequence[HasContent]
    last_active: float
    weight: float = 1.0


Algorithm = Callable[[Sequence[UserHistory], int, int], list]


def by_recency(histories: Sequence[UserHistory]) -> list[UserHistory]:
    """Most recently active first; ties broken by user id so every backend orders alike."""
    return sorted(histories, key=lambda h: (-h.last_active, h.user_id))


_CHRONOLOGICAL = attrgetter("timestamp", "user_id", "message_id")  # a C key: every prompt sorts its three sections


def chronological(records: list) -> list:
    """Oldest first, as a prompt reads."""
    return sorted(records, key=_CHRONOLOGICAL)


def max_min_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int) -> list:
    """The default: max-min fair over record slots and characters (see the module docstring)."""
    if max_records <= 0 or max_chars <= 0:
        return []
    candidates = [h for h in by_recency(histories) if h.records][:max_records]
    events: list[tuple[float, int, int]] = []
    for rank, history in enumerate(candidates):
        weight = history.weight if history.weight > 0 else 1.0
        chars = 0
        for k, record in enumerate(history.records[:max_records], start=1):
            chars += len(record.content)
            level = max(k / max_records, chars / max_chars) / weight
            events.append((level, rank, k))
    return _admit(candidates, events, max_records, max_chars)


def _admit(candidates: Sequence[UserHistory], events: list[tuple[float, int, int]], max_records: int,
           max_chars: int) -> list:
    """Progressive filling: admit ``(level, rank, k)`` events lowest level first; a user whose next
    record does not fit stops (their selection stays a newest-first prefix)."""
    events.sort()
    taken: list = []
    taken_chars = 0
    stopped: set[int] = set()
    for _level, rank, k in events:
        if rank in stopped:
            continue
        if len(taken) >= max_records:
            break
        record = candidates[rank].records[k - 1]
        size = len(record.content)
        if taken_chars + size > max_chars:
            stopped.add(rank)
            continue
        taken.append(record)
        taken_chars += size
    return chronological(taken)


def seed_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int) -> list:
    """The seed's algorithm, flaws included, for comparison (see ``../shared/seeds/README.md``).

    ``Q = max(1, M // N)`` newest records per user, merged newest first, cut to
    ``M``; the character budget is applied afterwards, newest first, stopping at
    the first record that does not fit.
    """
    if max_records <= 0 or max_chars <= 0:
        return []
    users = [h for h in histories if h.records]
    if not users:
        return []
    quota = max(1, max_records // len(users))
    chosen = [record for h in users for record in list(h.records)[:quota]]
    chosen.sort(key=lambda r: (r.timestamp, r.user_id, r.message_id), reverse=True)
    chosen = chosen[:max_records]
    kept: list = []
    total = 0
    for record in chosen:
        if total + len(record.content) > max_chars:
            break
        kept.append(record)
        total += len(record.content)
    return chronological(kept)


# --- variants: max-min filling with per-record level factors -------------------------
#
# Every variant below is the max-min progressive filling above with the level of a
# user's k-th newest record scaled: ``level = max(k/M, c_k/C) * factor_k / weight``,
# kept non-decreasing along the user's records (running max) so that what a user
# gets is still a newest-first prefix. Only + - * / and sqrt are used (all correctly
# rounded in IEEE 754), so the Redis backend's Lua port returns the same selection
# bit for bit. See docs/fairness.md for worked examples.

TIME_DECAY_SCALE = 86400.0
"""``time_decay``: a record this many seconds older than the newest one counts half, 2x as old a third."""

WEIGHTED_ALGORITHMS = frozenset({"weighted", "hybrid"})
"""The algorithms that use per-user weights (``WXHELPER_USER_WEIGHTS``); the others ignore them."""


def quality_value(score: float) -> float:
    """What one record is worth to ``quality``: ``1 + sqrt(likes)`` (non-finite or negative scores count 0)."""
    s = float(score)
    if not math.isfinite(s) or s <= 0.0:
        return 1.0
    return 1.0 + math.sqrt(s)


def _filling(
    histories: Sequence[UserHistory], max_records: int, max_chars: int, *,
    decay_scale: float = 0.0, quality: bool = False,
) -> list:
    """The shared engine of the variants (``decay_scale`` 0: no time decay)."""
    if max_records <= 0 or max_chars <= 0:
        return []
    candidates = [h for h in by_recency(histories) if h.records][:max_records]
    if not candidates:
        return []
    t_ref = max(h.records[0].timestamp for h in candidates)
    events: list[tuple[float, int, int]] = []
    for rank, history in enumerate(candidates):
        weight = history.weight if history.weight > 0 else 1.0
        chars = 0
        qsum = 0.0
        previous = 0.0
        for k, record in enumerate(history.records[:max_records], start=1):
            chars += len(record.content)
            base = max(k / max_records, chars / max_chars)
            factor = 1.0
            if decay_scale > 0:
                factor = 1.0 + (t_ref - record.timestamp) / decay_scale
            if quality:
                qsum += quality_value(getattr(record, "score", 0.0))
                factor = factor * (k / qsum)
            level = base * factor / weight
            if level < previous:
                level = previous
            previous = level
            events.append((level, rank, k))
    return _admit(candidates, events, max_records, max_chars)


def weighted_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int) -> list:
    """Max-min fair with per-user weights: a user of weight w fills w times as fast (VIP x3).

    The weights come from ``WXHELPER_USER_WEIGHTS`` (the store sets ``UserHistory.weight``);
    with every weight 1 this is exactly ``max_min``.
    """
    return _filling(histories, max_records, max_chars)


def time_decay_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int,
                    scale: float = TIME_DECAY_SCALE) -> list:
    """Max-min fair where older records count less: a record ``age`` seconds older than the
    newest record considered costs ``1 + age/scale`` times as much of a user's share."""
    return _filling(histories, max_records, max_chars, decay_scale=scale)


def quality_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int) -> list:
    """Max-min fair where a user's share grows with how liked their records are: the level of a
    user's newest k records is divided by their mean value ``1 + sqrt(score)``."""
    return _filling(histories, max_records, max_chars, quality=True)


def hybrid_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int,
                scale: float = TIME_DECAY_SCALE) -> list:
    """Weights, time decay and quality together: ``level = base * (1 + age/scale) * (k / Σvalue) / weight``."""
    return _filling(histories, max_records, max_chars, decay_scale=scale, quality=True)


ALGORITHMS: Mapping[str, Algorithm] = {
    "max_min": max_min_fair,
    "seed": seed_fair,
    "weighted": weighted_fair,
    "time_decay": time_decay_fair,
    "quality": quality_fair,
    "hybrid": hybrid_fair,
}


def apply_weights(histories: Sequence[UserHistory], weights: Mapping[str, float] | Sequence[tuple[str, float]],
                  algorithm: str) -> list[UserHistory]:
    """Set ``UserHistory.weight`` from ``weights`` (user id → weight) when ``algorithm`` uses weights."""
    table = dict(weights)
    if algorithm not in WEIGHTED_ALGORITHMS or not table:
        return list(histories)
    return [replace(h, weight=float(table.get(h.user_id, h.weight))) for h in histories]


def select(
    histories: Sequence[UserHistory], max_records: int, max_chars: int, algorithm: str = "max_min"
) -> list:
    """Run the named algorithm; raises ``ValueError`` naming the known ones for an unknown name."""
    try:
        fn = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}") from None
    return fn(histories, max_records, max_chars)


def group_by_user(records: Sequence[HasContent]) -> list[UserHistory]:
    """Build :class:`UserHistory` lists from a flat list (used by tests and the migration tool)."""
    per_user: dict[str, list] = {}
    for record in records:
        per_user.setdefault(record.user_id, []).append(record)
    out = []
    for user, items in per_user.items():
        items.sort(key=lambda r: (r.timestamp, r.message_id), reverse=True)
        out.append(UserHistory(user, items, items[0].timestamp))
    return out

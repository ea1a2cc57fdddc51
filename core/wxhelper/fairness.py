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

from dataclasses import dataclass, field
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


def chronological(records: list) -> list:
    """Oldest first, as a prompt reads."""
    return sorted(records, key=lambda r: (r.timestamp, r.user_id, r.message_id))


def max_min_fair(histories: Sequence[UserHistory], max_records: int, max_chars: int) -> list:
    """The default: max-min fair over record slots and characters (see the module docstring)."""
    if max_records <= 0 or max_chars <= 0:
        return []
    candidates = [h for h in by_recency(histories) if h.records][:max_records]
    events: list[tuple[float, int, int, int]] = []
    for rank, history in enumerate(candidates):
        weight = history.weight if history.weight > 0 else 1.0
        chars = 0
        for k, record in enumerate(history.records[:max_records], start=1):
            chars += len(record.content)
            level = max(k / max_records, chars / max_chars) / weight
            events.append((level, rank, k, chars))
    events.sort()
    taken: list = []
    taken_chars = 0
    stopped: set[int] = set()
    for _level, rank, k, _cum in events:
        if rank in stopped:
            continue
        record = candidates[rank].records[k - 1]
        size = len(record.content)
        if len(taken) >= max_records:
            break
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


ALGORITHMS: Mapping[str, Algorithm] = {
    "max_min": max_min_fair,
    "seed": seed_fair,
}


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

"""A message's turn in few round trips: begin it, read its histories, finish it.

Handling one message touches the store about a dozen times: the final-reply
check, the source lease, the inbox entry, three fair reads, the reply attached
to the entry, the fencing check, the history writes, the completion and the
lease release. Each is a round trip, and on a small machine a round trip costs
more CPU (two socket writes, two wake-ups) than the work it carries. So the host
asks for three steps instead:

* :func:`begin_turn` — take the source's lease, and unless the message already
  has a final reply, put it in the inbox (returns the reply a crashed run
  attached, if any); it may also make the message's fair reads, under the lease;
* :func:`fair_read_many` — several fair reads at once;
* :func:`finish_turn` — attach the reply to the inbox entry, then, only while
  the lease is still held with our token (fencing), write the histories,
  complete the entry and release the lease.

A store may answer each step in one round trip (the Redis store does, with one
Lua script per step, except on Cluster where the keys of one step live in
different slots). The functions here fall back to the single operations, in the
order the host used before, for any store that does not, so every backend keeps
the same guarantees.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..messages import Record
from .base import FairQuery, HistoryKey, StoreError


@dataclass(frozen=True)
class TurnStart:
    """What :func:`begin_turn` found.

    ``token`` is the lease's fencing token (None when the source is busy, or when ``final``
    is set: the message was completed before and no lease was kept). ``earlier`` is the
    reply a crashed run attached to the message's inbox entry.
    """

    token: Optional[int] = None
    final: Optional[str] = None
    earlier: Optional[str] = None
    binding: Optional[str] = None
    """The source's bound namespace, when ``binding_read`` (a store that reads it in the same call)."""
    binding_read: bool = False
    reads: Optional[list[list[Record]]] = None
    """The fair reads asked of :func:`begin_turn`, when the store ran them in the same call, under the
    lease just taken (None otherwise: the caller reads them itself)."""

    @property
    def busy(self) -> bool:
        return self.token is None and self.final is None


@dataclass(frozen=True)
class HistoryWrite:
    """Records to append to one history, in order."""

    key: HistoryKey
    records: list[Record]


async def begin_turn(store: Any, lease: str, ttl: float, bot_id: str, message_id: str,
                     payload: str, received: float, binding_of: Optional[str] = None,
                     reads: Optional[Sequence[tuple[HistoryKey, FairQuery]]] = None) -> TurnStart:
    """Take the lease of a source and enter the message in the inbox (see the module docstring).

    With ``binding_of`` (a source id), a store that can also reads that source's bound namespace
    in the same call (``TurnStart.binding_read``); others leave it to :meth:`get_binding`. With
    ``reads``, a store that can also makes those fair reads in the same call, once the lease is
    held (``TurnStart.reads``; a new or unanswered entry only): the caller that guessed the
    namespace right spares a round trip.
    """
    fast = getattr(store, "begin_turn", None)
    if fast is not None:
        if reads:
            return await fast(lease, ttl, bot_id, message_id, payload, received, binding_of, reads)
        return await fast(lease, ttl, bot_id, message_id, payload, received, binding_of)
    return await begin_turn_stepwise(store, lease, ttl, bot_id, message_id, payload, received)


async def begin_turn_stepwise(store: Any, lease: str, ttl: float, bot_id: str, message_id: str,
                              payload: str, received: float) -> TurnStart:
    token = await store.acquire_lease(lease, ttl)
    if token is None:
        return TurnStart()
    try:
        final = await store.reply_for(bot_id, message_id)  # under the lease: nobody completes it meanwhile
        if final is not None:
            await store.release_lease(lease, token)
            return TurnStart(final=final)
        earlier = await store.inbox_put(bot_id, message_id, payload, received)
    except BaseException:
        await _release_quietly(store, lease, token)
        raise
    return TurnStart(token=token, earlier=earlier)


async def _release_quietly(store: Any, lease: str, token: int) -> None:
    try:
        await store.release_lease(lease, token)
    except StoreError:  # the lease expires on its own
        pass


async def fair_read_many(store: Any, reads: Sequence[tuple[HistoryKey, FairQuery]]) -> list[list[Record]]:
    """Several fair reads; one round trip when the store can."""
    fast = getattr(store, "fair_read_many", None)
    if fast is not None:
        return await fast(reads)
    return list(await asyncio.gather(*(store.fair_read(key, query) for key, query in reads)))


async def finish_turn(store: Any, lease: str, token: int, ttl: float, bot_id: str, message_id: str,
                      reply: str, expires: float, writes: Sequence[HistoryWrite], *, max_per_user: int,
                      history_ttl: float) -> bool:
    """Record a produced reply; False (and nothing written but the reply on the inbox entry) when
    the lease was lost. On True the lease is released."""
    fast = getattr(store, "finish_turn", None)
    if fast is not None:
        return await fast(lease, token, ttl, bot_id, message_id, reply, expires, writes,
                          max_per_user=max_per_user, history_ttl=history_ttl)
    return await finish_turn_stepwise(store, lease, token, ttl, bot_id, message_id, reply, expires, writes,
                                      max_per_user=max_per_user, history_ttl=history_ttl)


async def finish_turn_stepwise(store: Any, lease: str, token: int, ttl: float, bot_id: str, message_id: str,
                               reply: str, expires: float, writes: Sequence[HistoryWrite], *, max_per_user: int,
                               history_ttl: float) -> bool:
    await store.inbox_answer(bot_id, message_id, reply)
    if not await store.renew_lease(lease, token, ttl):
        return False
    for write in writes:
        if len(write.records) == 1:
            await store.append(write.key, write.records[0], max_per_user=max_per_user, ttl=history_ttl)
        else:
            await store.append_many(write.key, write.records, max_per_user=max_per_user, ttl=history_ttl)
    await store.inbox_complete(bot_id, message_id, reply, expires)
    await _release_quietly(store, lease, token)
    return True

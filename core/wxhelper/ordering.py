"""One source at a time: messages of one source are handled in arrival order, one by one.

Within a process an ``asyncio.Lock`` per source queues them (asyncio locks are
FIFO, so arrival order holds); across processes sharing a store, a short lease
with a fencing token does. The holder renews its lease while it works (an LLM
answer can take long) and writes only while it is still the holder (the host's
finish step checks the token in the same call as its writes; :meth:`SourceGate.check`
does it apart); a process that dies holding a lease blocks its source only until
the lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Optional

from .storage.base import Leases, StoreError
from .storage.turns import TurnStart

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """Another process took this source's lease (ours expired): do not write; the inbox keeps the message."""


@dataclass
class Turn:
    """A held turn: the lease name and fencing token, and whether renewal still succeeds.

    With a ``begin`` step (see :meth:`SourceGate.turn`), ``final`` is the reply of a message
    completed before (no lease is then held) and ``earlier`` the reply a crashed run attached
    to its inbox entry. ``released`` is set by whoever gave the lease up already.
    """

    name: str
    token: Optional[int]
    lost: bool = False
    final: Optional[str] = None
    earlier: Optional[str] = None
    start: Optional[TurnStart] = None
    released: bool = False
    _timer: Optional[asyncio.TimerHandle] = field(default=None, repr=False, compare=False)
    _renewal: Optional[asyncio.Task] = field(default=None, repr=False, compare=False)


Begin = Callable[[str, float], Awaitable[TurnStart]]


class SourceGate:
    def __init__(self, leases: Leases, ttl: float, wait: float) -> None:
        self.leases = leases
        self.ttl = ttl
        self.wait = wait
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @staticmethod
    def lease_name(bot_id: str, source_id: str) -> str:
        return "source:" + json.dumps([bot_id, source_id], ensure_ascii=False)

    @contextlib.asynccontextmanager
    async def turn(self, bot_id: str, source_id: str, begin: Optional[Begin] = None) -> AsyncIterator[Turn]:
        """Hold the source's turn. ``begin(lease_name, ttl)``, when given, takes the lease together
        with the message's first store step (:func:`wxhelper.storage.turns.begin_turn`)."""
        name = self.lease_name(bot_id, source_id)
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with lock:
                start = await self._acquire(name, begin)
                turn = Turn(name, start.token, final=start.final, earlier=start.earlier, start=start)
                if turn.token is None:  # the message was completed before: no lease was kept
                    yield turn
                    return
                self._schedule_renewal(turn)
                try:
                    yield turn
                finally:
                    await self._stop_renewal(turn)
                    if not turn.released:
                        with contextlib.suppress(StoreError):
                            await self.leases.release_lease(name, turn.token)
        finally:
            self._users[name] -= 1
            if self._users[name] == 0:
                del self._users[name]
                self._locks.pop(name, None)

    async def _acquire(self, name: str, begin: Optional[Begin]) -> TurnStart:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        delay = 0.002
        while True:
            if begin is not None:
                start = await begin(name, self.ttl)
            else:
                start = TurnStart(token=await self.leases.acquire_lease(name, self.ttl))
            if not start.busy:
                return start
            if loop.time() > deadline:
                raise StoreError(f"source is busy: lease {name} not free after {self.wait:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # Renewal: a timer per turn, and a task only when it fires (most turns end long before ttl / 3).
    def _schedule_renewal(self, turn: Turn) -> None:
        turn._timer = asyncio.get_running_loop().call_later(self.ttl / 3, self._start_renewal, turn)

    def _start_renewal(self, turn: Turn) -> None:
        turn._timer = None
        turn._renewal = asyncio.get_running_loop().create_task(self._renew(turn))

    async def _stop_renewal(self, turn: Turn) -> None:
        if turn._timer is not None:
            turn._timer.cancel()
            turn._timer = None
        task, turn._renewal = turn._renewal, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renew(self, turn: Turn) -> None:
        try:
            if not await self.leases.renew_lease(turn.name, turn.token, self.ttl):  # type: ignore[arg-type]
                turn.lost = True
                log.error("lease %s lost while handling a message", turn.name)
                return
        except StoreError:
            log.warning("could not renew lease %s", turn.name)
        turn._renewal = None
        self._schedule_renewal(turn)

    async def check(self, turn: Turn) -> None:
        """Right before writing: raise :class:`LeaseLost` unless this turn still holds its lease."""
        if turn.lost or not await self.leases.renew_lease(turn.name, turn.token, self.ttl):  # type: ignore[arg-type]
            turn.lost = True
            raise LeaseLost(turn.name)

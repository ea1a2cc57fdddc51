"""One source at a time: messages of one source are handled in arrival order, one by one.

Within a process an ``asyncio.Lock`` per source queues them (asyncio locks are
FIFO, so arrival order holds); across processes sharing a store, a short lease
with a fencing token does. The holder renews its lease while it works (an LLM
answer can take long) and checks it is still the holder right before writing;
a process that dies holding a lease blocks its source only until the lease
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Optional

from .storage.base import Leases, StoreError

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """Another process took this source's lease (ours expired): do not write; the inbox keeps the message."""


@dataclass
class Turn:
    """A held turn: the lease name and fencing token, and whether renewal still succeeds."""

    name: str
    token: Optional[int]
    lost: bool = False


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
    async def turn(self, bot_id: str, source_id: str) -> AsyncIterator[Turn]:
        name = self.lease_name(bot_id, source_id)
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with lock:
                token = await self._acquire(name)
                turn = Turn(name, token)
                renewer = asyncio.create_task(self._renew(turn))
                try:
                    yield turn
                finally:
                    renewer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewer
                    with contextlib.suppress(StoreError):
                        await self.leases.release_lease(name, token)
        finally:
            self._users[name] -= 1
            if self._users[name] == 0:
                del self._users[name]
                self._locks.pop(name, None)

    async def _acquire(self, name: str) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        delay = 0.002
        while True:
            token = await self.leases.acquire_lease(name, self.ttl)
            if token is not None:
                return token
            if loop.time() > deadline:
                raise StoreError(f"source is busy: lease {name} not free after {self.wait:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _renew(self, turn: Turn) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.leases.renew_lease(turn.name, turn.token, self.ttl):  # type: ignore[arg-type]
                    turn.lost = True
                    log.error("lease %s lost while handling a message", turn.name)
                    return
            except StoreError:
                log.warning("could not renew lease %s", turn.name)

    async def check(self, turn: Turn) -> None:
        """Right before writing: raise :class:`LeaseLost` unless this turn still holds its lease."""
        if turn.lost or not await self.leases.renew_lease(turn.name, turn.token, self.ttl):  # type: ignore[arg-type]
            turn.lost = True
            raise LeaseLost(turn.name)

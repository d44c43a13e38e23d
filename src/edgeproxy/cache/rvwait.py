"""Waiting until a store reaches a resourceVersion (read-your-writes, too-new RVs).

A list or watch that names an RV the store has not reached yet waits briefly
for it (k8s-api-semantics.md sec. 2.1: up to 3 s, then 504); stores call
`notify` whenever their RV moves.
"""

from __future__ import annotations

import asyncio


class RVWaiters:
    def __init__(self) -> None:
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self, current: int, rv: int, wait_seconds: float | None) -> bool:
        """True once `notify` reports `rv` reached (at once if `current` is), False on timeout.

        `wait_seconds` None waits as long as it takes.
        """
        if current >= rv:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((rv, fut))
        try:
            await asyncio.wait_for(fut, wait_seconds)
        except TimeoutError:
            return False
        return True

    def notify(self, rv: int) -> None:
        if not self._waiters:
            return
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if target <= rv:
                fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still

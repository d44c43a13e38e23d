"""Fault injection for tests and the demo, without root.

A cloud link can fail in three ways the proxy must tell apart: it can be
black-holed (connections are accepted or packets vanish, nothing ever
answers), refused (nothing listens: ECONNREFUSED/RST at once), or slow. The
simulator reproduces each at the application level: black-holed requests and
watch streams stall until the fault is lifted; refusing closes the listening
sockets and resets open connections; latency delays every request. Admin
paths (`/_sim/…`) are never faulted, so a test can always lift a fault.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FaultState:
    blackhole: bool = False
    refuse: bool = False
    latency: float = 0.0


class Faults:
    """Current fault state plus the hooks that enact `refuse` on the listeners."""

    def __init__(self) -> None:
        self.state = FaultState()
        self._open = asyncio.Event()
        self._open.set()
        # Set by the server: close/reopen the faultable listeners.
        self.on_refuse: Callable[[bool], Awaitable[None]] | None = None
        self._heal: asyncio.TimerHandle | None = None

    @property
    def blackholed(self) -> bool:
        return self.state.blackhole

    async def gate(self) -> None:
        """Await this before answering: stalls while black-holed, adds latency."""
        if self.state.blackhole:
            await self._open.wait()
        if self.state.latency > 0:
            await asyncio.sleep(self.state.latency)

    async def wait_open(self) -> None:
        """Watch writers await this before each frame so black-holed streams stall."""
        if self.state.blackhole:
            await self._open.wait()

    async def apply(
        self,
        *,
        blackhole: bool | None = None,
        refuse: bool | None = None,
        latency: float | None = None,
        heal_after: float | None = None,
    ) -> FaultState:
        """Change the fault state; `heal_after` seconds later everything is cleared."""
        if blackhole is not None:
            self.state.blackhole = blackhole
            if blackhole:
                self._open.clear()
            else:
                self._open.set()
        if latency is not None:
            if latency < 0:
                raise ValueError("latency must be >= 0")
            self.state.latency = latency
        if refuse is not None and refuse != self.state.refuse:
            self.state.refuse = refuse
            if self.on_refuse is not None:
                await self.on_refuse(refuse)
        if self._heal is not None:
            self._heal.cancel()
            self._heal = None
        if heal_after is not None and heal_after > 0:
            loop = asyncio.get_running_loop()
            self._heal = loop.call_later(heal_after, self._schedule_heal)
        log.warning("fault state now %s", asdict(self.state))
        return self.state

    def _schedule_heal(self) -> None:
        self._heal = None
        task = asyncio.get_running_loop().create_task(self.clear(), name="sim-fault-heal")
        self._heal_task = task  # keep a reference until it finishes

    async def clear(self) -> FaultState:
        return await self.apply(blackhole=False, refuse=False, latency=0.0)

    def snapshot(self) -> dict[str, object]:
        return asdict(self.state)

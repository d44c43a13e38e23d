"""A watcher's writer is woken by fan-out (cache/broadcast.py `Wake`): no wake-up is lost."""

from __future__ import annotations

import asyncio

from edgeproxy.cache.broadcast import Wake


async def test_a_set_before_the_wait_is_not_lost_and_a_clear_one_blocks_until_set() -> None:
    wake = Wake()
    wake.set()
    await asyncio.wait_for(wake.wait(), 1)  # set before: returns at once
    wake.clear()
    waiting = asyncio.create_task(wake.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    wake.set()
    wake.set()  # a second set while set is a no-op
    await asyncio.wait_for(waiting, 1)
    assert wake.is_set()


async def test_a_cancelled_wait_leaves_the_next_one_working() -> None:
    wake = Wake()
    waiting = asyncio.create_task(wake.wait())
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    again = asyncio.create_task(wake.wait())
    await asyncio.sleep(0.01)
    wake.set()
    await asyncio.wait_for(again, 1)

"""Watchers that never read are disconnected by bytes, and the burst stalls no one.

Real processes on loopback (`SimProcess`, `ProxyProcess`). Watches that stop
reading used to be bounded by frames only (10,000): 500 of them during a
burst of 10 KB ConfigMaps held 1.5 MB each and none was cut off, and the
proxy stalled for seconds for every client while it copied the burst into
their connections. Checked here (cache/broadcast.py, cache/streaming.py):
raw sockets that never read are disconnected once they hold more than their
own bound, or, when each is within it, once all together hold more than the
shared budget; a correct client (one that re-watches from its last RV when
its stream ends) gets every event in order; and a client making plain
requests during the burst keeps getting quick answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.testing import ProxyProcess, SimProcess

STUCK = 40
CREATED = 300  # ConfigMaps of 10 KB: a 3 MB burst
PAD = "x" * 10_000
# An answer slower than this is a stall (the old code: 2.7 s with 500 watchers).
STALL = 1.0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


def metric(proxy: ProxyProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(proxy.admin("/metrics")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no metric {name} {labels}")


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def stuck_watches(port: int, path: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` raw watch requests whose sockets are never read."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(
                f"GET {path}?watch=1 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n".encode()
            )
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


class Rewatcher:
    """A correct client: watches from the last RV it saw, again whenever its stream ends."""

    def __init__(self, http: aiohttp.ClientSession, url: str, rv: str) -> None:
        self.http = http
        self.url = url
        self.rv = rv
        self.events: list[dict[str, Any]] = []
        self.streams = 0
        self.watching = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="rewatcher")

    async def _run(self) -> None:
        while True:
            params = {"watch": "1", "resourceVersion": self.rv, "allowWatchBookmarks": "true"}
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.http.get(
                    self.url, params=params, timeout=aiohttp.ClientTimeout(total=None)
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    self.streams += 1
                    self.watching.set()
                    async for line in resp.content:
                        event = json.loads(line)
                        assert event["type"] != "ERROR", event
                        self.rv = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.events.append(event)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        # Each stuck watcher passes its own bound long before the burst ends.
        (("--max-watcher-queue-bytes=1Mi", "--max-watcher-queues-total-bytes=64Mi"), "slow"),
        # Each is within its own bound; together they pass the shared budget.
        (("--max-watcher-queue-bytes=64Mi", "--max-watcher-queues-total-bytes=2Mi"), "over-budget"),
    ],
    ids=["per-watcher", "total"],
)
async def test_watchers_that_never_read_are_disconnected_and_nobody_stalls(
    sim: SimProcess,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    flags: tuple[str, ...],
    reason: str,
) -> None:
    ns = f"stuck-{reason}-{time.monotonic_ns() % 10**9}"
    async with http.post(f"{sim.url}/api/v1/namespaces", json={"metadata": {"name": ns}}) as resp:
        assert resp.status == 201
    path = f"/api/v1/namespaces/{ns}/configmaps"
    with ProxyProcess(sim.kubeconfig, *flags, workdir=tmp_path / "proxy") as proxy:
        assert proxy.proc is not None
        async with http.get(proxy.url + path) as resp:
            rv = (await resp.json())["metadata"]["resourceVersion"]
        healthy = Rewatcher(http, proxy.url + path, rv)
        await asyncio.wait_for(healthy.watching.wait(), 10)
        with stuck_watches(proxy.port, path, STUCK):
            await eventually(
                lambda: metric(proxy, "edgeproxy_watchers") == STUCK + 1, 10, "all watches open"
            )
            rss_before = rss_mb(proxy.proc.pid)
            latencies: list[float] = []
            done = asyncio.Event()

            async def probe() -> None:  # another client, during the burst
                while not done.is_set():
                    started = time.monotonic()
                    async with http.get(proxy.url + "/api/v1/namespaces/default") as resp:
                        await resp.read()
                        assert resp.status == 200
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.02)

            prober = asyncio.create_task(probe(), name="prober")
            writes = asyncio.Semaphore(16)

            async def create(i: int) -> None:
                body = {"metadata": {"name": f"cm-{i:03d}"}, "data": {"pad": PAD}}
                async with writes, http.post(sim.url + path, json=body) as resp:
                    assert resp.status == 201, await resp.text()

            try:
                await asyncio.gather(*(create(i) for i in range(CREATED)))
                # Every stuck watch is cut off; the correct client is still served.
                await eventually(
                    lambda: metric(proxy, "edgeproxy_watchers") <= 1, 20, "stuck watches cut off"
                )
                await eventually(
                    lambda: len(healthy.events) >= CREATED, 20, "every event at the client"
                )
                await asyncio.sleep(0.5)
            finally:
                done.set()
                await prober
                await healthy.stop()
            rss_after = rss_mb(proxy.proc.pid)

        # Each event once, in RV order (writes run concurrently: not in name order).
        names = [e["object"]["metadata"]["name"] for e in healthy.events]
        assert sorted(names) == [f"cm-{i:03d}" for i in range(CREATED)], "lost or repeated"
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in healthy.events]
        assert rvs == sorted(set(rvs)), "not in RV order"
        assert metric(proxy, "edgeproxy_watchers_disconnected_total", reason=reason) > 0
        assert (
            sum(
                metric(proxy, "edgeproxy_watchers_disconnected_total", reason=r)
                for r in ("slow", "over-budget")
            )
            >= STUCK
        )
        queues = proxy.admin("/debug/cache")["budgets"]["watchQueues"]
        assert queues["usedBytes"] <= queues["budgetBytes"], queues
        assert latencies, "the other client got no answer at all"
        assert max(latencies) < STALL, f"answers took up to {max(latencies):.2f}s"
        # What stuck watchers may hold is bounded: a few batches each, not the burst.
        assert rss_after - rss_before < 100, (rss_before, rss_after)
        print(
            f"{reason}: slowest answer {max(latencies) * 1000:.0f} ms of {len(latencies)}, "
            f"RSS {rss_before:.0f} -> {rss_after:.0f} MB, correct client streams {healthy.streams}"
        )

"""After a crash the proxy never serves a state older than one it already served.

client-go relists with `resourceVersionMatch=NotOlderThan&resourceVersion=X`,
X being the last RV its informer saw. If the proxy had sent X before X was in
its journal, a kill -9 and an offline restart would answer that list with an
older state, and the informer would go back in time (recent objects look
deleted). Real processes: the simulator, `edge-proxy serve`, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def make_namespace(http: aiohttp.ClientSession, sim: SimProcess, prefix: str) -> str:
    name = f"{prefix}-{time.monotonic_ns() % 10**9}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    async with http.post(f"{sim.url}/api/v1/namespaces", json=body) as r:
        assert r.status == 201, await r.text()
    return name


class Writer:
    """Patches ConfigMaps directly on the simulator as fast as it answers, ~10 at a time."""

    def __init__(self, http: aiohttp.ClientSession, base: str, names: list[str]) -> None:
        self.http, self.base, self.names = http, base, names
        self.task: asyncio.Task[None] | None = None

    async def _patch(self, name: str, n: int) -> None:
        async with self.http.patch(
            f"{self.base}/{name}",
            json={"data": {"v": str(n)}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as r:
            assert r.status == 200, await r.text()

    async def _run(self) -> None:
        n = 0
        while True:
            await asyncio.gather(
                *(self._patch(self.names[(n + i) % len(self.names)], n + i) for i in range(10))
            )
            n += 10
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="writer")

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await self.task


async def watch_until_killed(
    http: aiohttp.ClientSession, url: str, proxy: ProxyProcess, traffic_seconds: float
) -> int:
    """Watch through the proxy; kill -9 it right after an event arrives; the last RV seen."""
    seen = 0
    started = time.monotonic()
    async with http.get(url + "?watch=1&allowWatchBookmarks=true", timeout=NO_TIMEOUT) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if not line.strip():
                continue
            event: dict[str, Any] = json.loads(line)
            seen = max(seen, int(event["object"]["metadata"]["resourceVersion"]))
            if event["type"] == "MODIFIED" and time.monotonic() - started > traffic_seconds:
                proxy.kill()  # now: what the client just got may not be committed yet
                return seen
    raise AssertionError("the watch ended before the kill")


async def test_kill9_then_offline_relist_is_never_older_than_what_was_served(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    ns = await make_namespace(http, sim, "monotonic")
    base = f"{sim.url}/api/v1/namespaces/{ns}/configmaps"
    names = [f"cm-{i}" for i in range(20)]
    for name in names:
        async with http.post(base, json={"metadata": {"name": name}, "data": {"v": "0"}}) as r:
            assert r.status == 201
    proxy = ProxyProcess(sim.kubeconfig, workdir=tmp_path / "proxy")
    url = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps"
    answers: list[tuple[int, int, str]] = []  # (served before the crash, answered after, how)
    try:
        for attempt in range(8):
            writer = Writer(http, base, names)
            writer.start()
            try:
                served = await watch_until_killed(http, url, proxy, 0.4 + 0.1 * attempt)
            finally:
                await writer.stop()
            sim.fault(blackhole=True)
            try:
                await asyncio.to_thread(proxy.start)
                # What client-go sends when it relists after its watch broke.
                relist = f"{url}?resourceVersionMatch=NotOlderThan&resourceVersion={served}"
                async with http.get(relist) as r:
                    body = await r.read()
                    status = r.status
                get = f"{url}/{names[0]}?resourceVersion={served}"
                async with http.get(get) as r:
                    get_body = await r.read()
                    get_status = r.status
            finally:
                sim.heal()
            assert status == 200, body[:500]  # everything served was durable: it is all there
            listed = int(json.loads(body)["metadata"]["resourceVersion"])
            answers.append((served, listed, "list"))
            assert get_status == 200, get_body[:500]
            # Back online: the proxy catches up before the next round.
            await asyncio.sleep(0.3)
        older = [(s, a) for s, a, _ in answers if a < s]
        assert not older, f"after a crash, lists older than what was served: {older} of {answers}"
    finally:
        sim.heal()
        proxy.close()


async def test_offline_not_older_than_beyond_the_cache_is_504_at_once(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Offline the cache can never catch up with a newer RV: 504 now, not older data."""
    ns = await make_namespace(http, sim, "toonew")
    base = f"{sim.url}/api/v1/namespaces/{ns}/configmaps"
    async with http.post(base, json={"metadata": {"name": "a"}}) as r:
        assert r.status == 201
    with ProxyProcess(sim.kubeconfig, workdir=tmp_path / "proxy") as proxy:
        url = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps"
        for _ in range(2):  # the second list starts a reflector: the scope is cached
            async with http.get(url) as r:
                assert r.status == 200
                rv = int(json.loads(await r.read())["metadata"]["resourceVersion"])
        sim.fault(blackhole=True)
        try:
            deadline = time.monotonic() + 15
            while all(s["healthy"] for s in proxy.admin("/debug/cache")["upstream"]):
                assert time.monotonic() < deadline, "the link never went down"
                await asyncio.sleep(0.05)
            for path in (
                f"{url}?resourceVersionMatch=NotOlderThan&resourceVersion={rv + 1000}",
                f"{url}?resourceVersion={rv + 1000}",  # a list with RV: NotOlderThan too
                f"{url}/a?resourceVersion={rv + 1000}",  # a get with RV: not older than it
            ):
                started = time.monotonic()
                async with http.get(path) as r:
                    doc = json.loads(await r.read())
                    assert r.status == 504, (path, doc)
                assert time.monotonic() - started < 2, "offline it can never catch up: say so"
                assert doc["reason"] == "Timeout", doc
                assert "Too large resource version" in doc["message"], doc
            # What the cache does hold is still served.
            async with http.get(
                f"{url}?resourceVersionMatch=NotOlderThan&resourceVersion={rv}"
            ) as r:
                assert r.status == 200
                assert int(json.loads(await r.read())["metadata"]["resourceVersion"]) >= rv
        finally:
            sim.heal()

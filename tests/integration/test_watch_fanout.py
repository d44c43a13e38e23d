"""Watch fan-out under a burst: every watcher, every event, in order (cache/broadcast.py).

Real processes on loopback (`SimProcess`, `ProxyProcess`). Watchers of one
scope share each event's frame and are woken once per commit, not once per
event; checked here with watchers of two label selectors and of two forms
(JSON, and PartialObjectMetadata, whose frames are rewritten per watcher)
while a burst of patches reaches the simulator faster than the proxy's
journal commits. The bytes a watch sent are added to
`edgeproxy_client_sent_bytes_total` every few seconds and when it ends, not
per write: once the clients have gone, that sum must be exactly what they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.testing import ProxyProcess, SimProcess

OBJECTS = 20
PATCHES = 300
PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


@pytest.fixture(scope="module")
def proxy(sim: SimProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(sim.kubeconfig, workdir=tmp_path_factory.mktemp("fanout-proxy"))
    yield proc
    proc.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session


def sent_from_cache(proxy: ProxyProcess) -> float:
    for family in text_string_to_metric_families(proxy.admin("/metrics")):
        for sample in family.samples:
            if sample.name == "edgeproxy_client_sent_bytes_total" and (
                sample.labels.get("served_from") == "cache"
            ):
                return float(sample.value)
    return 0.0


async def send(
    http: aiohttp.ClientSession, method: str, url: str, body: Any, content_type: str
) -> dict[str, Any]:
    async with http.request(
        method, url, data=json.dumps(body), headers={"Content-Type": content_type}
    ) as resp:
        assert resp.status < 300, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


class Stream:
    """One client watch, read until cancelled: its events and the bytes it read."""

    def __init__(self, selector: str, accept: str) -> None:
        self.selector = selector
        self.accept = accept
        self.got: list[tuple[str, int, str]] = []
        self.read = 0

    async def run(self, http: aiohttp.ClientSession, url: str) -> None:
        url += f"&labelSelector={self.selector}"
        async with http.get(url, headers={"Accept": self.accept}) as resp:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                self.read += len(line)
                event = json.loads(line)
                meta = event["object"]["metadata"]
                self.got.append((event["type"], int(meta["resourceVersion"]), meta["name"]))


async def eventually(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_every_watcher_gets_every_event_of_a_burst_in_order(
    sim: SimProcess, proxy: ProxyProcess, http: aiohttp.ClientSession, make_namespace: Any
) -> None:
    ns = make_namespace(sim)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(OBJECTS):
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"c{i}", "labels": {"app": "a" if i % 2 else "b"}},
            "data": {"seq": "0"},
        }
        await send(http, "POST", sim.url + path, body, "application/json")
    async with http.get(proxy.url + path) as resp:  # the proxy's scope, synced
        start_rv = (await resp.json())["metadata"]["resourceVersion"]
    before = sent_from_cache(proxy)

    query = f"?watch=true&resourceVersion={start_rv}"
    kinds = [("", "application/json")] * 12 + [("app%3Da", "application/json")] * 6
    kinds += [("", PARTIAL)] * 2 + [("app%3Da", PARTIAL)] * 2
    streams = [Stream(selector, accept) for selector, accept in kinds]
    readers = [asyncio.create_task(s.run(http, proxy.url + path + query)) for s in streams]
    await eventually(
        lambda: (
            sum(int(s["watchers"]) for s in proxy.admin("/debug/cache")["scopes"]) >= len(streams)
        ),
        10,
        "the watches registered",
    )

    sem = asyncio.Semaphore(16)
    written: list[tuple[int, str]] = []

    async def patch(n: int) -> None:
        name = f"c{n % OBJECTS}"
        async with sem:
            obj = await send(
                http,
                "PATCH",
                f"{sim.url}{path}/{name}",
                {"data": {"seq": str(n + 1)}},  # each a change
                "application/merge-patch+json",
            )
        written.append((int(obj["metadata"]["resourceVersion"]), name))

    await asyncio.gather(*(patch(n) for n in range(PATCHES)))
    everything = sorted(written)
    selected = [(rv, name) for rv, name in everything if int(name[1:]) % 2]

    def expected(stream: Stream) -> list[tuple[int, str]]:
        return selected if stream.selector else everything

    await eventually(
        lambda: all(len(s.got) >= len(expected(s)) for s in streams), 30, "every event"
    )
    for reader in readers:  # the clients go away; the proxy notices within seconds
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    for stream in streams:
        assert [(rv, name) for _, rv, name in stream.got] == expected(stream), stream.accept
        assert {t for t, _, _ in stream.got} == {"MODIFIED"}
    # What each watch sent is counted once its stream ended.
    read = sum(s.read for s in streams)
    await eventually(lambda: sent_from_cache(proxy) - before == read, 20, "the bytes counted")

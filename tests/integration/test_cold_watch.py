"""A watch from an upstream RV on a scope the proxy has never seen misses nothing.

A client may list straight from the cloud (or through another proxy) and then
watch through this one from that RV. The new scope is seeded with an Exact list
at the client's RV, so the changes made between that RV and the watch arrive
as events instead of a 410 that would force the client to relist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

COLLECTION = "/api/v1/namespaces/default/configmaps"


@pytest.fixture()
def servers() -> Iterator[tuple[SimProcess, ProxyProcess]]:
    with SimProcess() as sim, ProxyProcess(sim.kubeconfig) as proxy:
        yield sim, proxy


async def test_watch_from_an_upstream_rv_on_a_cold_scope(
    servers: tuple[SimProcess, ProxyProcess],
) -> None:
    sim, proxy = servers
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.url + COLLECTION) as resp:
            rv = (await resp.json())["metadata"]["resourceVersion"]
        for name in ("after-1", "after-2"):
            async with session.post(sim.url + COLLECTION, json={"metadata": {"name": name}}) as r:
                assert r.status == 201
        query = f"?watch=1&resourceVersion={rv}&timeoutSeconds=5"
        got: list[tuple[str, str]] = []
        async with session.get(proxy.url + COLLECTION + query) as resp:
            assert resp.status == 200
            async for line in resp.content:
                event = json.loads(line)
                got.append((event["type"], event["object"]["metadata"].get("name", "")))
                if len(got) == 2 or event["type"] == "ERROR":
                    break
    assert got == [("ADDED", "after-1"), ("ADDED", "after-2")]

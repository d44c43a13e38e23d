"""`kubectl get` through the proxy: the AGE column is as of each request.

kube-apiserver renders a Table's relative times when it answers. The proxy
memoizes list bodies per store version; a memoized Table kept the ages of
the moment it was first rendered, so `kubectl get` showed a frozen AGE for
as long as nothing changed — online (answered from the cache) and offline.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimProcess, ProxyProcess]]:
    with SimProcess() as sim, ProxyProcess(sim.kubeconfig) as proxy:
        yield sim, proxy


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def cloud(sim: SimProcess, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        sim.control_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def ages(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """name -> AGE cell of a Table list."""
    async with http.get(url, headers={"Accept": TABLE}) as resp:
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
    assert doc["kind"] == "Table", doc
    names = [c["name"] for c in doc["columnDefinitions"]]
    at = names.index("Age")
    return {row["object"]["metadata"]["name"]: row["cells"][at] for row in doc["rows"]}


def readyz(proxy: ProxyProcess) -> str:
    try:
        return str(proxy.admin("/readyz?verbose"))
    except urllib.error.HTTPError as err:
        with err:
            return str(err.read().decode())


async def link(proxy: ProxyProcess, *, up: bool) -> None:
    want = "upstream reachable" if up else "upstream unreachable"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if want in await asyncio.to_thread(readyz, proxy):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"proxy never reported {want!r}")


async def aged(http: aiohttp.ClientSession, url: str, name: str, older_than: str) -> str:
    """Poll until the AGE of `name` differs from `older_than`; the new cell."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cell = (await ages(http, url))[name]
        if cell != older_than:
            return cell
        await asyncio.sleep(0.5)
    pytest.fail(f"AGE of {name} stayed {older_than!r} for 15 s")


async def test_age_is_rendered_per_request_online_and_offline(
    servers: tuple[SimProcess, ProxyProcess], http: aiohttp.ClientSession
) -> None:
    sim, proxy = servers
    ns = f"age-{uuid.uuid4().hex[:8]}"
    cloud(sim, "/api/v1/namespaces", {"metadata": {"name": ns}})
    cloud(sim, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "cm1"}})
    col = f"/api/v1/namespaces/{ns}/configmaps"
    url = f"{proxy.url}{col}?resourceVersion=0"
    for _ in range(3):  # the proxy holds this list and keeps it in sync
        async with http.get(url) as resp:
            assert resp.status == 200
    first = (await ages(http, url))["cm1"]
    # Nothing changes in the store, yet the age moves on, as upstream's does.
    second = await aged(http, url, "cm1", first)
    assert first.endswith("s") and second.endswith("s"), (first, second)
    assert int(second[:-1]) > int(first[:-1])
    upstream = (await ages(http, sim.url + col))["cm1"]
    assert abs(int(upstream[:-1]) - int(second[:-1])) <= 2, (upstream, second)

    sim.fault(blackhole=True)
    try:
        await link(proxy, up=False)
        third = (await ages(http, url))["cm1"]
        fourth = await aged(http, url, "cm1", third)
        assert int(fourth[:-1]) > int(third[:-1]) >= int(second[:-1])
    finally:
        sim.heal()
    await link(proxy, up=True)

"""`sendInitialEvents=false` with resourceVersion unset: changes from now on, no initial state.

KEP-3157 / the ListOptions API docs: sendInitialEvents defaults to true only
when it is absent and the RV is "" or "0"; an explicit false starts a watch
at the current state without synthetic ADDED events. Checked on the
simulator and through the proxy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

NS = "default"
COLLECTION = f"/api/v1/namespaces/{NS}/configmaps"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimProcess, ProxyProcess]]:
    with SimProcess() as sim, ProxyProcess(sim.kubeconfig) as proxy:
        yield sim, proxy


async def _events(
    session: aiohttp.ClientSession,
    url: str,
    query: str,
    after: asyncio.Event,
    sim_url: str,
    name: str,
) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    async with session.get(url + COLLECTION + "?" + query) as resp:
        assert resp.status == 200
        # Stream is open: make one change, then read until it arrives.
        after.set()
        body = {"metadata": {"name": name}, "data": {"a": "1"}}
        async with session.post(sim_url + COLLECTION, json=body) as created:
            assert created.status == 201
        async for line in resp.content:
            event = json.loads(line)
            got.append((event["type"], event["object"]["metadata"].get("name", "")))
            if got[-1] == ("ADDED", name):
                break
    return got


@pytest.mark.parametrize("target", ["sim", "proxy"])
async def test_explicit_false_sends_no_initial_events(
    servers: tuple[SimProcess, ProxyProcess], target: str
) -> None:
    sim, proxy = servers
    url = sim.url if target == "sim" else proxy.url
    async with aiohttp.ClientSession() as session:
        async with session.post(
            sim.url + COLLECTION, json={"metadata": {"name": f"old-{target}"}}
        ) as r:
            assert r.status == 201
        # The legacy form (parameter absent) does send the current state first.
        async with session.get(url + COLLECTION + "?watch=1&timeoutSeconds=1") as resp:
            names = [json.loads(line)["object"]["metadata"]["name"] async for line in resp.content]
        assert f"old-{target}" in names
        query = "watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&timeoutSeconds=5"
        got = await asyncio.wait_for(
            _events(session, url, query, asyncio.Event(), sim.url, f"new-{target}"), 10
        )
    assert got == [("ADDED", f"new-{target}")]

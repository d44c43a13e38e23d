"""Fault control and robustness of the simulator, over real sockets.

The proxy's offline behaviour is tested against these faults, so they must
behave like the network failures they stand for: a black hole accepts the
TCP connection and then says nothing, a refusal resets and refuses, latency
delays. The simulator itself must survive slow and numerous clients.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from edgeproxy.testing import SimProcess


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess("--bookmark-interval=1") as proc:
        yield proc


@pytest.fixture(autouse=True)
def healed(sim: SimProcess) -> Iterator[None]:
    sim.heal()
    yield
    sim.heal()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield session


@pytest.fixture
async def ns(http: aiohttp.ClientSession, sim: SimProcess) -> str:
    name = "f-" + uuid.uuid4().hex[:10]
    async with http.post(
        sim.url + "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    ) as resp:
        assert resp.status == 201
    return name


def cm_url(sim: SimProcess, ns: str, name: str = "") -> str:
    base = f"{sim.url}/api/v1/namespaces/{ns}/configmaps"
    return f"{base}/{name}" if name else base


async def create_cm(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str, name: str, payload: str = ""
) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"p": payload},
    }
    async with http.post(cm_url(sim, ns), json=body) as resp:
        assert resp.status == 201, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc


async def current_rv(http: aiohttp.ClientSession, sim: SimProcess, ns: str) -> int:
    async with http.get(cm_url(sim, ns)) as resp:
        assert resp.status == 200
        return int((await resp.json())["metadata"]["resourceVersion"])


async def next_event(resp: aiohttp.ClientResponse, within: float = 3.0) -> dict[str, Any]:
    line = await asyncio.wait_for(resp.content.readline(), within)
    assert line, "watch stream ended"
    event: dict[str, Any] = json.loads(line)
    return event


async def open_watch(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    resp = await http.get(url, timeout=aiohttp.ClientTimeout(total=60))
    assert resp.status == 200
    return resp


def watchers(sim: SimProcess, resource: str = "configmaps") -> int:
    return int(sim.control("GET", "stats")["resources"][resource]["watchers"])


# -- black hole ---------------------------------------------------------------------


async def test_blackhole_accepts_connections_but_never_answers(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    sim.fault(blackhole=True)
    # The TCP handshake still succeeds ...
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    # ... but nothing comes back.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.5)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(cm_url(sim, ns), timeout=aiohttp.ClientTimeout(total=0.5)):
            pass
    # A request started during the fault is answered only after healing.
    pending = asyncio.ensure_future(http.get(sim.url + "/healthz"))
    await asyncio.sleep(0.5)
    assert not pending.done()
    sim.heal()
    resp = await asyncio.wait_for(pending, 3)
    async with resp:
        assert resp.status == 200
    line = await asyncio.wait_for(reader.readline(), 3)
    assert line.startswith(b"HTTP/1.1 200")
    writer.close()


async def black_hole_with_writes(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str, names: list[str], delay: float
) -> asyncio.Future[list[dict[str, Any]]]:
    """Start writes that pass the gate before the black hole, then black-hole the link.

    Every request to the API port stalls while black-holed, so the writes are
    sent with `delay` of latency first: they are past the black-hole check and
    commit during the fault, like changes made by other clients of a cluster
    this node cannot reach.
    """
    sim.fault(latency=delay)
    writes = asyncio.gather(*(create_cm(http, sim, ns, n) for n in names))
    await asyncio.sleep(0.1)
    sim.fault(blackhole=True)
    return writes


async def test_blackholed_watch_stalls_then_delivers_queued_events(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    rv = await current_rv(http, sim, ns)
    resp = await open_watch(http, f"{cm_url(sim, ns)}?watch=true&resourceVersion={rv}")
    async with resp:
        writes = await black_hole_with_writes(http, sim, ns, ["a", "b"], delay=0.3)
        created = await asyncio.wait_for(writes, 3)  # committed during the fault
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 0.7)
        sim.heal()
        events = [await next_event(resp), await next_event(resp)]
    assert sorted(e["object"]["metadata"]["name"] for e in events) == ["a", "b"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert set(rvs) == {int(c["metadata"]["resourceVersion"]) for c in created}


async def test_bookmark_never_overtakes_events_queued_during_a_blackhole(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    rv = await current_rv(http, sim, ns)
    resp = await open_watch(
        http, f"{cm_url(sim, ns)}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"
    )
    async with resp:
        first = await next_event(resp)
        assert first["type"] == "BOOKMARK"
        # The next bookmark falls due (about 1 s) while black-holed, before the
        # write commits (1.5 s): the bookmark must wait for the queued event.
        writes = await black_hole_with_writes(http, sim, ns, ["late"], delay=1.5)
        [created] = await asyncio.wait_for(writes, 4)
        await asyncio.sleep(0.3)
        sim.heal()
        events = [await next_event(resp) for _ in range(2)]
    created_rv = int(created["metadata"]["resourceVersion"])
    kinds = [(e["type"], int(e["object"]["metadata"]["resourceVersion"])) for e in events]
    assert ("ADDED", created_rv) in kinds
    for i, (kind, event_rv) in enumerate(kinds):
        if kind == "BOOKMARK":
            assert all(later > event_rv for _, later in kinds[i + 1 :]), kinds


# -- refuse ------------------------------------------------------------------------


async def test_refuse_resets_watches_and_refuses_then_recovers(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    await create_cm(http, sim, ns, "a")
    resp = await open_watch(http, f"{cm_url(sim, ns)}?watch=true")
    async with resp:
        assert (await next_event(resp))["type"] == "ADDED"
        sim.fault(refuse=True)
        # The open watch is cut: EOF or a payload error, but never a hang.
        try:
            rest = await asyncio.wait_for(resp.content.read(), 3)
            assert rest == b""
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionError):
            pass
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", sim.port)
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.get(cm_url(sim, ns), timeout=aiohttp.ClientTimeout(total=3)):
            pass
    sim.heal()
    async with http.get(cm_url(sim, ns)) as again:
        assert again.status == 200
        assert [i["metadata"]["name"] for i in (await again.json())["items"]] == ["a"]


# -- latency, heal_after, admin API ------------------------------------------------------


async def test_latency_delays_every_request(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    sim.fault(latency=0.5)
    for _ in range(2):
        started = time.monotonic()
        async with http.get(cm_url(sim, ns)) as resp:
            assert resp.status == 200
        assert time.monotonic() - started >= 0.5
    sim.heal()
    started = time.monotonic()
    async with http.get(cm_url(sim, ns)) as resp:
        assert resp.status == 200
    assert time.monotonic() - started < 0.4


async def test_heal_after_lifts_the_fault(http: aiohttp.ClientSession, sim: SimProcess) -> None:
    state = sim.fault(blackhole=True, heal_after=0.5)
    assert state["blackhole"] is True
    started = time.monotonic()
    async with http.get(sim.url + "/healthz") as resp:
        assert resp.status == 200
    assert 0.3 <= time.monotonic() - started < 3
    assert sim.control("GET", "faults") == {"blackhole": False, "refuse": False, "latency": 0.0}
    sim.fault(refuse=True, heal_after=1.0)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", sim.port)
    await asyncio.sleep(1.5)
    async with http.get(sim.url + "/healthz") as resp:
        assert resp.status == 200


def test_admin_api_rejects_bad_fault_specs(sim: SimProcess) -> None:
    for spec in ({"blackhole": True, "bogus": 1}, {"latency": -1}):
        with pytest.raises(urllib.error.HTTPError) as info:
            sim.fault(**spec)
        assert info.value.code == 400
        with info.value:
            body = json.loads(info.value.read())
        assert body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert sim.control("GET", "faults") == {"blackhole": False, "refuse": False, "latency": 0.0}
    with pytest.raises(urllib.error.HTTPError) as info:
        sim.control("POST", "nope")
    with info.value:
        assert info.value.code == 404


# -- close_watches, compact ----------------------------------------------------------------


async def test_close_watches_ends_streams_cleanly(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    rv = await current_rv(http, sim, ns)
    url = f"{cm_url(sim, ns)}?watch=true&resourceVersion={rv}"
    streams = [await open_watch(http, url) for _ in range(2)]
    await create_cm(http, sim, ns, "a")
    for resp in streams:
        assert (await next_event(resp))["type"] == "ADDED"
    closed = sim.close_watches()
    assert closed["closed"] >= 2
    for resp in streams:
        async with resp:
            # A clean end of the chunked stream: no payload error, no final event.
            assert await asyncio.wait_for(resp.content.read(), 3) == b""
    # New watches work as before.
    resp = await open_watch(http, url)
    async with resp:
        assert (await next_event(resp))["object"]["metadata"]["name"] == "a"


async def test_compact_makes_old_rvs_expire(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    created = await create_cm(http, sim, ns, "a")
    old = created["metadata"]["resourceVersion"]
    await create_cm(http, sim, ns, "b")
    sim.compact()
    async with http.get(f"{cm_url(sim, ns)}?resourceVersion={old}&resourceVersionMatch=Exact") as r:
        assert r.status == 410
        assert (await r.json())["reason"] == "Expired"
    async with http.get(f"{cm_url(sim, ns)}?watch=true&resourceVersion={old}") as r:
        assert r.status == 200
        [line] = (await asyncio.wait_for(r.content.read(), 3)).splitlines()
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    # The current state is still served.
    async with http.get(cm_url(sim, ns)) as r:
        assert [i["metadata"]["name"] for i in (await r.json())["items"]] == ["a", "b"]


# -- robustness ------------------------------------------------------------------------------


async def test_a_watcher_that_never_reads_does_not_stall_the_server(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    baseline = watchers(sim)
    rv = await current_rv(http, sim, ns)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(
        f"GET /api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\n"
        "Host: x\r\n\r\n".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    assert watchers(sim) == baseline + 1
    # ~12 MB of events the client never reads: more than the socket buffers hold.
    payload = "x" * 40_000
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            await create_cm(http, sim, ns, f"big-{i}", payload)

    await asyncio.gather(*(one(i) for i in range(300)))
    # The server keeps answering everyone else promptly.
    for _ in range(3):
        started = time.monotonic()
        async with http.get(sim.url + "/healthz") as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 1.0
    async with http.get(f"{cm_url(sim, ns)}?limit=1") as resp:
        assert resp.status == 200
    # Once the stuck client goes away its watcher is released.
    writer.close()
    for _ in range(100):
        if watchers(sim) == baseline:
            break
        await asyncio.sleep(0.1)
    assert watchers(sim) == baseline
    del reader


async def test_fan_out_to_1000_watchers(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    rv = await current_rv(http, sim, ns)
    url = f"{cm_url(sim, ns)}?watch=true&resourceVersion={rv}"
    sem = asyncio.Semaphore(200)

    async def connect() -> aiohttp.ClientResponse:
        async with sem:
            return await open_watch(http, url)

    streams = await asyncio.gather(*(connect() for _ in range(1000)))
    try:
        assert watchers(sim) >= 1000
        started = time.monotonic()
        created = await create_cm(http, sim, ns, "fan")
        events = await asyncio.gather(*(next_event(r, within=10) for r in streams))
        elapsed = time.monotonic() - started
    finally:
        for r in streams:
            r.close()
    assert elapsed < 5, elapsed
    assert {(e["type"], e["object"]["metadata"]["uid"]) for e in events} == {
        ("ADDED", created["metadata"]["uid"])
    }


async def test_200_concurrent_lists_all_succeed(
    http: aiohttp.ClientSession, sim: SimProcess, ns: str
) -> None:
    for i in range(20):
        await create_cm(http, sim, ns, f"o{i}")

    async def one() -> int:
        async with http.get(cm_url(sim, ns)) as resp:
            doc = await resp.json()
            assert resp.status == 200
            return len(doc["items"])

    counts = await asyncio.gather(*(one() for _ in range(200)))
    assert counts == [20] * 200

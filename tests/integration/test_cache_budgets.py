"""The cache stays within its memory and disk budgets, whatever clients ask.

Real processes on loopback (`SimProcess`, `ProxyProcess`). Clients decide
what is cached: every distinct list selector was a scope of its own, every
distinct non-resource query an entry, kept forever in memory and on disk.
Checked here (cache/budget.py, cache/rawcache.py): with small budgets, lists
of ever new selectors leave what the proxy holds under both budgets, scopes
evicted from memory still answer offline (loaded back from the journal), a
watched scope is never evicted, a list a synced broader scope covers makes
no scope of its own, and non-resource answers are keyed by path and capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.testing import ProxyProcess, SimProcess

MakeNamespace = Callable[[SimProcess], str]

MEMORY_BUDGET = 1024 * 1024  # --max-memory-cache-bytes=1Mi
DISK_BUDGET = 4 * 1024 * 1024  # --max-cache-bytes=4Mi
OBJECTS = 150  # ConfigMaps of ~1 KB: a scope holding all of them is ~200 KB on disk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
def small_proxy(sim: SimProcess, tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(
        sim.kubeconfig,
        "--max-memory-cache-bytes=1Mi",
        "--max-cache-bytes=4Mi",
        workdir=tmp_path / "proxy",
    )
    try:
        yield proc
    finally:
        sim.heal()
        proc.close()


@pytest.fixture
def proxy(sim: SimProcess, tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(sim.kubeconfig, workdir=tmp_path / "proxy")
    try:
        yield proc
    finally:
        sim.heal()
        proc.close()


def cloud(sim: SimProcess, method: str, path: str, body: Any = None) -> Any:
    """A request to the simulator's control listener, which a link cut never touches."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        sim.control_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def seed(sim: SimProcess, ns: str, count: int) -> None:
    for i in range(count):
        body = {
            "metadata": {"name": f"cm-{i:03d}", "labels": {"app": "a" if i % 2 else "b"}},
            "data": {"pad": "x" * 900},
        }
        cloud(sim, "POST", f"/api/v1/namespaces/{ns}/configmaps", body)


async def get(
    http: aiohttp.ClientSession, url: str, **params: str
) -> tuple[int, dict[str, Any] | str]:
    async with http.get(url, params=params, headers={"Accept": "application/json"}) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def budgets(proxy: ProxyProcess) -> dict[str, Any]:
    return dict(proxy.admin("/debug/cache")["budgets"])


def scopes_of(proxy: ProxyProcess, ns: str) -> list[dict[str, Any]]:
    return [s for s in proxy.admin("/debug/cache")["scopes"] if f"|ns={ns}|" in s["scope"]]


def selector_of(scope: dict[str, Any]) -> str:
    return str(scope["scope"].split("|l=", 1)[1].split("|f=", 1)[0])


def metric(proxy: ProxyProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(proxy.admin("/metrics")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no metric {name} {labels}")


def upstream_down(proxy: ProxyProcess) -> bool:
    return not any(s["healthy"] for s in proxy.admin("/debug/cache")["upstream"])


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


@contextlib.asynccontextmanager
async def offline(sim: SimProcess, proxy: ProxyProcess) -> AsyncIterator[None]:
    sim.fault(blackhole=True)
    try:
        await eventually(lambda: upstream_down(proxy), 10, "the proxy to see the link down")
        yield
    finally:
        sim.heal()


# -- 1. lists of ever new selectors ------------------------------------------------------


async def test_distinct_selector_lists_stay_within_budgets_and_answer_offline(
    sim: SimProcess,
    small_proxy: ProxyProcess,
    http: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
) -> None:
    proxy = small_proxy
    ns = make_namespace(sim)
    seed(sim, ns, OBJECTS)
    url = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps"

    # A watched scope is never evicted, however long unused and over budget.
    watch = await http.get(
        url,
        params={"watch": "1", "labelSelector": "app=a"},
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )
    assert watch.status == 200
    try:
        # Each selector matches every object: each list is a whole copy, ~200 KB.
        listed: dict[str, str] = {}
        for i in range(40):
            selector = f"x!=v{i}"
            status, doc = await get(http, url, labelSelector=selector)
            assert status == 200 and isinstance(doc, dict), doc
            assert len(doc["items"]) == OBJECTS
            listed[selector] = doc["metadata"]["resourceVersion"]

        # Within both budgets once the last lists are committed to the journal
        # (until then they are not published: store.py) and the janitor's next
        # check (every second) has run.
        def settled() -> bool:
            usage = budgets(proxy)
            return bool(
                usage["memory"]["usedBytes"] <= MEMORY_BUDGET
                and usage["disk"]["usedBytes"] <= DISK_BUDGET
                and usage["disk"]["evictions"] > 0
            )

        await eventually(settled, 10, "the cache within its budgets")
        usage = budgets(proxy)
        assert usage["memory"]["budgetBytes"] == MEMORY_BUDGET
        assert usage["disk"]["budgetBytes"] == DISK_BUDGET
        assert 0 < usage["memory"]["usedBytes"] <= MEMORY_BUDGET, usage
        assert usage["memory"]["evictions"] > 0 and usage["disk"]["evictions"] > 0, usage
        assert usage["disk"]["usedBytes"] <= DISK_BUDGET, usage
        scopes = scopes_of(proxy, ns)
        resident = [s for s in scopes if s["resident"]]
        on_disk = [s for s in scopes if not s["resident"]]
        assert sum(s["memoryBytes"] for s in resident) <= MEMORY_BUDGET
        assert len(resident) <= 6, [s["scope"] for s in resident]  # ~200 KB each in 1 MiB
        assert len(scopes) < 40, "the disk budget dropped the oldest scopes"
        assert on_disk, "scopes evicted from memory stay on disk"

        def journal_within_budget() -> bool:
            journal = proxy.admin("/debug/cache")["journal"]
            return bool(journal["used_bytes"] <= DISK_BUDGET)

        await eventually(journal_within_budget, 10, "the journal's file within its budget")
        assert metric(proxy, "edgeproxy_cache_budget_bytes", tier="memory") == MEMORY_BUDGET
        assert metric(proxy, "edgeproxy_cache_used_bytes", tier="memory") <= MEMORY_BUDGET
        assert metric(proxy, "edgeproxy_cache_evictions_total", tier="disk") > 0
        log = proxy.log()
        assert "from memory (" in log and "kept on disk" in log, "each eviction is logged"

        # The watched scope stayed in memory and its watch still works.
        watched = [s for s in scopes if s["scope"].endswith("|l=app=a|f=")]
        assert watched and watched[0]["resident"] and watched[0]["watchers"] == 1, watched
        cloud(
            sim,
            "POST",
            f"/api/v1/namespaces/{ns}/configmaps",
            {"metadata": {"name": "late", "labels": {"app": "a"}}, "data": {}},
        )

        async def next_added() -> str:
            async for line in watch.content:
                event = json.loads(line)
                if event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "late":
                    return str(event["object"]["metadata"]["name"])
            raise AssertionError("the watch ended")

        assert await asyncio.wait_for(next_added(), 10) == "late"
    finally:
        watch.close()

    # Offline, a scope only on disk answers as it did online: loaded back.
    evicted = selector_of(on_disk[0])
    loads_before = budgets(proxy)["memory"]["loadsFromDisk"]
    async with offline(sim, proxy):
        status, doc = await get(http, url, labelSelector=evicted)
        assert status == 200, doc
        assert isinstance(doc, dict)
        assert len(doc["items"]) == OBJECTS
        assert doc["metadata"]["resourceVersion"] == listed[evicted]
        assert budgets(proxy)["memory"]["loadsFromDisk"] == loads_before + 1
        # A scope the disk budget dropped is gone: offline, it is not invented.
        dropped = sorted(set(listed) - {selector_of(s) for s in scopes})
        assert dropped, "some scopes were dropped from disk"
        status, doc = await get(http, url, labelSelector=dropped[0])
        assert status == 503, doc
    usage = budgets(proxy)
    assert usage["memory"]["usedBytes"] <= MEMORY_BUDGET, usage


# -- 2. a list a synced broader scope covers -----------------------------------------------


async def test_a_list_covered_by_a_synced_broader_scope_makes_no_scope(
    sim: SimProcess, proxy: ProxyProcess, http: aiohttp.ClientSession, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(sim)
    seed(sim, ns, 20)
    url = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps"
    # A watch of everything in the namespace: one scope, kept current by its reflector.
    watch = await http.get(
        url, params={"watch": "1"}, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
    )
    assert watch.status == 200
    try:
        await eventually(
            lambda: any(s["synced"] and s["watchers"] for s in scopes_of(proxy, ns)),
            10,
            "the namespace's scope synced",
        )
        for selector in ("app=a", "app=b", "app in (a,b)", "app=a,x!=y"):
            status, doc = await get(http, url, labelSelector=selector)  # forwarded (RV="")
            assert status == 200 and isinstance(doc, dict), doc
        assert [s["scope"] for s in scopes_of(proxy, ns)] == [f"v1/configmaps|ns={ns}|l=|f="], (
            "the narrower lists made scopes of their own"
        )
        async with offline(sim, proxy):
            status, doc = await get(http, url, labelSelector="app=a")
            assert status == 200 and isinstance(doc, dict), doc
            names = sorted(o["metadata"]["name"] for o in doc["items"])
            assert names == [f"cm-{i:03d}" for i in range(20) if i % 2]
    finally:
        watch.close()


# -- 3. non-resource answers -------------------------------------------------------------


async def test_discovery_cached_with_a_query_answers_without_it_offline(
    sim: SimProcess, proxy: ProxyProcess, http: aiohttp.ClientSession
) -> None:
    """client-go asks `/api/v1?timeout=32s`; offline, `/api/v1` must be answered too."""
    status, online = await get(http, f"{proxy.url}/api/v1", timeout="32s")
    assert status == 200 and isinstance(online, dict), online
    async with offline(sim, proxy):
        status, doc = await get(http, f"{proxy.url}/api/v1")
        assert status == 200, doc
        assert doc == online
        status, doc = await get(http, f"{proxy.url}/api/v1", timeout="5s")
        assert status == 200 and doc == online


async def test_nonresource_answers_are_keyed_by_path_and_capped(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Non-resource answers may take a quarter of the memory budget: 64 KiB here.
    with ProxyProcess(
        sim.kubeconfig, "--max-memory-cache-bytes=256Ki", workdir=tmp_path / "proxy"
    ) as proxy:
        for i in range(200):
            status, _ = await get(http, f"{proxy.url}/version", n=str(i))
            assert status == 200
        usage = budgets(proxy)["nonResource"]
        assert usage["entries"] == 1, usage  # one path, one Accept: one entry
        # Every discovery and openapi document the simulator serves, under two queries.
        status, groups = await get(http, f"{proxy.url}/apis")
        assert status == 200 and isinstance(groups, dict)
        status, index = await get(http, f"{proxy.url}/openapi/v3")
        assert status == 200 and isinstance(index, dict)
        paths = ["/api", "/api/v1", "/apis", "/openapi/v3", "/livez", "/readyz", "/healthz"]
        paths += [f"/apis/{g['name']}" for g in groups["groups"]]
        paths += [f"/apis/{v['groupVersion']}" for g in groups["groups"] for v in g["versions"]]
        paths += [f"/openapi/v3/{key}" for key in index["paths"]]
        assert len(paths) > 10
        for path in paths:
            for timeout in ("32s", "1s"):
                status, _ = await get(http, proxy.url + path, timeout=timeout)
                assert status == 200, path
        usage = budgets(proxy)["nonResource"]
        assert usage["maxBytes"] == 64 * 1024
        assert usage["entries"] <= len(paths) + 1
        assert usage["bytes"] <= usage["maxBytes"], usage
        assert usage["evictions"] > 0, "the openapi documents exceed the cap"

        # The disk holds no more, once the journal committed the last drops (its
        # group commit runs every 50 ms: its counts may lag the memory's by one).
        def disk_within_memory() -> bool:
            return bool(proxy.admin("/debug/cache")["journal"]["scopes"] <= usage["entries"] + 1)

        await eventually(disk_within_memory, 5, f"journal {proxy.admin('/debug/cache')['journal']}")
        assert metric(proxy, "edgeproxy_cache_nonresource_entries") == usage["entries"]

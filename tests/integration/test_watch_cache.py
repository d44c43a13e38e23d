"""The watch cache: one upstream watch per scope, shared; local selectors; cached lists.

Real processes on loopback: the cloud (conftest's `cloud`: the simulator,
then a real kube-apiserver) and the proxy (`ProxyProcess`) in front of it
through a relay, with raw aiohttp clients. What is
checked is ARCHITECTURE.md sec. 2-3 and k8s-api-semantics.md sec. 3 and 9:
many clients of one scope cost one upstream watch; a narrower selector is
served from a broader scope with the sec. 3.6 transition rules; the proxy's
event streams are identical to the upstream's for random workloads;
watch-list (sec. 3.8) ends its initial events with the annotated bookmark;
RV=0 / NotOlderThan lists (and RV="" in cache-first mode) come from the
cache without costing the cloud a list, and read-your-writes holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Cloud
from edgeproxy.testing import ProxyProcess, SimProcess

MakeNamespace = Callable[[Any], str]
Event = dict[str, Any]

NO_TIMEOUT = aiohttp.ClientTimeout(total=None)
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def proxy(cloud: Cloud, tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(cloud.kubeconfig, workdir=tmp_path / "proxy")
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def cache_first_proxy(cloud: Cloud, tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(cloud.kubeconfig, "--consistency=cache-first", workdir=tmp_path / "proxy")
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
async def session(cloud: Cloud) -> AsyncIterator[aiohttp.ClientSession]:
    # The upstream's CA and admin certificate, for the requests straight to it.
    connector = aiohttp.TCPConnector(limit=0, ssl=cloud.ssl)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as s:
        yield s


# -- helpers ---------------------------------------------------------------------------


def cm_path(ns: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    return f"{base}/{name}" if name else base


async def call(
    session: aiohttp.ClientSession, base: str, method: str, path: str, body: Any = None
) -> Any:
    """One JSON request; fails the test on any status other than 2xx."""
    async with session.request(
        method, base + path, json=body, headers={"Accept": "application/json"}
    ) as resp:
        text = await resp.text()
        assert resp.status < 300, f"{method} {path}: {resp.status} {text}"
        return json.loads(text)


async def delete(session: aiohttp.ClientSession, base: str, ns: str, name: str) -> dict[str, Any]:
    """DELETE one ConfigMap; returns the object as its DELETED event carries it.

    kube-apiserver answers an immediate delete with a Success Status, not the
    deleted object, so the deletion's RV is read from a watch on `name` from
    the RV it had just before.
    """
    before = await call(session, base, "GET", cm_path(ns, name))
    await call(session, base, "DELETE", cm_path(ns, name))
    params = {"resourceVersion": rv_of(before), "fieldSelector": f"metadata.name={name}"}
    async with watching(session, base, cm_path(ns), **params) as stream:
        assert stream.status == 200

        def deleted(events: list[Event]) -> bool:
            return any(e["type"] == "DELETED" for e in events)

        await stream.wait(deleted, 10, f"the deletion of {name}")
        return dict(next(e["object"] for e in stream.events if e["type"] == "DELETED"))


def rv_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def configmap(name: str, labels: dict[str, str], data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": data}


async def upstream_rv(session: aiohttp.ClientSession, cloud: Cloud, ns: str) -> str:
    doc = await call(session, cloud.direct_url, "GET", cm_path(ns))
    return str(doc["metadata"]["resourceVersion"])


class UpstreamWatches:
    """How many ConfigMap watches the upstream is serving.

    The simulator counts them (all namespaces: it serves only this module).
    The real apiserver is shared by the session and has watches of its own,
    so its audit log is read instead: watches of one namespace that started
    (ResponseStarted) and have not completed, from where the log was when
    this was made.
    """

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.audit: Path | None = None
        self.offset = 0
        self.open: dict[str, str] = {}  # auditID -> namespace
        if not isinstance(cloud.upstream, SimProcess):
            self.audit = Path(cloud.upstream.audit_log)
            self.offset = self.audit.stat().st_size

    def __call__(self, ns: str) -> int:
        if self.audit is None:
            stats = self.cloud.upstream.control("GET", "stats")
            return int(stats["resources"].get("configmaps", {}).get("watchers", 0))
        with self.audit.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.splitlines():
            if b'"verb":"watch"' not in line or b'"resource":"configmaps"' not in line:
                continue
            event = json.loads(line)
            if event["stage"] == "ResponseStarted":
                self.open[event["auditID"]] = event["objectRef"].get("namespace", "")
            else:
                self.open.pop(event["auditID"], None)
        return sum(1 for n in self.open.values() if n == ns)


@pytest.fixture
def upstream_watchers(cloud: Cloud) -> UpstreamWatches:
    return UpstreamWatches(cloud)


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def metric(proxy: ProxyProcess, sample_name: str, **labels: str) -> float:
    """The sum of one metric's samples whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(proxy.admin("/metrics")):
        for sample in family.samples:
            if sample.name == sample_name and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def cache_lists(proxy: ProxyProcess) -> float:
    return metric(
        proxy, "edgeproxy_requests_total", verb="list", resource="configmaps", served_from="cache"
    )


def upstream_list_bytes(proxy: ProxyProcess) -> float:
    return metric(proxy, "edgeproxy_upstream_received_bytes_total", kind="list")


def scopes(proxy: ProxyProcess, ns: str) -> list[dict[str, Any]]:
    return [s for s in proxy.admin("/debug/cache")["scopes"] if f"|ns={ns}|" in s["scope"]]


def running_reflectors(proxy: ProxyProcess) -> list[str]:
    return [s["scope"] for s in proxy.admin("/debug/cache")["scopes"] if s["reflector"]]


def summary(event: Event) -> tuple[str, str, str, Any, Any]:
    """What must agree between two streams: (type, name, RV, data, labels)."""
    meta = event["object"].get("metadata", {})
    return (
        event["type"],
        meta.get("name", ""),
        meta.get("resourceVersion", ""),
        event["object"].get("data"),
        meta.get("labels"),
    )


def changes(events: list[Event]) -> list[tuple[str, str, str, Any, Any]]:
    return [summary(e) for e in events if e["type"] != "BOOKMARK"]


class WatchStream:
    """One client watch, read in the background into `events`."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, path: str, params: dict[str, str]
    ) -> None:
        self.session = session
        self.url = base + path
        self.params = params
        self.events: list[Event] = []
        self.status = 0
        self.ended = False
        self._resp: aiohttp.ClientResponse | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> WatchStream:
        params = {"watch": "true", **self.params}
        self._resp = await self.session.get(self.url, params=params, timeout=NO_TIMEOUT)
        self.status = self._resp.status
        self._task = asyncio.create_task(self._read(), name=f"watch {self.url}")
        return self

    async def _read(self) -> None:
        assert self._resp is not None
        with contextlib.suppress(aiohttp.ClientError):
            async for line in self._resp.content:
                if line.strip():
                    self.events.append(json.loads(line))
        self.ended = True

    async def wait(self, check: Callable[[list[Event]], bool], within: float, what: str) -> None:
        await eventually(lambda: check(self.events), within, f"{what} on {self.url}")

    async def wait_rv(self, rv: str, within: float = 10.0) -> None:
        """Until an event at `rv` arrived: events come in RV order, so all before it did."""

        def reached(events: list[Event]) -> bool:
            return any(summary(e)[2] == rv for e in events)

        await self.wait(reached, within, f"an event at RV {rv}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._resp is not None:
            await close_stream(self._resp)


async def close_stream(resp: aiohttp.ClientResponse) -> None:
    """Drop a response mid-stream and return once its socket is closed.

    `resp.close()` only starts closing: over TLS the transport first trades
    close_notify with the server, and a test that ended before that left the
    socket to the garbage collector (a ResourceWarning in some later test,
    seen with the real apiserver's watches). kube-apiserver answers
    close_notify with the end of the chunked body, which OpenSSL reports as
    APPLICATION_DATA_AFTER_CLOSE_NOTIFY: closed all the same.
    """
    conn = resp.connection
    closed = conn.protocol.closed if conn is not None and conn.protocol is not None else None
    resp.close()
    if closed is not None:
        with contextlib.suppress(aiohttp.ClientConnectionError):
            await asyncio.wait_for(closed, 40)  # asyncio aborts a TLS shutdown after 30 s


@contextlib.asynccontextmanager
async def watching(
    session: aiohttp.ClientSession, base: str, path: str, **params: str
) -> AsyncIterator[WatchStream]:
    stream = await WatchStream(session, base, path, params).open()
    try:
        yield stream
    finally:
        await stream.close()


async def restore_later(cloud: Cloud, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await asyncio.to_thread(cloud.link.restore)


async def no_upstream_watchers(upstream_watchers: UpstreamWatches, ns: str) -> None:
    """Earlier tests' proxies are gone; wait until the upstream has noticed."""
    await eventually(lambda: upstream_watchers(ns) == 0, 10, "no configmap watches upstream")


# -- 1. one upstream watch for many clients ---------------------------------------------


async def test_many_clients_share_one_upstream_watch(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
    upstream_watchers: UpstreamWatches,
) -> None:
    ns = make_namespace(cloud.upstream)
    await no_upstream_watchers(upstream_watchers, ns)
    await call(session, cloud.direct_url, "POST", cm_path(ns), configmap("pre", {}, {"k": "0"}))

    streams = [WatchStream(session, proxy.url, cm_path(ns), {}) for _ in range(50)]
    await asyncio.gather(*(s.open() for s in streams))
    try:
        assert {s.status for s in streams} == {200}

        def all_watching() -> bool:
            return sum(int(s["watchers"]) for s in scopes(proxy, ns)) == 50

        await eventually(all_watching, 10, "50 client watches registered")
        await eventually(lambda: upstream_watchers(ns) == 1, 10, "the reflector's watch")
        assert len(running_reflectors(proxy)) == 1

        created = await call(
            session, cloud.direct_url, "POST", cm_path(ns), configmap("a", {}, {"k": "1"})
        )
        obj = await call(session, cloud.direct_url, "GET", cm_path(ns, "a"))
        obj["data"] = {"k": "2"}
        updated = await call(session, cloud.direct_url, "PUT", cm_path(ns, "a"), obj)
        deleted = await delete(session, cloud.direct_url, ns, "pre")
        rvs = [rv_of(created), rv_of(updated), rv_of(deleted)]
        await asyncio.gather(*(s.wait_rv(rvs[-1]) for s in streams))
        expected = changes(streams[0].events)
        assert [(t, n) for t, n, *_ in expected] == [
            ("ADDED", "pre"),
            ("ADDED", "a"),
            ("MODIFIED", "a"),
            ("DELETED", "pre"),
        ]
        assert [rv for _, _, rv, *_ in expected[1:]] == rvs
        for stream in streams[1:]:
            assert changes(stream.events) == expected
        # `delete` watched upstream for a moment: that watch ends, the reflector's stays alone.
        await eventually(lambda: upstream_watchers(ns) == 1, 10, "one upstream watch")
    finally:
        await asyncio.gather(*(s.close() for s in streams))


# -- 2. a narrower selector served from a broader scope ---------------------------------


async def put(
    session: aiohttp.ClientSession,
    base: str,
    ns: str,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Read-modify-write one ConfigMap; returns the stored object."""
    obj = await call(session, base, "GET", cm_path(ns, name))
    if labels is not None:
        obj["metadata"]["labels"] = labels
    if data is not None:
        obj["data"] = data
    return dict(await call(session, base, "PUT", cm_path(ns, name), obj))


async def test_narrow_selector_is_served_from_broad_scope(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
    upstream_watchers: UpstreamWatches,
) -> None:
    ns = make_namespace(cloud.upstream)
    await no_upstream_watchers(upstream_watchers, ns)
    api = cloud.direct_url
    async with watching(session, proxy.url, cm_path(ns)) as broad:
        assert broad.status == 200
        await eventually(lambda: upstream_watchers(ns) == 1, 10, "the broad reflector's watch")
        start = await upstream_rv(session, cloud, ns)
        async with watching(
            session, proxy.url, cm_path(ns), labelSelector="app=a", resourceVersion=start
        ) as narrow:
            assert narrow.status == 200
            assert upstream_watchers(ns) == 1, "the narrow watch opened an upstream watch"
            assert running_reflectors(proxy) == [s["scope"] for s in scopes(proxy, ns)]
            assert len(running_reflectors(proxy)) == 1

            b1 = await call(
                session, api, "POST", cm_path(ns), configmap("x", {"app": "b"}, {"v": "1"})
            )
            into = await put(session, api, ns, "x", labels={"app": "a"})
            modified = await put(session, api, ns, "x", data={"v": "2"})
            out = await put(session, api, ns, "x", labels={"app": "b"}, data={"v": "3"})
            untouched = await put(session, api, ns, "x", data={"v": "4"})
            gone = await delete(session, api, ns, "x")
            direct = await call(
                session, api, "POST", cm_path(ns), configmap("y", {"app": "a"}, {"v": "y"})
            )
            deleted = await delete(session, api, ns, "y")
            await narrow.wait_rv(rv_of(deleted))
            await broad.wait_rv(rv_of(deleted))

            got = changes(narrow.events)
            assert got == [
                ("ADDED", "x", rv_of(into), {"v": "1"}, {"app": "a"}),
                ("MODIFIED", "x", rv_of(modified), {"v": "2"}, {"app": "a"}),
                # Moved out: the previous content, stamped with the change's RV.
                ("DELETED", "x", rv_of(out), {"v": "2"}, {"app": "a"}),
                ("ADDED", "y", rv_of(direct), {"v": "y"}, {"app": "a"}),
                ("DELETED", "y", rv_of(deleted), {"v": "y"}, {"app": "a"}),
            ]
            assert [e[2] for e in changes(broad.events)] == [
                rv_of(o) for o in (b1, into, modified, out, untouched, gone, direct, deleted)
            ]
            for event in narrow.events:
                assert event["object"]["kind"] == "ConfigMap"
                assert event["object"]["apiVersion"] == "v1"
            await eventually(lambda: upstream_watchers(ns) == 1, 10, "one upstream watch")


# -- 3. the proxy's streams equal the cloud's --------------------------------------------

Labels = dict[str, str]
Selector = tuple[dict[str, str], Callable[[str, Labels], bool]]

SELECTORS: dict[str, Selector] = {
    "all": ({}, lambda name, labels: True),
    "app=a": ({"labelSelector": "app=a"}, lambda name, labels: labels.get("app") == "a"),
    "app in (a,b)": (
        {"labelSelector": "app in (a,b)"},
        lambda name, labels: labels.get("app") in ("a", "b"),
    ),
    "app!=a": ({"labelSelector": "app!=a"}, lambda name, labels: labels.get("app") != "a"),
    "!app": ({"labelSelector": "!app"}, lambda name, labels: "app" not in labels),
    "name=cm-3": ({"fieldSelector": "metadata.name=cm-3"}, lambda name, labels: name == "cm-3"),
}
LABEL_CHOICES: list[Labels] = [{}, {"app": "a"}, {"app": "b"}, {"app": "c"}, {"app": "a", "t": "x"}]


class Workload:
    """Random creates/updates/relabels/deletes on a few ConfigMaps, applied upstream.

    Keeps the labels of each object so the test knows the last RV every
    selector must see an event at (old or new state matching).
    """

    def __init__(self, session: aiohttp.ClientSession, cloud: Cloud, ns: str, seed: int) -> None:
        self.session = session
        self.cloud = cloud
        self.ns = ns
        self.rng = random.Random(seed)
        self.labels: dict[str, Labels] = {}
        self.last_rv: dict[str, str] = {}

    def _saw(self, name: str, old: Labels | None, new: Labels | None, rv: str) -> None:
        for key, (_, pred) in SELECTORS.items():
            if (old is not None and pred(name, old)) or (new is not None and pred(name, new)):
                self.last_rv[key] = rv

    async def step(self) -> None:
        rng = self.rng
        name = f"cm-{rng.randrange(15)}"
        base = self.cloud.direct_url
        old = self.labels.get(name)
        if old is None:
            labels = dict(rng.choice(LABEL_CHOICES))
            body = configmap(name, labels, {"v": str(rng.randrange(1000))})
            obj = await call(self.session, base, "POST", cm_path(self.ns), body)
            self.labels[name] = labels
            self._saw(name, None, labels, rv_of(obj))
            return
        op = rng.choice(["data", "data", "relabel", "relabel", "delete"])
        if op == "delete":
            obj = await delete(self.session, base, self.ns, name)
            del self.labels[name]
            self._saw(name, old, None, rv_of(obj))
        elif op == "data":
            obj = await put(self.session, base, self.ns, name, data={"v": str(rng.randrange(1000))})
            self._saw(name, old, old, rv_of(obj))
        else:
            labels = dict(rng.choice(LABEL_CHOICES))
            obj = await put(self.session, base, self.ns, name, labels=labels)
            self.labels[name] = labels
            self._saw(name, old, labels, rv_of(obj))


@pytest.mark.parametrize(
    ("seed", "broad_first"),
    [(11, False), (22, True), (33, True)],
    ids=["own-scopes", "broad-1", "broad-2"],
)
async def test_streams_equal_upstream_for_random_workloads(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
    seed: int,
    broad_first: bool,
) -> None:
    ns = make_namespace(cloud.upstream)
    # Some objects exist before the watches start: only later changes are streamed.
    workload = Workload(session, cloud, ns, seed)
    for _ in range(10):
        await workload.step()
    async with contextlib.AsyncExitStack() as stack:
        if broad_first:
            holder = await stack.enter_async_context(watching(session, proxy.url, cm_path(ns)))
            assert holder.status == 200
        start = await upstream_rv(session, cloud, ns)
        pairs: dict[str, tuple[WatchStream, WatchStream]] = {}
        # "all" last: otherwise it would become the broad scope of the others.
        for key in sorted(SELECTORS, key=lambda k: k == "all"):
            params = {**SELECTORS[key][0], "resourceVersion": start, "allowWatchBookmarks": "true"}
            upstream = await stack.enter_async_context(
                watching(session, cloud.direct_url, cm_path(ns), **params)
            )
            local = await stack.enter_async_context(
                watching(session, proxy.url, cm_path(ns), **params)
            )
            assert (upstream.status, local.status) == (200, 200), key
            pairs[key] = (upstream, local)
        reflectors = [s for s in running_reflectors(proxy) if f"|ns={ns}|" in s]
        assert len(reflectors) == (1 if broad_first else len(SELECTORS))

        workload.last_rv.clear()
        for _ in range(60):
            await workload.step()
        assert set(workload.last_rv) == set(SELECTORS), "the workload misses a selector"
        for key, (upstream, local) in pairs.items():
            await upstream.wait_rv(workload.last_rv[key])
            await local.wait_rv(workload.last_rv[key])
        await asyncio.sleep(0.2)  # anything extra would arrive now
        for key, (upstream, local) in pairs.items():
            expected = changes(upstream.events)
            assert expected, key
            assert all(int(e[2]) > int(start) for e in expected), key
            assert changes(local.events) == expected, f"selector {key}"
            assert not [e for e in local.events if e["type"] == "ERROR"], key


# -- 4. watch-list (sendInitialEvents) ---------------------------------------------------

WATCH_LIST = {
    "sendInitialEvents": "true",
    "resourceVersionMatch": "NotOlderThan",
    "allowWatchBookmarks": "true",
}


def initial_end(events: list[Event]) -> int | None:
    """Index of the initial-events-end bookmark, if it arrived."""
    for i, event in enumerate(events):
        annotations = event["object"].get("metadata", {}).get("annotations") or {}
        if event["type"] == "BOOKMARK" and annotations.get(INITIAL_EVENTS_END) == "true":
            return i
    return None


async def test_watch_list_sends_initial_events_then_bookmark(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
) -> None:
    ns = make_namespace(cloud.upstream)
    existing = {}
    for i in range(6):
        labels = {"app": "a"} if i % 2 else {"app": "b"}
        obj = await call(
            session,
            cloud.direct_url,
            "POST",
            cm_path(ns),
            configmap(f"w-{i}", labels, {"i": str(i)}),
        )
        existing[f"w-{i}"] = obj
    # Both when the watch-list starts the scope, and when it is served from a running one.
    cases = (("app=a", {"w-1", "w-3", "w-5"}), ("", set(existing) | {"live-0"}))
    for n, (selector, want) in enumerate(cases):
        async with watching(
            session, proxy.url, cm_path(ns), labelSelector=selector, **WATCH_LIST
        ) as stream:
            assert stream.status == 200
            await stream.wait(lambda ev: initial_end(ev) is not None, 10, "the end bookmark")
            end = initial_end(stream.events)
            assert end is not None
            added, mark = stream.events[:end], stream.events[end]
            assert [e["type"] for e in added] == ["ADDED"] * len(want)
            assert {e["object"]["metadata"]["name"] for e in added} == want
            for e in added:
                name = e["object"]["metadata"]["name"]
                assert e["object"]["metadata"]["resourceVersion"] == rv_of(existing[name])
                assert e["object"]["kind"] == "ConfigMap"
            mark_rv = int(mark["object"]["metadata"]["resourceVersion"])
            assert all(mark_rv >= int(rv_of(e["object"])) for e in added)
            assert mark["object"]["kind"] == "ConfigMap"

            live = await call(
                session,
                cloud.direct_url,
                "POST",
                cm_path(ns),
                configmap(f"live-{n}", {"app": "a"}, {}),
            )
            existing[live["metadata"]["name"]] = live
            await stream.wait_rv(rv_of(live))
            after = [e for e in stream.events[end + 1 :] if e["type"] != "BOOKMARK"]
            assert [(e["type"], rv_of(e["object"])) for e in after] == [("ADDED", rv_of(live))]
            assert int(rv_of(live)) > mark_rv

    # A write through the proxy is in the initial events of the next watch-list.
    for i in range(5):
        obj = await call(session, proxy.url, "POST", cm_path(ns), configmap(f"ryw-{i}", {}, {}))
        async with watching(session, proxy.url, cm_path(ns), **WATCH_LIST) as stream:
            await stream.wait(lambda ev: initial_end(ev) is not None, 10, "the end bookmark")
            end = initial_end(stream.events)
            assert end is not None
            names = {e["object"]["metadata"]["name"] for e in stream.events[:end]}
            assert f"ryw-{i}" in names
            assert int(stream.events[end]["object"]["metadata"]["resourceVersion"]) >= int(
                rv_of(obj)
            )


@pytest.mark.parametrize(
    "params",
    [
        {"sendInitialEvents": "true", "allowWatchBookmarks": "true"},
        {"sendInitialEvents": "true", "resourceVersionMatch": "Exact", "resourceVersion": "1"},
        {"resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true"},
    ],
    ids=["no-match", "exact", "match-without-sie"],
)
async def test_watch_list_without_not_older_than_is_invalid(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
    params: dict[str, str],
) -> None:
    ns = make_namespace(cloud.upstream)
    for base in (cloud.direct_url, proxy.url):  # the proxy answers as the apiserver does
        query = {"watch": "true", **params}
        async with session.get(base + cm_path(ns), params=query) as resp:
            assert resp.status == 422, (base, await resp.text())
            doc = await resp.json()
        assert doc["kind"] == "Status"
        assert doc["reason"] == "Invalid"
        assert doc["code"] == 422
        assert doc["details"]["causes"], doc


# -- 5. cache-first: RV="" lists from the cache, read-your-writes ------------------------


def names_rvs(doc: dict[str, Any]) -> dict[str, str]:
    return {o["metadata"]["name"]: rv_of(o) for o in doc["items"]}


async def test_cache_first_lists_come_from_the_cache_and_read_your_writes(
    cloud: Cloud,
    cache_first_proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
    upstream_watchers: UpstreamWatches,
) -> None:
    proxy = cache_first_proxy
    ns = make_namespace(cloud.upstream)
    for i in range(5):
        await call(
            session, cloud.direct_url, "POST", cm_path(ns), configmap(f"c-{i}", {"app": "a"}, {})
        )
    async with watching(session, proxy.url, cm_path(ns)) as stream:
        assert stream.status == 200
        await stream.wait(lambda ev: len(ev) >= 5, 10, "the initial ADDED events")
        lists_before, bytes_before = cache_lists(proxy), upstream_list_bytes(proxy)

        for selector in ("", "app=a", "app!=a"):
            got = await call(session, proxy.url, "GET", cm_path(ns) + f"?labelSelector={selector}")
            want = await call(
                session, cloud.direct_url, "GET", cm_path(ns) + f"?labelSelector={selector}"
            )
            assert names_rvs(got) == names_rvs(want), selector
            # A snapshot holding every item, no newer than the cloud's: the real
            # apiserver's RV moves on with writes this scope never sees (its leases).
            newest = max((int(rv) for rv in names_rvs(want).values()), default=0)
            rv = int(got["metadata"]["resourceVersion"])
            assert newest <= rv <= int(want["metadata"]["resourceVersion"]), selector
            assert got["kind"] == "ConfigMapList"
        assert cache_lists(proxy) == lists_before + 3
        assert upstream_list_bytes(proxy) == bytes_before, "a cache-first list went upstream"

        # Read your writes: the list right after a create through the proxy has it.
        for i in range(20):
            created = await call(
                session, proxy.url, "POST", cm_path(ns), configmap(f"ryw-{i}", {}, {"i": str(i)})
            )
            listed = await call(session, proxy.url, "GET", cm_path(ns))
            assert names_rvs(listed).get(f"ryw-{i}") == rv_of(created), i
            assert int(listed["metadata"]["resourceVersion"]) >= int(rv_of(created))
            updated = await put(session, proxy.url, ns, f"ryw-{i}", data={"i": "x"})
            listed = await call(session, proxy.url, "GET", cm_path(ns))
            assert names_rvs(listed)[f"ryw-{i}"] == rv_of(updated), i
        assert cache_lists(proxy) == lists_before + 3 + 40
        assert upstream_list_bytes(proxy) == bytes_before
        assert upstream_watchers(ns) >= 1


async def test_large_cached_lists_are_whole_in_both_encodings_on_one_connection(
    cloud: Cloud,
    cache_first_proxy: ProxyProcess,
    make_namespace: MakeNamespace,
) -> None:
    """Bodies over 64 KiB are written after their headers (proxy/forward.py `send_body`)."""
    proxy = cache_first_proxy
    ns = make_namespace(cloud.upstream)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=cloud.ssl), timeout=aiohttp.ClientTimeout(total=10)
    ) as writer:
        for i in range(150):
            body = configmap(f"big-{i:03d}", {}, {"blob": f"{i:03d}" * 500})
            await call(writer, cloud.direct_url, "POST", cm_path(ns), body)
        want = await call(writer, cloud.direct_url, "GET", cm_path(ns))
        async with watching(writer, proxy.url, cm_path(ns)) as stream:
            await stream.wait(lambda ev: len(ev) >= 150, 10, "the initial ADDED events")
            lists_before = cache_lists(proxy)
            # One keep-alive connection, raw bytes: each answer must end where it says.
            one = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=one, auto_decompress=False) as client:
                for encoding in ("identity", "gzip", "identity", "gzip"):
                    headers = {"Accept": "application/json", "Accept-Encoding": encoding}
                    async with client.get(proxy.url + cm_path(ns), headers=headers) as resp:
                        raw = await resp.read()
                        assert resp.status == 200
                        assert resp.content_length == len(raw)
                        got_encoding = resp.headers.get("Content-Encoding", "identity")
                    assert got_encoding == encoding
                    plain = gzip.decompress(raw) if encoding == "gzip" else raw
                    assert len(plain) > 128 * 1024  # over the gzip and separate-write sizes
                    doc = json.loads(plain)
                    assert names_rvs(doc) == names_rvs(want)
                    assert doc["items"][7]["data"]["blob"] == "007" * 500
            assert cache_lists(proxy) == lists_before + 4


async def test_an_idle_watch_whose_client_left_is_released(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace
) -> None:
    """Nothing ever sent on it, no bookmarks: the open-watches gauge still goes back."""
    ns = make_namespace(cloud.upstream)
    async with aiohttp.ClientSession() as client:
        resp = await client.get(proxy.url + cm_path(ns) + "?watch=true&timeoutSeconds=300")
        assert resp.status == 200
        await eventually(lambda: metric(proxy, "edgeproxy_watchers") == 1, 5, "the watch")
        resp.close()  # the connection goes, no event was ever sent on it
    await eventually(lambda: metric(proxy, "edgeproxy_watchers") == 0, 9, "its release")


# -- 6. RV=0 and NotOlderThan lists from a synced reflector ------------------------------


async def test_rv0_and_not_older_than_lists_come_from_the_cache(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
) -> None:
    ns = make_namespace(cloud.upstream)
    created = [
        await call(
            session, cloud.direct_url, "POST", cm_path(ns), configmap(f"n-{i}", {"app": "a"}, {})
        )
        for i in range(8)
    ]
    async with watching(session, proxy.url, cm_path(ns)) as stream:
        assert stream.status == 200
        await stream.wait(lambda ev: len(ev) >= 8, 10, "the initial ADDED events")
        upstream = await call(session, cloud.direct_url, "GET", cm_path(ns))
        lists_before, bytes_before = cache_lists(proxy), upstream_list_bytes(proxy)

        got = await call(session, proxy.url, "GET", cm_path(ns) + "?resourceVersion=0")
        assert names_rvs(got) == names_rvs(upstream)
        assert int(got["metadata"]["resourceVersion"]) >= int(rv_of(created[-1]))
        # client-go's first list: RV=0 with a limit, which the cache ignores (sec. 9.1).
        got = await call(session, proxy.url, "GET", cm_path(ns) + "?resourceVersion=0&limit=3")
        assert names_rvs(got) == names_rvs(upstream)
        assert not got["metadata"].get("continue")

        for n in (rv_of(created[0]), rv_of(created[-1])):
            query = f"?resourceVersion={n}&resourceVersionMatch=NotOlderThan"
            got = await call(session, proxy.url, "GET", cm_path(ns) + query)
            assert names_rvs(got) == names_rvs(upstream), n
            assert int(got["metadata"]["resourceVersion"]) >= int(n)
        got = await call(
            session,
            proxy.url,
            "GET",
            cm_path(ns) + f"?resourceVersion={rv_of(created[2])}&labelSelector=app%3Da",
        )
        assert names_rvs(got) == names_rvs(upstream)
        assert cache_lists(proxy) == lists_before + 5
        assert upstream_list_bytes(proxy) == bytes_before, "a cached list went upstream"

        # NotOlderThan an RV past every change this scope sees: a write elsewhere moved
        # the cloud on (as a real apiserver's own lease renewals do every 10 s). The
        # cache cannot know it is that fresh, so this may be answered from upstream,
        # but with the same items and never older.
        elsewhere = make_namespace(cloud.upstream)
        await call(session, cloud.direct_url, "POST", cm_path(elsewhere), configmap("o", {}, {}))
        fresh = await call(session, cloud.direct_url, "GET", cm_path(ns))
        n = fresh["metadata"]["resourceVersion"]
        assert int(n) > max(int(rv_of(o)) for o in created)
        query = f"?resourceVersion={n}&resourceVersionMatch=NotOlderThan"
        started = time.monotonic()
        got = await call(session, proxy.url, "GET", cm_path(ns) + query)
        print(f"NotOlderThan past the scope's RV answered in {time.monotonic() - started:.2f}s")
        assert names_rvs(got) == names_rvs(upstream)
        assert int(got["metadata"]["resourceVersion"]) >= int(n)
        lists_before = cache_lists(proxy)

        # A change the reflector has seen is in the next cached list.
        obj = await call(session, cloud.direct_url, "POST", cm_path(ns), configmap("late", {}, {}))
        await stream.wait_rv(rv_of(obj))
        got = await call(session, proxy.url, "GET", cm_path(ns) + "?resourceVersion=0")
        assert names_rvs(got)["late"] == rv_of(obj)
        # NotOlderThan the newest RV: from the cache or upstream, never older.
        query = f"?resourceVersion={rv_of(obj)}&resourceVersionMatch=NotOlderThan"
        got = await call(session, proxy.url, "GET", cm_path(ns) + query)
        assert names_rvs(got)["late"] == rv_of(obj)
        assert int(got["metadata"]["resourceVersion"]) >= int(rv_of(obj))
        assert cache_lists(proxy) == lists_before + 2


async def test_watch_list_from_rv_newer_than_the_cache_misses_nothing(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
) -> None:
    """Initial events "not older than N" must hold every change up to N.

    The reflector's stream is stalled (black-holed briefly) so the proxy's
    cache is behind N when the watch-list arrives.
    """
    ns = make_namespace(cloud.upstream)
    async with watching(session, proxy.url, cm_path(ns)) as holder:
        assert holder.status == 200
        await eventually(lambda: bool(running_reflectors(proxy)), 10, "a reflector")
        await asyncio.sleep(0.2)
        cloud.link.blackhole()
        heal = asyncio.create_task(restore_later(cloud, 0.5))
        try:
            obj = await call(session, cloud.direct_url, "POST", cm_path(ns), configmap("n", {}, {}))
            params = {**WATCH_LIST, "resourceVersion": rv_of(obj)}
            async with watching(session, proxy.url, cm_path(ns), **params) as stream:
                assert stream.status == 200
                await stream.wait(lambda ev: initial_end(ev) is not None, 10, "the end bookmark")
                await holder.wait_rv(rv_of(obj))
                await asyncio.sleep(0.2)
                got = [summary(e)[:3] for e in stream.events]
                assert ("ADDED", "n", rv_of(obj)) in got, got
        finally:
            await heal
            cloud.link.restore()


async def test_a_write_elsewhere_does_not_stall_cached_reads(
    cloud: Cloud,
    proxy: ProxyProcess,
    session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
) -> None:
    """Read-your-writes waits only for writes the scope can see.

    A namespaced scope never receives another namespace's events, so waiting
    for such a write would stall every cached read until a bookmark (60 s)
    or the 3 s read-your-writes limit.
    """
    here, there = make_namespace(cloud.upstream), make_namespace(cloud.upstream)
    async with watching(session, proxy.url, cm_path(here)) as stream:
        assert stream.status == 200
        await eventually(lambda: bool(running_reflectors(proxy)), 10, "a reflector")
        for i in range(3):
            await call(session, proxy.url, "POST", cm_path(there), configmap(f"o-{i}", {}, {}))
            started = time.monotonic()
            await call(session, proxy.url, "GET", cm_path(here) + "?resourceVersion=0")
            async with watching(session, proxy.url, cm_path(here), resourceVersion="0") as other:
                assert other.status == 200
            assert time.monotonic() - started < 1.0, "a cached read waited for another namespace"
        before = cache_lists(proxy)
        mine = await call(session, proxy.url, "POST", cm_path(here), configmap("mine", {}, {}))
        listed = await call(session, proxy.url, "GET", cm_path(here) + "?resourceVersion=0")
        assert names_rvs(listed).get("mine") == rv_of(mine)
        assert cache_lists(proxy) == before + 1

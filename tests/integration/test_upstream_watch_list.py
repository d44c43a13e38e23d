"""Cloud bytes of the cache's upstream streams: gzipped watch-lists, and the fallback.

kube-apiserver 1.37 gzips a watch stream, one member per flush, only for a
watch-list request that accepts gzip, never a plain watch, and a list only
over 128 KiB; the simulator must do the same (first test, against both).
The proxy's reflectors sync with such watch-lists, so the initial state and
every later event cross the link compressed; against an apiserver that
refuses or ignores watch-list they list and watch as before, and say so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Cloud, api_request
from edgeproxy.kube.gzipstream import GzipMembers
from edgeproxy.kube.watchstream import WatchDecoder
from edgeproxy.testing import ProxyProcess, SimProcess

MakeNamespace = Callable[[Any], str]
NO_TIMEOUT = aiohttp.ClientTimeout(total=None)
WATCH_LIST = {
    "watch": "1",
    "sendInitialEvents": "true",
    "allowWatchBookmarks": "true",
    "resourceVersionMatch": "NotOlderThan",
    "timeoutSeconds": "20",
}


def cm_path(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps"


def create_cm(upstream: Any, ns: str, name: str, size: int = 10) -> None:
    body = {"metadata": {"name": name}, "data": {"v": "x" * size}}
    resp = api_request(upstream, "POST", cm_path(ns), body)
    assert resp.status == 201, resp.body


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


class RawWatch:
    """A watch read as it crosses the wire: its encoding, gzip members decoded here."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.encoding = resp.headers.get("Content-Encoding", "")
        self.events: list[dict[str, Any]] = []
        self.wire = 0
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        gunzip = GzipMembers() if self.encoding == "gzip" else None
        decoder = WatchDecoder()
        with contextlib.suppress(aiohttp.ClientError):
            async for chunk in self.resp.content.iter_any():
                self.wire += len(chunk)
                for piece in gunzip.feed(chunk) if gunzip else (chunk,):
                    for event in decoder.feed(piece):
                        obj = json.loads(event.object)
                        self.events.append({"type": event.type, "object": obj})

    def names(self, kind: str) -> list[str]:
        return [e["object"]["metadata"]["name"] for e in self.events if e["type"] == kind]

    def ended_initial(self) -> bool:
        return any(
            e["type"] == "BOOKMARK"
            and e["object"]["metadata"].get("annotations", {}).get("k8s.io/initial-events-end")
            for e in self.events
        )

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.resp.release()


@contextlib.asynccontextmanager
async def raw_watch(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], accept_gzip: bool = True
) -> AsyncIterator[RawWatch]:
    headers = {"Accept": "application/json"}
    headers["Accept-Encoding"] = "gzip" if accept_gzip else "identity"
    resp = await session.get(url, params=params, headers=headers, timeout=NO_TIMEOUT)
    assert resp.status == 200, await resp.text()
    watch = RawWatch(resp)
    try:
        yield watch
    finally:
        await watch.close()


@pytest.fixture
async def raw_session(cloud: Cloud) -> AsyncIterator[aiohttp.ClientSession]:
    """Straight to the upstream, bodies as they cross the wire (no decompression)."""
    connector = aiohttp.TCPConnector(limit=0, ssl=cloud.ssl)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=20)
    ) as s:
        yield s


def metric(proxy: ProxyProcess, sample_name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(proxy.admin("/metrics")):
        for sample in family.samples:
            if sample.name == sample_name and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def stream_bytes(proxy: ProxyProcess, stream: str, encoding: str) -> float:
    return metric(
        proxy, "edgeproxy_upstream_stream_received_bytes_total", stream=stream, encoding=encoding
    )


def reflector_of(proxy: ProxyProcess, ns: str) -> dict[str, Any]:
    for scope in proxy.admin("/debug/cache")["scopes"]:
        if scope["scope"].startswith(f"v1/configmaps|ns={ns}|l=|f=") and scope["reflector"]:
            return dict(scope["reflector"])
    pytest.fail(f"no configmaps reflector for {ns}")


# -- the upstream: what it compresses ----------------------------------------------------


async def test_upstream_gzips_watch_list_streams_and_large_lists_only(
    cloud: Cloud, raw_session: aiohttp.ClientSession, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(cloud.upstream)
    create_cm(cloud.upstream, ns, "a")
    url = cloud.direct_url + cm_path(ns)
    async with raw_session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
        assert "Content-Encoding" not in resp.headers, "a small list is not compressed"
        rv = json.loads(await resp.read())["metadata"]["resourceVersion"]

    plain = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
    async with raw_watch(raw_session, url, {**plain, "timeoutSeconds": "20"}) as watch:
        assert watch.encoding == "", "a plain watch is never compressed"
        create_cm(cloud.upstream, ns, "b")
        await eventually(lambda: watch.names("ADDED") == ["b"], 10, "b on the plain watch")

    async with raw_watch(raw_session, url, WATCH_LIST, accept_gzip=False) as watch:
        assert watch.encoding == "", "not compressed for a client that does not accept gzip"
    async with raw_watch(raw_session, url, WATCH_LIST) as watch:
        assert watch.encoding == "gzip"
        await eventually(watch.ended_initial, 10, "the initial events")
        assert sorted(watch.names("ADDED")) == ["a", "b"]
        # The stream stays compressed after its initial events: one member per flush.
        create_cm(cloud.upstream, ns, "c")
        await eventually(lambda: "c" in watch.names("ADDED"), 10, "c on the watch-list")

    for name in ("big-1", "big-2", "big-3"):
        create_cm(cloud.upstream, ns, name, size=50_000)
    async with raw_session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
        body = await resp.read()
        assert resp.headers.get("Content-Encoding") == "gzip", "a list over 128 KiB is"
        assert len(body) < 128 * 1024
    async with raw_session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        assert "Content-Encoding" not in resp.headers
        assert len(json.loads(await resp.read())["items"]) == 6


# -- the proxy: its reflectors sync with gzipped watch-lists ------------------------------


@pytest.fixture
def proxy(cloud: Cloud, tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(cloud.kubeconfig, workdir=tmp_path / "proxy")
    try:
        yield proc
    finally:
        proc.close()


async def test_reflector_syncs_and_streams_with_a_gzipped_watch_list(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(cloud.upstream)
    for name in ("a", "b"):
        create_cm(cloud.upstream, ns, name, size=5000)
    params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "30"}
    async with (
        aiohttp.ClientSession() as client,
        raw_watch(client, proxy.url + cm_path(ns), params, accept_gzip=False) as watch,
    ):
        await eventually(lambda: sorted(watch.names("ADDED")) == ["a", "b"], 15, "a and b")
        synced = stream_bytes(proxy, "watch-list", "gzip")
        assert synced > 0
        create_cm(cloud.upstream, ns, "c", size=5000)
        await eventually(lambda: "c" in watch.names("ADDED"), 10, "c through the proxy")
        # c's 5 kB crossed the link compressed, on the same stream.
        after = stream_bytes(proxy, "watch-list", "gzip")
        assert 0 < after - synced < 2500, (synced, after)
        assert watch.encoding == "", "the client gets what it asked for"
    assert stream_bytes(proxy, "list", "identity") + stream_bytes(proxy, "list", "gzip") == 0
    assert stream_bytes(proxy, "watch", "identity") == 0
    reflector = reflector_of(proxy, ns)
    assert (reflector["watchLists"], reflector["relists"]) == (1, 1)


# -- an apiserver without watch-list: list and watch, as before -------------------------


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
async def test_without_watch_list_upstream_the_reflector_lists_and_watches(
    mode: str, tmp_path: Path, make_namespace: MakeNamespace
) -> None:
    # Simulator only: a real kube-apiserver 1.37 cannot turn watch-list off.
    # Bookmarks every second: an apiserver that ignores sendInitialEvents is
    # found out by a bookmark that ends no initial events.
    sim = SimProcess(f"--watch-list={mode}", "--bookmark-interval=1", workdir=tmp_path / "sim")
    proxy = ProxyProcess(sim.kubeconfig, workdir=tmp_path / "proxy")
    try:
        namespaces = [make_namespace(sim), make_namespace(sim)]
        async with aiohttp.ClientSession() as client:
            for ns in namespaces:
                create_cm(sim, ns, "a")
                params = {"watch": "1", "timeoutSeconds": "30"}
                async with raw_watch(client, proxy.url + cm_path(ns), params) as watch:
                    await eventually(lambda w=watch: w.names("ADDED") == ["a"], 15, "a")
                    create_cm(sim, ns, "b")
                    await eventually(lambda w=watch: w.names("ADDED") == ["a", "b"], 10, "b")
                assert reflector_of(proxy, ns)["watchLists"] == 0
        assert stream_bytes(proxy, "watch-list", "gzip") == 0
        assert stream_bytes(proxy, "list", "identity") > 0
        assert stream_bytes(proxy, "watch", "identity") > 0
        said = proxy.log_path.read_text().count("does not do watch-list")
        assert said == 1, "found out once per upstream, for every scope"
    finally:
        proxy.close()
        sim.stop()


# -- one upstream stream for a narrower and a broader selector ----------------------------


def patch_cm(upstream: Any, ns: str, name: str, patch: dict[str, Any]) -> None:
    path = f"{cm_path(ns)}/{name}"
    resp = api_request(upstream, "PATCH", path, patch, "application/merge-patch+json")
    assert resp.status == 200, resp.body


def changes(watch: RawWatch, after: int = 0) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
        for e in watch.events[after:]
        if e["type"] != "BOOKMARK"
    ]


async def test_a_narrower_scope_follows_the_broader_scopes_stream(
    cloud: Cloud,
    proxy: ProxyProcess,
    raw_session: aiohttp.ClientSession,
    make_namespace: MakeNamespace,
) -> None:
    ns = make_namespace(cloud.upstream)
    for name, app in (("a", "x"), ("b", "y")):
        resp = api_request(
            cloud.upstream,
            "POST",
            cm_path(ns),
            {"metadata": {"name": name, "labels": {"app": app}}, "data": {"v": "1"}},
        )
        assert resp.status == 201, resp.body
    narrow_params = {"watch": "1", "labelSelector": "app=x", "timeoutSeconds": "60"}
    broad_params = {"watch": "1", "timeoutSeconds": "60"}
    url = proxy.url + cm_path(ns)
    async with (
        aiohttp.ClientSession() as client,
        raw_watch(client, url, narrow_params) as narrow,
    ):
        await eventually(lambda: narrow.names("ADDED") == ["a"], 15, "a, narrow")
        async with raw_watch(client, url, broad_params) as broad:
            await eventually(lambda: sorted(broad.names("ADDED")) == ["a", "b"], 15, "a, b")

            def follows() -> str:
                for scope in proxy.admin("/debug/cache")["scopes"]:
                    if scope["scope"].startswith(f"v1/configmaps|ns={ns}|l=app=x|"):
                        return str((scope["reflector"] or {}).get("follows", ""))
                return ""

            await eventually(lambda: follows().startswith(f"v1/configmaps|ns={ns}|l=|"), 15, "")
            assert metric(proxy, "edgeproxy_reflectors") == 1, "one upstream stream for both"

            # What kube-apiserver sends a watch of the narrower selector, from now on.
            async with raw_session.get(cloud.direct_url + cm_path(ns)) as resp:
                rv = json.loads(await resp.read())["metadata"]["resourceVersion"]
            direct_params = {**narrow_params, "resourceVersion": rv}
            async with raw_watch(
                raw_session, cloud.direct_url + cm_path(ns), direct_params
            ) as direct:
                seen = len(narrow.events)
                patch_cm(cloud.upstream, ns, "b", {"metadata": {"labels": {"app": "x"}}})  # enters
                patch_cm(cloud.upstream, ns, "a", {"metadata": {"labels": {"app": "z"}}})  # leaves
                patch_cm(cloud.upstream, ns, "b", {"data": {"v": "2"}})
                patch_cm(cloud.upstream, ns, "a", {"data": {"v": "2"}})  # outside: nothing
                resp = api_request(cloud.upstream, "DELETE", f"{cm_path(ns)}/b")
                assert resp.status == 200, resp.body
                await eventually(lambda: len(changes(direct)) == 4, 10, "upstream's events")
                await eventually(lambda: len(changes(narrow, seen)) >= 4, 10, "the proxy's")
                await asyncio.sleep(0.5)  # nothing more may come
                assert changes(narrow, seen) == changes(direct)
                assert [t for t, _, _ in changes(direct)] == [
                    "ADDED",
                    "DELETED",
                    "MODIFIED",
                    "DELETED",
                ]

"""Types learnt from upstream's discovery, kept across a restart (cache/resourcetypes.py).

The upstream is a small aiohttp app on loopback serving discovery and CRDs
as kube-apiserver does; the cache is a real CacheManager and journal.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from edgeproxy.cache.manager import CacheManager
from edgeproxy.cache.resourcetypes import TypeSettings
from edgeproxy.kube.resources import ResourceRegistry
from edgeproxy.storage.journal import Journal
from edgeproxy.testing import free_port
from edgeproxy.upstream.pool import Upstream, UpstreamSettings

DOCS = {
    "/apis/node.k8s.io/v1": {
        "kind": "APIResourceList",
        "groupVersion": "node.k8s.io/v1",
        "resources": [
            {"name": "runtimeclasses", "namespaced": False, "kind": "RuntimeClass",
             "verbs": ["get", "list", "watch"]},
        ],
    },
    "/apis/example.com/v1": {
        "kind": "APIResourceList",
        "groupVersion": "example.com/v1",
        "resources": [
            {"name": "widgets", "namespaced": True, "kind": "Widget", "verbs": ["list", "watch"]},
            {"name": "gadgets", "namespaced": False, "kind": "Gadget", "verbs": ["list"]},
        ],
    },
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com": {
        "kind": "CustomResourceDefinition",
        "spec": {"versions": [{"name": "v1", "selectableFields": [{"jsonPath": ".spec.color"}]}]},
    },
}  # fmt: skip
FORBIDDEN = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com"


class Apiserver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gets: Counter[str] = Counter()
        self.delay = 0.0  # seconds before each answer: a slow or loaded apiserver
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/readyz":
            return web.Response(text="ok")
        self.gets[request.path] += 1
        await asyncio.sleep(self.delay)
        if request.path == FORBIDDEN:
            return web.json_response({"kind": "Status", "code": 403}, status=403)
        doc = DOCS.get(request.path)
        if doc is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(doc)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def apiserver() -> AsyncIterator[Apiserver]:
    server = Apiserver()
    await server.start()
    yield server
    await server.stop()


async def _cache(apiserver: Apiserver, path: Path) -> tuple[CacheManager, Upstream]:
    settings = UpstreamSettings(probe_interval=0.05, probe_timeout=0.2, failure_threshold=1)
    upstream = Upstream([apiserver.url], settings=settings)
    await upstream.start()
    journal = Journal(path)
    journal.open()
    cache = CacheManager(ResourceRegistry(), upstream, journal)
    cache.load()
    return cache, upstream


async def test_types_come_from_discovery_once(apiserver: Apiserver, tmp_path: Path) -> None:
    cache, upstream = await _cache(apiserver, tmp_path / "cache.db")
    try:
        rt = await cache.types.resolve("node.k8s.io", "v1", "runtimeclasses")
        assert (rt.list_kind, rt.namespaced, rt.verbs) == (
            "RuntimeClassList",
            False,
            ("get", "list", "watch"),
        )
        # A group only kube-apiserver serves has no CRD to read.
        assert set(apiserver.gets) == {"/apis/node.k8s.io/v1"}
        widgets = await cache.types.resolve("example.com", "v1", "widgets", namespaced=False)
        assert widgets.kind == "Widget" and widgets.namespaced
        assert dict(widgets.extra_fields) == {"spec.color": "spec.color"}
        # The identity may not read this CRD: metadata fields only, upstream decides the rest.
        gadgets = await cache.types.resolve("example.com", "v1", "gadgets")
        assert (gadgets.kind, gadgets.namespaced, dict(gadgets.extra_fields)) == (
            "Gadget",
            False,
            {},
        )
        for _ in range(3):
            await cache.types.resolve("example.com", "v1", "gadgets")
            await cache.types.resolve("node.k8s.io", "v1", "runtimeclasses")
        assert apiserver.gets["/apis/example.com/v1"] == 1
        assert apiserver.gets[FORBIDDEN] == 1
        assert apiserver.gets["/apis/node.k8s.io/v1"] == 1
        # A resource its group version does not list is guessed, and asks
        # upstream again only after `miss_retry_seconds` (a CRD created since).
        missing = await cache.types.resolve("example.com", "v1", "nothings", namespaced=True)
        assert missing.kind == "Nothings" and not missing.fields_checked
        assert apiserver.gets["/apis/example.com/v1"] == 1
        cache.types.settings = TypeSettings(miss_retry_seconds=0)
        await cache.types.resolve("example.com", "v1", "nothings")
        assert apiserver.gets["/apis/example.com/v1"] == 2
    finally:
        await cache.close()
        await upstream.close()


async def test_requests_during_the_first_fetch_wait_for_it(
    apiserver: Apiserver, tmp_path: Path
) -> None:
    # A kubelet starts several informers of one type at once: the requests
    # that arrive while its group version is being fetched must get the
    # discovered type too, not a guess (a store made with a guessed kind
    # keeps it, and its protobuf watches then fail).
    apiserver.delay = 0.3
    cache, upstream = await _cache(apiserver, tmp_path / "cache.db")
    try:
        first = asyncio.create_task(cache.types.resolve("node.k8s.io", "v1", "runtimeclasses"))
        await asyncio.sleep(0.1)  # its fetch is on the way
        rts = await asyncio.gather(
            first, *(cache.types.resolve("node.k8s.io", "v1", "runtimeclasses") for _ in range(3))
        )
        assert [(rt.kind, rt.namespaced) for rt in rts] == [("RuntimeClass", False)] * 4
        assert apiserver.gets["/apis/node.k8s.io/v1"] == 1
    finally:
        await cache.close()
        await upstream.close()


async def test_types_hold_offline_after_a_restart(apiserver: Apiserver, tmp_path: Path) -> None:
    cache, upstream = await _cache(apiserver, tmp_path / "cache.db")
    try:
        await cache.types.resolve("node.k8s.io", "v1", "runtimeclasses")
        await cache.types.resolve("example.com", "v1", "widgets")
    finally:
        await cache.close()
        await upstream.close()
    await apiserver.stop()  # the link is gone: connections are refused
    cache, upstream = await _cache(apiserver, tmp_path / "cache.db")
    try:
        # What scopes are restored with, before any request.
        assert cache.resource_type("node.k8s.io", "v1", "runtimeclasses").kind == "RuntimeClass"
        widgets = await cache.types.resolve("example.com", "v1", "widgets", namespaced=False)
        assert widgets.namespaced and dict(widgets.extra_fields) == {"spec.color": "spec.color"}
        # Never seen, nothing to ask: a guess, with selectors left to upstream.
        guess = await cache.types.resolve("example.com", "v1", "others", namespaced=False)
        assert not guess.namespaced and not guess.fields_checked
    finally:
        await cache.close()
        await upstream.close()


def test_docs_are_json() -> None:
    # The fixtures above are what the handler serves: keep them valid JSON.
    assert json.loads(json.dumps(DOCS))

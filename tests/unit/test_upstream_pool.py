"""Upstream health, failover and round-robin against real servers on loopback.

Each fake apiserver is a tiny aiohttp app that can answer, hang (accept and
never answer, like a black-holed link) or be stopped (connection refused),
so the probe state machine is exercised over real sockets (ARCHITECTURE.md
sec. 4; STYLE.md "never mock what you can run").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.testing import free_port
from edgeproxy.upstream.pool import Upstream, UpstreamSettings

# Fast probes: a black hole is noticed after ~2 missed probes of 0.15 s.
FAST = UpstreamSettings(
    probe_interval=0.05, probe_timeout=0.15, failure_threshold=2, connect_timeout=0.5
)
# Probes that run once at start and then stay quiet, to see what requests alone do.
QUIET = UpstreamSettings(
    probe_interval=60, probe_timeout=0.5, failure_threshold=2, connect_timeout=0.5
)


class FakeApiserver:
    """A loopback HTTP server that answers, hangs or refuses on demand."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hanging = False
        self.probes = 0
        self.probe_auth = ""
        self.requests: list[web.Request] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hang(self) -> None:
        self._release = asyncio.Event()
        self.hanging = True

    def answer(self) -> None:
        self.hanging = False
        self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/readyz":
            self.probes += 1
            self.probe_auth = request.headers.get("Authorization", "")
        if self.hanging:
            await self._release.wait()
            return web.Response(status=503)
        if request.path == "/readyz":
            return web.Response(text="ok")
        self.requests.append(request)
        body = await request.read()
        return web.json_response(
            {
                "server": self.name,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": body.decode(),
            }
        )


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeApiserver, FakeApiserver]]:
    a, b = FakeApiserver("a"), FakeApiserver("b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    """Upstreams the test started, closed at the end."""
    started: list[Upstream] = []
    yield started
    for upstream in started:
        await upstream.close()


async def start(
    started: list[Upstream], urls: list[str], settings: UpstreamSettings, **kwargs: Any
) -> Upstream:
    upstream = Upstream(urls, settings=settings, **kwargs)
    await upstream.start()
    started.append(upstream)
    return upstream


async def eventually(check: Callable[[], bool], within: float = 3.0) -> float:
    """Seconds until `check()` held; fails after `within`."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > within:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - began


async def get(upstream: Upstream, path: str = "/api/v1/pods", **kwargs: Any) -> dict[str, Any]:
    resp = await upstream.request("GET", path, **kwargs)
    async with resp:
        assert resp.status == 200
        doc: dict[str, Any] = json.loads(await resp.read())
        return doc


# -- construction and confirmation -------------------------------------------------


def test_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one upstream server"):
        Upstream([])


async def test_confirmed_after_the_first_probe(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, _ = servers
    upstream = Upstream([a.url + "/"], settings=FAST)
    assert upstream.servers[0].url == a.url  # trailing slash dropped
    confirmed_before_start = upstream.confirmed
    await upstream.start()
    upstreams.append(upstream)
    assert await upstream.wait_confirmed(2)
    assert upstream.healthy and upstream.recently_ok()
    assert upstream.confirmed and not confirmed_before_start
    assert await upstream.wait_confirmed(0)


async def test_not_confirmed_while_refused(upstreams: list[Upstream]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    upstream = await start(upstreams, [url], FAST)
    assert not await upstream.wait_confirmed(0.3)
    assert not upstream.confirmed
    assert not upstream.healthy
    assert not upstream.recently_ok()
    assert "ClientConnectorError" in upstream.servers[0].last_error
    with pytest.raises(UpstreamUnreachable, match="no upstream server is reachable"):
        await upstream.request("GET", "/api")


# -- the health state machine ----------------------------------------------------------


async def test_black_hole_goes_down_and_comes_back(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, _ = servers
    changes: list[bool] = []
    upstream = await start(upstreams, [a.url], FAST)
    upstream.on_state_change(changes.append)
    assert await upstream.wait_confirmed(2)
    changed = upstream.changed

    a.hang()
    took = await eventually(lambda: not upstream.healthy)
    # failure_threshold probe timeouts, started probe_interval apart, plus slack.
    assert took < FAST.probe_timeout + FAST.failure_threshold * FAST.probe_interval + 1.0
    assert changes == [False]
    assert changed.is_set() and not upstream.changed.is_set()
    assert "TimeoutError" in upstream.servers[0].last_error
    assert upstream.servers[0].failures >= FAST.failure_threshold
    assert not upstream.recently_ok()
    with pytest.raises(UpstreamUnreachable):
        await upstream.request("GET", "/api")

    a.answer()
    await eventually(lambda: upstream.healthy)
    assert changes == [False, True]
    assert upstream.servers[0].failures == 0
    assert (await get(upstream))["server"] == "a"


async def test_one_missed_probe_does_not_flip_the_state(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, _ = servers
    settings = UpstreamSettings(
        probe_interval=0.05, probe_timeout=0.15, failure_threshold=50, connect_timeout=0.5
    )
    upstream = await start(upstreams, [a.url], settings)
    assert await upstream.wait_confirmed(2)
    a.hang()
    await eventually(lambda: upstream.servers[0].failures >= 1)
    assert upstream.healthy
    a.answer()
    await eventually(lambda: upstream.servers[0].failures == 0)
    assert upstream.healthy


async def test_stopped_server_goes_down_and_comes_back(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, _ = servers
    changes: list[bool] = []
    upstream = await start(upstreams, [a.url], FAST)
    upstream.on_state_change(changes.append)
    assert await upstream.wait_confirmed(2)

    await a.stop()
    await eventually(lambda: not upstream.healthy)
    assert changes == [False]
    with pytest.raises(UpstreamUnreachable):
        await upstream.request("GET", "/api")

    await a.start()
    await eventually(lambda: upstream.healthy)
    assert changes == [False, True]
    assert (await get(upstream))["server"] == "a"


async def test_refused_request_marks_the_server_down_at_once(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, _ = servers
    changes: list[bool] = []
    upstream = await start(upstreams, [a.url], QUIET)
    upstream.on_state_change(changes.append)
    assert await upstream.wait_confirmed(2)
    assert (await get(upstream))["server"] == "a"

    await a.stop()
    with pytest.raises(UpstreamUnreachable, match="upstream unreachable: ClientConnectorError"):
        await upstream.request("GET", "/api")
    # No probe ran in between: the refused connection alone flipped the state.
    assert not upstream.healthy
    assert changes == [False]
    with pytest.raises(UpstreamUnreachable, match="no upstream server is reachable"):
        await upstream.request("GET", "/api")


async def test_listeners_hear_only_changes_of_the_whole_pool(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, b = servers
    changes: list[bool] = []
    upstream = await start(upstreams, [a.url, b.url], FAST)
    upstream.on_state_change(changes.append)
    assert await upstream.wait_confirmed(2)
    a.hang()
    await eventually(lambda: not upstream.servers[0].healthy)
    assert upstream.healthy and changes == []
    b.hang()
    await eventually(lambda: not upstream.healthy)
    assert changes == [False]
    b.answer()
    await eventually(lambda: upstream.healthy)
    assert changes == [False, True]


# -- failover and round-robin --------------------------------------------------------------


async def test_failover_to_the_second_server(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, b = servers
    upstream = await start(upstreams, [a.url, b.url], QUIET)
    assert await upstream.wait_confirmed(2)
    assert [(await get(upstream))["server"] for _ in range(3)] == ["a", "a", "a"]

    await a.stop()
    # The refused GET is retried on b within the same call.
    assert (await get(upstream))["server"] == "b"
    assert not upstream.servers[0].healthy and upstream.servers[1].healthy
    assert upstream.healthy
    assert (await get(upstream))["server"] == "b"
    assert upstream.servers[0].requests == 4 and upstream.servers[1].requests == 2


async def test_failover_back_when_the_first_returns(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, b = servers
    upstream = await start(upstreams, [a.url, b.url], FAST)
    assert await upstream.wait_confirmed(2)
    await a.stop()
    await eventually(lambda: not upstream.servers[0].healthy)
    assert (await get(upstream))["server"] == "b"
    await a.start()
    await eventually(lambda: upstream.servers[0].healthy)
    assert (await get(upstream))["server"] == "a"


async def test_a_request_with_a_body_is_not_retried_elsewhere(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, b = servers
    upstream = await start(upstreams, [a.url, b.url], QUIET)
    assert await upstream.wait_confirmed(2)
    await a.stop()
    with pytest.raises(UpstreamUnreachable):
        await upstream.request("POST", "/api/v1/namespaces", data=b"{}")
    assert b.requests == []
    assert not upstream.servers[0].healthy
    # a is now known down: the next write goes straight to b.
    resp = await upstream.request("POST", "/api/v1/namespaces", data=b"{}")
    async with resp:
        assert json.loads(await resp.read())["server"] == "b"


async def test_no_retry_elsewhere_when_asked(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, b = servers
    upstream = await start(upstreams, [a.url, b.url], QUIET)
    assert await upstream.wait_confirmed(2)
    await a.stop()
    with pytest.raises(UpstreamUnreachable):
        await upstream.request("GET", "/api/x", retry_other_servers=False)
    assert b.requests == []


async def test_round_robin_alternates(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, b = servers
    settings = UpstreamSettings(
        probe_interval=60, probe_timeout=0.5, connect_timeout=0.5, strategy="round-robin"
    )
    upstream = await start(upstreams, [a.url, b.url], settings)
    assert await upstream.wait_confirmed(2)
    seen = [(await get(upstream))["server"] for _ in range(6)]
    assert sorted(seen) == ["a", "a", "a", "b", "b", "b"]
    assert all(x != y for x, y in itertools.pairwise(seen)), seen

    await b.stop()
    seen = [(await get(upstream))["server"] for _ in range(4)]
    assert seen == ["a"] * 4


# -- what a request carries ------------------------------------------------------------------


async def test_request_headers_and_body(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    a, _ = servers
    upstream = await start(
        upstreams, [a.url], QUIET, headers=lambda: {"Authorization": "Bearer t0k"}
    )
    resp = await upstream.request(
        "POST",
        "/api/v1/namespaces?dryRun=All",
        headers={"Accept": "application/json", "Authorization": "Bearer client"},
        data=b'{"kind":"Namespace"}',
    )
    async with resp:
        doc = json.loads(await resp.read())
    assert doc["path"] == "/api/v1/namespaces?dryRun=All"
    assert doc["body"] == '{"kind":"Namespace"}'
    headers = {k.lower(): v for k, v in doc["headers"].items()}
    # The proxy's own credentials replace the client's.
    assert headers["authorization"] == "Bearer t0k"
    assert headers["accept"] == "application/json"
    # No invented Content-Type (kube-apiserver would answer 415 to octet-stream).
    assert "content-type" not in headers
    # Probes carry the credentials too.
    assert a.probes >= 1 and a.probe_auth == "Bearer t0k"


async def test_a_client_token_replaces_the_proxy_credentials(
    servers: tuple[FakeApiserver, FakeApiserver], upstreams: list[Upstream]
) -> None:
    """A pod's request goes as the pod (docs/identity.md): its token, never the proxy's."""
    a, _ = servers
    upstream = await start(
        upstreams, [a.url], QUIET, headers=lambda: {"Authorization": "Bearer t0k"}
    )
    resp = await upstream.request(
        "GET",
        "/api/v1/pods",
        headers={"authorization": "Bearer smuggled"},
        client_token="pod-token",
    )
    async with resp:
        doc = json.loads(await resp.read())
    auth = [v for k, v in doc["headers"].items() if k.lower() == "authorization"]
    assert auth == ["Bearer pod-token"]

"""Paths are read as kube-apiserver reads them: dot segments are never resolved.

kube-apiserver routes the decoded path segment by segment: `configmaps/../secrets`
asks for a subresource "secrets" of a configmap named ".." (no such route: 404),
`configmaps/cm1/%2e%2e` for a subresource ".." (404), and `configmaps/..` for a
configmap named "..", which the registry refuses (400). The proxy used to hand
the decoded path to its HTTP client, which normalized it: the first came back
as a SecretList, the second as the ConfigMap list. Checked on the simulator,
through the proxy, and through the proxy cut off from it.
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
import yarl

from edgeproxy.testing import ProxyProcess, SimProcess

NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "details": {},
    "code": 404,
}


def bad_name(name: str, problem: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'Name parameter invalid: "{name}": {problem}',
        "reason": "BadRequest",
        "code": 400,
    }


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimProcess, ProxyProcess, str]]:
    with SimProcess() as sim, ProxyProcess(sim.kubeconfig) as proxy:
        ns = f"paths-{uuid.uuid4().hex[:8]}"
        cloud(sim, "/api/v1/namespaces", {"metadata": {"name": ns}})
        cloud(sim, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "cm1"}})
        cloud(sim, f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": "s1"}})
        yield sim, proxy, ns


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


async def raw_get(http: aiohttp.ClientSession, base: str, target: str) -> tuple[int, Any]:
    """GET with the request target exactly as written: no client-side normalizing."""
    async with http.get(yarl.URL(base + target, encoded=True)) as resp:
        body = await resp.read()
        return resp.status, json.loads(body)


def cases(ns: str) -> dict[str, tuple[int, dict[str, Any]]]:
    col = f"/api/v1/namespaces/{ns}/configmaps"
    return {
        f"{col}/../secrets": (404, NOT_FOUND),
        f"{col}/cm1/%2e%2e": (404, NOT_FOUND),
        f"{col}/cm1/..": (404, NOT_FOUND),
        f"{col}/..": (400, bad_name("..", "may not be '..'")),
        f"{col}/%2e": (400, bad_name(".", "may not be '.'")),
        f"{col}/a%25b": (400, bad_name("a%b", "may not contain '%'")),
        f"/api/v1/namespaces/{ns}/secrets/../configmaps": (404, NOT_FOUND),
    }


async def test_dot_segments_are_not_resolved(
    servers: tuple[SimProcess, ProxyProcess, str], http: aiohttp.ClientSession
) -> None:
    sim, proxy, ns = servers
    col = f"/api/v1/namespaces/{ns}/configmaps"
    # The proxy holds the configmaps and secrets lists of this namespace.
    for resource in ("configmaps", "secrets"):
        for _ in range(2):
            code, _ = await raw_get(
                http, proxy.url, f"/api/v1/namespaces/{ns}/{resource}?resourceVersion=0"
            )
            assert code == 200
    for target, expected in cases(ns).items():
        assert await raw_get(http, sim.url, target) == expected, ("sim", target)
        assert await raw_get(http, proxy.url, target) == expected, ("proxy", target)
    # A query is passed on as sent: an encoded `&` stays inside its value.
    target = f"{col}?fieldSelector=metadata.name%3Dcm1%26limit%3D1"
    assert await raw_get(http, proxy.url, target) == await raw_get(http, sim.url, target)


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


async def test_offline_dot_segments_never_serve_another_resource(
    servers: tuple[SimProcess, ProxyProcess, str], http: aiohttp.ClientSession
) -> None:
    sim, proxy, ns = servers
    col = f"/api/v1/namespaces/{ns}/configmaps"
    for resource in ("configmaps", "secrets"):
        for _ in range(2):
            code, _ = await raw_get(
                http, proxy.url, f"/api/v1/namespaces/{ns}/{resource}?resourceVersion=0"
            )
            assert code == 200
    sim.fault(blackhole=True)
    try:
        await link(proxy, up=False)
        for target, (code, doc) in cases(ns).items():
            got_code, got = await raw_get(http, proxy.url, target)
            if code == 400:  # the proxy can tell a bad name by itself
                assert (got_code, got) == (code, doc), target
            else:  # which routes exist upstream it cannot tell: never data
                assert got_code >= 400 and got["kind"] == "Status", (target, got)
        code, doc = await raw_get(http, proxy.url, f"{col}?resourceVersion=0")
        assert code == 200 and doc["kind"] == "ConfigMapList"
    finally:
        sim.heal()
    await link(proxy, up=True)

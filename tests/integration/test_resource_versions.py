"""Too-new and malformed resourceVersions: one answer, kube-apiserver's.

The simulator, the proxy online and the proxy cut off from it must answer
alike, as kube-apiserver does (k8s-api-semantics.md sec. 2.1, 3.2):

- an RV that is not a decimal uint64 is a 400 on a list (storage
  ValidateListOptions) and a reasonless 500 on a watch or a get (the watch
  cache's bare parse error, kubernetes issue #139485);
- a NotOlderThan list beyond the server's RV waits (3 s) and gets a 504
  Timeout with cause ResourceVersionTooLarge, never older data;
- a watch from a too-new RV is accepted and stays quiet until newer events
  arrive (api-concepts "Unavailable resource versions"); only a watch-list
  (sendInitialEvents=true) fails, with the 504 as an ERROR event in a 200
  stream (the cacher's error watcher).
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

CM = "/api/v1/namespaces/{ns}/configmaps"
BAD_RVS = ["abc", "0x10", "1.5", "-1"]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimProcess, ProxyProcess]]:
    with SimProcess() as sim, ProxyProcess(sim.kubeconfig) as proxy:
        yield sim, proxy


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def cloud(sim: SimProcess, path: str, body: dict[str, Any]) -> Any:
    """A POST to the simulator's unfaulted control listener: works during a cut."""
    req = urllib.request.Request(
        sim.control_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def create(sim: SimProcess, ns: str, name: str) -> int:
    """A configmap made in the cloud (its namespace with the first one); its RV."""
    if name in ("cm0", "cm1"):
        cloud(sim, "/api/v1/namespaces", {"metadata": {"name": ns}})
    obj = cloud(sim, CM.format(ns=ns), {"metadata": {"name": name}, "data": {}})
    return int(obj["metadata"]["resourceVersion"])


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any], str]:
    async with http.get(url) as resp:
        body = await resp.read()
        return resp.status, json.loads(body), resp.headers.get("Retry-After", "")


async def watch_frames(
    http: aiohttp.ClientSession, url: str, *, quiet_for: float
) -> tuple[int, list[dict[str, Any]]]:
    """A watch's status and the events it sends until EOF or `quiet_for` s of silence."""
    frames: list[dict[str, Any]] = []
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        while True:
            try:
                line = await asyncio.wait_for(resp.content.readline(), quiet_for)
            except TimeoutError:
                break
            if not line:
                break
            frames.append(json.loads(line))
        return resp.status, frames


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


def too_large(wanted: int, current: int) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"Timeout: Too large resource version: {wanted}, current: {current}",
        "reason": "Timeout",
        "details": {
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
        "code": 504,
    }


async def bad_rv_answers(http: aiohttp.ClientSession, base: str, ns: str) -> list[Any]:
    """What a server says to every malformed RV on a list, a watch and a get."""
    col = base + CM.format(ns=ns)
    answers: list[Any] = []
    for rv in BAD_RVS:
        answers.append(await fetch(http, f"{col}?resourceVersion={rv}"))
        answers.append(await fetch(http, f"{col}?watch=true&resourceVersion={rv}"))
        answers.append(await fetch(http, f"{col}/cm1?resourceVersion={rv}"))
    return answers


async def test_malformed_resource_versions_answer_like_kube_apiserver(
    servers: tuple[SimProcess, ProxyProcess], http: aiohttp.ClientSession
) -> None:
    sim, proxy = servers
    ns = f"rv-bad-{uuid.uuid4().hex[:8]}"
    create(sim, ns, "cm1")
    # Prime the proxy's cache: RV=-1 used to be served from it with a 200.
    assert (await fetch(http, f"{proxy.url}{CM.format(ns=ns)}?resourceVersion=0"))[0] == 200
    from_sim = await bad_rv_answers(http, sim.url, ns)
    codes = [code for code, _, _ in from_sim]
    assert codes == [400, 500, 500] * len(BAD_RVS), from_sim
    _, doc, _ = from_sim[0]
    assert doc["message"] == (
        'invalid resource version: resourceVersion: Invalid value: "abc": '
        'strconv.ParseUint: parsing "abc": invalid syntax'
    )
    _, doc, _ = from_sim[-2]
    assert "reason" not in doc and doc["code"] == 500, doc
    assert await bad_rv_answers(http, proxy.url, ns) == from_sim
    # A get ignores list parameters, as the get handler does.
    for base in (sim.url, proxy.url):
        code, doc, _ = await fetch(http, f"{base}{CM.format(ns=ns)}/cm1?limit=abc&watch=x")
        assert (code, doc["metadata"]["name"]) == (200, "cm1")

    sim.fault(blackhole=True)
    try:
        await link(proxy, up=False)
        offline = await bad_rv_answers(http, proxy.url, ns)
        assert offline == from_sim
    finally:
        sim.heal()
    await link(proxy, up=True)


async def test_not_older_than_beyond_the_server_is_a_504_online_and_offline(
    servers: tuple[SimProcess, ProxyProcess], http: aiohttp.ClientSession
) -> None:
    sim, proxy = servers
    ns = f"rv-new-{uuid.uuid4().hex[:8]}"
    current = create(sim, ns, "cm1")
    col = CM.format(ns=ns)
    # The proxy holds this namespace's list (and keeps it in sync).
    for _ in range(3):
        assert (await fetch(http, f"{proxy.url}{col}?resourceVersion=0"))[0] == 200
    wanted = current + 100_000
    urls = [
        f"{base}{col}?{query}"
        for query in (
            f"resourceVersion={wanted}",
            f"resourceVersion={wanted}&resourceVersionMatch=NotOlderThan",
        )
        for base in (sim.url, proxy.url)
    ]

    async def timed(url: str) -> tuple[float, tuple[int, dict[str, Any], str]]:
        started = time.monotonic()
        answer = await fetch(http, url)
        return time.monotonic() - started, answer

    # All four at once: each waits its own 3 s.
    answers = await asyncio.gather(*(timed(url) for url in urls))
    for url, (took, (code, doc, retry)) in zip(urls, answers, strict=True):
        assert (code, retry) == (504, "1"), (url, doc)
        assert took >= 2.5, url  # the watch cache waited first
        now = int(doc["message"].rsplit(" ", 1)[1])
        assert doc == too_large(wanted, now)

    sim.fault(blackhole=True)
    try:
        await link(proxy, up=False)
        # Offline it used to answer older data with a 200.
        code, doc, retry = await fetch(http, f"{proxy.url}{col}?resourceVersion={wanted}")
        assert (code, retry) == (504, "1"), doc
        assert doc == too_large(wanted, int(doc["message"].rsplit(" ", 1)[1]))
        # What it has is still served for what it has.
        code, doc, _ = await fetch(http, f"{proxy.url}{col}?resourceVersion={current}")
        assert code == 200 and [i["metadata"]["name"] for i in doc["items"]] == ["cm1"]
    finally:
        sim.heal()
    await link(proxy, up=True)


async def test_watch_from_a_too_new_rv_waits_for_newer_events(
    servers: tuple[SimProcess, ProxyProcess], http: aiohttp.ClientSession
) -> None:
    sim, proxy = servers
    ns = f"rv-watch-{uuid.uuid4().hex[:8]}"
    current = create(sim, ns, "cm0")
    col = CM.format(ns=ns)
    bases = (sim.url, proxy.url)  # the simulator and the proxy side by side, at once
    # Far beyond: accepted and silent past the 3 s a list would wait, no 504.
    far = current + 100_000
    quiet = await asyncio.gather(
        *(
            watch_frames(
                http, f"{b}{col}?watch=true&resourceVersion={far}&timeoutSeconds=30", quiet_for=4.0
            )
            for b in bases
        )
    )
    assert quiet == [(200, []), (200, [])]
    since = current + 3  # three changes from now
    tasks = [
        asyncio.ensure_future(
            watch_frames(
                http,
                f"{b}{col}?watch=true&resourceVersion={since}&timeoutSeconds=30",
                quiet_for=4.0,
            )
        )
        for b in bases
    ]
    await asyncio.sleep(1.0)  # accepted and quiet, not a 504 after 3 s
    assert not any(t.done() for t in tasks)
    rvs = [create(sim, ns, f"cm-{i}") for i in range(5)]
    for base, task in zip(bases, tasks, strict=True):
        status, frames = await task
        assert status == 200
        got = [int(f["object"]["metadata"]["resourceVersion"]) for f in frames]
        assert got == [rv for rv in rvs if rv > since], (base, frames)


async def test_watch_list_from_a_too_new_rv_fails_inside_the_stream(
    servers: tuple[SimProcess, ProxyProcess], http: aiohttp.ClientSession
) -> None:
    sim, proxy = servers
    ns = f"rv-wl-{uuid.uuid4().hex[:8]}"
    current = create(sim, ns, "cm1")
    col = CM.format(ns=ns)
    wanted = current + 100_000
    query = (
        f"watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        f"&allowWatchBookmarks=true&resourceVersion={wanted}"
    )

    async def check(base: str) -> None:
        status, frames = await watch_frames(http, f"{base}{col}?{query}", quiet_for=10.0)
        assert status == 200, frames
        assert [f["type"] for f in frames] == ["ERROR"], frames
        doc = frames[0]["object"]
        assert doc == too_large(wanted, int(doc["message"].rsplit(" ", 1)[1]))

    await check(sim.url)
    await check(proxy.url)
    sim.fault(blackhole=True)
    try:
        await link(proxy, up=False)
        await check(proxy.url)
    finally:
        sim.heal()
    await link(proxy, up=True)

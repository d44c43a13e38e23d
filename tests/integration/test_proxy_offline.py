"""edge-proxy as an offline apiserver: link cuts, outages, compaction, restarts.

Real processes on loopback: the cloud (conftest's `cloud`: the simulator,
then a real kube-apiserver), the proxy (`ProxyProcess`), kubectl and a small
informer written with aiohttp that behaves like client-go's reflector (list
RV=0, then watch from the last seen RV, re-watch on stream end, relist only
on 410). The link is cut by black-holing the relay between proxy and cloud;
changes "in the cloud during the outage" go straight to the upstream, which
the cut never reaches. ARCHITECTURE.md sec. 3-5 is the contract checked:
clients never relist because of an outage, offline answers keep selectors
and resourceVersions, and a restart while offline serves the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import Cloud, api_request, readyz, wait_link
from edgeproxy.testing import ProxyProcess

MakeNamespace = Callable[[Any], str]
Objects = dict[str, tuple[str, Any]]  # name -> (resourceVersion, data)

KUBECTL = shutil.which("kubectl")
DETECT_BUDGET = 3.0  # ARCHITECTURE.md sec. 4: a black-hole is noticed within a few seconds
# Process start to the first list answered from the journal, black-holed link.
# Below the ~2 s the probes need to call such a link down, so an answer within
# it did not wait on upstream. How fast a restart is belongs to the benchmark
# (`edge-proxy bench restart`); 1.0 s here failed on a loaded 2-core machine.
RESTART_BUDGET = 1.8
NO_TIMEOUT = aiohttp.ClientTimeout(total=None)  # watches end when the server ends them


# -- the cloud side -----------------------------------------------------------------


def upstream(c: Cloud, method: str, path: str, body: Any = None) -> Any:
    """A request straight to the upstream, past the relay: works during a cut."""
    resp = api_request(c.upstream, method, path, body)
    assert resp.status < 300, (method, path, resp.status, resp.body[:300])
    return resp.json()


def configmap(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {}}


def create_cm(c: Cloud, ns: str, name: str, **data: str) -> str:
    obj = upstream(
        c,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": name}, "data": data},
    )
    return str(obj["metadata"]["resourceVersion"])


def update_cm(c: Cloud, ns: str, name: str, **data: str) -> str:
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}"
    obj = upstream(c, "GET", path)
    obj["data"] = data
    return str(upstream(c, "PUT", path, obj)["metadata"]["resourceVersion"])


def delete_cm(c: Cloud, ns: str, name: str) -> None:
    upstream(c, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}")


def cloud_state(c: Cloud, ns: str) -> Objects:
    doc = upstream(c, "GET", f"/api/v1/namespaces/{ns}/configmaps")
    return {
        o["metadata"]["name"]: (o["metadata"]["resourceVersion"], o.get("data"))
        for o in doc["items"]
    }


@contextlib.contextmanager
def link_cut(c: Cloud) -> Iterator[None]:
    """Black-hole the link; always restore it, for the test's own cleanup."""
    c.link.blackhole()
    try:
        yield
    finally:
        c.link.restore()


# -- the proxy side -----------------------------------------------------------------


@pytest.fixture
def proxy(cloud: Cloud, tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(cloud.kubeconfig, workdir=tmp_path / "proxy")
    try:
        yield proc
    finally:
        proc.close()


async def async_wait_link(proxy: ProxyProcess, *, up: bool, within: float) -> float:
    return await asyncio.to_thread(wait_link, proxy, up=up, timeout=within)


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def debug_scope(proxy: ProxyProcess, ns: str, resource: str = "configmaps") -> dict[str, Any]:
    for scope in proxy.admin("/debug/cache")["scopes"]:
        if scope["scope"].startswith(f"v1/{resource}|ns={ns}|l=|f="):
            return dict(scope)
    pytest.fail(f"no {resource} scope for {ns}: {proxy.admin('/debug/cache')}")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


# -- an informer like client-go's reflector --------------------------------------------


class Informer:
    """List RV=0 once, then watch from the last RV seen; relist only on 410."""

    def __init__(self, session: aiohttp.ClientSession, base: str, path: str) -> None:
        self.session = session
        self.url = base + path
        self.objects: Objects = {}
        self.rv = ""
        self.lists = 0
        self.watches = 0
        self.events: list[tuple[str, str, str]] = []  # (type, name, rv)
        self.watching = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"informer {self.url}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        await self._list()
        await self.watch_forever()

    async def watch_forever(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._watch()
            await asyncio.sleep(0.1)

    async def _list(self) -> None:
        async with self.session.get(self.url, params={"resourceVersion": "0"}) as resp:
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
        self.lists += 1
        self.objects = {
            o["metadata"]["name"]: (o["metadata"]["resourceVersion"], o.get("data"))
            for o in doc["items"]
        }
        self.rv = doc["metadata"]["resourceVersion"]

    async def _watch(self) -> None:
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.rv,
            "timeoutSeconds": "300",
        }
        async with self.session.get(self.url, params=params, timeout=NO_TIMEOUT) as resp:
            if resp.status != 200:
                return  # back off and re-watch, as client-go does on 429/5xx
            self.watches += 1
            self.watching.set()
            async for line in resp.content:
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    if obj.get("code") == 410:
                        await self._list()
                    return
                meta = obj["metadata"]
                if event["type"] != "BOOKMARK":
                    name = meta["name"]
                    self.events.append((event["type"], name, meta["resourceVersion"]))
                    if event["type"] == "DELETED":
                        self.objects.pop(name, None)
                    else:
                        self.objects[name] = (meta["resourceVersion"], obj.get("data"))
                self.rv = meta["resourceVersion"]


# -- 1. kubectl online and offline -----------------------------------------------------


def kubectl(proxy: ProxyProcess, cache: Path, *args: str) -> tuple[str, float]:
    assert KUBECTL is not None
    argv = [KUBECTL, f"--kubeconfig={proxy.kubeconfig}", f"--cache-dir={cache}", *args]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout, took


def table_names(out: str) -> list[str]:
    lines = out.splitlines()
    assert lines and lines[0].split()[0] == "NAME", out
    return sorted(line.split()[0] for line in lines[1:])


def json_names(out: str) -> list[str]:
    return sorted(item["metadata"]["name"] for item in json.loads(out)["items"])


@pytest.mark.kubectl
@pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")
def test_kubectl_online_offline_and_watch_across_cut(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace, tmp_path: Path
) -> None:
    ns = make_namespace(cloud.upstream)
    upstream(cloud, "POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("a", {"app": "x"}))
    upstream(cloud, "POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("b", {"app": "y"}))
    upstream(cloud, "POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("c", {"app": "x"}))
    cache = tmp_path / "kubectl-cache"

    def run_all() -> tuple[dict[str, list[str]], float]:
        answers, slowest = {}, 0.0
        for label, args, parse in (
            ("table", ("get", "cm", "-n", ns), table_names),
            ("json", ("get", "cm", "-n", ns, "-o", "json"), json_names),
            ("label", ("get", "cm", "-n", ns, "-l", "app=x", "-o", "json"), json_names),
            ("field", ("get", "cm", "-n", ns, "--field-selector=metadata.name=b"), table_names),
        ):
            out, took = kubectl(proxy, cache, *args)
            answers[label] = parse(out)
            slowest = max(slowest, took)
        return answers, slowest

    expected = {
        "table": ["a", "b", "c"],
        "json": ["a", "b", "c"],
        "label": ["a", "c"],
        "field": ["b"],
    }
    online, _ = run_all()
    assert online == expected

    assert KUBECTL is not None
    watch_out = tmp_path / "watch.out"
    watch_args = ("get", "cm", "-n", ns, "-w", "-o", "name")
    with watch_out.open("w") as sink:
        watch = subprocess.Popen(
            [KUBECTL, f"--kubeconfig={proxy.kubeconfig}", f"--cache-dir={cache}", *watch_args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 10
        while watch_out.read_text().count("configmap/") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch_out.read_text().split() == ["configmap/a", "configmap/b", "configmap/c"]

        with link_cut(cloud):
            detect = wait_link(proxy, up=False, timeout=DETECT_BUDGET)
            print(f"black-hole detected after {detect:.2f}s")
            offline, slowest = run_all()
            print(f"slowest offline kubectl get: {slowest:.2f}s")
            assert offline == expected
            assert slowest < 2.0, f"an offline kubectl get took {slowest:.2f}s"
            # The cloud changes while this node cannot see it.
            create_cm(cloud, ns, "during-cut")
            time.sleep(0.3)
            assert "during-cut" not in watch_out.read_text()
            assert watch.poll() is None, watch_out.read_text()
        wait_link(proxy, up=True, timeout=5)
        create_cm(cloud, ns, "after-heal")
        deadline = time.monotonic() + 10
        while "configmap/after-heal" not in watch_out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.poll() is None, watch_out.read_text()
        printed = watch_out.read_text().split()
        assert printed[3:] == ["configmap/during-cut", "configmap/after-heal"], printed
    finally:
        watch.kill()
        watch.wait()


def test_link_detection_time(cloud: Cloud, proxy: ProxyProcess) -> None:
    assert "[+]upstream reachable" in readyz(proxy)
    times = []
    # Detection is the proxy's own probing: the simulator's run repeats it, one cut will do here.
    for _ in range(2 if cloud.name == "sim" else 1):
        with link_cut(cloud):
            times.append(wait_link(proxy, up=False, timeout=DETECT_BUDGET))
        wait_link(proxy, up=True, timeout=3)
    print(f"black-hole detection: {', '.join(f'{t:.2f}s' for t in times)}")
    # Probes every 0.5 s, two misses with a 1 s probe timeout: never instant either.
    assert all(0.5 < t < DETECT_BUDGET for t in times), times


# -- 2./3. informers across outages --------------------------------------------------


async def start_informer(
    session: aiohttp.ClientSession, proxy: ProxyProcess, ns: str, names: list[str]
) -> Informer:
    informer = Informer(session, proxy.url, f"/api/v1/namespaces/{ns}/configmaps")
    informer.start()
    await asyncio.wait_for(informer.watching.wait(), 10)
    assert sorted(informer.objects) == names
    await eventually(lambda: debug_scope(proxy, ns)["watchers"] >= 1, 5, "the informer's watch")
    return informer


def ints(events: list[tuple[str, str, str]]) -> list[int]:
    return [int(rv) for _, _, rv in events]


async def test_informer_keeps_its_view_across_an_outage(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace, session: Any
) -> None:
    ns = make_namespace(cloud.upstream)
    for name in ("a", "b", "c"):
        create_cm(cloud, ns, name, v="1")
    informer = await start_informer(session, proxy, ns, ["a", "b", "c"])
    try:
        with link_cut(cloud):
            await async_wait_link(proxy, up=False, within=DETECT_BUDGET)
            rv_d = create_cm(cloud, ns, "d", v="1")
            rv_a = update_cm(cloud, ns, "a", v="2")
            delete_cm(cloud, ns, "b")
            rv_a3 = update_cm(cloud, ns, "a", v="3")
            await asyncio.sleep(0.5)
            assert informer.events == [], "nothing can arrive while the link is cut"
        want = cloud_state(cloud, ns)
        await eventually(lambda: informer.objects == want, 10, "the informer to catch up")
        assert informer.lists == 1, "an outage must never force a client relist"
        kinds = [(t, n) for t, n, _ in informer.events]
        assert kinds == [("ADDED", "d"), ("MODIFIED", "a"), ("DELETED", "b"), ("MODIFIED", "a")]
        assert [rv for t, _, rv in informer.events if t != "DELETED"] == [rv_d, rv_a, rv_a3]
        assert ints(informer.events) == sorted(ints(informer.events))
        # Still live after the outage.
        rv_e = create_cm(cloud, ns, "e", v="1")
        await eventually(lambda: "e" in informer.objects, 5, "an event after the outage")
        assert informer.objects["e"][0] == rv_e
        assert informer.lists == 1
        assert debug_scope(proxy, ns)["reflector"]["relists"] == 0
    finally:
        await informer.stop()


async def test_compaction_during_outage_needs_no_client_relist(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace, session: Any
) -> None:
    ns = make_namespace(cloud.upstream)
    for name in ("a", "b", "c", "d"):
        create_cm(cloud, ns, name, v="1")
    informer = await start_informer(session, proxy, ns, ["a", "b", "c", "d"])
    try:
        with link_cut(cloud):
            await async_wait_link(proxy, up=False, within=DETECT_BUDGET)
            update_cm(cloud, ns, "a", v="2")
            delete_cm(cloud, ns, "b")
            create_cm(cloud, ns, "e", v="1")
            update_cm(cloud, ns, "a", v="3")  # two changes of `a` collapse into one
            delete_cm(cloud, ns, "d")
            cloud.upstream.compact()
        want = cloud_state(cloud, ns)
        await eventually(lambda: informer.objects == want, 10, "the informer to catch up")
        assert informer.lists == 1, "the proxy must relist for the client (sec. 3)"
        assert debug_scope(proxy, ns)["reflector"]["relists"] >= 1, "upstream 410 -> relist"
        kinds = sorted((t, n) for t, n, _ in informer.events)
        assert kinds == [("ADDED", "e"), ("DELETED", "b"), ("DELETED", "d"), ("MODIFIED", "a")]
        # The informer resumes from the last RV it saw: it must never go backwards,
        # and a DELETED carries the RV of (or after) the deletion, not the old object's.
        assert ints(informer.events) == sorted(ints(informer.events)), informer.events
        last_before_cut = max(int(rv) for rv, _ in want.values() if rv)
        assert all(int(rv) <= int(informer.rv) for _, _, rv in informer.events)
        assert int(informer.rv) >= last_before_cut
        # A re-watch from the informer's RV works (no 410 from the proxy).
        rv_f = create_cm(cloud, ns, "f", v="1")
        await eventually(lambda: "f" in informer.objects, 5, "an event after recovery")
        assert informer.objects["f"][0] == rv_f
        assert informer.lists == 1
    finally:
        await informer.stop()


# -- 4. restart while offline ----------------------------------------------------------


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with session.get(url, params=params) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_restart_while_offline(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace, session: Any
) -> None:
    ns = make_namespace(cloud.upstream)
    for name in ("a", "b", "c"):
        create_cm(cloud, ns, name, v=name)
    for name in ("p1", "p2"):
        pod = {
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}], "nodeName": "edge-1"},
        }
        upstream(cloud, "POST", f"/api/v1/namespaces/{ns}/pods", pod)
    cms = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps"
    pods = f"{proxy.url}/api/v1/namespaces/{ns}/pods"

    # Populate: lists (forwarded, cached) and an informer-style watch on configmaps.
    status, cm_list = await get_json(session, cms)
    assert status == 200 and len(cm_list["items"]) == 3
    status, pod_list = await get_json(session, pods)
    assert status == 200 and len(pod_list["items"]) == 2
    informer = await start_informer(session, proxy, ns, ["a", "b", "c"])
    await informer.stop()
    status, cached_cms = await get_json(session, cms, resourceVersion="0")
    assert status == 200
    status, cached_pods = await get_json(session, pods, resourceVersion="0")
    assert status == 200
    assert cached_cms["items"] == cm_list["items"]
    assert cached_pods["items"] == pod_list["items"]

    with link_cut(cloud):
        await async_wait_link(proxy, up=False, within=DETECT_BUDGET)
        await asyncio.sleep(0.2)  # let the journal's group commit (50 ms) land
        proxy.kill()
        started = time.monotonic()
        healthy_after = await asyncio.to_thread(proxy.start)
        first = None
        while first is None and time.monotonic() - started < 10:
            status, body = await get_json(session, cms)
            first = body if status == 200 else None
        first_answer = time.monotonic() - started
        print(
            f"restart while offline: healthz after {healthy_after:.2f}s, "
            f"first list answered {first_answer:.2f}s after start"
        )
        assert first is not None
        assert first_answer < RESTART_BUDGET, f"first answer after {first_answer:.2f}s"
        # Same lists, item for item, at the same RV.
        assert first["items"] == cached_cms["items"]
        assert first["metadata"]["resourceVersion"] == cached_cms["metadata"]["resourceVersion"]
        status, offline_pods = await get_json(session, pods)
        assert status == 200
        assert offline_pods["items"] == cached_pods["items"]
        assert offline_pods["metadata"] == cached_pods["metadata"]
        status, selected = await get_json(session, pods, fieldSelector="metadata.name=p2")
        assert status == 200 and [p["metadata"]["name"] for p in selected["items"]] == ["p2"]
        status, one = await get_json(session, f"{cms}/b")
        assert status == 200 and one["data"] == {"v": "b"}
        status, missing = await get_json(session, f"{cms}/nope")
        assert status in (404, 503), missing
        # A watch from the RV the client had before the restart stays open.
        old_rv = cached_cms["metadata"]["resourceVersion"]
        informer = Informer(session, proxy.url, f"/api/v1/namespaces/{ns}/configmaps")
        informer.objects = {
            o["metadata"]["name"]: (o["metadata"]["resourceVersion"], o.get("data"))
            for o in cached_cms["items"]
        }
        informer.rv = old_rv
        informer.task = asyncio.create_task(informer.watch_forever(), name="old-rv watch")
        await asyncio.wait_for(informer.watching.wait(), 5)
        rv_d = create_cm(cloud, ns, "d", v="d")
        await asyncio.sleep(0.3)
        assert informer.events == []
    try:
        await eventually(lambda: "d" in informer.objects, 10, "an event after heal")
        assert informer.objects["d"][0] == rv_d
        assert informer.watches == 1, "the watch from the old RV stayed open"
        assert informer.objects == cloud_state(cloud, ns)
    finally:
        await informer.stop()


# -- 5. watch replay limits -------------------------------------------------------------


async def test_watch_from_before_first_sync_gets_410_in_a_200_stream(
    cloud: Cloud, proxy: ProxyProcess, make_namespace: MakeNamespace, session: Any
) -> None:
    ns = make_namespace(cloud.upstream)
    first_rv = create_cm(cloud, ns, "a")
    create_cm(cloud, ns, "b")
    cms = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps"
    status, listed = await get_json(session, cms)
    assert status == 200
    sync_rv = listed["metadata"]["resourceVersion"]
    assert int(first_rv) < int(sync_rv)

    async def watch_lines(rv: str, seconds: str) -> tuple[int, list[dict[str, Any]]]:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": seconds}
        async with session.get(cms, params=params) as resp:
            lines = [json.loads(line) async for line in resp.content]
            return resp.status, lines

    async def check(attempt: str) -> None:
        status, events = await asyncio.wait_for(watch_lines(str(int(first_rv) - 1), "5"), 5)
        assert status == 200, attempt
        assert len(events) == 1, (attempt, events)
        assert events[0]["type"] == "ERROR"
        err = events[0]["object"]
        assert err["kind"] == "Status" and err["code"] == 410 and err["reason"] == "Expired"
        assert err["message"].startswith("too old resource version:"), err
        # From the sync RV itself the watch is accepted and just times out.
        status, events = await asyncio.wait_for(watch_lines(sync_rv, "1"), 5)
        assert (status, events) == (200, []), attempt

    await check("online")
    with link_cut(cloud):
        await async_wait_link(proxy, up=False, within=DETECT_BUDGET)
        await check("offline")

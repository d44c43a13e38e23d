"""Edge filters through the proxy: a kube-proxy-like client sees exactly the right events.

The client lists and watches EndpointSlices as kube-proxy does (its
User-Agent names the component). The proxy's servicetopology filter keeps
the endpoints of this node's pool; when a node label, a Service annotation
or the endpoints themselves change, the client's watch carries the exact
MODIFIED events the new filtering implies, with RVs that only move forward
and that it can resume from. Offline, the filtered view survives a restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

KUBE_PROXY = {"User-Agent": "kube-proxy/v1.30.2 (linux/amd64) kubernetes/3f7a50f"}
KUBELET = {"User-Agent": "kubelet/v1.30.2 (linux/amd64) kubernetes/3f7a50f"}
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NS_SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
POOL = "apps.openyurt.io/nodepool"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _node(name: str, pool: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {POOL: pool, "kubernetes.io/hostname": name}}}


def _slice(name: str, service: str, nodes: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
            for ip, node in nodes.items()
        ],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }


def _service(name: str, keys: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if keys is not None:
        meta["annotations"] = {"openyurt.io/topologyKeys": keys}
    return {"metadata": meta, "spec": {"ports": [{"port": 80}]}}


def _ips(obj: dict[str, Any]) -> list[str]:
    return [a for ep in obj.get("endpoints") or [] for a in ep["addresses"]]


def _by_name(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Endpoint IPs per slice, without the simulator's own default/kubernetes."""
    return {o["metadata"]["name"]: _ips(o) for o in items if o["metadata"]["name"] != "kubernetes"}


@pytest.fixture()
def cluster() -> Iterator[SimProcess]:
    with SimProcess() as sim:
        yield sim


async def _send(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> None:
    headers = MERGE if method == "PATCH" else {}
    async with session.request(method, url, json=body, headers=headers) as resp:
        assert resp.status < 300, await resp.text()


async def _seed(session: aiohttp.ClientSession, sim: SimProcess) -> None:
    for name, pool in (("edge-1", "a"), ("edge-2", "a"), ("edge-3", "b")):
        await _send(session, "POST", sim.url + "/api/v1/nodes", _node(name, pool))
    services = sim.url + "/api/v1/namespaces/default/services"
    await _send(session, "POST", services, _service("web", "openyurt.io/nodepool"))
    await _send(session, "POST", services, _service("plain", None))
    nodes = {"10.0.0.1": "edge-1", "10.0.0.2": "edge-2", "10.0.0.3": "edge-3"}
    await _send(session, "POST", sim.url + NS_SLICES, _slice("web-x1", "web", nodes))
    await _send(session, "POST", sim.url + NS_SLICES, _slice("plain-x1", "plain", nodes))


async def _list(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


class _Watch:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, wait: float = 10.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.resp.content.readline(), wait)
        assert line, "watch ended"
        event: dict[str, Any] = json.loads(line)
        return event

    async def quiet(self, seconds: float) -> None:
        """Nothing but bookmarks for a while."""
        try:
            while True:
                event = await self.next(seconds)
                assert event["type"] == "BOOKMARK", event
        except TimeoutError:
            pass


def _refilters(proxy: ProxyProcess) -> float:
    """How often the proxy has re-filtered for a node change (its /metrics)."""
    prefix = 'edgeproxy_filter_refilter_duration_seconds_count{input="nodes"} '
    for line in str(proxy.admin("/metrics")).splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def _summary(event: dict[str, Any]) -> tuple[str, str, list[str]]:
    obj = event["object"]
    return event["type"], obj["metadata"]["name"], _ips(obj)


async def test_kube_proxy_sees_exact_events_as_filter_inputs_change(cluster: SimProcess) -> None:
    sim = cluster
    with ProxyProcess(sim.kubeconfig, "--filters=servicetopology", "--node-name=edge-1") as proxy:
        async with aiohttp.ClientSession() as session:
            await _seed(session, sim)
            listed = await _list(session, proxy.url + SLICES, KUBE_PROXY)
            by_name = _by_name(listed["items"])
            # Pool a is edge-1 and edge-2; the plain Service is not filtered.
            assert by_name == {
                "web-x1": ["10.0.0.1", "10.0.0.2"],
                "plain-x1": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            }
            # kubelet is not a client of servicetopology: it sees upstream's slices.
            unfiltered = await _list(session, proxy.url + SLICES, KUBELET)
            assert all(len(ips) == 3 for ips in _by_name(unfiltered["items"]).values())

            rv = listed["metadata"]["resourceVersion"]
            query = f"?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=60"
            seen: list[tuple[str, str, list[str]]] = []
            rvs: list[int] = []
            async with session.get(proxy.url + SLICES + query, headers=KUBE_PROXY) as resp:
                assert resp.status == 200
                watch = _Watch(resp)

                async def expect(*events: tuple[str, str, list[str]]) -> None:
                    for want in events:
                        event = await watch.next()
                        while event["type"] == "BOOKMARK":
                            event = await watch.next()
                        seen.append(_summary(event))
                        rvs.append(int(event["object"]["metadata"]["resourceVersion"]))
                        assert seen[-1] == want, seen
                    await watch.quiet(0.5)

                node = sim.url + "/api/v1/nodes/"
                # 1. A node label changes: edge-2 leaves pool a.
                await _send(
                    session, "PATCH", node + "edge-2", {"metadata": {"labels": {POOL: "b"}}}
                )
                await expect(("MODIFIED", "web-x1", ["10.0.0.1"]))
                # A node change no filter reads (status, a label no Service compares):
                # no event, and nothing is re-filtered.
                refilters = _refilters(proxy)
                await _send(session, "PATCH", node + "edge-3", {"status": {"phase": "Running"}})
                await _send(
                    session, "PATCH", node + "edge-3", {"metadata": {"labels": {"rack": "r9"}}}
                )
                await watch.quiet(0.5)
                assert _refilters(proxy) == refilters
                # 2. edge-3 joins pool a.
                await _send(
                    session, "PATCH", node + "edge-3", {"metadata": {"labels": {POOL: "a"}}}
                )
                await expect(("MODIFIED", "web-x1", ["10.0.0.1", "10.0.0.3"]))
                # 3. The Service's annotation changes to this node only.
                web = sim.url + "/api/v1/namespaces/default/services/web"
                await _send(
                    session,
                    "PATCH",
                    web,
                    {
                        "metadata": {
                            "annotations": {"openyurt.io/topologyKeys": "kubernetes.io/hostname"}
                        }
                    },
                )
                await expect(("MODIFIED", "web-x1", ["10.0.0.1"]))
                # 4. Endpoints move between nodes: none left on edge-1.
                moved = _slice("web-x1", "web", {"10.0.0.7": "edge-2", "10.0.0.8": "edge-3"})
                await _send(session, "PATCH", sim.url + NS_SLICES + "/web-x1", moved)
                await expect(("MODIFIED", "web-x1", []))
                # 5. The annotation goes: every endpoint again.
                await _send(
                    session,
                    "PATCH",
                    web,
                    {"metadata": {"annotations": {"openyurt.io/topologyKeys": None}}},
                )
                await expect(("MODIFIED", "web-x1", ["10.0.0.7", "10.0.0.8"]))
                # 6. The local node goes into pool b and the Service is annotated by pool again.
                await _send(
                    session,
                    "PATCH",
                    web,
                    {
                        "metadata": {
                            "annotations": {"openyurt.io/topologyKeys": "openyurt.io/nodepool"}
                        }
                    },
                )
                await expect(("MODIFIED", "web-x1", ["10.0.0.8"]))  # pool a: edge-1, edge-3
                await _send(
                    session, "PATCH", node + "edge-1", {"metadata": {"labels": {POOL: "b"}}}
                )
                await expect(("MODIFIED", "web-x1", ["10.0.0.7"]))  # pool b: edge-1, edge-2
            assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs), rvs

            # Resuming from any RV the client saw replays exactly what followed it.
            resume = f"?watch=1&resourceVersion={rvs[2]}&timeoutSeconds=3"
            async with session.get(proxy.url + SLICES + resume, headers=KUBE_PROXY) as resp:
                replay = [_summary(json.loads(line)) async for line in resp.content if line.strip()]
            assert replay == seen[3:]

            # A list now is the filtered state, at an RV not older than the last event.
            final = await _list(session, proxy.url + SLICES, KUBE_PROXY)
            assert int(final["metadata"]["resourceVersion"]) >= rvs[-1]
            assert _by_name(final["items"]) == {
                "web-x1": ["10.0.0.7"],
                "plain-x1": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            }
            # A get is filtered too.
            one = await _list(session, proxy.url + NS_SLICES + "/web-x1", KUBE_PROXY)
            assert _ips(one) == ["10.0.0.7"]


async def test_a_watch_from_a_list_after_a_re_filter_gets_no_replay(cluster: SimProcess) -> None:
    """A re-filter of several objects is one batch; a list after it is past the batch."""
    sim = cluster
    with ProxyProcess(sim.kubeconfig, "--filters=servicetopology", "--node-name=edge-1") as proxy:
        async with aiohttp.ClientSession() as session:
            await _seed(session, sim)
            services = sim.url + "/api/v1/namespaces/default/services"
            await _send(session, "POST", services, _service("api", "openyurt.io/nodepool"))
            nodes = {"10.0.0.4": "edge-1", "10.0.0.5": "edge-3"}
            await _send(session, "POST", sim.url + NS_SLICES, _slice("api-x1", "api", nodes))
            listed = await _list(session, proxy.url + SLICES, KUBE_PROXY)
            rv = listed["metadata"]["resourceVersion"]
            query = f"?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"
            async with session.get(proxy.url + SLICES + query, headers=KUBE_PROXY) as resp:
                watch = _Watch(resp)
                # This node moves to pool b: both pool-scoped slices change at once.
                await _send(
                    session,
                    "PATCH",
                    sim.url + "/api/v1/nodes/edge-1",
                    {"metadata": {"labels": {POOL: "b"}}},
                )
                got = sorted([_summary(await watch.next()), _summary(await watch.next())])
                assert got == [
                    ("MODIFIED", "api-x1", ["10.0.0.4", "10.0.0.5"]),
                    ("MODIFIED", "web-x1", ["10.0.0.1", "10.0.0.3"]),
                ]
            # A client (re)starting now lists, then watches from the list's RV.
            after = await _list(session, proxy.url + SLICES, KUBE_PROXY)
            assert _by_name(after["items"])["web-x1"] == ["10.0.0.1", "10.0.0.3"]
            rv = after["metadata"]["resourceVersion"]
            query = f"?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"
            async with session.get(proxy.url + SLICES + query, headers=KUBE_PROXY) as resp:
                await _Watch(resp).quiet(1.0)  # the batch is not sent again


async def test_filtered_view_survives_a_restart_while_offline(
    cluster: SimProcess, tmp_path: Any
) -> None:
    sim = cluster
    args = ("--filters=servicetopology", "--node-name=edge-1")
    cache = tmp_path / "cache"
    async with aiohttp.ClientSession() as session:
        await _seed(session, sim)
        with ProxyProcess(sim.kubeconfig, *args, cache_dir=cache) as proxy:
            query = "?watch=1&timeoutSeconds=2"
            async with session.get(proxy.url + SLICES + query, headers=KUBE_PROXY) as resp:
                assert resp.status == 200
                async for _ in resp.content:
                    pass
            await _send(
                session,
                "PATCH",
                sim.url + "/api/v1/nodes/edge-3",
                {"metadata": {"labels": {POOL: "a"}}},
            )
            await asyncio.sleep(1.0)
            online = await _list(session, proxy.url + SLICES + "?resourceVersion=0", KUBE_PROXY)
        sim.fault(blackhole=True)
        with ProxyProcess(sim.kubeconfig, *args, cache_dir=cache) as proxy:
            offline = await _list(session, proxy.url + SLICES, KUBE_PROXY)
            watch_query = f"?watch=1&resourceVersion={offline['metadata']['resourceVersion']}"
            async with session.get(
                proxy.url + SLICES + watch_query + "&timeoutSeconds=1", headers=KUBE_PROXY
            ) as resp:
                assert resp.status == 200
                assert [line async for line in resp.content if line.strip()] == []
        sim.heal()
    names = _by_name(offline["items"])
    assert names == _by_name(online["items"])
    assert names["web-x1"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


async def test_service_rewrites_per_client(cluster: SimProcess) -> None:
    sim = cluster
    args = (
        "--filters=masterservice,discardcloudservice,nodeportisolation,inclusterconfig,"
        "forwardkubesvctraffic",
        "--master-service-addr=169.254.2.1:10268",
        "--node-name=edge-1",
    )
    kubectl = {"User-Agent": "kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd"}
    services = "/api/v1/namespaces/default/services"
    async with aiohttp.ClientSession() as session:
        await _send(session, "POST", sim.url + "/api/v1/nodes", _node("edge-1", "a"))
        await _send(
            session,
            "POST",
            sim.url + "/api/v1/namespaces/kube-system/configmaps",
            {
                "metadata": {"name": "kube-proxy"},
                "data": {"config.conf": "apiVersion: v1\nclientConnection:\n  kubeconfig: /k\n"},
            },
        )
        for name, listen in (("np-a", "a"), ("np-b", "b,-a"), ("np-any", None)):
            svc: dict[str, Any] = {
                "metadata": {"name": name},
                "spec": {"type": "NodePort", "ports": [{"port": 80}]},
            }
            if listen is not None:
                svc["metadata"]["annotations"] = {"nodeport.openyurt.io/listen": listen}
            await _send(session, "POST", sim.url + services, svc)
        with ProxyProcess(sim.kubeconfig, *args) as proxy:
            # kubelet: the apiserver's Service points at the proxy.
            master = await _list(session, proxy.url + services + "/kubernetes", KUBELET)
            assert master["spec"]["clusterIP"] == "169.254.2.1"
            assert [p["port"] for p in master["spec"]["ports"] if p["name"] == "https"] == [10268]
            # kubectl is no client of any of these filters: upstream's object.
            plain = await _list(session, proxy.url + services + "/kubernetes", kubectl)
            assert plain["spec"]["clusterIP"] != "169.254.2.1"
            # Upstream's YAML would bypass the filter: a filtered client is refused it.
            yaml_get = {**KUBELET, "Accept": "application/yaml"}
            async with session.get(proxy.url + services + "/kubernetes", headers=yaml_get) as r:
                assert r.status == 406
                assert (await r.json())["reason"] == "NotAcceptable"
            # kubelet: kube-proxy's config loses its kubeconfig line.
            cm = "/api/v1/namespaces/kube-system/configmaps/kube-proxy"
            conf = (await _list(session, proxy.url + cm, KUBELET))["data"]["config.conf"]
            assert "  #kubeconfig: /k" in conf
            # kube-proxy: NodePort services of other pools are hidden; kubernetes' slice
            # points at the proxy.
            listed = await _list(session, proxy.url + services, KUBE_PROXY)
            names = sorted(o["metadata"]["name"] for o in listed["items"])
            assert names == ["kubernetes", "np-a", "np-any"]
            slice_ = await _list(session, proxy.url + NS_SLICES + "/kubernetes", KUBE_PROXY)
            assert _ips(slice_) == ["169.254.2.1"]
            # A watch: a LoadBalancer Service annotated for discarding leaves; one
            # allowed in this pool arrives.
            rv = listed["metadata"]["resourceVersion"]
            query = f"?watch=1&resourceVersion={rv}&timeoutSeconds=30"
            async with session.get(proxy.url + services + query, headers=KUBE_PROXY) as resp:
                watch = _Watch(resp)
                lb = {
                    "metadata": {"name": "lb", "annotations": {"svc.openyurt.io/discard": "false"}},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
                }
                await _send(session, "POST", sim.url + services, lb)
                assert _summary(await watch.next())[:2] == ("ADDED", "lb")
                patch = {"metadata": {"annotations": {"svc.openyurt.io/discard": "true"}}}
                await _send(session, "PATCH", sim.url + services + "/lb", patch)
                assert _summary(await watch.next())[:2] == ("DELETED", "lb")
                patch = {"metadata": {"annotations": {"nodeport.openyurt.io/listen": "a"}}}
                await _send(session, "PATCH", sim.url + services + "/np-b", patch)
                assert _summary(await watch.next())[:2] == ("ADDED", "np-b")
                await watch.quiet(0.5)

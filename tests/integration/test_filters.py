"""Edge filters through the proxy: a kube-proxy-like client sees exactly the right events.

The client lists and watches EndpointSlices as kube-proxy does (its
User-Agent names the component). The proxy's servicetopology filter keeps
the endpoints of this node's pool; when a node label, a Service annotation
or the endpoints themselves change, the client's watch carries the exact
MODIFIED events the new filtering implies, with RVs that only move forward
and that it can resume from. Offline, the filtered view survives a restart.

Every test runs against the simulator and the real kube-apiserver. The real
one is shared by the session, so each test has its own namespace, its own
node names and its own pool names (`Edge`), and lists and watches its
namespace's slices: other tests' objects never enter an assertion.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from conftest import Cloud
from edgeproxy.testing import ProxyProcess

KUBE_PROXY = {"User-Agent": "kube-proxy/v1.30.2 (linux/amd64) kubernetes/3f7a50f"}
KUBELET = {"User-Agent": "kubelet/v1.30.2 (linux/amd64) kubernetes/3f7a50f"}
POOL = "apps.openyurt.io/nodepool"
MERGE = {"Content-Type": "application/merge-patch+json"}
DEFAULT_SERVICES = "/api/v1/namespaces/default/services"
DEFAULT_SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"

_tags = itertools.count()


@dataclass(frozen=True)
class Edge:
    """One test's part of a shared cluster: a namespace, and node and pool names of its own."""

    cloud: Cloud
    ns: str
    tag: str

    def node(self, i: int) -> str:
        return f"{self.tag}-edge-{i}"

    def pool(self, letter: str) -> str:
        return f"{self.tag}-{letter}"

    @property
    def up(self) -> str:
        """The upstream itself, for the test's own writes (never through the link)."""
        return self.cloud.direct_url

    @property
    def slices(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices"

    @property
    def services(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/services"

    def filter_args(self, *args: str) -> tuple[str, ...]:
        return (*args, f"--node-name={self.node(1)}")


@pytest.fixture
def edge(cloud: Cloud, make_namespace: Callable[[Any], str]) -> Edge:
    return Edge(cloud, make_namespace(cloud.upstream), f"flt{next(_tags)}")


@pytest.fixture
async def session(cloud: Cloud) -> AsyncIterator[aiohttp.ClientSession]:
    """As admin straight to the upstream (nodes with pool labels are admin's to write)."""
    connector = aiohttp.TCPConnector(ssl=cloud.ssl)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


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
    """Endpoint IPs per slice."""
    return {o["metadata"]["name"]: _ips(o) for o in items}


async def _send(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> None:
    headers = MERGE if method == "PATCH" else {}
    async with session.request(method, url, json=body, headers=headers) as resp:
        assert resp.status < 300, await resp.text()


async def _seed(session: aiohttp.ClientSession, e: Edge) -> None:
    """Nodes 1 and 2 in pool a, 3 in pool b; Services web (by pool) and plain; a slice each."""
    for i, pool in ((1, "a"), (2, "a"), (3, "b")):
        await _send(session, "POST", e.up + "/api/v1/nodes", _node(e.node(i), e.pool(pool)))
    await _send(session, "POST", e.up + e.services, _service("web", "openyurt.io/nodepool"))
    await _send(session, "POST", e.up + e.services, _service("plain", None))
    nodes = {"10.0.0.1": e.node(1), "10.0.0.2": e.node(2), "10.0.0.3": e.node(3)}
    await _send(session, "POST", e.up + e.slices, _slice("web-x1", "web", nodes))
    await _send(session, "POST", e.up + e.slices, _slice("plain-x1", "plain", nodes))


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


async def test_kube_proxy_sees_exact_events_as_filter_inputs_change(
    edge: Edge, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    e = edge
    args = e.filter_args("--filters=servicetopology")
    with ProxyProcess(e.cloud.kubeconfig, *args, workdir=tmp_path / "proxy") as proxy:
        await _seed(session, e)
        listed = await _list(session, proxy.url + e.slices, KUBE_PROXY)
        by_name = _by_name(listed["items"])
        # Pool a is nodes 1 and 2; the plain Service is not filtered.
        assert by_name == {
            "web-x1": ["10.0.0.1", "10.0.0.2"],
            "plain-x1": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        }
        # kubelet is not a client of servicetopology: it sees upstream's slices.
        unfiltered = await _list(session, proxy.url + e.slices, KUBELET)
        assert all(len(ips) == 3 for ips in _by_name(unfiltered["items"]).values())

        rv = listed["metadata"]["resourceVersion"]
        query = f"?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=60"
        seen: list[tuple[str, str, list[str]]] = []
        rvs: list[int] = []
        async with session.get(proxy.url + e.slices + query, headers=KUBE_PROXY) as resp:
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

            def node(i: int) -> str:
                return f"{e.up}/api/v1/nodes/{e.node(i)}"

            def pool(letter: str) -> dict[str, Any]:
                return {"metadata": {"labels": {POOL: e.pool(letter)}}}

            # 1. A node label changes: node 2 leaves pool a.
            await _send(session, "PATCH", node(2), pool("b"))
            await expect(("MODIFIED", "web-x1", ["10.0.0.1"]))
            # A node change no filter reads (its status, a label no Service
            # compares): no event, and nothing is re-filtered.
            refilters = _refilters(proxy)
            ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
            await _send(session, "PATCH", node(3) + "/status", {"status": {"conditions": [ready]}})
            await _send(session, "PATCH", node(3), {"metadata": {"labels": {"rack": "r9"}}})
            await watch.quiet(0.5)
            assert _refilters(proxy) == refilters
            # 2. Node 3 joins pool a.
            await _send(session, "PATCH", node(3), pool("a"))
            await expect(("MODIFIED", "web-x1", ["10.0.0.1", "10.0.0.3"]))
            # 3. The Service's annotation changes to this node only.
            web = e.up + e.services + "/web"

            def keys(value: str | None) -> dict[str, Any]:
                return {"metadata": {"annotations": {"openyurt.io/topologyKeys": value}}}

            await _send(session, "PATCH", web, keys("kubernetes.io/hostname"))
            await expect(("MODIFIED", "web-x1", ["10.0.0.1"]))
            # 4. Endpoints move between nodes: none left on node 1.
            moved = _slice("web-x1", "web", {"10.0.0.7": e.node(2), "10.0.0.8": e.node(3)})
            await _send(session, "PATCH", e.up + e.slices + "/web-x1", moved)
            await expect(("MODIFIED", "web-x1", []))
            # 5. The annotation goes: every endpoint again.
            await _send(session, "PATCH", web, keys(None))
            await expect(("MODIFIED", "web-x1", ["10.0.0.7", "10.0.0.8"]))
            # 6. The Service is annotated by pool again, then the local node goes into pool b.
            await _send(session, "PATCH", web, keys("openyurt.io/nodepool"))
            await expect(("MODIFIED", "web-x1", ["10.0.0.8"]))  # pool a: nodes 1 and 3
            await _send(session, "PATCH", node(1), pool("b"))
            await expect(("MODIFIED", "web-x1", ["10.0.0.7"]))  # pool b: nodes 1 and 2
        assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs), rvs

        # Resuming from any RV the client saw replays exactly what followed it.
        resume = f"?watch=1&resourceVersion={rvs[2]}&timeoutSeconds=3"
        async with session.get(proxy.url + e.slices + resume, headers=KUBE_PROXY) as resp:
            replay = [_summary(json.loads(line)) async for line in resp.content if line.strip()]
        assert replay == seen[3:]

        # A list now is the filtered state, at an RV not older than the last event.
        final = await _list(session, proxy.url + e.slices, KUBE_PROXY)
        assert int(final["metadata"]["resourceVersion"]) >= rvs[-1]
        assert _by_name(final["items"]) == {
            "web-x1": ["10.0.0.7"],
            "plain-x1": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        }
        # A get is filtered too.
        one = await _list(session, proxy.url + e.slices + "/web-x1", KUBE_PROXY)
        assert _ips(one) == ["10.0.0.7"]


async def test_a_watch_from_a_list_after_a_re_filter_gets_no_replay(
    edge: Edge, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    """A re-filter of several objects is one batch; a list after it is past the batch."""
    e = edge
    args = e.filter_args("--filters=servicetopology")
    with ProxyProcess(e.cloud.kubeconfig, *args, workdir=tmp_path / "proxy") as proxy:
        await _seed(session, e)
        await _send(session, "POST", e.up + e.services, _service("api", "openyurt.io/nodepool"))
        nodes = {"10.0.0.4": e.node(1), "10.0.0.5": e.node(3)}
        await _send(session, "POST", e.up + e.slices, _slice("api-x1", "api", nodes))
        listed = await _list(session, proxy.url + e.slices, KUBE_PROXY)
        rv = listed["metadata"]["resourceVersion"]
        query = f"?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"
        async with session.get(proxy.url + e.slices + query, headers=KUBE_PROXY) as resp:
            watch = _Watch(resp)
            # This node moves to pool b: both pool-scoped slices change at once.
            await _send(
                session,
                "PATCH",
                f"{e.up}/api/v1/nodes/{e.node(1)}",
                {"metadata": {"labels": {POOL: e.pool("b")}}},
            )
            got = sorted([_summary(await watch.next()), _summary(await watch.next())])
            assert got == [
                ("MODIFIED", "api-x1", ["10.0.0.4", "10.0.0.5"]),
                ("MODIFIED", "web-x1", ["10.0.0.1", "10.0.0.3"]),
            ]
        # A client (re)starting now lists, then watches from the list's RV.
        after = await _list(session, proxy.url + e.slices, KUBE_PROXY)
        assert _by_name(after["items"])["web-x1"] == ["10.0.0.1", "10.0.0.3"]
        rv = after["metadata"]["resourceVersion"]
        query = f"?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"
        async with session.get(proxy.url + e.slices + query, headers=KUBE_PROXY) as resp:
            await _Watch(resp).quiet(1.0)  # the batch is not sent again


async def test_filtered_view_survives_a_restart_while_offline(
    edge: Edge, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    e = edge
    args = e.filter_args("--filters=servicetopology")
    cache = tmp_path / "cache"
    await _seed(session, e)
    with ProxyProcess(e.cloud.kubeconfig, *args, cache_dir=cache) as proxy:
        query = "?watch=1&timeoutSeconds=2"
        async with session.get(proxy.url + e.slices + query, headers=KUBE_PROXY) as resp:
            assert resp.status == 200
            async for _ in resp.content:
                pass
        await _send(
            session,
            "PATCH",
            f"{e.up}/api/v1/nodes/{e.node(3)}",
            {"metadata": {"labels": {POOL: e.pool("a")}}},
        )
        await asyncio.sleep(1.0)
        online = await _list(session, proxy.url + e.slices + "?resourceVersion=0", KUBE_PROXY)
    e.cloud.link.blackhole()
    with ProxyProcess(e.cloud.kubeconfig, *args, cache_dir=cache) as proxy:
        offline = await _list(session, proxy.url + e.slices, KUBE_PROXY)
        watch_query = f"?watch=1&resourceVersion={offline['metadata']['resourceVersion']}"
        async with session.get(
            proxy.url + e.slices + watch_query + "&timeoutSeconds=1", headers=KUBE_PROXY
        ) as resp:
            assert resp.status == 200
            assert [line async for line in resp.content if line.strip()] == []
    e.cloud.link.restore()
    names = _by_name(offline["items"])
    assert names == _by_name(online["items"])
    assert names["web-x1"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


async def _put_kube_proxy_config(session: aiohttp.ClientSession, e: Edge) -> None:
    """kube-system/kube-proxy with a kubeconfig line; the cluster may have one already."""
    path = "/api/v1/namespaces/kube-system/configmaps"
    body = {
        "metadata": {"name": "kube-proxy"},
        "data": {"config.conf": "apiVersion: v1\nclientConnection:\n  kubeconfig: /k\n"},
    }
    async with session.post(e.up + path, json=body) as resp:
        if resp.status == 409:
            await _send(session, "PATCH", e.up + path + "/kube-proxy", {"data": body["data"]})
        else:
            assert resp.status == 201, await resp.text()


async def test_service_rewrites_per_client(
    edge: Edge, session: aiohttp.ClientSession, tmp_path: Any
) -> None:
    e = edge
    args = e.filter_args(
        "--filters=masterservice,discardcloudservice,nodeportisolation,inclusterconfig,"
        "forwardkubesvctraffic",
        "--master-service-addr=169.254.2.1:10268",
    )
    kubectl = {"User-Agent": "kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd"}
    await _send(session, "POST", e.up + "/api/v1/nodes", _node(e.node(1), e.pool("a")))
    await _put_kube_proxy_config(session, e)
    listen_on = {"np-a": e.pool("a"), "np-b": f"{e.pool('b')},-{e.pool('a')}", "np-any": None}
    for name, listen in listen_on.items():
        svc: dict[str, Any] = {
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]},
        }
        if listen is not None:
            svc["metadata"]["annotations"] = {"nodeport.openyurt.io/listen": listen}
        await _send(session, "POST", e.up + e.services, svc)
    with ProxyProcess(e.cloud.kubeconfig, *args, workdir=tmp_path / "proxy") as proxy:
        # kubelet: the apiserver's Service points at the proxy.
        master = await _list(session, proxy.url + DEFAULT_SERVICES + "/kubernetes", KUBELET)
        assert master["spec"]["clusterIP"] == "169.254.2.1"
        assert [p["port"] for p in master["spec"]["ports"] if p["name"] == "https"] == [10268]
        # kubectl is no client of any of these filters: upstream's object.
        plain = await _list(session, proxy.url + DEFAULT_SERVICES + "/kubernetes", kubectl)
        assert plain["spec"]["clusterIP"] != "169.254.2.1"
        # Upstream's YAML would bypass the filter: a filtered client is refused it.
        yaml_get = {**KUBELET, "Accept": "application/yaml"}
        async with session.get(proxy.url + DEFAULT_SERVICES + "/kubernetes", headers=yaml_get) as r:
            assert r.status == 406
            assert (await r.json())["reason"] == "NotAcceptable"
        # kubelet: kube-proxy's config loses its kubeconfig line.
        cm = "/api/v1/namespaces/kube-system/configmaps/kube-proxy"
        conf = (await _list(session, proxy.url + cm, KUBELET))["data"]["config.conf"]
        assert "  #kubeconfig: /k" in conf
        # kube-proxy: NodePort services of other pools are hidden; kubernetes' slice
        # points at the proxy.
        listed = await _list(session, proxy.url + e.services, KUBE_PROXY)
        names = sorted(o["metadata"]["name"] for o in listed["items"])
        assert names == ["np-a", "np-any"]
        everywhere = await _list(session, proxy.url + "/api/v1/services", KUBE_PROXY)
        assert "kubernetes" in {o["metadata"]["name"] for o in everywhere["items"]}
        slice_ = await _list(session, proxy.url + DEFAULT_SLICES + "/kubernetes", KUBE_PROXY)
        assert _ips(slice_) == ["169.254.2.1"]
        assert [p["port"] for p in slice_["ports"]] == [10268]
        # A watch: a LoadBalancer Service annotated for discarding leaves; one
        # allowed in this pool arrives.
        rv = listed["metadata"]["resourceVersion"]
        query = f"?watch=1&resourceVersion={rv}&timeoutSeconds=30"
        async with session.get(proxy.url + e.services + query, headers=KUBE_PROXY) as resp:
            watch = _Watch(resp)
            lb = {
                "metadata": {"name": "lb", "annotations": {"svc.openyurt.io/discard": "false"}},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
            }
            await _send(session, "POST", e.up + e.services, lb)
            assert _summary(await watch.next())[:2] == ("ADDED", "lb")
            patch = {"metadata": {"annotations": {"svc.openyurt.io/discard": "true"}}}
            await _send(session, "PATCH", e.up + e.services + "/lb", patch)
            assert _summary(await watch.next())[:2] == ("DELETED", "lb")
            patch = {"metadata": {"annotations": {"nodeport.openyurt.io/listen": e.pool("a")}}}
            await _send(session, "PATCH", e.up + e.services + "/np-b", patch)
            assert _summary(await watch.next())[:2] == ("ADDED", "np-b")
            await watch.quiet(0.5)

"""The real kubelet behind edge-proxy, cut off from a real kube-apiserver.

kubemark's hollow kubelet is the kubelet's own code on a fake container
runtime: it registers its Node, renews its Lease, lists and watches its Pods
and the ConfigMaps and Secrets they mount, and reports pod status, all
through the proxy (protobuf, as the real one asks). The cloud link is a relay
the test black-holes. While cut off, the kubelet is restarted and the proxy
is `kill -9`ed and restarted; both must come back from the proxy's journal.
When the link returns the node is Ready again, its Lease renews, no pod was
deleted or recreated, and upstream sees no relist storm.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.controlplane import ControlPlane
from edgeproxy.kubemark import HollowKubelet
from edgeproxy.link import LinkRelay
from edgeproxy.testing import ProxyProcess, wait_until

NODE = "hollow-edge-1"
PODS = 6


def get(real: ControlPlane, path: str) -> Any:
    status, body = real.request("GET", path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def post(real: ControlPlane, path: str, obj: dict[str, Any]) -> None:
    status, body = real.request("POST", path, obj)
    assert status == 201, (path, status, body[:300])


def node_ready(real: ControlPlane) -> bool:
    status, body = real.request("GET", f"/api/v1/nodes/{NODE}")
    if status != 200:
        return False
    conditions = json.loads(body)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pods_of(real: ControlPlane, ns: str) -> dict[str, dict[str, Any]]:
    items = get(real, f"/api/v1/namespaces/{ns}/pods")["items"]
    return {p["metadata"]["name"]: p for p in items}


def lease_renewed(real: ControlPlane) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    status, body = real.request("GET", path)
    return str(json.loads(body)["spec"].get("renewTime", "")) if status == 200 else ""


def upstream_lists(real: ControlPlane, since: int) -> dict[str, int]:
    """LISTs kube-apiserver answered after byte `since` of its audit log, per resource.

    The test's own reads (urllib's User-Agent) are left out: what counts is
    what the node (the proxy, for the kubelet) asked.
    """
    counts: dict[str, int] = {}
    with real.audit_log.open("rb") as log:
        log.seek(since)
        for line in log:
            event = json.loads(line)
            if event["verb"] != "list" or event["stage"] != "ResponseComplete":
                continue
            if event["userAgent"].startswith("Python-urllib"):
                continue
            resource = event.get("objectRef", {}).get("resource", "")
            counts[resource] = counts.get(resource, 0) + 1
    return counts


@pytest.fixture
def node_setup(
    real: ControlPlane, tmp_path: Path, make_namespace: Callable[[Any], str]
) -> Iterator[tuple[LinkRelay, ProxyProcess, HollowKubelet, str]]:
    link = LinkRelay("127.0.0.1", real.port)
    kubeconfig = tmp_path / "through-link.kubeconfig"
    kubeconfig.write_text(real.kubeconfig.read_text().replace(real.url, link.url("https")))
    proxy = ProxyProcess(kubeconfig, workdir=tmp_path / "proxy")
    kubelet = HollowKubelet(proxy.kubeconfig, tmp_path, NODE)
    ns = make_namespace(real)
    try:
        yield link, proxy, kubelet, ns
    finally:
        kubelet.stop()
        proxy.close()
        link.close()
        real.request("DELETE", f"/api/v1/nodes/{NODE}")


def test_hollow_kubelet_survives_cut_restart_and_crash(
    real: ControlPlane, node_setup: tuple[LinkRelay, ProxyProcess, HollowKubelet, str]
) -> None:
    link, proxy, kubelet, ns = node_setup
    post(real, f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"},
        "data": {"mode": "edge"},
    })  # fmt: skip
    post(real, f"/api/v1/namespaces/{ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
        "stringData": {"token": "s3cret"},
    })  # fmt: skip
    kubelet.start()
    wait_until(lambda: node_ready(real), 60, f"node Ready\n{kubelet.log()}")
    for i in range(PODS):
        post(real, f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"app-{i}"},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "app", "image": "registry.local/app:1", "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/app"},
                    {"name": "secret", "mountPath": "/var/run/app"},
                ]}],
                "volumes": [
                    {"name": "config", "configMap": {"name": "app-config"}},
                    {"name": "secret", "secret": {"secretName": "app-secret"}},
                ],
            },
        })  # fmt: skip

    def all_running() -> bool:
        pods = pods_of(real, ns)
        return len(pods) == PODS and all(
            p["status"].get("phase") == "Running" for p in pods.values()
        )

    wait_until(all_running, 60, f"pods Running\n{kubelet.log()}")
    before = pods_of(real, ns)
    wait_until(lambda: lease_renewed(real) != "", 30, "a Lease")

    # -- cut off: the kubelet restarts, then the proxy crashes and restarts -----
    link.blackhole()
    wait_until(
        lambda: "edgeproxy_upstream_healthy" in proxy.admin("/metrics") and not _healthy(proxy),
        20,
        "proxy sees the cut",
    )
    kubelet.stop()
    kubelet.start()
    # The restarted kubelet reads its node, pods, ConfigMaps and Secrets from the
    # proxy's cache: it gets its pods back (the fake runtime "starts" them again).
    wait_until(
        lambda: _kubelet_has_pods(kubelet, ns),
        60,
        f"kubelet restarted offline runs its pods\n{kubelet.log()}",
    )
    proxy.kill()
    proxy.start()
    time.sleep(3)  # the kubelet's watches reconnect to the restarted proxy, still offline
    assert kubelet.proc is not None and kubelet.proc.poll() is None, kubelet.log()

    # -- restore ---------------------------------------------------------------
    audit_mark = real.audit_log.stat().st_size
    lease_before = lease_renewed(real)
    link.restore()
    wait_until(lambda: _healthy(proxy), 20, "proxy sees the link back")
    wait_until(lambda: node_ready(real), 60, "node Ready after restore")
    wait_until(lambda: lease_renewed(real) > lease_before, 30, "Lease renewed after restore")
    wait_until(all_running, 60, "pods Running after restore")
    after = pods_of(real, ns)
    # None deleted or recreated; their status kept.
    assert {n: p["metadata"]["uid"] for n, p in after.items()} == {
        n: p["metadata"]["uid"] for n, p in before.items()
    }
    assert all(p["metadata"].get("deletionTimestamp") is None for p in after.values())
    assert all(p["status"]["phase"] == "Running" for p in after.values())
    # No relist storm: the proxy resumed its watches; upstream answered at most
    # one LIST per resource (a reflector whose history was compacted away).
    time.sleep(3)
    lists = upstream_lists(real, audit_mark)
    assert all(n <= 1 for n in lists.values()), lists


def _healthy(proxy: ProxyProcess) -> bool:
    return any(
        line.startswith("edgeproxy_upstream_healthy{") and line.endswith(" 1.0")
        for line in proxy.admin("/metrics").splitlines()
    )


def _kubelet_has_pods(kubelet: HollowKubelet, ns: str) -> bool:
    # This run's sync loop got our pods from the API (the proxy's cache).
    added = [
        line
        for line in kubelet.log_path.read_text(errors="replace").splitlines()
        if "SyncLoop ADD" in line
    ]
    return all(any(f"{ns}/app-{i}" in line for line in added) for i in range(PODS))

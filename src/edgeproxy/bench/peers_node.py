"""One edge node behind one target: the hollow kubelet, kube-proxy and coredns.

The peers bench compares ways into the cloud (straight, edge-proxy in each
mode, YurtHub) by what an edge node's own clients do through them, not by
synthetic requests: kubemark's hollow kubelet with its pods and the
ConfigMaps and Secrets they mount, a kube-proxy-like client-go informer
(Services and EndpointSlices with kube-proxy's label selectors) and a
coredns-like one (Services, EndpointSlices, Namespaces), both protobuf as
the real ones ask. `EdgeNode` starts them against a target's URL and reads
what they saw back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeproxy.bench.procstat import ProcGroup
from edgeproxy.clientgo import Informer
from edgeproxy.controlplane import ControlPlane
from edgeproxy.kubemark import HollowKubelet

# kube-proxy skips headless Services (and those of other proxies, a second
# term the informer program's one-selector --watch syntax cannot carry).
KUBE_PROXY_SELECTOR = "!service.kubernetes.io/headless"
SLICES = "discovery.k8s.io/v1/endpointslices"
KUBE_PROXY_WATCHES = (
    f"v1/services,label={KUBE_PROXY_SELECTOR}",
    f"{SLICES},label={KUBE_PROXY_SELECTOR}",
)
COREDNS_WATCHES = ("v1/services", SLICES, "v1/namespaces")
# User-Agents as the real components send them: YurtHub caches by this prefix.
KUBE_PROXY_UA = "kube-proxy/v1.37.2 (linux/amd64) kubernetes/bench"
COREDNS_UA = "coredns/v1.12.1 (linux/amd64)"
MOUNTED = 10  # ConfigMaps and Secrets the pods mount (pod i mounts number i % 10 of each)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` until true; returns the seconds it took, raises RuntimeError on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def _post(control: ControlPlane, path: str, body: dict[str, Any]) -> None:
    status, answer = control.request("POST", path, body)
    if status not in (201, 409):
        raise RuntimeError(f"POST {path}: HTTP {status} {answer[:200]!r}")


class EdgeNode:
    """Node `name`'s clients, in namespace `ns`, through `url` (+ `kubeconfig` for the kubelet)."""

    def __init__(
        self,
        control: ControlPlane,
        name: str,
        ns: str,
        workdir: Path,
        *,
        url: str,
        kubeconfig: Path,
        token: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.control = control
        self.name = name
        self.ns = ns
        self.workdir = workdir
        self.url = url
        self.token = token
        self.ca_file = ca_file
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubelet = HollowKubelet(kubeconfig, workdir, name)
        self.informers: list[Informer] = []

    # -- the kubelet -------------------------------------------------------

    def start_kubelet(self, pods: int, timeout: float = 180) -> float:
        """Pods bound to this node, their mounts, the kubelet; seconds to Ready + all Running."""
        c = self.control
        _post(c, "/api/v1/namespaces", {"metadata": {"name": self.ns}})
        for k in range(MOUNTED):
            _post(c, f"/api/v1/namespaces/{self.ns}/configmaps", {
                "metadata": {"name": f"config-{k}"}, "data": {"mode": "edge", "k": str(k)},
            })  # fmt: skip
            _post(c, f"/api/v1/namespaces/{self.ns}/secrets", {
                "metadata": {"name": f"secret-{k}"}, "stringData": {"token": f"s3cret-{k}"},
            })  # fmt: skip
        t0 = time.monotonic()
        self.kubelet.start()
        wait_until(self.node_ready, timeout, f"node {self.name} Ready\n{self.kubelet.log()}")
        for i in range(pods):
            _post(c, f"/api/v1/namespaces/{self.ns}/pods", {
                "metadata": {"name": f"app-{i:02d}"},
                "spec": {
                    "nodeName": self.name,
                    "containers": [{"name": "app", "image": "registry.local/app:1", "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/app"},
                        {"name": "secret", "mountPath": "/var/run/app"},
                    ]}],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"config-{i % MOUNTED}"}},
                        {"name": "secret", "secret": {"secretName": f"secret-{i % MOUNTED}"}},
                    ],
                },
            })  # fmt: skip
        wait_until(
            lambda: self.running_pods() == pods,
            timeout,
            f"{pods} pods Running on {self.name}\n{self.kubelet.log()}",
        )
        return time.monotonic() - t0

    def node_ready(self, since: datetime | None = None) -> bool:
        """Node Ready=True in the cloud (with a heartbeat no older than `since`'s second)."""
        status, body = self.control.request("GET", f"/api/v1/nodes/{self.name}")
        if status != 200:
            return False
        conditions = json.loads(body)["status"].get("conditions", [])
        for c in conditions:
            if c["type"] != "Ready" or c["status"] != "True":
                continue
            if since is None:
                return True
            # RFC 3339 to the second: a heartbeat in the restore's own second counts.
            beat = datetime.fromisoformat(c["lastHeartbeatTime"].replace("Z", "+00:00"))
            return beat >= since.astimezone(UTC).replace(microsecond=0)
        return False

    def restart_kubelet(self) -> None:
        """Stop the hollow kubelet and start it again (its pods are in the cloud, or a cache)."""
        self.kubelet.stop()
        self.kubelet.start()

    def running_pods(self) -> int:
        status, body = self.control.request("GET", f"/api/v1/namespaces/{self.ns}/pods")
        if status != 200:
            return 0
        items = json.loads(body)["items"]
        return sum(p.get("status", {}).get("phase") == "Running" for p in items)

    def lease_renewed_after(self, when: datetime) -> bool:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        status, body = self.control.request("GET", path)
        if status != 200:
            return False
        renew = json.loads(body)["spec"].get("renewTime")
        if not renew:
            return False
        return datetime.fromisoformat(renew.replace("Z", "+00:00")) > when.astimezone(UTC)

    # -- the informers -----------------------------------------------------

    def start_informer(self, name: str, watches: tuple[str, ...], user_agent: str) -> Informer:
        informer = Informer(
            self.url,
            watches,
            workdir=self.workdir,
            name=name,
            user_agent=user_agent,
            token=self.token,
            ca_file=self.ca_file,
        )
        self.informers.append(informer)
        return informer

    def start_informers(self, timeout: float = 180) -> float:
        """kube-proxy and coredns; seconds until both have synced."""
        t0 = time.monotonic()
        for informer in (
            self.start_informer("kube-proxy", KUBE_PROXY_WATCHES, KUBE_PROXY_UA),
            self.start_informer("coredns", COREDNS_WATCHES, COREDNS_UA),
        ):
            informer.wait_synced(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def clients(self) -> ProcGroup | None:
        pids = [i.proc.pid for i in self.informers if i.proc.poll() is None]
        if self.kubelet.proc is not None and self.kubelet.proc.poll() is None:
            pids.append(self.kubelet.proc.pid)
        return ProcGroup(pids[0], others=tuple(pids[1:])) if pids else None

    def slice_events(self, informer: Informer) -> set[tuple[str, str]]:
        """(key, resourceVersion) of every EndpointSlice event `informer` handled."""
        return {
            (r["key"], r.get("resourceVersion", ""))
            for r in informer.records("event")
            if r["watch"].startswith(SLICES)
        }

    def has_seen(self, key: str, rv: str) -> bool:
        """Whether both long-running informers handled EndpointSlice `key` at `rv`."""
        return all((key, rv) in self.slice_events(i) for i in self.informers[:2])

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
        self.kubelet.stop()
        self.control.request("DELETE", f"/api/v1/nodes/{self.name}")

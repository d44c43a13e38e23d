"""The shared data of the scale, restart and bandwidth suites, seeded once per session.

A mid-sized edge cluster as the cloud sees it: `pods` Pods over 100 Nodes
(so a kubelet's node-scoped list is 1%), `services` Services each with an
Endpoints object of `endpoints_per_service` addresses. Seeded straight into
the upstream (never through a target), once, before the first suite that
needs it, so every target of every suite reads the same objects: into the
simulator through its control port, into a real apiserver through its API,
CREATE_CONCURRENCY POSTs in flight (what that takes is in the report).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeproxy.bench import objects
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.kubeclient import CREATE_CONCURRENCY, Api

POD_NS = "bench-pods"
SVC_NS = "bench-svc"
PODS_PATH = f"/api/v1/namespaces/{POD_NS}/pods"
SERVICES_PATH = f"/api/v1/namespaces/{SVC_NS}/services"
ENDPOINTS_PATH = f"/api/v1/namespaces/{SVC_NS}/endpoints"
# The node whose kubelet the bandwidth suite plays.
LOCAL_NODE = objects.node_name(7)


@dataclass(frozen=True, slots=True)
class DatasetSizes:
    pods: int
    services: int
    endpoints_per_service: int


@dataclass(slots=True)
class Dataset:
    sizes: DatasetSizes
    seeded: bool = False
    nodes_seeded: bool = False
    seconds: float = 0.0
    # One counter for every change any suite makes: each patch writes a value
    # never written before, so none is a no-op (which would bring no event).
    changes: int = 0

    async def ensure_nodes(self, writer: Api) -> None:
        """Create the Nodes once (the filters suite needs them, not the rest)."""
        if self.nodes_seeded:
            return
        self.seconds += await writer.create_all(
            "/api/v1/nodes", [objects.node_body(i) for i in range(objects.NODES)]
        )
        self.nodes_seeded = True

    async def ensure(self, writer: Api) -> None:
        """Create everything once; later calls return at once."""
        if self.seeded:
            return
        s = self.sizes
        await writer.ensure_namespace(POD_NS)
        await writer.ensure_namespace(SVC_NS)
        await self.ensure_nodes(writer)
        self.seconds += await writer.create_all(
            PODS_PATH, [objects.pod_body(POD_NS, i) for i in range(s.pods)]
        )
        self.seconds += await writer.create_all(
            SERVICES_PATH, [objects.service_body(SVC_NS, i) for i in range(s.services)]
        )
        self.seconds += await writer.create_all(
            ENDPOINTS_PATH,
            [objects.endpoints_body(SVC_NS, i, s.endpoints_per_service) for i in range(s.services)],
        )
        self.seeded = True

    def seeded_note(self, upstream: Upstream) -> str:
        s = self.sizes
        what = f"{s.pods:,} Pods, {s.services:,} Services and Endpoints, {objects.NODES} Nodes"
        if upstream.sim is not None:
            return f"dataset ({what}) seeded straight into the simulator in {self.seconds:.1f} s"
        return (
            f"dataset ({what}) seeded through {upstream.kind}'s API"
            f" ({CREATE_CONCURRENCY} POSTs in flight) in {self.seconds:.1f} s"
        )

    async def churn_endpoints(self, writer: Api) -> tuple[int, int]:
        """One endpoints change, as a rollout makes: returns (resourceVersion, answered ns)."""
        self.changes += 1
        i = self.changes % self.sizes.services
        body = {"metadata": {"annotations": {"bench/generation": str(self.changes)}}}
        return await writer.patch(f"{ENDPOINTS_PATH}/svc-{i:04d}", body)

    async def churn_local_pod(self, writer: Api) -> tuple[int, int]:
        """A change to one of the local node's Pods (status-like, as a kubelet sees)."""
        self.changes += 1
        i = 7 + objects.NODES * (self.changes % max(1, self.sizes.pods // objects.NODES))
        name = objects.pod_body(POD_NS, i)["metadata"]["name"]
        body = {"metadata": {"annotations": {"bench/seq": str(self.changes)}}}
        return await writer.patch(f"{PODS_PATH}/{name}", body)

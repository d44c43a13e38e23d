"""The cloud's side of the peers bench: the Services and EndpointSlices, and their churn.

An edge node's kube-proxy and coredns watch every Service and
EndpointSlice of the cluster, so the dataset is the cluster's (1,000
Services x 50 endpoints at full size) and the churn is what a cluster's
rollouts do to it: a steady rate of changes, nine in ten to an
EndpointSlice. Every change is made straight to kube-apiserver (never
through a target's link: a change made during an outage must reach the
cloud) and logged as (resource, key, resourceVersion), so the bench can
tell which changes each client never got (peers_delivery).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from edgeproxy.bench import objects
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.peers_delivery import Write

SVC_NS = "peers-svc"
SERVICES = "v1/services"
SLICES = "discovery.k8s.io/v1/endpointslices"
# Every change of every Churn, across runs: a merge patch that changes
# nothing is a no-op (same resourceVersion, no event).
_SEQ = itertools.count(1)


async def seed(upstream: Upstream, services: int, endpoints_per_service: int) -> float:
    """The Services and their EndpointSlices; returns the seconds it took."""
    async with upstream.writer() as writer:
        await writer.ensure_namespace(SVC_NS)
        seconds = await writer.create_all(
            f"/api/v1/namespaces/{SVC_NS}/services",
            [objects.service_body(SVC_NS, i) for i in range(services)],
        )
        seconds += await writer.create_all(
            f"/apis/discovery.k8s.io/v1/namespaces/{SVC_NS}/endpointslices",
            [objects.endpointslice_body(SVC_NS, i, endpoints_per_service) for i in range(services)],
        )
    return seconds


class Churn:
    """Changes in the cloud at a steady rate, in a thread of its own, straight to kube-apiserver.

    Nine in ten touch an EndpointSlice (as a rollout does), one in ten a
    Service. `last` is the latest EndpointSlice (key, resourceVersion): a
    client that has handled it has caught up. `writes` is every change made.
    """

    def __init__(self, upstream: Upstream, services: int, rate: float) -> None:
        self.upstream = upstream
        self.services = services
        self.rate = rate
        self.n = 0
        self.last = ("", "")
        self.writes: list[Write] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.error is not None:
            raise RuntimeError(f"churn failed: {self.error}")

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _loop(self) -> None:
        slices = f"/apis/discovery.k8s.io/v1/namespaces/{SVC_NS}/endpointslices"
        async with self.upstream.writer() as writer:
            t0 = time.monotonic()
            done = 0
            while not self._stop.is_set():
                self.n += 1
                i = self.n % self.services
                body = {"metadata": {"annotations": {"bench/seq": str(next(_SEQ))}}}
                if self.n % 10 == 0:
                    name = f"svc-{i:04d}"
                    rv, _ = await writer.patch(f"/api/v1/namespaces/{SVC_NS}/services/{name}", body)
                    self.writes.append(Write(SERVICES, f"{SVC_NS}/{name}", str(rv)))
                else:
                    name = objects.endpointslice_name(i)
                    rv, _ = await writer.patch(f"{slices}/{name}", body)
                    self.writes.append(Write(SLICES, f"{SVC_NS}/{name}", str(rv)))
                    self.last = (f"{SVC_NS}/{name}", str(rv))
                done += 1
                ahead = t0 + done / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

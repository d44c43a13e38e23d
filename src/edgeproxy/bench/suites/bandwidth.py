"""Bandwidth: cloud bytes against bytes served, for one edge node's usual clients.

The clients of a typical edge node, each an informer (list with
`resourceVersion=0`, then watch) through the target:

- **kubelet-like**: its own Pods (`fieldSelector=spec.nodeName=<node>`) and
  its own Node;
- **kube-proxy-like**: all Services and all Endpoints;
- **coredns-like**: all Services, all Endpoints and all Namespaces.

Per run, for `bandwidth_seconds`, the cloud changes at `churn_per_s` (every
other change an Endpoints rollout step, the others a change to one of the
node's Pods), and halfway through every client restarts (relists and
watches again), as after a component upgrade or a node reboot. **served** is
what the clients read; **cloud** is what the proxy received from upstream in
the same time, counted by a TCP relay every target reaches the upstream
through (`relay.py`; headers included, so direct's cloud is a little over
its served bytes). One unmeasured round of the clients
first, so the figures are a long-running proxy's, not its first fill.
"""

from __future__ import annotations

import asyncio
import math
import time
from urllib.parse import quote

from edgeproxy.bench import dataset
from edgeproxy.bench.baselines import TARGETS, Target
from edgeproxy.bench.informer import Informer
from edgeproxy.bench.kubeclient import Api
from edgeproxy.bench.procstat import Usage
from edgeproxy.bench.relay import Relay, relayed, start_relay
from edgeproxy.bench.runner import Run
from edgeproxy.bench.session import Session, SuiteResult

NAME = "bandwidth"
TITLE = "cloud bytes vs bytes served: kubelet-, kube-proxy- and coredns-like clients"
OWN_UPSTREAM_ONLY = "creates the shared dataset of Pods, Nodes, Services and Endpoints"
SYNC_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 10.0

CLIENTS: dict[str, tuple[str, ...]] = {
    "kubelet": (
        "/api/v1/pods?fieldSelector=" + quote(f"spec.nodeName={dataset.LOCAL_NODE}"),
        "/api/v1/nodes?fieldSelector=" + quote(f"metadata.name={dataset.LOCAL_NODE}"),
    ),
    "kube-proxy": ("/api/v1/services", "/api/v1/endpoints"),
    "coredns": ("/api/v1/services", "/api/v1/endpoints", "/api/v1/namespaces"),
}


def _informers(api: Api) -> list[Informer]:
    return [
        Informer(api, path, name=f"{client}:{path}")
        for client, paths in CLIENTS.items()
        for path in paths
    ]


async def _start(informers: list[Informer]) -> None:
    for informer in informers:
        informer.start()
    await asyncio.wait_for(
        asyncio.gather(*(informer.synced.wait() for informer in informers)), SYNC_TIMEOUT
    )


class Bandwidth:
    def __init__(self, session: Session, relay: Relay) -> None:
        self.s = session
        self.relay = relay
        self.writer = session.upstream.writer()

    async def prepare(self, target: Target) -> None:
        await self.s.dataset.ensure(self.writer)
        async with target.api() as api:
            informers = _informers(api)
            try:
                await _start(informers)
            finally:
                for informer in informers:
                    await informer.stop()

    async def _churn(self, seconds: float) -> dict[str, int]:
        """Changes at churn_per_s for `seconds`; the last resourceVersion per resource."""
        last: dict[str, int] = {}
        rate = self.s.sizes.churn_per_s
        t0 = time.monotonic()
        k = 0
        while (now := time.monotonic()) - t0 < seconds:
            if (wait := t0 + k / rate - now) > 0:
                await asyncio.sleep(wait)
            if k % 2:
                last["pods"], _ = await self.s.dataset.churn_local_pod(self.writer)
            else:
                last["endpoints"], _ = await self.s.dataset.churn_endpoints(self.writer)
            k += 1
        return last

    async def once(self, target: Target, i: int) -> Run:
        half = self.s.sizes.bandwidth_seconds / 2
        usage = Usage(target.procs).start() if target.procs else None
        up_procs = self.s.upstream.procs()
        upstream = Usage(up_procs).start() if up_procs else None
        cloud0 = self.relay.down_bytes
        served = 0
        relists = 0.0
        async with target.api() as api:
            informers = _informers(api)
            try:
                await _start(informers)
                await self._churn(half)
                for informer in informers:  # every component restarts
                    await informer.restart()
                await asyncio.gather(*(informer.synced.wait() for informer in informers))
                last = await self._churn(half)
                # Every client watching a changed resource must get its last change.
                watching = [
                    (informer, last[r])
                    for informer in informers
                    for r in last
                    if informer.path.startswith(f"/api/v1/{r}")
                ]
                current = [await inf.wait_for([rv], DELIVERY_TIMEOUT) for inf, rv in watching]
            finally:
                for informer in informers:
                    await informer.stop()
                    served += informer.bytes_read
                    relists += informer.relists
        cloud = self.relay.down_bytes - cloud0
        return {
            "served to clients (MB)": served / 1e6,
            "from the cloud (MB)": cloud / 1e6,
            "cloud / served (%)": 100 * cloud / served if served else math.nan,
            "proxy CPU (s)": usage.cpu() if usage else math.nan,
            "upstream CPU (s)": upstream.cpu() if upstream else math.nan,
            "peak RSS (MB)": usage.peak_mb() if usage else math.nan,
            "clients up to date (%)": 100 * sum(current) / max(len(current), 1),
            "client relists (410)": relists,
        }


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    upstream = session.upstream
    relay = await start_relay(upstream)
    bandwidth = Bandwidth(session, relay)
    try:
        await session.each_target(
            result,
            TARGETS,
            bandwidth.once,
            prepare=bandwidth.prepare,
            upstream=relayed(upstream, relay, session.workdir / "relay"),
        )
    finally:
        await bandwidth.writer.close()
        await relay.stop()
    result.notes.append(
        "cloud = bytes from the upstream through a counting TCP relay (headers included); "
        "clients ask for identity-encoded JSON"
    )
    return result

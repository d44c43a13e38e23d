"""Scale: big lists and a watch fan-out over a mid-sized cluster's data.

On the shared dataset (10,000 ~1 KB Pods over 100 nodes, 1,000 Services with
an Endpoints object of 50 addresses each), per target and run: three lists
of all Pods (~10 MB), three of all Endpoints, five node-scoped Pod lists as a
kubelet makes (`fieldSelector=spec.nodeName=...`, 1%), then 100 watchers on
the Endpoints while `watch_changes` Endpoints changes are written upstream
at 200/s; every watcher must get every change. Two unmeasured lists of each
collection first (they let a cache-first proxy start its reflectors). CPU and
peak RSS are the target process's over the whole run.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time

from edgeproxy.bench import dataset
from edgeproxy.bench.baselines import TARGETS, Target
from edgeproxy.bench.informer import Informer
from edgeproxy.bench.kubeclient import Api
from edgeproxy.bench.procstat import Usage
from edgeproxy.bench.runner import Run, percentile
from edgeproxy.bench.session import Session, SuiteResult

NAME = "scale"
TITLE = "10k pods, 1k services x 50 endpoints, 100 watchers"
OWN_UPSTREAM_ONLY = "creates 10k Pods, 100 Nodes, 1k Services and their Endpoints"
WRITE_RATE = 200.0
WRITERS = 16
DELIVERY_TIMEOUT = 30.0
NODE_PODS = f"/api/v1/pods?fieldSelector=spec.nodeName%3D{dataset.LOCAL_NODE}"


async def _median_list(api: Api, path: str, times: int, expect: int) -> float:
    seconds = []
    for _ in range(times):
        listed = await api.list(path)
        if listed.items != expect:
            raise RuntimeError(f"{path}: {listed.items} items, expected {expect}")
        seconds.append(listed.seconds)
    return 1000 * statistics.median(seconds)


class Scale:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.writer = session.upstream.writer()

    async def prepare(self, target: Target) -> None:
        await self.s.dataset.ensure(self.writer)
        async with target.api() as api:
            for _ in range(2):
                await api.list(dataset.PODS_PATH)
                await api.list(dataset.ENDPOINTS_PATH)
                await api.list(NODE_PODS)

    async def _writes(self, count: int) -> dict[int, int]:
        """`count` Endpoints changes at WRITE_RATE/s; resourceVersion -> answered ns."""
        answered: dict[int, int] = {}
        t0 = time.monotonic()
        next_i = 0

        async def writer() -> None:
            nonlocal next_i
            while next_i < count:
                i = next_i
                next_i += 1
                if (wait := t0 + i / WRITE_RATE - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                rv, at = await self.s.dataset.churn_endpoints(self.writer)
                answered[rv] = at

        await asyncio.gather(*(writer() for _ in range(min(WRITERS, count))))
        return answered

    async def fanout(self, target: Target, run: Run) -> None:
        sizes = self.s.sizes
        async with self.s.upstream.api() as up:
            rv = (await up.list(dataset.ENDPOINTS_PATH + "?limit=1")).resource_version
        async with target.api() as api:
            watchers = [
                Informer(
                    api, dataset.ENDPOINTS_PATH, list_first=False, resource_version=rv, name=f"w{k}"
                ).start()
                for k in range(sizes.watchers)
            ]
            try:
                sentinel = await self._writes(1)
                for w in watchers:
                    if not await w.wait_for(list(sentinel), DELIVERY_TIMEOUT):
                        raise RuntimeError(f"{target.name}: watcher never got the first change")
                answered = await self._writes(sizes.watch_changes)
                t_written = time.monotonic()
                for w in watchers:
                    await w.wait_for(
                        list(answered), max(1.0, DELIVERY_TIMEOUT - (time.monotonic() - t_written))
                    )
            finally:
                for w in watchers:
                    await w.stop()
        lags = [
            (w.arrivals[rv] - at) / 1e6
            for w in watchers
            for rv, at in answered.items()
            if rv in w.arrivals
        ]
        expected = len(answered) * len(watchers)
        run["watch lag p50 (ms)"] = percentile(lags, 0.5)
        run["watch lag p99 (ms)"] = percentile(lags, 0.99)
        run["events delivered (%)"] = 100 * len(lags) / expected if expected else math.nan
        run["client relists"] = float(sum(w.relists for w in watchers))

    async def once(self, target: Target, i: int) -> Run:
        sizes = self.s.sizes
        usage = Usage(target.procs).start() if target.procs else None
        up_procs = self.s.upstream.procs()
        upstream = Usage(up_procs).start() if up_procs else None
        run: Run = {}
        async with target.api() as api:
            run[f"list {sizes.pods} pods (ms)"] = await _median_list(
                api, dataset.PODS_PATH, 3, sizes.pods
            )
            run[f"list {sizes.services} endpoints (ms)"] = await _median_list(
                api, dataset.ENDPOINTS_PATH, 3, sizes.services
            )
            node_pods = sizes.pods // 100 + (1 if sizes.pods % 100 > 7 else 0)
            run["list a node's pods (ms)"] = await _median_list(api, NODE_PODS, 5, node_pods)
        await self.fanout(target, run)
        run["proxy CPU (s)"] = usage.cpu() if usage else math.nan
        run["upstream CPU (s)"] = upstream.cpu() if upstream else math.nan
        run["peak RSS (MB)"] = usage.peak_mb() if usage else math.nan
        return run


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    scale = Scale(session)
    try:
        await session.each_target(result, TARGETS, scale.once, prepare=scale.prepare)
    finally:
        await scale.writer.close()
    for name, figures in result.targets.items():
        if figures.get("events delivered (%)", {}).get("min", 100.0) < 100.0:
            result.failures.append(f"{name}: not every watcher got every change")
    result.notes.append(session.dataset.seeded_note(session.upstream))
    return result

"""The watchcache suite's watch fan-out: 100 watchers while the cloud writes 1,000/s.

Per target and run: `watchers` informers (watch only, from the current
resourceVersion) on `fanout_objects` ConfigMaps through the target; one
unmeasured write that every watcher must see (all streams open, the proxy's
reflector running); then `fanout_rate` merge patches a second for
`fanout_seconds`, round robin over the objects, straight to the simulator
(its control port, never through the target). Each patch embeds the
writer's monotonic clock in the object (`data.t`, just before sending), so a
watcher's latency is its read time minus the embedded stamp: writer, sim,
target and watcher all count. Every watcher must get every write, each
resourceVersion above the previous one.
"""

from __future__ import annotations

import asyncio
import math
import time

from edgeproxy.bench.baselines import Target
from edgeproxy.bench.informer import Informer
from edgeproxy.bench.kubeclient import Api, BenchError
from edgeproxy.bench.procstat import Usage
from edgeproxy.bench.runner import Run, percentile
from edgeproxy.bench.session import Session
from edgeproxy.bench.suites.restart import wait_synced

NAMESPACE = "bench-watchcache"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
TARGETS = ("direct", "strict", "cache-first")
# Patches in flight: enough that a 2-5 ms write does not hold back the schedule.
WRITERS = 32
CATCH_UP_TIMEOUT = 60.0
SENTINEL_TIMEOUT = 30.0


def _name(i: int) -> str:
    return f"wc-{i:03d}"


class Fanout:
    def __init__(self, session: Session, writer: Api) -> None:
        self.s = session
        self.writer = writer
        self.seeded = False
        self.seq = 0  # every patch writes a new value: none is a no-op

    async def seed(self) -> None:
        if self.seeded:
            return
        await self.writer.ensure_namespace(NAMESPACE)
        bodies = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": _name(i), "namespace": NAMESPACE},
                "data": {"t": "0", "seq": "0"},
            }
            for i in range(self.s.sizes.fanout_objects)
        ]
        await self.writer.create_all(PATH, bodies)
        self.seeded = True

    async def prepare(self, target: Target) -> None:
        """A proxy starts the scope's reflector (one list + watch), so the runs find it synced."""
        await self.seed()
        if target.proxy is None:
            return
        async with target.api() as api:
            informer = Informer(api, PATH, name="warm-up").start()
            try:
                await asyncio.wait_for(informer.synced.wait(), SENTINEL_TIMEOUT)
                await wait_synced(target, "configmaps", self.s.sizes.fanout_objects)
            finally:
                await informer.stop()

    async def writes(self, count: int, rate: float) -> tuple[list[int], float]:
        """`count` patches at `rate`/s; their resourceVersions and the achieved rate."""
        rvs: list[int] = []
        objects = self.s.sizes.fanout_objects
        t0 = time.monotonic()
        next_i = 0

        async def one_writer() -> None:
            nonlocal next_i
            while next_i < count:
                i = next_i
                next_i += 1
                if (wait := t0 + i / rate - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                self.seq += 1
                body = {"data": {"t": str(time.monotonic_ns()), "seq": str(self.seq)}}
                rv, _ = await self.writer.patch(f"{PATH}/{_name(self.seq % objects)}", body)
                rvs.append(rv)

        await asyncio.gather(*(one_writer() for _ in range(min(WRITERS, count))))
        return rvs, count / (time.monotonic() - t0)

    async def once(self, target: Target, i: int) -> Run:
        sizes = self.s.sizes
        async with self.s.upstream.api() as up:
            rv = (await up.list(PATH + "?limit=1")).resource_version
        async with target.api() as api:
            watchers = [
                Informer(api, PATH, list_first=False, resource_version=rv, name=f"w{k}").start()
                for k in range(sizes.watchers)
            ]
            try:
                sentinel, _ = await self.writes(1, 1.0)
                for w in watchers:
                    if not await w.wait_for(sentinel, SENTINEL_TIMEOUT):
                        raise BenchError(f"{target.name}: a watcher never got the first write")
                ooo = {w.name: w.out_of_order for w in watchers}
                usage = Usage(target.procs).start() if target.procs else None
                up_procs = self.s.upstream.procs()
                upstream = Usage(up_procs).start() if up_procs else None
                count = max(1, int(sizes.fanout_rate * sizes.fanout_seconds))
                rvs, rate = await self.writes(count, sizes.fanout_rate)
                deadline = time.monotonic() + CATCH_UP_TIMEOUT
                for w in watchers:
                    await w.wait_for(rvs, max(0.1, deadline - time.monotonic()))
                proxy_cpu = usage.cpu() if usage else math.nan
                upstream_cpu = upstream.cpu() if upstream else math.nan
            finally:
                for w in watchers:
                    await w.stop()
        expected = sorted(rvs)
        lags: list[float] = []
        complete = 0
        for w in watchers:
            got = [r for r in w.arrivals if r >= expected[0]]
            complete += got == expected and w.out_of_order == ooo[w.name] and w.relists == 0
            lags += [(w.arrivals[r] - w.stamps[r]) / 1e6 for r in got if r in w.stamps]
        return {
            "watch latency p50 (ms)": percentile(lags, 0.5),
            "watch latency p90 (ms)": percentile(lags, 0.9),
            "watch latency p99 (ms)": percentile(lags, 0.99),
            "watch latency max (ms)": max(lags, default=math.nan),
            "watchers with every event in order (%)": 100 * complete / len(watchers),
            "writes/s achieved": rate,
            "watcher relists": float(sum(w.relists for w in watchers)),
            "proxy CPU, writes + catch-up (s)": proxy_cpu,
            "upstream CPU, writes + catch-up (s)": upstream_cpu,
        }

"""Outage: cut the cloud link, keep serving, restore, catch up — what clients live through.

Per target and run: an informer (list + watch, as client-go) runs through the
target on `outage_objects` ConfigMaps. Then the link is black-holed
(requests and watch streams stall; nothing answers, as with an iptables
DROP): the simulator cuts its own API port; the real apiserver is reached
through a relay (`relay.link()`), which cuts instead. Then:

- **detection**: how long until the proxy reports the link down (`/readyz`);
- **offline lists**: up to 5 selected lists through the target, each allowed
  2 s (a plain proxy stalls with the upstream, so it fails the first);
- `outage_changes` changes are written in the cloud during the cut (through
  the simulator's never-faulted control port, or straight to the real
  apiserver, not through the relay); the cut lasts
  `outage_seconds` from its start;
- **restore**: the link comes back; how long until the proxy reports it up;
- **catch-up**: from the restore until the informer has every change made
  during the cut; **relists** the informer had to make (410 Gone) and
  **rewatches** (a stream that ended and was resumed).
"""

from __future__ import annotations

import asyncio
import math
import time

from edgeproxy.bench import objects
from edgeproxy.bench.baselines import TARGETS, Target
from edgeproxy.bench.informer import Informer
from edgeproxy.bench.kubeclient import BenchError
from edgeproxy.bench.procstat import Usage
from edgeproxy.bench.relay import LINK_NOTE, link
from edgeproxy.bench.runner import Run, percentile
from edgeproxy.bench.session import Session, SuiteResult

NAME = "outage"
TITLE = "link cut: detection, offline lists, restore, catch-up, relists"
OWN_UPSTREAM_ONLY = "cuts the link to the upstream"
NAMESPACE = "bench-outage"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
SELECTED = PATH + "?labelSelector=type%3Doutage"
OFFLINE_LISTS = 5
OFFLINE_TIMEOUT = 2.0
CATCH_UP_TIMEOUT = 30.0


class Outage:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.writer = session.upstream.writer()
        self.seeded = False
        self.seq = 0

    async def prepare(self, target: Target) -> None:
        if not self.seeded:
            await self.writer.ensure_namespace(NAMESPACE)
            await self.writer.create_all(
                PATH,
                [
                    objects.challenge_configmap(NAMESPACE, f"outage-{k:03d}", "outage")
                    for k in range(self.s.sizes.outage_objects)
                ],
            )
            self.seeded = True
        async with target.api() as api:
            for _ in range(2):
                await api.list(SELECTED)

    async def _offline_lists(self, target: Target, run: Run) -> None:
        seconds: list[float] = []
        async with target.api() as api:
            for _ in range(OFFLINE_LISTS):
                try:
                    listed = await api.list(SELECTED, within=OFFLINE_TIMEOUT)
                except BenchError:
                    break
                if listed.items != self.s.sizes.outage_objects:
                    break
                seconds.append(listed.seconds)
        run["offline lists ok (%)"] = 100 * len(seconds) / OFFLINE_LISTS
        run["offline list p50 (ms)"] = 1000 * percentile(seconds, 0.5)

    async def once(self, target: Target, i: int) -> Run:
        link = target.upstream
        sizes = self.s.sizes
        usage = Usage(target.procs).start() if target.procs else None
        run: Run = {}
        async with target.api() as api:
            informer = Informer(api, SELECTED, name=f"outage-{target.name}-{i}").start()
            try:
                await asyncio.wait_for(informer.synced.wait(), 10)
                await asyncio.sleep(0.2)  # the watch is open
                cut = time.monotonic()
                await link.cut()
                try:
                    run["detection (s)"] = (
                        await target.wait_link(up=False) if target.proxy else math.nan
                    )
                    await self._offline_lists(target, run)
                    written = []
                    for _ in range(sizes.outage_changes):
                        self.seq += 1
                        body = {"metadata": {"labels": {"seq": str(self.seq)}}}
                        name = f"outage-{self.seq % sizes.outage_objects:03d}"
                        rv, _ = await self.writer.patch(f"{PATH}/{name}", body)
                        written.append(rv)
                    await asyncio.sleep(max(0.0, cut + sizes.outage_seconds - time.monotonic()))
                finally:
                    await link.heal()
                healed_ns = time.monotonic_ns()
                run["restore seen (ms)"] = (
                    1000 * await target.wait_link(up=True) if target.proxy else math.nan
                )
                if await informer.wait_for(written, CATCH_UP_TIMEOUT):
                    last = max(informer.arrivals[rv] for rv in written)
                    run["catch-up after restore (ms)"] = max(0, last - healed_ns) / 1e6
                else:
                    run["catch-up after restore (ms)"] = math.nan
                    self.s.say(f"outage / {target.name}: the informer missed changes")
                run["client relists"] = float(informer.relists)
                run["client rewatches"] = float(informer.rewatches)
            finally:
                await informer.stop()
        run["proxy CPU (s)"] = usage.cpu() if usage else math.nan
        run["peak RSS (MB)"] = usage.peak_mb() if usage else math.nan
        return run


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    outage = Outage(session)
    try:
        async with link(session.upstream, session.workdir / "outage-link") as upstream:
            if upstream.relay is not None:
                result.notes.append(LINK_NOTE)
            await session.each_target(
                result, TARGETS, outage.once, prepare=outage.prepare, upstream=upstream
            )
    finally:
        await outage.writer.close()
    for name, figures in result.targets.items():
        if "catch-up after restore (ms)" not in figures or (
            figures["catch-up after restore (ms)"]["n"] < session.sizes.runs
        ):
            result.failures.append(f"{name}: the informer missed changes made during the cut")
    return result

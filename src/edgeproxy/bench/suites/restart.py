"""Restart: a cold start from the journal with 10,000 objects, while cut off.

Per proxy mode, once: a fresh proxy lists the shared dataset's 10,000 Pods
and watches them until its cache holds them synced (and journaled), then is
killed with SIGKILL (a crash or power loss). Per run: the link is
black-holed, the proxy is started again on the same cache directory, and
the figures are the seconds until it answers `/healthz`, the seconds from
the start until a client has the complete list of all Pods (served from the
journal, the cloud being unreachable), the CPU and peak RSS of the new
process up to then, and the journal's size on disk. Then the link is
restored and the proxy killed again for the next run. The **direct** column
is the same list straight from the (reachable) upstream, for scale; nginx
holds no state to start from.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

from edgeproxy.bench import dataset
from edgeproxy.bench.baselines import PROXIES, TARGETS, Target
from edgeproxy.bench.kubeclient import BenchError
from edgeproxy.bench.procstat import ProcGroup, cpu_seconds, peak_rss_mb
from edgeproxy.bench.relay import LINK_NOTE, link
from edgeproxy.bench.runner import Run
from edgeproxy.bench.session import Session, SuiteResult

NAME = "restart"
TITLE = "cold start from the journal with 10k objects, offline"
OWN_UPSTREAM_ONLY = "cuts the link to the upstream and creates 10k Pods"
SYNC_TIMEOUT = 120.0
LIST_TIMEOUT = 60.0


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


async def wait_synced(target: Target, resource: str, objects: int) -> None:
    """Poll /debug/cache until a synced scope of `resource` holds `objects`."""
    assert target.proxy is not None
    deadline = time.monotonic() + SYNC_TIMEOUT
    while time.monotonic() < deadline:
        for scope in target.proxy.admin("/debug/cache")["scopes"]:
            if resource in scope["scope"] and scope["synced"] and scope["objects"] >= objects:
                return
        await asyncio.sleep(0.1)
    raise BenchError(f"{target.name}: no synced {resource} scope with {objects} objects")


class Restart:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.writer = session.upstream.writer()

    async def prepare(self, target: Target) -> None:
        await self.s.dataset.ensure(self.writer)
        if target.proxy is None:
            return
        pods = self.s.sizes.pods
        async with target.api() as api:
            listed = await api.list(dataset.PODS_PATH)
            url = (
                f"{api.url}{dataset.PODS_PATH}?watch=true&resourceVersion={listed.resource_version}"
            )
            async with api.http.get(url) as watch:
                if watch.status != 200:
                    raise BenchError(f"{target.name}: pod watch HTTP {watch.status}")
                await wait_synced(target, "pods", pods)
                # A moment for the journal to reach the disk before the crash.
                await asyncio.sleep(1.0)
        target.proxy.kill()

    async def once(self, target: Target, i: int) -> Run:
        pods = self.s.sizes.pods
        run: Run = {}
        if target.proxy is None:  # direct: the same list from the reachable upstream
            async with target.api() as api:
                t0 = time.monotonic()
                listed = await api.list(dataset.PODS_PATH, within=LIST_TIMEOUT)
                run[f"first complete list of {pods} pods (s)"] = time.monotonic() - t0
                if listed.items != pods:
                    raise BenchError(f"direct: {listed.items} pods, expected {pods}")
            return run
        link = target.upstream
        await link.cut()
        try:
            t0 = time.monotonic()
            run["start to /healthz (s)"] = target.proxy.start()
            assert target.proxy.proc is not None
            pid = target.proxy.proc.pid
            target.procs = ProcGroup(pid)
            async with target.api() as api:
                listed = await api.list(dataset.PODS_PATH, within=LIST_TIMEOUT)
            run[f"first complete list of {pods} pods (s)"] = time.monotonic() - t0
            if listed.items != pods:
                raise BenchError(f"{target.name}: offline list had {listed.items} of {pods} pods")
            run["proxy CPU to first list (s)"] = cpu_seconds(pid)
            run["peak RSS (MB)"] = peak_rss_mb(pid)
            run["journal on disk (MB)"] = _dir_mb(target.proxy.cache_dir)
        finally:
            await link.heal()
            target.proxy.kill()
        return run


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    restart = Restart(session)
    skip = {"nginx": "nginx holds no state to start from"}
    try:
        async with link(session.upstream, session.workdir / "restart-link") as upstream:
            if upstream.relay is not None:
                result.notes.append(LINK_NOTE)
            await session.each_target(
                result,
                TARGETS,
                restart.once,
                prepare=restart.prepare,
                skip=skip,
                upstream=upstream,
            )
    finally:
        await restart.writer.close()
    if result.targets:
        result.notes.append("direct = the same list from the reachable upstream, for scale")
    for name in PROXIES:
        figures = result.targets.get(name, {})
        if figures and math.isnan(figures.get("peak RSS (MB)", {}).get("median", math.nan)):
            result.failures.append(f"{name}: no figures")
    return result

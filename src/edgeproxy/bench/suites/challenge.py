"""The ACK@Edge challenge's four suites (PRIOR-ART.md), through every target.

Per run, in a fresh namespace: **functional** (100 labelled ConfigMaps
created upstream, listed through the target; each patched 3x with a random
`watch` label 50 ms apart and once with `watch=success` while an informer
runs through the target; it must converge within 5 s), **filter** (100
ConfigMaps, the odd ones `skip-`-prefixed; the list must hold exactly the 50
others — the proxies run with `--drop-name-prefix=skip-`, the plain
baselines cannot pass this), **consistency** (100 ConfigMaps created through
the target, two unselected lists, then the link is black-holed and a
selected list must return all 100; where the link cannot be cut, someone's
cluster, the list is checked online), **resourceusage** (1,000
~1.1 KB ConfigMaps created through the target once; one client lists them in
a tight loop, then wrk loads the same list). Deviations: loops of seconds,
not 60 s; the outage lasts until the proxy notices it, not 30-60 s.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from urllib.parse import quote

from edgeproxy.bench import objects, wrk
from edgeproxy.bench.baselines import INSTALL_WRK, PROXIES, TARGETS, Target
from edgeproxy.bench.informer import Informer
from edgeproxy.bench.kubeclient import Api, BenchError
from edgeproxy.bench.procstat import Usage
from edgeproxy.bench.relay import LINK_NOTE, link
from edgeproxy.bench.runner import Run, percentile
from edgeproxy.bench.session import Session, SuiteResult

NAME = "challenge"
TITLE = "ACK@Edge challenge suites (functional, filter, consistency, resourceusage)"
# Runs anywhere: ConfigMaps in namespaces of its own (the cut only where the bench owns the link).
OWN_UPSTREAM_ONLY = ""
SKIP_PREFIX = "skip-"
# The challenge checks the informer 5 s after the last patch.
CONVERGE_TIMEOUT = 5.0
# An offline list that takes longer than this is a failed one (the upstream stalls).
OFFLINE_TIMEOUT = 3.0


def _selector(kind: str) -> str:
    return "?labelSelector=" + quote(f"{objects.CHALLENGE_LABEL}=benchmark,type={kind}")


def _cm_path(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps"


class Challenge:
    def __init__(self, session: Session, result: SuiteResult) -> None:
        self.s = session
        self.result = result
        self.n = session.sizes.challenge_objects
        self.writer = session.upstream.writer()

    async def functional(self, api: Api, ns: str, run: Run) -> bool:
        path = _cm_path(ns)
        names = [f"functional-{k:03d}" for k in range(self.n)]
        await self.writer.create_all(
            path, [objects.challenge_configmap(ns, n, "functional") for n in names]
        )
        listed = await api.list(path + _selector("functional"), names=True)
        run["functional list (ms)"] = 1000 * listed.seconds
        informer = Informer(api, path + _selector("functional"), name=f"informer-{ns}").start()
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)

            answered: dict[int, int] = {}

            async def patch_one(name: str) -> None:
                for value in [f"v{random.randrange(1000)}" for _ in range(3)] + ["success"]:
                    body = {"metadata": {"labels": {"watch": value}}}
                    rv, at = await self.writer.patch(f"{path}/{name}", body)
                    answered[rv] = at
                    if value != "success":
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(patch_one(n) for n in names))
            delivered = await informer.wait_for(list(answered), CONVERGE_TIMEOUT)
            converged = all(informer.view.get(n, {}).get("watch") == "success" for n in names)
            lags = [
                max(0, informer.arrivals[rv] - at) / 1e6
                for rv, at in answered.items()
                if rv in informer.arrivals
            ]
        finally:
            await informer.stop()
        ok = delivered and converged
        run["watch event lag p50 (ms)"] = percentile(lags, 0.5)
        run["watch event lag max (ms)"] = max(lags, default=math.nan)
        return sorted(listed.names) == names and ok

    async def filter(self, api: Api, ns: str) -> bool:
        path = _cm_path(ns)
        names = [f"{SKIP_PREFIX if k % 2 else ''}benchmark-filter-{k:03d}" for k in range(self.n)]
        await self.writer.create_all(
            path, [objects.challenge_configmap(ns, n, "filter") for n in names]
        )
        listed = await api.list(path + _selector("filter"), names=True)
        return sorted(listed.names) == sorted(n for n in names if not n.startswith(SKIP_PREFIX))

    async def consistency(self, target: Target, api: Api, ns: str, run: Run) -> bool:
        path = _cm_path(ns)
        names = [f"consistency-{k:03d}" for k in range(self.n)]
        await api.create_all(
            path, [objects.challenge_configmap(ns, n, "consistency") for n in names]
        )
        for _ in range(2):
            await api.list(path)
        link = target.upstream
        if not link.faults:  # someone's cluster: the link cannot be cut, check online only
            listed = await api.list(path + _selector("consistency"), names=True)
            return sorted(listed.names) == names
        await link.cut()
        try:
            if target.proxy is not None:
                await target.wait_link(up=False)
            else:
                await asyncio.sleep(1.0)
            try:
                listed = await api.list(
                    path + _selector("consistency"), names=True, within=OFFLINE_TIMEOUT
                )
            except BenchError:
                return False
            run["offline list (ms)"] = 1000 * listed.seconds
            return sorted(listed.names) == names
        finally:
            await link.heal()
            if target.proxy is not None:
                await target.wait_link(up=True)

    async def resourceusage(self, target: Target, api: Api, first: bool, run: Run) -> bool:
        ns = f"ru-{target.name}"
        path = _cm_path(ns) + "?labelSelector=type%3Dresourceusage"
        count = self.s.sizes.resourceusage
        if first:
            await self.writer.ensure_namespace(ns)
            bodies = [objects.resourceusage_body(ns, k) for k in range(count)]
            await api.create_all(_cm_path(ns), bodies)
            for _ in range(5):  # warm-up; lets a cache-first proxy sync its reflector
                await api.list(path)
        usage = Usage(target.procs).start() if target.procs else None
        upstream_procs = self.s.upstream.procs()
        upstream = Usage(upstream_procs).start() if upstream_procs else None
        latencies: list[float] = []
        bad = 0
        deadline = time.perf_counter() + self.s.sizes.loop_seconds
        while time.perf_counter() < deadline:
            listed = await api.list(path)
            latencies.append(listed.seconds)
            bad += listed.items != count
        lists = len(latencies)
        run["lists/s (1 client)"] = lists / sum(latencies)
        run["list p50 (ms)"] = 1000 * percentile(latencies, 0.5)
        run["list p99 (ms)"] = 1000 * percentile(latencies, 0.99)
        run["proxy CPU per list (ms)"] = 1000 * usage.cpu() / lists if usage else math.nan
        run["upstream CPU per list (ms)"] = 1000 * upstream.cpu() / lists if upstream else math.nan
        if wrk.available():
            # Straight to an HTTPS upstream wrk needs its token (wrk does not verify the cert).
            headers = {"Accept": "application/json"}
            if target.name == "direct":
                headers |= target.upstream.headers
            cpu0 = target.procs.cpu_seconds() if target.procs else 0.0
            load = await asyncio.to_thread(
                wrk.run, target.url + path, headers, self.s.sizes.wrk_seconds
            )
            run["lists/s (wrk, 8 conns)"] = load["requests_per_s"]
            run["wrk p99 (ms)"] = 1000 * load["latency_p99_s"]
            cpu = target.procs.cpu_seconds() - cpu0 if target.procs else math.nan
            run["proxy CPU per list, wrk (ms)"] = 1000 * cpu / max(load["requests"], 1)
            bad += load["errors"]
        run["peak RSS (MB)"] = usage.peak_mb() if usage else math.nan
        return bad == 0

    async def once(self, target: Target, i: int) -> Run:
        ns = f"ch-{target.name}-{i}"
        await self.writer.ensure_namespace(ns)
        run: Run = {}
        async with target.api() as api:
            checks = {
                "functional": await self.functional(api, ns, run),
                "filter": await self.filter(api, ns),
                "consistency": await self.consistency(target, api, ns, run),
                "resourceusage": await self.resourceusage(target, api, i == 0, run),
            }
        failed = [k for k, ok in checks.items() if not ok]
        if failed and i == 0:
            self.result.notes.append(f"{target.name} fails: {', '.join(failed)}")
        return {"suites passed (of 4)": float(sum(checks.values())), **run}


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    challenge = Challenge(session, result)
    if not wrk.available():
        result.notes.append(f"wrk is not installed: the wrk figures are skipped ({INSTALL_WRK})")
    try:
        async with link(session.upstream, session.workdir / "challenge-link") as upstream:
            if not upstream.faults:
                result.notes.append(
                    "against someone's cluster the consistency suite is checked online only"
                )
            if upstream.relay is not None:
                result.notes.append(LINK_NOTE)
            await session.each_target(
                result,
                TARGETS,
                challenge.once,
                proxy_args=(f"--drop-name-prefix={SKIP_PREFIX}",),
                upstream=upstream,
            )
    finally:
        await challenge.writer.close()
    for name in PROXIES:
        if name in result.targets and result.targets[name]["suites passed (of 4)"]["min"] < 4:
            result.failures.append(f"{name} did not pass all four suites in every run")
    return result

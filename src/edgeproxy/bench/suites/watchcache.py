"""Watchcache: what the proxy's cache costs and saves, each beside a baseline.

Four measurements, one table (a figure belongs to one of them; "-" where a
target does not take part):

- **cached list** (nginx, cache-first): 1,000 ~1.1 KB ConfigMaps (~1.1 MB)
  listed under `wrk -t2 -c8` from a cache-first proxy whose cache holds them,
  against nginx serving the very same bytes (captured from the proxy) as a
  static file, identity and gzip (`gzip_static` with the proxy's own gzip
  body). Here the nginx column is that static nginx, not the reverse proxy.
- **list loop** (strict, cache-first): the challenge's resourceusage loop
  (one client listing the same 1,000 ConfigMaps back to back for
  `loop_seconds`); bytes served against bytes from the cloud, counted by the
  TCP relay of the bandwidth suite (headers included).
- **watch fan-out** (direct, strict, cache-first): `watchcache_fanout.py`.
- **memory** (strict, cache-first): per run a fresh proxy (empty cache
  directory); its RSS 0.5 s after `/healthz`, then it lists the 10,000 Pods
  of the shared dataset and a client watches them until the proxy's cache
  holds them synced; steady RSS 1 s later and peak RSS (`VmHWM`, since the
  start) against the Pods' JSON size (sum of the items' bytes) and the
  target 2 x JSON + 35 MB (issue 15; it was + 40 MB).
"""

from __future__ import annotations

import asyncio
import gzip
import math
import time

import msgspec

from edgeproxy.bench import dataset, objects, wrk
from edgeproxy.bench.baselines import (
    INSTALL_WRK,
    PROXIES,
    Skip,
    Target,
    open_static_nginx,
    open_target,
)
from edgeproxy.bench.kubeclient import IDENTITY, BenchError, RawList
from edgeproxy.bench.procstat import ProcGroup, peak_rss_mb, rss_mb
from edgeproxy.bench.relay import Relay, relayed, start_relay
from edgeproxy.bench.runner import Run
from edgeproxy.bench.session import Session, SuiteResult
from edgeproxy.bench.suites.restart import wait_synced
from edgeproxy.bench.suites.watchcache_fanout import TARGETS as FANOUT_TARGETS
from edgeproxy.bench.suites.watchcache_fanout import Fanout

NAME = "watchcache"
TITLE = "cached list vs static nginx, list-loop cloud bytes, 1,000 writes/s fan-out, memory"
OWN_UPSTREAM_ONLY = "creates 10k Pods and writes 1,000 changes/s"
NAMESPACE = "bench-wc-lists"
LIST = f"/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector=type%3Dresourceusage"
ENCODINGS = {
    "identity": IDENTITY,
    "gzip": {"Accept": "application/json", "Accept-Encoding": "gzip"},
}
STATIC = {"identity": "/list.json", "gzip": "/list.json"}  # gzip_static picks list.json.gz
WARMUP_LISTS = 5
MEMORY_TARGET_MB = 35.0  # issue 15: 2 x JSON + 35 MB (the first brief said 40)


class Watchcache:
    def __init__(self, session: Session, result: SuiteResult) -> None:
        self.s = session
        self.result = result
        self.writer = session.upstream.writer()
        self.count = session.sizes.resourceusage
        self.bodies: dict[str, bytes] = {}
        self.wrk_errors = 0
        self.bad_lists = 0
        self.pods_json_mb = math.nan

    async def seed(self) -> None:
        await self.writer.ensure_namespace(NAMESPACE)
        bodies = [objects.resourceusage_body(NAMESPACE, k) for k in range(self.count)]
        await self.writer.create_all(f"/api/v1/namespaces/{NAMESPACE}/configmaps", bodies)

    async def warm(self, target: Target) -> None:
        """Lists as a client makes them; a cache-first proxy then serves them from its cache."""
        async with target.api() as api:
            for _ in range(WARMUP_LISTS):
                await api.list(LIST)
        if target.name == "cache-first":
            await wait_synced(target, "configmaps", self.count)

    # -- cached list throughput -----------------------------------------------------

    async def capture(self, target: Target) -> None:
        """Warm the cache, then keep the bodies it serves (the second of each encoding)."""
        if target.proxy is None:
            return  # the static nginx serves what the proxy served
        await self.warm(target)
        bodies: dict[str, bytes] = {}
        async with target.api() as api:
            for enc, headers in ENCODINGS.items():
                for _ in range(2):
                    async with api.http.get(api.url + LIST, headers=headers) as r:
                        body = await r.read()
                        got = r.headers.get("Content-Encoding", "identity")
                if r.status != 200:
                    raise BenchError(f"{enc} list: HTTP {r.status}")
                if got == enc:
                    bodies[enc] = body
        if "gzip" not in bodies:  # the proxy gzips bodies over 128 KiB only (--quick sizes)
            self.result.notes.append("the list is not gzipped by the proxy: no gzip figures")
        items = len(msgspec.json.decode(bodies["identity"], type=RawList).items)
        if items != self.count:
            raise BenchError(f"unexpected cached list: {items} items, expected {self.count}")
        if "gzip" in bodies and gzip.decompress(bodies["gzip"]) != bodies["identity"]:
            raise BenchError("the gzip list is not the identity list")
        self.bodies = bodies

    def open_list_target(self, name: str) -> Target:
        if name == "nginx":
            if not self.bodies:
                raise Skip("no cached list to serve (the cache-first measurement failed)")
            files = {"list.json": self.bodies["identity"]}
            if "gzip" in self.bodies:
                files["list.json.gz"] = self.bodies["gzip"]
            return open_static_nginx(self.s.upstream, files)
        workdir = self.s.workdir / f"{NAME}-lists-{name}"
        return open_target(name, self.s.upstream, workdir=workdir)

    async def throughput(self, target: Target, i: int) -> Run:
        run: Run = {}
        for enc, headers in ENCODINGS.items():
            if enc not in self.bodies:
                continue
            url = target.url + (STATIC[enc] if target.nginx else LIST)
            cpu0 = target.procs.cpu_seconds() if target.procs else 0.0
            load = await asyncio.to_thread(wrk.run, url, headers, self.s.sizes.wrk_seconds)
            cpu = target.procs.cpu_seconds() - cpu0 if target.procs else math.nan
            self.wrk_errors += load["errors"]
            # wrk's "read" counts headers and is rounded to 3 digits: within 1% + 1 KiB.
            size = len(self.bodies[enc])
            if abs(load["bytes_per_response"] - size) > 0.01 * size + 1024:
                raise BenchError(
                    f"{target.name} {enc}: {load['bytes_per_response']:.0f} B per response,"
                    f" expected a {size} B body"
                )
            run[f"cached list/s, {enc} (wrk)"] = load["requests_per_s"]
            run[f"cached list p99, {enc} (ms)"] = 1000 * load["latency_p99_s"]
            run[f"CPU per cached list, {enc} (ms)"] = 1000 * cpu / max(load["requests"], 1)
        return run

    # -- cloud bytes of the list loop ------------------------------------------------------

    async def loop(self, relay: Relay, target: Target) -> Run:
        served = lists = 0
        cloud0 = relay.down_bytes
        async with target.api() as api:
            deadline = time.perf_counter() + self.s.sizes.loop_seconds
            while time.perf_counter() < deadline:
                listed = await api.list(LIST)
                lists += 1
                served += listed.nbytes
                self.bad_lists += listed.items != self.count
        cloud = relay.down_bytes - cloud0
        return {
            "list loop: lists": float(lists),
            "list loop: served (MB)": served / 1e6,
            "list loop: from the cloud (MB)": cloud / 1e6,
            "list loop: cloud / served (%)": 100 * cloud / served if served else math.nan,
        }

    # -- memory with the Pods cached ---------------------------------------------------------

    async def memory_prepare(self, target: Target) -> None:
        await self.s.dataset.ensure(self.writer)
        if math.isnan(self.pods_json_mb):
            async with self.s.upstream.api() as up:
                _, body = await up.get_bytes(dataset.PODS_PATH)
            items = msgspec.json.decode(body, type=RawList).items
            self.pods_json_mb = sum(len(item) for item in items) / 1e6

    async def memory(self, target: Target, i: int) -> Run:
        proxy = target.proxy
        assert proxy is not None
        pods = self.s.sizes.pods
        proxy.kill()
        proxy.cache_dir = self.s.workdir / f"{NAME}-memory-{target.name}-{i}"
        proxy.start()
        assert proxy.proc is not None
        pid = proxy.proc.pid
        target.procs = ProcGroup(pid)
        await asyncio.sleep(0.5)
        start = rss_mb(pid)
        async with target.api() as api:
            listed = await api.list(dataset.PODS_PATH)
            if listed.items != pods:
                raise BenchError(f"{target.name}: {listed.items} pods listed, expected {pods}")
            url = (
                f"{api.url}{dataset.PODS_PATH}?watch=true&resourceVersion={listed.resource_version}"
            )
            async with api.http.get(url) as watch:
                if watch.status != 200:
                    raise BenchError(f"{target.name}: pod watch HTTP {watch.status}")
                await wait_synced(target, "pods", pods)
                await asyncio.sleep(1.0)
                steady, peak = rss_mb(pid), peak_rss_mb(pid)
        bound = 2 * self.pods_json_mb + MEMORY_TARGET_MB
        return {
            "RSS after start (MB)": start,
            f"{pods} pods' JSON (MB)": self.pods_json_mb,
            f"peak RSS, {pods} pods listed + watched (MB)": peak,
            f"steady RSS, {pods} pods cached (MB)": steady,
            "peak / (2 x JSON + 35 MB) (%)": 100 * peak / bound,
        }


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    wc = Watchcache(session, result)
    upstream = session.upstream
    relay = await start_relay(upstream)
    fanout = Fanout(session, wc.writer)
    try:
        await wc.seed()
        if wrk.available():
            session.say(f"{NAME}: cached list, cache-first vs nginx serving it as a static file")
            await session.each_target(
                result,
                ("cache-first", "nginx"),
                wc.throughput,
                prepare=wc.capture,
                opener=wc.open_list_target,
            )
            if wc.bodies:
                gz = wc.bodies.get("gzip")
                result.notes.append(
                    f"cached list: {len(wc.bodies['identity']):,} B"
                    + (
                        f", {len(gz):,} B gzipped (nginx: gzip_static, the proxy's body)"
                        if gz
                        else ""
                    )
                )
        else:
            result.notes.append(
                f"wrk is not installed: cached list figures skipped ({INSTALL_WRK})"
            )
        session.say(f"{NAME}: list loop, cloud bytes through the counting relay")

        async def loop(target: Target, i: int) -> Run:
            return await wc.loop(relay, target)

        await session.each_target(
            result,
            PROXIES,
            loop,
            prepare=wc.warm,
            upstream=relayed(upstream, relay, session.workdir / "watchcache-relay"),
        )
        session.say(f"{NAME}: {session.sizes.watchers} watchers, writes straight to the upstream")
        await session.each_target(result, FANOUT_TARGETS, fanout.once, prepare=fanout.prepare)
        session.say(f"{NAME}: proxy memory with {session.sizes.pods} pods")
        await session.each_target(result, PROXIES, wc.memory, prepare=wc.memory_prepare)
    finally:
        await wc.writer.close()
        await relay.stop()
    _judge(result, wc)
    return result


def _judge(result: SuiteResult, wc: Watchcache) -> None:
    if wc.wrk_errors:
        result.failures.append(f"wrk saw {wc.wrk_errors} errors or non-2xx answers")
    if wc.bad_lists:
        result.failures.append(f"{wc.bad_lists} list-loop lists were not the full list")
    t = result.targets
    for name in ("direct", *PROXIES):
        in_order = t.get(name, {}).get("watchers with every event in order (%)")
        if in_order is not None and in_order["min"] < 100:
            result.failures.append(f"{name}: not every watcher got every event in order")
    for enc in ENCODINGS:
        key = f"cached list/s, {enc} (wrk)"
        if key in t.get("cache-first", {}) and key in t.get("nginx", {}):
            ratio = t["cache-first"][key]["median"] / t["nginx"][key]["median"]
            result.notes.append(f"cached list/s, {enc}: cache-first / static nginx = {ratio:.2f}")
    for name in PROXIES:
        bound = t.get(name, {}).get("peak / (2 x JSON + 35 MB) (%)")
        if bound is not None:
            verdict = "within" if bound["max"] <= 100 else "OVER"
            result.notes.append(f"{name}: peak RSS {verdict} the 2 x JSON + 35 MB target")
    result.notes.append("the nginx column is nginx serving the cached list as a static file")

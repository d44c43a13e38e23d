"""Benchmark of the simulator: list latency, watch fan-out, CPU and memory.

Performance is measured here, not asserted in timed tests: this script starts
`edge-proxy sim` as a real process, seeds it over HTTP, and prints medians and
ratios against a baseline measured in the same run (a trivial aiohttp server
in another process returning the very same pre-encoded bytes), so a reader
sees the simulator's own overhead rather than the machine's speed.

    python bench/sim_bench.py [--quick] [--json OUT] [--runs N]

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from edgeproxy.testing import SimProcess, free_port

JSON_CT = {"Content-Type": "application/json"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
NODES = 100
# More concurrent POSTs than this only queue inside the single-threaded sim.
SEED_CONCURRENCY = 64
# aiohttp's listen backlog is 128: opening watches in bigger bursts overflows
# it and costs 1 s SYN retransmits that would be measured as "connect time".
CONNECT_CONCURRENCY = 100
# Unmeasured requests before each list case: right after seeding, the first
# few dozen requests of both processes are slower (allocator and GC settling).
WARMUP_RUNS = 5
# Wait at most this long for one change to reach every watcher before calling
# the delivery lost (a healthy run takes milliseconds).
DELIVERY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Sizes:
    small_pods: int
    large_pods: int
    configmaps: int
    watchers: int
    spaced_changes: int
    burst_changes: int
    runs: int
    page_limit: int = 500


FULL = Sizes(1_000, 10_000, 1_000, 1_000, 20, 50, 20)
QUICK = Sizes(500, 2_000, 200, 200, 10, 20, 10)


# -- the simulator process -----------------------------------------------------


@dataclass(slots=True)
class ProcStats:
    """CPU and memory of one process, read from /proc."""

    pid: int
    # The highest VmHWM seen, kept across `reset_peak` calls.
    peak_mb: float = 0.0

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # Fields after "(comm)"; utime and stime are fields 14 and 15 of stat(5).
        rest = stat.rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK

    def memory_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        self.peak_mb = max(self.peak_mb, out["VmHWM"])
        out["VmHWM"] = self.peak_mb
        return out

    def reset_peak(self) -> bool:
        """Restart VmHWM from the current RSS (proc(5), clear_refs "5")."""
        self.memory_mb()
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_since_reset_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- object bodies -------------------------------------------------------------


def pod_body(namespace: str, i: int) -> dict[str, Any]:
    """A ~1 KB Pod as a Deployment would create it."""
    app = f"app-{i % 50:02d}"
    name = f"{app}-5d8f7b9c4d-{i:05d}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app": app,
                "shard": str(i % 10),
                "tier": ("web", "api", "worker")[i % 3],
                "team": f"team-{i % 7}",
                "pod-template-hash": "5d8f7b9c4d",
            },
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        },
        "spec": {
            "nodeName": f"node-{i % NODES:03d}",
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example.com/team-{i % 7}/{app}:1.{i % 20}.3",
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                    "env": [
                        {"name": "APP_NAME", "value": app},
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "REGION", "value": "cn-hangzhou"},
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                    },
                }
            ],
        },
    }


def configmap_body(namespace: str, i: int) -> dict[str, Any]:
    """A ~1.1 KB ConfigMap of per-node resource usage samples."""
    samples = [
        {"ts": 1714550400 + 60 * k, "cpu": f"{(i * 7 + k) % 1000}m", "mem": f"{(i + k) % 512}Mi"}
        for k in range(15)
    ]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"resourceusage-{i:04d}",
            "namespace": namespace,
            "labels": {"app": "resourceusage", "node": f"node-{i % NODES:03d}"},
        },
        "data": {
            "node": f"node-{i % NODES:03d}",
            "window": "60s",
            "samples": json.dumps(samples, separators=(",", ":")),
        },
    }


# -- statistics ----------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p90": statistics.quantiles(ordered, n=10, method="inclusive")[8],
        "p99": statistics.quantiles(ordered, n=100, method="inclusive")[98],
        "min": ordered[0],
        "max": ordered[-1],
    }


# -- the baseline server ---------------------------------------------------------


async def get_ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def run_baseline_server(port: int) -> None:
    """A trivial aiohttp server: PUT /b/<key> stores bytes, GET returns them."""
    bodies: dict[str, bytes] = {}

    async def put(request: web.Request) -> web.Response:
        bodies[request.match_info["key"]] = await request.read()
        return web.Response(text="ok")

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["key"]], headers=JSON_CT)

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_put("/b/{key}", put)
    app.router.add_get("/b/{key}", get)
    app.router.add_get("/ready", get_ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Baseline:
    """The baseline server in a child process, like the simulator."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, __file__, "--baseline-server", str(self.port)]
        self.proc = subprocess.Popen(args)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("baseline server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# -- the benchmark ---------------------------------------------------------------


class ListMeta(msgspec.Struct):
    continue_: str = msgspec.field(default="", name="continue")


class ListView(msgspec.Struct):
    """A list's metadata only: the client should not pay for decoding items."""

    metadata: ListMeta = msgspec.field(default_factory=ListMeta)


decode_list_view = msgspec.json.Decoder(ListView).decode


class WatchView(msgspec.Struct):
    """The only parts of a watch frame the fan-out benchmark reads."""

    type: str
    object: msgspec.Raw


class MetaRV(msgspec.Struct):
    resourceVersion: str = ""


class ObjRV(msgspec.Struct):
    metadata: MetaRV = msgspec.field(default_factory=MetaRV)


@dataclass(slots=True)
class Fleet:
    """Many watchers on one collection, and when each saw which resourceVersion."""

    size: int
    seen: list[dict[int, float]] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    complete: dict[int, asyncio.Event] = field(default_factory=dict)
    other_frames: int = 0
    ended: int = 0
    opened: int = 0
    all_open: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)

    def answered(self) -> None:
        """One more watch answered (or failed): wake the opener when all have."""
        self.opened += 1
        if self.opened == self.size:
            self.all_open.set()

    def done_event(self, rv: int) -> asyncio.Event:
        ev = self.complete.get(rv)
        if ev is None:
            ev = self.complete[rv] = asyncio.Event()
        return ev

    def record(self, index: int, rv: int, at: float) -> None:
        self.seen[index][rv] = at
        n = self.counts[rv] = self.counts.get(rv, 0) + 1
        if n == self.size:
            self.last[rv] = at
            self.done_event(rv).set()


class Bench:
    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.sim = SimProcess()
        self.stats = ProcStats(self.sim.proc.pid)
        self.base = Baseline()
        self.session: aiohttp.ClientSession | None = None
        self.results: dict[str, Any] = {"sizes": asdict(sizes), "cpus": os.cpu_count()}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session

    def close(self) -> None:
        self.sim.stop()
        self.base.stop()

    async def run(self) -> dict[str, Any]:
        self.results["memory_start_mb"] = self.stats.memory_mb()
        # Seeding opens SEED_CONCURRENCY connections; a session of its own
        # closes them, so the list cases run on one keep-alive connection.
        async with aiohttp.ClientSession() as session:
            self.session = session
            await self.seed()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.session = session
            await self.lists()
            await self.watch_fanout()
        self.results["memory_end_mb"] = self.stats.memory_mb()
        return self.results

    # -- seeding -------------------------------------------------------------

    async def _post_all(self, path: str, bodies: list[dict[str, Any]]) -> dict[str, float]:
        sem = asyncio.Semaphore(SEED_CONCURRENCY)
        encoded = [msgspec.json.encode(b) for b in bodies]

        async def post(body: bytes) -> None:
            async with (
                sem,
                self.http.post(self.sim.url + path, data=body, headers=JSON_CT) as r,
            ):
                if r.status != 201:
                    raise RuntimeError(f"POST {path}: {r.status} {await r.text()}")
                await r.read()

        cpu0, wall0 = self.stats.cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(post(b) for b in encoded))
        wall = time.perf_counter() - wall0
        return {
            "objects": len(bodies),
            "seconds": wall,
            "objects_per_s": len(bodies) / wall,
            "sim_cpu_s": self.stats.cpu_seconds() - cpu0,
            "request_bytes_avg": sum(map(len, encoded)) / len(encoded),
        }

    async def _namespace(self, name: str) -> None:
        body = msgspec.json.encode(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        async with self.http.post(
            self.sim.url + "/api/v1/namespaces", data=body, headers=JSON_CT
        ) as r:
            if r.status != 201:
                raise RuntimeError(f"create namespace {name}: {r.status}")

    async def seed(self) -> None:
        s = self.sizes
        seeding: dict[str, Any] = {}
        for ns, count in (("pods-small", s.small_pods), ("pods-large", s.large_pods)):
            await self._namespace(ns)
            bodies = [pod_body(ns, i) for i in range(count)]
            seeding[f"{count} pods"] = await self._post_all(f"/api/v1/namespaces/{ns}/pods", bodies)
        self.results["memory_after_pods_mb"] = self.stats.memory_mb()
        await self._namespace("resourceusage")
        bodies = [configmap_body("resourceusage", i) for i in range(s.configmaps)]
        seeding[f"{s.configmaps} configmaps"] = await self._post_all(
            "/api/v1/namespaces/resourceusage/configmaps", bodies
        )
        self.results["seeding"] = seeding

    # -- lists ---------------------------------------------------------------

    async def _fetch(self, url: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        async with self.http.get(url) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {url}: {r.status} {body[:300]!r}")
        return time.perf_counter() - t0, body

    async def _paged(self, base_url: str, limit: int) -> tuple[float, list[bytes]]:
        pages: list[bytes] = []
        token = ""
        t0 = time.perf_counter()
        while True:
            url = f"{base_url}?limit={limit}" + (f"&continue={token}" if token else "")
            _, body = await self._fetch(url)
            pages.append(body)
            token = decode_list_view(body).metadata.continue_
            if not token:
                return time.perf_counter() - t0, pages

    async def _upload(self, key: str, body: bytes) -> None:
        async with self.http.put(f"{self.base.url}/b/{key}", data=body) as r:
            await r.read()

    async def _time_case(self, name: str, path: str) -> dict[str, Any]:
        runs = self.sizes.runs
        url = self.sim.url + path
        for _ in range(WARMUP_RUNS):  # the last one's bytes are the baseline's
            _, body = await self._fetch(url)
        rss0, cpu0 = self._case_start()
        sim = [(await self._fetch(url))[0] for _ in range(runs)]
        cpu = self.stats.cpu_seconds() - cpu0
        peak = max(0.0, self.stats.peak_since_reset_mb() - rss0)
        key = name.replace(" ", "_").replace("=", "_").replace("/", "_")
        await self._upload(key, body)
        for _ in range(WARMUP_RUNS):
            await self._fetch(f"{self.base.url}/b/{key}")
        base = [(await self._fetch(f"{self.base.url}/b/{key}"))[0] for _ in range(runs)]
        items = len(msgspec.json.decode(body)["items"])
        return self._case(name, items, len(body), 1, sim, base, cpu, peak)

    async def _time_paged(self, name: str, path: str) -> dict[str, Any]:
        runs, limit = self.sizes.runs, self.sizes.page_limit
        url = self.sim.url + path
        for _ in range(WARMUP_RUNS):
            _, pages = await self._paged(url, limit)
        rss0, cpu0 = self._case_start()
        sim = [(await self._paged(url, limit))[0] for _ in range(runs)]
        cpu = self.stats.cpu_seconds() - cpu0
        peak = max(0.0, self.stats.peak_since_reset_mb() - rss0)
        for i, page in enumerate(pages):
            await self._upload(f"page{i}", page)

        async def base_pages() -> float:
            t0 = time.perf_counter()
            for i in range(len(pages)):
                await self._fetch(f"{self.base.url}/b/page{i}")
            return time.perf_counter() - t0

        for _ in range(WARMUP_RUNS):
            await base_pages()
        base = [await base_pages() for _ in range(runs)]
        items = sum(len(msgspec.json.decode(p)["items"]) for p in pages)
        return self._case(name, items, sum(map(len, pages)), len(pages), sim, base, cpu, peak)

    def _case(
        self,
        name: str,
        items: int,
        nbytes: int,
        requests: int,
        sim: list[float],
        base: list[float],
        sim_cpu: float,
        peak_growth_mb: float,
    ) -> dict[str, Any]:
        sim_s, base_s = summary(sim), summary(base)
        return {
            "case": name,
            "items": items,
            "bytes": nbytes,
            "requests": requests,
            "sim_s": sim_s,
            "baseline_s": base_s,
            "ratio_median": sim_s["median"] / base_s["median"],
            "sim_mb_per_s": nbytes / sim_s["median"] / 1e6,
            "baseline_mb_per_s": nbytes / base_s["median"] / 1e6,
            "sim_cpu_ms_per_run": 1000 * sim_cpu / len(sim),
            "sim_peak_rss_growth_mb": peak_growth_mb,
        }

    def _case_start(self) -> tuple[float, float]:
        """Reset the sim's peak RSS; return its RSS now and its CPU seconds."""
        self.stats.reset_peak()
        return self.stats.memory_mb()["VmRSS"], self.stats.cpu_seconds()

    async def lists(self) -> None:
        s = self.sizes
        small, large = "/api/v1/namespaces/pods-small/pods", "/api/v1/namespaces/pods-large/pods"
        cases = [
            await self._time_case(f"{s.small_pods} pods", small),
            await self._time_case(f"{s.large_pods} pods", large),
            await self._time_case(
                f"{s.large_pods} pods shard=3", large + "?labelSelector=shard%3D3"
            ),
            await self._time_case(
                f"{s.large_pods} pods nodeName", large + "?fieldSelector=spec.nodeName%3Dnode-042"
            ),
            await self._time_paged(f"{s.large_pods} pods limit={s.page_limit}", large),
            await self._time_case(
                f"{s.configmaps} configmaps", "/api/v1/namespaces/resourceusage/configmaps"
            ),
        ]
        self.results["lists"] = cases
        self.results["memory_after_lists_mb"] = self.stats.memory_mb()

    # -- watch fan-out ---------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watcher(self, fleet: Fleet, index: int, url: str, opened: asyncio.Semaphore) -> None:
        decode_frame = msgspec.json.Decoder(WatchView).decode
        decode_obj = msgspec.json.Decoder(ObjRV).decode
        try:
            async with opened:
                resp = await self.http.get(url)
            fleet.answered()
            async with resp:
                if resp.status != 200:
                    fleet.errors.append(f"watcher {index}: HTTP {resp.status}")
                    return
                async for line in resp.content:
                    at = time.perf_counter()
                    frame = decode_frame(line)
                    if frame.type not in ("ADDED", "MODIFIED", "DELETED"):
                        fleet.other_frames += 1
                        continue
                    rv = int(decode_obj(frame.object).metadata.resourceVersion)
                    fleet.record(index, rv, at)
            fleet.ended += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fleet.errors.append(f"watcher {index}: {type(exc).__name__}: {exc}")
            fleet.all_open.set()

    async def _change(self, path: str, seq: int) -> tuple[float, float, int]:
        """One merge patch; returns (sent at, response at, its resourceVersion)."""
        body = msgspec.json.encode({"data": {"seq": str(seq)}})
        headers = {"Content-Type": "application/merge-patch+json"}
        t0 = time.perf_counter()
        async with self.http.patch(self.sim.url + path, data=body, headers=headers) as r:
            raw = await r.read()
            t1 = time.perf_counter()
            if r.status != 200:
                raise RuntimeError(f"PATCH {path}: {r.status} {raw[:300]!r}")
        return t0, t1, int(msgspec.json.decode(raw)["metadata"]["resourceVersion"])

    async def watch_fanout(self) -> None:
        s = self.sizes
        ns_path = "/api/v1/namespaces/resourceusage/configmaps"
        _, body = await self._fetch(self.sim.url + ns_path + "?limit=1")
        rv = msgspec.json.decode(body)["metadata"]["resourceVersion"]
        url = f"{self.sim.url}{ns_path}?watch=true&resourceVersion={rv}"
        fleet = Fleet(s.watchers, seen=[{} for _ in range(s.watchers)])
        opened = asyncio.Semaphore(CONNECT_CONCURRENCY)
        cpu0, mine0, t0 = self.stats.cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        tasks = [
            self._spawn(self._watcher(fleet, i, url, opened), f"watcher-{i}")
            for i in range(s.watchers)
        ]
        await fleet.all_open.wait()
        connect = {
            "seconds": time.perf_counter() - t0,
            "sim_cpu_s": self.stats.cpu_seconds() - cpu0,
            "registered": self.sim.control("GET", "stats")["resources"]["configmaps"]["watchers"],
        }
        self.results["memory_watchers_open_mb"] = self.stats.memory_mb()
        written: list[int] = []

        async def wait_delivered(rv: int) -> bool:
            try:
                await asyncio.wait_for(fleet.done_event(rv).wait(), DELIVERY_TIMEOUT)
            except TimeoutError:
                return False
            return True

        # Spaced changes: each one alone in flight, for per-change latency.
        after_resp: list[float] = []
        after_send: list[float] = []
        cpu0, mine0 = self.stats.cpu_seconds(), own_cpu_seconds()
        for i in range(s.spaced_changes):
            sent, answered, change_rv = await self._change(
                f"{ns_path}/resourceusage-{i % s.configmaps:04d}", i
            )
            written.append(change_rv)
            if await wait_delivered(change_rv):
                after_resp.append(fleet.last[change_rv] - answered)
                after_send.append(fleet.last[change_rv] - sent)
            await asyncio.sleep(0.02)
        spaced_cpu = self.stats.cpu_seconds() - cpu0
        spaced_client_cpu = own_cpu_seconds() - mine0

        # A burst: back-to-back writes, for delivered events per second.
        cpu0, mine0 = self.stats.cpu_seconds(), own_cpu_seconds()
        burst_rvs: list[int] = []
        start = time.perf_counter()
        for i in range(s.burst_changes):
            _, _, change_rv = await self._change(
                f"{ns_path}/resourceusage-{(i + 7) % s.configmaps:04d}", 1000 + i
            )
            burst_rvs.append(change_rv)
        writes_done = time.perf_counter()
        delivered = [await wait_delivered(r) for r in burst_rvs]
        end = max((fleet.last[r] for r in burst_rvs if r in fleet.last), default=start)
        written += burst_rvs
        burst_cpu = self.stats.cpu_seconds() - cpu0
        burst_client_cpu = own_cpu_seconds() - mine0

        expected = set(written)
        missing = sum(len(expected - set(seen)) for seen in fleet.seen)
        unexpected = sum(len(set(seen) - expected) for seen in fleet.seen)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        events = s.watchers * sum(delivered)
        self.results["watch"] = {
            "watchers": s.watchers,
            "connect": connect,
            "spaced": {
                "changes": s.spaced_changes,
                "delivered_all": len(after_resp),
                "from_response_s": summary(after_resp) if len(after_resp) > 1 else None,
                "from_send_s": summary(after_send) if len(after_send) > 1 else None,
                "sim_cpu_ms_per_change": 1000 * spaced_cpu / s.spaced_changes,
                "client_cpu_ms_per_change": 1000 * spaced_client_cpu / s.spaced_changes,
            },
            "burst": {
                "changes": s.burst_changes,
                "writes_s": writes_done - start,
                "all_delivered_s": end - start,
                "events_delivered": events,
                "events_per_s": events / (end - start) if end > start else 0.0,
                "sim_cpu_s": burst_cpu,
                "client_cpu_s": burst_client_cpu,
            },
            "check": {
                "missing_events": missing,
                "unexpected_events": unexpected,
                "other_frames": fleet.other_frames,
                "streams_ended_early": fleet.ended,
                "errors": fleet.errors[:10],
                "ok": missing == 0
                and unexpected == 0
                and not fleet.errors
                and fleet.ended == 0
                and connect["registered"] == s.watchers,
            },
        }


# -- output ------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def print_report(r: dict[str, Any], wall: float) -> None:
    s = r["sizes"]
    print(f"\nedge-proxy simulator benchmark ({r['cpus']} CPUs, {s['runs']} runs per list case)")
    print("\nSEEDING (concurrent POSTs)")
    print(f"{'what':<22}{'seconds':>9}{'obj/s':>9}{'sim CPU s':>11}{'req bytes':>11}")
    for name, x in r["seeding"].items():
        print(
            f"{name:<22}{x['seconds']:9.2f}{x['objects_per_s']:9.0f}{x['sim_cpu_s']:11.2f}"
            f"{x['request_bytes_avg']:11.0f}"
        )
    print(
        "\nLISTS: latency in ms (sim); baseline = static aiohttp handler returning the same bytes"
    )
    head = (
        f"{'case':<28}{'items':>6}{'req':>4}{'bytes':>11}{'median':>9}{'p90':>9}{'min':>9}"
        f"{'max':>9}{'MB/s':>8}{'base med':>9}{'base MB/s':>10}{'ratio':>7}{'CPU ms':>8}{'+peak MB':>9}"
    )
    print(head)
    print("-" * len(head))
    for c in r["lists"]:
        t = c["sim_s"]
        print(
            f"{c['case']:<28}{c['items']:>6}{c['requests']:>4}{c['bytes']:>11,}"
            f"{ms(t['median']):>9}{ms(t['p90']):>9}{ms(t['min']):>9}{ms(t['max']):>9}"
            f"{c['sim_mb_per_s']:8.1f}{ms(c['baseline_s']['median']):>9}"
            f"{c['baseline_mb_per_s']:10.1f}{c['ratio_median']:7.2f}{c['sim_cpu_ms_per_run']:8.2f}"
            f"{c['sim_peak_rss_growth_mb']:9.1f}"
        )
    w = r["watch"]
    sp, b, chk = w["spaced"], w["burst"], w["check"]
    print(f"\nWATCH FAN-OUT: {w['watchers']} watchers on one namespace's configmaps")
    print(
        f"  connect all: {w['connect']['seconds']:.2f} s, sim CPU {w['connect']['sim_cpu_s']:.2f} s,"
        f" registered in sim: {w['connect']['registered']}"
    )
    for label, key in (("write response", "from_response_s"), ("write sent", "from_send_s")):
        x = sp[key]
        if x is None:
            print(f"  from {label}: not enough deliveries to summarise")
            continue
        print(
            f"  {sp['changes']} spaced changes, time from {label:<14} to all watchers:"
            f" median {ms(x['median']).strip()} ms, p90 {ms(x['p90']).strip()} ms,"
            f" p99 {ms(x['p99']).strip()} ms, max {ms(x['max']).strip()} ms"
        )
    print(
        f"  per change: sim CPU {sp['sim_cpu_ms_per_change']:.1f} ms,"
        f" bench client CPU {sp['client_cpu_ms_per_change']:.1f} ms"
    )
    print(
        f"  burst of {b['changes']} back-to-back changes: writes took {b['writes_s']:.2f} s,"
        f" all delivered after {b['all_delivered_s']:.2f} s -> {b['events_per_s']:,.0f} events/s"
        f" (sim CPU {b['sim_cpu_s']:.2f} s, client CPU {b['client_cpu_s']:.2f} s)"
    )
    if chk["ok"]:
        print(f"  check: every watcher got every event ({chk['other_frames']} non-object frames)")
    else:
        print("\n" + "!" * 72)
        print("!! WATCH CHECK FAILED: not every watcher got every event exactly once")
        print(f"!! {json.dumps(chk)}")
        print("!" * 72)
    print("\nSIM PROCESS MEMORY (MB)")
    for label, key in (
        ("start", "memory_start_mb"),
        ("after seeding pods", "memory_after_pods_mb"),
        ("after list cases", "memory_after_lists_mb"),
        ("watchers open", "memory_watchers_open_mb"),
        ("end", "memory_end_mb"),
    ):
        m = r[key]
        print(f"  {label:<20} RSS {m['VmRSS']:7.1f}   peak (VmHWM) {m['VmHWM']:7.1f}")
    print(f"\ntotal wall time {wall:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    parser.add_argument("--runs", type=int, help="runs per list case (default 20, quick 10)")
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server)
        return 0
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": max(args.runs, 2)})
    # One socket per watcher on each side; the sim inherits the raised limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sizes.watchers * 2 + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    started = time.perf_counter()
    bench = Bench(sizes)
    try:
        results = asyncio.run(bench.run())
    finally:
        bench.close()
    wall = time.perf_counter() - started
    results["wall_s"] = wall
    print_report(results, wall)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"figures written to {args.json}")
    return 0 if results["watch"]["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

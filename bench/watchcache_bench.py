"""Benchmark of the proxy's cache: list throughput, cloud bytes, watch latency, memory.

Four measurements, each beside a baseline measured in the same run, so a
reader sees what the cache costs and saves rather than the machine's speed:

(a) cached list throughput: 1,000 ConfigMaps (~1.1 MB) listed under load (wrk)
    from a cache-first proxy, against nginx serving the very same bytes as a
    static file (plain and gzip);
(b) cloud bytes of the resourceusage loop in cache-first mode against strict
    pass-through, from the proxy's own metrics;
(c) per-event latency of 100 watchers through the proxy while a writer makes
    1,000 changes/s straight to the simulator, against the same watchers on
    the simulator itself; every watcher must get every event, in order;
(d) the proxy's RSS holding 10,000 ~1 KB Pods in a reflector, against the
    Pods' JSON size and the proxy's RSS right after start.

    python bench/watchcache_bench.py [--quick] [--json OUT]

Every figure is the median of at least 3 runs, with min and max. Nothing is
installed here: without nginx or wrk the nginx baseline is printed as skipped
(with the apt-get command) and an aiohttp load generator replaces wrk. See
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from edgeproxy.testing import ProxyProcess, SimProcess, free_port
from proxy_bench import (
    CLIENT_BYTES,
    CONFIGMAPS,
    GZIP,
    IDENTITY,
    LIST_PATH,
    NAMESPACE,
    UPSTREAM_BYTES,
    decode_items,
    metric_sum,
    resourceusage_body,
)
from sim_bench import JSON_CT, SEED_CONCURRENCY, ProcStats, own_cpu_seconds, pod_body, summary

CACHE_FIRST = ("--consistency=cache-first",)
INSTALL = "apt-get install -y nginx-light wrk"
WATCH_NAMESPACE = "watch"
POD_NAMESPACE = "pods"
# wrk's defaults in the brief: 2 threads (the machine has 2 cores), 8 connections.
WRK_THREADS = 2
WRK_CONNECTIONS = 8
# Concurrent writes in flight: enough that a 2-5 ms write does not hold back
# the schedule, few enough that the sim does not queue them.
WRITERS = 32
# Wait at most this long for every watcher to catch up after the last write.
CATCH_UP_TIMEOUT = 60.0
# aiohttp's listen backlog is 128 (see sim_bench.CONNECT_CONCURRENCY).
CONNECT_CONCURRENCY = 100
# Unmeasured lists before measuring (allocator and GC settling, the reflector starting).
WARMUP_LISTS = 5


@dataclass(frozen=True, slots=True)
class Sizes:
    runs: int
    wrk_seconds: float
    loop_seconds: float
    watchers: int
    watch_objects: int
    events_per_s: int
    write_seconds: float
    pods: int


FULL = Sizes(3, 5.0, 10.0, 100, 50, 1_000, 10.0, 10_000)
QUICK = Sizes(3, 2.0, 3.0, 100, 50, 1_000, 3.0, 2_000)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max over runs."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def rss_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


async def wait_synced(proxy: ProxyProcess, resource_name: str, objects: int) -> dict[str, Any]:
    """Poll /debug/cache until a synced scope of `resource_name` holds `objects`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for scope in proxy.admin("/debug/cache")["scopes"]:
            if resource_name in scope["scope"] and scope["synced"] and scope["objects"] >= objects:
                return dict(scope)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no synced {resource_name} scope with {objects} objects: {proxy.log()}")


def cache_served_bytes(proxy: ProxyProcess) -> float:
    """What the proxy says it served from its cache (`served_from="cache"`)."""
    prefix = CLIENT_BYTES + '{served_from="cache"}'
    text = proxy.admin("/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


async def lists_from_cache(
    proxy: ProxyProcess, http: aiohttp.ClientSession, url: str, within: float
) -> bool:
    """List until one is answered from the cache, for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        before = cache_served_bytes(proxy)
        async with http.get(url, headers=IDENTITY) as r:
            await r.read()
        if cache_served_bytes(proxy) > before:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def warm_cache_first(
    proxy: ProxyProcess, http: aiohttp.ClientSession, url: str
) -> dict[str, Any]:
    """Warm-up lists as a client makes them; if they never reach the cache, a watch.

    The proxy starts a scope's reflector on its second list or on a watch;
    the lists alone are tried first so a regression there shows in the report.
    """
    for _ in range(WARMUP_LISTS):
        async with http.get(url, headers=IDENTITY) as r:
            body = await r.read()
    if await lists_from_cache(proxy, http, url, 2.0):
        return {"primed_by_watch": False}
    rv = msgspec.json.decode(body)["metadata"]["resourceVersion"]
    # A session of its own: the caller's may allow a single connection.
    async with (
        aiohttp.ClientSession() as own,
        own.get(f"{url}&watch=true&resourceVersion={rv}") as watch,
    ):
        if watch.status != 200 or not await lists_from_cache(proxy, http, url, 30.0):
            raise RuntimeError(f"lists never served from the cache: {proxy.admin('/debug/cache')}")
    return {"primed_by_watch": True}


# -- load generators and nginx -----------------------------------------------------------


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, bytes read, latency percentiles and errors from `wrk --latency`."""
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(m[1])
    seconds = float(m[2]) * _TIME[m[3]]
    read = float(m[4]) * _UNITS[m[5]]
    lat = {
        p: float(v) * _TIME[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "bytes_per_response": read / max(requests, 1),
        "latency_p50_s": lat.get("50"),
        "latency_p99_s": lat.get("99"),
        "errors": (int(non2xx[1]) if non2xx else 0)
        + (sum(int(x) for x in sock.groups()) if sock else 0),
    }


def run_wrk(url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    args = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    done = subprocess.run([*args, url], capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


async def run_aiohttp_load(url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    """wrk's stand-in: WRK_CONNECTIONS keep-alive connections in a tight loop.

    Bound by this process's CPU (one core), so it understates a fast server.
    """
    latencies: list[float] = []
    read = errors = 0
    connector = aiohttp.TCPConnector(limit=WRK_CONNECTIONS)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, auto_decompress=False
    ) as http:
        deadline = time.perf_counter() + seconds

        async def one_connection() -> None:
            nonlocal read, errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with http.get(url) as r:
                    body = await r.read()
                    errors += r.status != 200
                read += len(body)
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(WRK_CONNECTIONS)))
        wall = time.perf_counter() - t0
    lat = summary(latencies) if len(latencies) > 1 else {"median": None, "p99": None}
    return {
        "requests": len(latencies),
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "bytes_per_response": read / max(len(latencies), 1),
        "latency_p50_s": lat["median"],
        "latency_p99_s": lat["p99"],
        "errors": errors,
    }


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/json;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        gzip_static on;
        location / {{ }}
    }}
}}
"""


class Nginx:
    """Debian's nginx in the foreground on a free port, everything in one temp dir.

    One worker process, like the proxy's one event loop; `gzip_static` serves
    the pre-compressed `list.json.gz` to clients that accept gzip.
    """

    def __init__(self, plain: bytes, gzipped: bytes) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="watchcache-nginx-"))
        # nginx's worker runs as nobody: mkdtemp's 0700 would answer 403.
        self.dir.chmod(0o755)
        (self.dir / "www").mkdir()
        (self.dir / "www" / "list.json").write_bytes(plain)
        (self.dir / "www" / "list.json.gz").write_bytes(gzipped)
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=self.dir, port=self.port))
        log = (self.dir / "stderr.log").open("wb")
        args = ["nginx", "-e", str(self.dir / "error.log"), "-p", str(self.dir), "-c", str(conf)]
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/list.json"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.dir / 'stderr.log').read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=1):
                    return
            except urllib.error.HTTPError as exc:
                self.stop()
                raise RuntimeError(f"nginx answered {exc.code} for {self.url}") from exc
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- watch fan-out ------------------------------------------------------------------------


class WatchMeta(msgspec.Struct):
    resourceVersion: str = ""


class WatchData(msgspec.Struct):
    t: str = ""


class WatchObject(msgspec.Struct):
    metadata: WatchMeta = msgspec.field(default_factory=WatchMeta)
    data: WatchData = msgspec.field(default_factory=WatchData)


class WatchFrame(msgspec.Struct):
    type: str
    object: WatchObject


decode_frame = msgspec.json.Decoder(WatchFrame).decode


@dataclass(slots=True)
class Watch:
    """One watcher's record: the resourceVersions it saw, when, and the embedded send time."""

    rvs: array.array[int] = field(default_factory=lambda: array.array("q"))
    received_ns: array.array[int] = field(default_factory=lambda: array.array("q"))
    sent_ns: array.array[int] = field(default_factory=lambda: array.array("q"))
    other_frames: int = 0
    error: str = ""
    ended: bool = False


async def watch_into(
    http: aiohttp.ClientSession, url: str, watch: Watch, opened: asyncio.Semaphore
) -> None:
    try:
        async with opened:
            resp = await http.get(url)
        async with resp:
            if resp.status != 200:
                watch.error = f"HTTP {resp.status}"
                return
            rest = b""
            # Chunks rather than readline: one timestamp per read, and the
            # client's per-frame cost stays far below the servers'.
            async for chunk in resp.content.iter_any():
                at = time.monotonic_ns()
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    frame = decode_frame(line)
                    if frame.type not in ("ADDED", "MODIFIED", "DELETED"):
                        watch.other_frames += 1
                        continue
                    watch.rvs.append(int(frame.object.metadata.resourceVersion))
                    watch.received_ns.append(at)
                    watch.sent_ns.append(int(frame.object.data.t or 0))
        watch.ended = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        watch.error = f"{type(exc).__name__}: {exc}"


def percentiles_ms(samples_ns: list[int]) -> dict[str, float] | None:
    if len(samples_ns) < 2:
        return None
    ordered = sorted(samples_ns)
    n = len(ordered)
    at = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
    out = {k: ordered[min(n - 1, int(q * n))] / 1e6 for k, q in at.items()}
    out["max"] = ordered[-1] / 1e6
    return out


# -- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.sim = SimProcess()
        self.sim_stats = ProcStats(self.sim.proc.pid)
        self.proxies: list[ProxyProcess] = []
        self.have_wrk = shutil.which("wrk") is not None
        self.have_nginx = shutil.which("nginx") is not None
        self.results: dict[str, Any] = {"sizes": asdict(sizes), "cpus": os.cpu_count()}

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        self.sim.stop()

    def proxy(self, *args: str) -> ProxyProcess:
        proxy = ProxyProcess(self.sim.kubeconfig, *args)
        self.proxies.append(proxy)
        return proxy

    def drop(self, proxy: ProxyProcess) -> None:
        proxy.close()
        self.proxies.remove(proxy)

    async def run(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            await self.seed_configmaps(http)
        self.results["list_throughput"] = await self.list_throughput()
        self.results["cloud_bytes"] = await self.cloud_bytes()
        self.results["watch_latency"] = await self.watch_latency()
        self.results["memory"] = await self.memory()
        return self.results

    # -- seeding, straight to the simulator --------------------------------------------

    async def _post_all(
        self, http: aiohttp.ClientSession, path: str, bodies: list[dict[str, Any]]
    ) -> None:
        sem = asyncio.Semaphore(SEED_CONCURRENCY)

        async def post(body: bytes) -> None:
            async with sem, http.post(self.sim.url + path, data=body, headers=JSON_CT) as r:
                if r.status != 201:
                    raise RuntimeError(f"POST {path}: {r.status} {await r.text()}")
                await r.read()

        await asyncio.gather(*(post(msgspec.json.encode(b)) for b in bodies))

    async def _namespace(self, http: aiohttp.ClientSession, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        await self._post_all(http, "/api/v1/namespaces", [body])

    async def seed_configmaps(self, http: aiohttp.ClientSession) -> None:
        print("seeding ConfigMaps", flush=True)
        await self._namespace(http, NAMESPACE)
        bodies = [resourceusage_body(i) for i in range(CONFIGMAPS)]
        await self._post_all(http, f"/api/v1/namespaces/{NAMESPACE}/configmaps", bodies)
        await self._namespace(http, WATCH_NAMESPACE)
        bodies = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:03d}", "namespace": WATCH_NAMESPACE},
                "data": {"t": "0", "seq": "0"},
            }
            for i in range(self.sizes.watch_objects)
        ]
        await self._post_all(http, f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps", bodies)

    # -- (a) cached list throughput ------------------------------------------------------

    async def _load(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        if self.have_wrk:
            return await asyncio.to_thread(run_wrk, url, headers, self.sizes.wrk_seconds)
        return await run_aiohttp_load(url, headers, self.sizes.wrk_seconds)

    async def list_throughput(self) -> dict[str, Any]:
        print("(a) cached list throughput", flush=True)
        proxy = self.proxy(*CACHE_FIRST)
        assert proxy.proc is not None
        stats = ProcStats(proxy.proc.pid)
        url = proxy.url + LIST_PATH
        bodies: dict[str, bytes] = {}
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            # Once lists come from the cache, two more of each encoding
            # memoize the bodies; the second one's bytes go to nginx.
            warm = await warm_cache_first(proxy, http, url)
            scope = await wait_synced(proxy, "configmaps", CONFIGMAPS)
            for name, headers in (("identity", IDENTITY), ("gzip", GZIP)):
                for _ in range(2):
                    async with http.get(url, headers=headers) as r:
                        bodies[name] = await r.read()
                        encoding = r.headers.get("Content-Encoding", "")
                if (encoding == "gzip") != (name == "gzip"):
                    raise RuntimeError(f"{name} list came back with Content-Encoding {encoding!r}")
        items = len(decode_items(bodies["identity"]).items)
        if items != CONFIGMAPS or zlib.decompress(bodies["gzip"], wbits=31) != bodies["identity"]:
            raise RuntimeError(f"unexpected cached list: {items} items")
        nginx = Nginx(bodies["identity"], bodies["gzip"]) if self.have_nginx else None
        cases: list[dict[str, Any]] = []
        try:
            for name, headers in (("identity", IDENTITY), ("gzip", GZIP)):
                runs: dict[str, list[dict[str, Any]]] = {"proxy": [], "nginx": []}
                for _ in range(self.sizes.runs):  # alternated, so drift hits both alike
                    cpu0 = stats.cpu_seconds()
                    run = await self._load(url, headers)
                    run["proxy_cpu_ms_per_request"] = (
                        1000 * (stats.cpu_seconds() - cpu0) / max(run["requests"], 1)
                    )
                    runs["proxy"].append(run)
                    if nginx is not None:
                        runs["nginx"].append(await self._load(nginx.url, headers))
                cases.append(self._throughput_case(name, len(bodies[name]), runs))
        finally:
            if nginx is not None:
                nginx.stop()
        metrics = proxy.admin("/metrics")
        out = {
            "load_generator": "wrk" if self.have_wrk else "aiohttp",
            **warm,
            "nginx": "nginx-light, 1 worker, sendfile, gzip_static" if nginx else None,
            "scope": scope,
            "list_bytes": len(bodies["identity"]),
            "gzip_bytes": len(bodies["gzip"]),
            "cases": cases,
            "proxy_memory_mb": stats.memory_mb(),
            "cloud_bytes_since_start": metric_sum(metrics, UPSTREAM_BYTES),
        }
        self.drop(proxy)
        return out

    def _throughput_case(
        self, name: str, body_bytes: int, runs: dict[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"encoding": name, "body_bytes": body_bytes, "runs": runs}
        for who, rs in runs.items():
            if not rs:
                out[who] = None
                continue
            rps = [r["requests_per_s"] for r in rs]
            out[who] = {
                "requests_per_s": spread(rps),
                "mb_per_s": spread([x * body_bytes / 1e6 for x in rps]),
                "latency_p99_ms": spread([1000 * (r["latency_p99_s"] or 0.0) for r in rs]),
                "bytes_per_response": min(r["bytes_per_response"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
            }
            if who == "proxy":
                out[who]["cpu_ms_per_request"] = spread([r["proxy_cpu_ms_per_request"] for r in rs])
        if out["nginx"]:
            out["ratio_proxy_over_nginx"] = (
                out["proxy"]["requests_per_s"]["median"] / out["nginx"]["requests_per_s"]["median"]
            )
        return out

    # -- (b) cloud bytes of the resourceusage loop -----------------------------------------

    async def cloud_bytes(self) -> dict[str, Any]:
        print("(b) cloud bytes", flush=True)
        modes: dict[str, Any] = {}
        # "cache-first" lists as the suite does; only if those lists never
        # reach the cache is a third mode run, its reflector primed by a watch.
        plan: list[tuple[str, tuple[str, ...], bool]] = [
            ("strict", (), False),
            ("cache-first", CACHE_FIRST, False),
        ]
        for mode, args, prime in plan:
            modes[mode] = await self._cloud_bytes_mode(args, prime=prime)
            if mode == "cache-first" and modes[mode]["from_cache"]["median"] < 0.5:
                plan.append(("cache-first+watch", CACHE_FIRST, True))
        strict = modes["strict"]["cloud_over_served"]["median"]
        return {
            "seconds_per_run": self.sizes.loop_seconds,
            "modes": modes,
            "over_strict": {
                mode: m["cloud_over_served"]["median"] / strict if strict else None
                for mode, m in modes.items()
            },
        }

    async def _cloud_bytes_mode(self, args: tuple[str, ...], *, prime: bool) -> dict[str, Any]:
        proxy = self.proxy(*args)
        url = proxy.url + LIST_PATH
        runs = []
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), headers=IDENTITY
        ) as http:
            if prime:
                await warm_cache_first(proxy, http, url)
            else:
                for _ in range(WARMUP_LISTS):
                    async with http.get(url) as r:
                        await r.read()
            for _ in range(self.sizes.runs):
                text = proxy.admin("/metrics")
                up0, sent0 = metric_sum(text, UPSTREAM_BYTES), metric_sum(text, CLIENT_BYTES)
                cached0 = cache_served_bytes(proxy)
                lists = bad = 0
                deadline = time.perf_counter() + self.sizes.loop_seconds
                while time.perf_counter() < deadline:
                    async with http.get(url) as r:
                        body = await r.read()
                    lists += 1
                    bad += r.status != 200 or len(decode_items(body).items) != CONFIGMAPS
                text = proxy.admin("/metrics")
                up = metric_sum(text, UPSTREAM_BYTES) - up0
                sent = metric_sum(text, CLIENT_BYTES) - sent0
                cached = cache_served_bytes(proxy) - cached0
                runs.append(
                    {
                        "lists": lists,
                        "bad_lists": bad,
                        "cloud_bytes": up,
                        "served_bytes": sent,
                        "cloud_over_served": up / sent if sent else 0.0,
                        "from_cache": cached / sent if sent else 0.0,
                    }
                )
        out = {
            "proxy_args": args,
            "primed_by_watch": prime,
            "runs": runs,
            "lists": spread([r["lists"] for r in runs]),
            "cloud_mb": spread([r["cloud_bytes"] / 1e6 for r in runs]),
            "served_mb": spread([r["served_bytes"] / 1e6 for r in runs]),
            "cloud_over_served": spread([r["cloud_over_served"] for r in runs]),
            "from_cache": spread([r["from_cache"] for r in runs]),
            "bad_lists": sum(r["bad_lists"] for r in runs),
            "cloud_bytes_since_start": metric_sum(proxy.admin("/metrics"), UPSTREAM_BYTES),
            "scopes": proxy.admin("/debug/cache")["scopes"],
        }
        self.drop(proxy)
        return out

    # -- (c) watch latency under a steady write rate -------------------------------------------

    async def _write_burst(
        self, http: aiohttp.ClientSession, count: int, rate: float, first_seq: int
    ) -> dict[str, Any]:
        """`count` merge patches at `rate`/s to the sim, round robin over the objects."""
        sizes = self.sizes
        base = f"{self.sim.url}/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps/cm-"
        patch = {"Content-Type": "application/merge-patch+json"}
        rvs: list[int] = []
        response_ns: dict[int, int] = {}
        late: list[float] = []
        next_index = 0
        t0 = time.monotonic()

        async def writer() -> None:
            nonlocal next_index
            while next_index < count:
                i = next_index
                next_index += 1
                due = t0 + i / rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                else:
                    late.append(-wait)
                seq = first_seq + i
                body = b'{"data":{"t":"%d","seq":"%d"}}' % (time.monotonic_ns(), seq)
                url = f"{base}{seq % sizes.watch_objects:03d}"
                async with http.patch(url, data=body, headers=patch) as r:
                    raw = await r.read()
                    at = time.monotonic_ns()
                    if r.status != 200:
                        raise RuntimeError(f"PATCH {url}: {r.status} {raw[:200]!r}")
                rv = int(msgspec.json.decode(raw)["metadata"]["resourceVersion"])
                rvs.append(rv)
                response_ns[rv] = at

        await asyncio.gather(*(writer() for _ in range(min(WRITERS, count))))
        wall = time.monotonic() - t0
        return {
            "rvs": rvs,
            "response_ns": response_ns,
            "seconds": wall,
            "rate": count / wall,
            "late_writes": len(late),
            "late_max_s": max(late, default=0.0),
        }

    async def _watch_run(self, base_url: str, server_pid: int) -> dict[str, Any]:
        sizes = self.sizes
        path = f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        writes = aiohttp.TCPConnector(limit=WRITERS)
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http,
            aiohttp.ClientSession(connector=writes, timeout=timeout) as writer,
        ):
            async with http.get(f"{base_url}{path}?limit=1") as r:
                rv = msgspec.json.decode(await r.read())["metadata"]["resourceVersion"]
            url = f"{base_url}{path}?watch=true&resourceVersion={rv}"
            watches = [Watch() for _ in range(sizes.watchers)]
            opened = asyncio.Semaphore(CONNECT_CONCURRENCY)
            tasks = [
                asyncio.create_task(watch_into(http, url, w, opened), name=f"watcher-{i}")
                for i, w in enumerate(watches)
            ]
            try:
                # One unmeasured write, waited for on every watcher: all are
                # registered (and the proxy's reflector streams) before timing.
                sentinel = await self._write_burst(writer, 1, 1.0, 0)
                await self._caught_up(watches, max(sentinel["rvs"]), 30.0)
                server = ProcStats(server_pid)
                cpu0, sim0, own0 = (
                    server.cpu_seconds(),
                    self.sim_stats.cpu_seconds(),
                    own_cpu_seconds(),
                )
                count = int(sizes.events_per_s * sizes.write_seconds)
                burst = await self._write_burst(writer, count, sizes.events_per_s, 1)
                caught_up = await self._caught_up(watches, max(burst["rvs"]), CATCH_UP_TIMEOUT)
                wall = burst["seconds"]
                cpu = {
                    "server_cpu_share": (server.cpu_seconds() - cpu0) / wall,
                    "sim_cpu_share": (self.sim_stats.cpu_seconds() - sim0) / wall,
                    "client_cpu_share": (own_cpu_seconds() - own0) / wall,
                    "server_memory_mb": server.memory_mb(),
                }
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return self._watch_figures(watches, sentinel, burst, caught_up, cpu)

    @staticmethod
    async def _caught_up(watches: list[Watch], rv: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(w.rvs and w.rvs[-1] >= rv for w in watches):
                return True
            if any(w.error or w.ended for w in watches):
                return False
            await asyncio.sleep(0.02)
        return False

    @staticmethod
    def _watch_figures(
        watches: list[Watch],
        sentinel: dict[str, Any],
        burst: dict[str, Any],
        caught_up: bool,
        cpu: dict[str, Any],
    ) -> dict[str, Any]:
        expected = sorted(sentinel["rvs"] + burst["rvs"])
        first = min(burst["rvs"])
        response_ns = burst["response_ns"]
        from_send: list[int] = []
        from_response: list[int] = []
        in_order = 0
        for w in watches:
            in_order += list(w.rvs) == expected
            for rv, at, sent in zip(w.rvs, w.received_ns, w.sent_ns, strict=True):
                if rv >= first:
                    from_send.append(at - sent)
                    from_response.append(at - response_ns.get(rv, at))
        errors = sorted({w.error for w in watches if w.error})
        return {
            "events_written": len(burst["rvs"]),
            "write_rate": burst["rate"],
            "late_writes": burst["late_writes"],
            "late_max_s": burst["late_max_s"],
            "from_send_ms": percentiles_ms(from_send),
            "from_response_ms": percentiles_ms(from_response),
            "deliveries": len(from_send),
            "watchers_complete_in_order": in_order,
            "caught_up": caught_up,
            "other_frames": sum(w.other_frames for w in watches),
            "errors": errors[:5],
            "ended_early": sum(w.ended for w in watches),
            **cpu,
        }

    async def watch_latency(self) -> dict[str, Any]:
        print("(c) watch latency", flush=True)
        sizes = self.sizes
        modes: dict[str, Any] = {}
        for mode, args in (
            ("sim direct", None),
            ("proxy strict", ()),
            ("proxy cache-first", CACHE_FIRST),
        ):
            proxy = None if args is None else self.proxy(*args)
            url, pid = (self.sim.url, self.sim.proc.pid)
            if proxy is not None:
                assert proxy.proc is not None
                url, pid = proxy.url, proxy.proc.pid
            runs = [await self._watch_run(url, pid) for _ in range(sizes.runs)]
            if proxy is not None:
                self.drop(proxy)
            summary_ = {
                key: {
                    stat: spread([r[key][stat] for r in runs if r[key]])
                    for stat in ("p50", "p90", "p99", "max")
                }
                if all(r[key] for r in runs)
                else None
                for key in ("from_send_ms", "from_response_ms")
            }
            modes[mode] = {
                "runs": runs,
                **summary_,
                "write_rate": spread([r["write_rate"] for r in runs]),
                "server_cpu_share": spread([r["server_cpu_share"] for r in runs]),
                "sim_cpu_share": spread([r["sim_cpu_share"] for r in runs]),
                "client_cpu_share": spread([r["client_cpu_share"] for r in runs]),
                "ok": all(
                    r["caught_up"]
                    and r["watchers_complete_in_order"] == sizes.watchers
                    and not r["errors"]
                    and not r["ended_early"]
                    for r in runs
                ),
            }
        return {
            "watchers": sizes.watchers,
            "events_per_s": sizes.events_per_s,
            "seconds": sizes.write_seconds,
            "objects": sizes.watch_objects,
            "modes": modes,
        }

    # -- (d) memory with the pods cached -------------------------------------------------------

    async def memory(self) -> dict[str, Any]:
        print("(d) memory with pods cached", flush=True)
        pods = self.sizes.pods
        async with aiohttp.ClientSession() as http:
            await self._namespace(http, POD_NAMESPACE)
            await self._post_all(
                http,
                f"/api/v1/namespaces/{POD_NAMESPACE}/pods",
                [pod_body(POD_NAMESPACE, i) for i in range(pods)],
            )
        runs = []
        for _ in range(self.sizes.runs):
            proxy = self.proxy()
            assert proxy.proc is not None
            pid = proxy.proc.pid
            await asyncio.sleep(0.5)
            start = rss_mb(pid)
            path = f"/api/v1/namespaces/{POD_NAMESPACE}/pods"
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with aiohttp.ClientSession(timeout=timeout, headers=IDENTITY) as http:
                async with http.get(proxy.url + path) as r:
                    body = await r.read()
                listed = decode_items(body).items
                if len(listed) != pods:
                    raise RuntimeError(f"pod list had {len(listed)} items, expected {pods}")
                rv = msgspec.json.decode(body)["metadata"]["resourceVersion"]
                async with http.get(f"{proxy.url}{path}?watch=true&resourceVersion={rv}") as watch:
                    scope = await wait_synced(proxy, "pods", pods)
                    await asyncio.sleep(1.0)
                    held = rss_mb(pid)
                    if watch.status != 200:
                        raise RuntimeError(f"pod watch: HTTP {watch.status}")
            json_bytes = sum(len(item) for item in listed)
            runs.append(
                {
                    "start_rss_mb": start["VmRSS"],
                    "rss_mb": held["VmRSS"],
                    "peak_mb": held["VmHWM"],
                    "json_mb": json_bytes / 1e6,
                    "list_mb": len(body) / 1e6,
                    "store_bytes": scope["bytes"],
                }
            )
            self.drop(proxy)
        json_mb = runs[0]["json_mb"]
        target = 2 * json_mb + 40
        peak = spread([r["peak_mb"] for r in runs])
        return {
            "pods": pods,
            "runs": runs,
            "json_mb": json_mb,
            "list_mb": runs[0]["list_mb"],
            "store_mb": runs[0]["store_bytes"] / 1e6,
            "start_rss_mb": spread([r["start_rss_mb"] for r in runs]),
            "rss_mb": spread([r["rss_mb"] for r in runs]),
            "peak_mb": peak,
            "target_mb": target,
            "within_target": peak["median"] <= target,
        }


# -- output --------------------------------------------------------------------------------------


def mmm(x: dict[str, float] | None, spec: str = ".1f", width: int = 24) -> str:
    """'median [min..max]', right-aligned."""
    if x is None:
        return f"{'-':>{width}}"
    text = f"{x['median']:{spec}} [{x['min']:{spec}}..{x['max']:{spec}}]"
    return f"{text:>{width}}"


def print_report(r: dict[str, Any], wall: float) -> None:
    s = r["sizes"]
    print(
        f"\nedge-proxy watch-cache benchmark ({r['cpus']} CPUs; every figure is the median"
        f" [min..max] of {s['runs']} runs)"
    )
    a = r["list_throughput"]
    print(
        f"\n(a) CACHED LIST THROUGHPUT: {CONFIGMAPS} ConfigMaps, {a['list_bytes']:,} B"
        f" ({a['gzip_bytes']:,} B gzipped), cache-first proxy vs nginx serving the same bytes"
    )
    print(
        f"    load: {a['load_generator']}"
        + (
            f" -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{s['wrk_seconds']:g}s"
            if a["load_generator"] == "wrk"
            else f" stand-in, {WRK_CONNECTIONS} connections (client-bound: install wrk)"
        )
        + f"; MB/s = requests/s x body bytes; nginx: {a['nginx'] or 'skipped'}"
    )
    head = (
        f"{'encoding':<10}{'server':<8}{'requests/s':>24}{'MB/s':>24}{'p99 ms':>24}"
        f"{'CPU ms/req':>20}{'errors':>8}{'proxy/nginx':>13}"
    )
    print(head)
    print("-" * len(head))
    for c in a["cases"]:
        for who in ("proxy", "nginx"):
            x = c[who]
            if x is None:
                print(f"{c['encoding']:<10}{who:<8}  skipped: nginx or wrk missing ({INSTALL})")
                continue
            ratio = f"{c['ratio_proxy_over_nginx']:13.2f}" if who == "proxy" and c["nginx"] else ""
            print(
                f"{c['encoding']:<10}{who:<8}{mmm(x['requests_per_s'])}{mmm(x['mb_per_s'])}"
                f"{mmm(x['latency_p99_ms'], '.2f')}{mmm(x.get('cpu_ms_per_request'), '.2f', 20)}"
                f"{x['errors']:>8}{ratio}"
            )
    if a["nginx"] is None:
        print(f"    nginx baseline skipped: install it with `{INSTALL}`")
    print(f"    proxy's cloud bytes since start: {a['cloud_bytes_since_start'] / 1e6:.2f} MB")
    if a["primed_by_watch"]:
        print(
            "    !! warm-up lists alone never reached the cache: one watch on the scope"
            " started its reflector"
        )

    b = r["cloud_bytes"]
    print(
        f"\n(b) CLOUD BYTES of the resourceusage loop ({b['seconds_per_run']:g} s per run,"
        " from the proxy's metrics: cloud = upstream received, served = client sent)"
    )
    head = (
        f"{'mode':<19}{'lists':>18}{'served MB':>28}{'cloud MB':>28}{'cloud/served %':>30}"
        f"{'from cache %':>26}{'bad':>5}"
    )
    print(head)
    print("-" * len(head))
    for mode, m in b["modes"].items():
        ratio = {k: 100 * v for k, v in m["cloud_over_served"].items()}
        cached = {k: 100 * v for k, v in m["from_cache"].items()}
        print(
            f"{mode:<19}{mmm(m['lists'], '.0f', 18)}{mmm(m['served_mb'], '.1f', 28)}"
            f"{mmm(m['cloud_mb'], '.2f', 28)}{mmm(ratio, '.4f', 30)}{mmm(cached, '.1f', 26)}"
            f"{m['bad_lists']:>5}"
        )
    for mode, ratio in b["over_strict"].items():
        if mode != "strict":
            print(
                f"    {mode}: cloud/served over strict's "
                + ("-" if ratio is None else f"{ratio:.4%} (target <= 1%)")
            )
    if "cache-first+watch" in b["modes"]:
        print(
            "    !! the cache-first lists alone never reached the cache (no reflector started);"
            " cache-first+watch opened one watch on the scope during warm-up"
        )

    c = r["watch_latency"]
    print(
        f"\n(c) WATCH LATENCY: {c['watchers']} watchers on {c['objects']} ConfigMaps,"
        f" writer at {c['events_per_s']}/s for {c['seconds']:g} s straight to the sim;"
        " ms from the write being sent (monotonic time embedded in the object)"
        " / from its response, to each watcher reading it"
    )
    head = f"{'mode':<19}{'from':<6}{'p50':>22}{'p90':>22}{'p99':>24}{'max':>26}{'writes/s':>22}"
    print(head)
    print("-" * len(head))
    for mode, m in c["modes"].items():
        for label, key in (("send", "from_send_ms"), ("resp", "from_response_ms")):
            x = m[key]
            if x is None:
                print(f"{mode:<19}{label:<6}  no deliveries")
                continue
            rate = mmm(m["write_rate"], ".0f", 22) if label == "send" else ""
            print(
                f"{mode:<19}{label:<6}{mmm(x['p50'], '.2f', 22)}{mmm(x['p90'], '.2f', 22)}"
                f"{mmm(x['p99'], '.2f', 24)}{mmm(x['max'], '.1f', 26)}{rate}"
            )
    print("    CPU share of one core during the writes (server = the process the watchers read):")
    for mode, m in c["modes"].items():
        print(
            f"    {mode:<19} server {mmm(m['server_cpu_share'], '.2f', 20)}"
            f"   sim {mmm(m['sim_cpu_share'], '.2f', 20)}"
            f"   bench client {mmm(m['client_cpu_share'], '.2f', 20)}"
        )
    p99 = c["modes"]["proxy cache-first"]["from_response_ms"]
    if p99:
        print(
            f"    target: p99 through the proxy <= 10 ms; cache-first: {p99['p99']['median']:.2f} ms"
        )
    bad = {mode: m for mode, m in c["modes"].items() if not m["ok"]}
    if bad:
        print("\n" + "!" * 72)
        print("!! WATCH CHECK FAILED: not every watcher got every event in order")
        for mode, m in bad.items():
            for run in m["runs"]:
                keys = ("watchers_complete_in_order", "caught_up", "errors", "ended_early")
                print(f"!! {mode}: " + json.dumps({k: run[k] for k in keys}))
        print("!" * 72)
    else:
        print("    check: every watcher got every event, in resourceVersion order, in every run")

    d = r["memory"]
    print(
        f"\n(d) PROXY MEMORY with {d['pods']:,} Pods listed once and watched (reflector synced):"
        f" items' JSON {d['json_mb']:.1f} MB (list body {d['list_mb']:.1f} MB,"
        f" store counts {d['store_mb']:.1f} MB)"
    )
    growth = d["peak_mb"]["median"] - d["start_rss_mb"]["median"]
    print(f"    RSS right after start (baseline) {mmm(d['start_rss_mb'], '.1f', 0)} MB")
    print(f"    RSS with the pods cached         {mmm(d['rss_mb'], '.1f', 0)} MB")
    print(f"    peak RSS (VmHWM)                 {mmm(d['peak_mb'], '.1f', 0)} MB")
    print(
        f"    target 2 x JSON + 40 MB = {d['target_mb']:.1f} MB:"
        f" {'within' if d['within_target'] else 'OVER'};"
        f" peak over start {growth:.1f} MB = {growth / d['json_mb']:.2f} x JSON"
    )
    print(f"\ntotal wall time {wall:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, 2,000 pods")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sizes.watchers * 4 + 1024
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
    watch_ok = all(m["ok"] for m in results["watch_latency"]["modes"].values())
    lists_ok = not any(m["bad_lists"] for m in results["cloud_bytes"]["modes"].values())
    return 0 if watch_ok and lists_ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the proxy on the challenge's resourceusage loop: CPU, memory, cloud bytes.

The ACK@Edge challenge scores a proxy by its CPU and memory while one client
lists 1,000 ConfigMaps labelled `type=resourceusage` (about 1.1 MB of JSON per
list) in a tight loop for 60 s. This script replays that loop against the
simulator directly (the **baseline**, measured in the same run) and then
through `edge-proxy serve` in each consistency mode, so a reader sees what the
proxy costs and saves rather than the machine's speed.

    python bench/proxy_bench.py [--seconds 60] [--quick] [--json OUT]

Every list is checked to hold all the ConfigMaps; a short one prints a loud
banner and makes the script exit 1. See bench/README.md for what each figure
means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from edgeproxy.testing import ProxyProcess, SimProcess
from sim_bench import (
    JSON_CT,
    SEED_CONCURRENCY,
    WARMUP_RUNS,
    ProcStats,
    configmap_body,
    own_cpu_seconds,
    summary,
)

NAMESPACE = "resourceusage"
CONFIGMAPS = 1_000
SELECTOR = "type=resourceusage"
LIST_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector=type%3Dresourceusage"
# aiohttp sends "Accept-Encoding: gzip, deflate" unless told otherwise; the
# plain phases ask for identity so every byte counted is a byte of JSON.
IDENTITY = {"Accept": "application/json", "Accept-Encoding": "identity"}
GZIP = {"Accept": "application/json", "Accept-Encoding": "gzip"}
# Metric families whose samples (summed over labels) are the cloud and client bytes.
UPSTREAM_BYTES = "edgeproxy_upstream_received_bytes_total"
CLIENT_BYTES = "edgeproxy_client_sent_bytes_total"
# Keep at most this many distinct error messages per phase.
MAX_ERRORS = 10


class ItemsView(msgspec.Struct):
    """A list's items, left as raw bytes: counting them must not cost the client."""

    items: list[msgspec.Raw] = msgspec.field(default_factory=list)


decode_items = msgspec.json.Decoder(ItemsView).decode


def resourceusage_body(i: int) -> dict[str, Any]:
    """sim_bench's ~1.1 KB resource-usage ConfigMap, with the suite's label."""
    body = configmap_body(NAMESPACE, i)
    body["metadata"]["labels"]["type"] = "resourceusage"
    return body


def disk_write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (proc(5), /proc/<pid>/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def metric_sum(text: str, family: str) -> float:
    """Sum one counter's samples over all label sets in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(family) and line[len(family) : len(family) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    # Extra `edge-proxy serve` flags; None means straight against the simulator.
    proxy_args: tuple[str, ...] | None
    headers: dict[str, str]


PHASES = (
    Phase("sim direct (baseline)", None, IDENTITY),
    Phase("proxy strict", (), IDENTITY),
    Phase("proxy cache-first", ("--consistency=cache-first",), IDENTITY),
    Phase("proxy cache-first gzip", ("--consistency=cache-first",), GZIP),
)


@dataclass(slots=True)
class Loop:
    """What one client saw while listing in a tight loop."""

    latencies: list[float] = field(default_factory=list)
    wire_bytes: int = 0
    json_bytes: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.bad += 1
        if message not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


class Bench:
    def __init__(self, seconds: float, profile_dir: Path | None) -> None:
        self.seconds = seconds
        self.profile_dir = profile_dir
        self.sim = SimProcess()
        self.sim_stats = ProcStats(self.sim.proc.pid)
        self.proxy: ProxyProcess | None = None
        self.results: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "seconds_per_phase": seconds,
            "configmaps": CONFIGMAPS,
            "selector": SELECTOR,
        }

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.sim.stop()

    async def run(self) -> dict[str, Any]:
        self.results["seeding"] = await self.seed()
        phases = []
        for phase in PHASES:
            phases.append(await self.run_phase(phase))
        self.results["phases"] = phases
        self.results["sim_memory_end_mb"] = self.sim_stats.memory_mb()
        return self.results

    # -- seeding through the proxy, as the suite does ---------------------------

    async def seed(self) -> dict[str, Any]:
        proxy = ProxyProcess(self.sim.kubeconfig)
        try:
            async with aiohttp.ClientSession() as http:
                ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
                async with http.post(
                    proxy.url + "/api/v1/namespaces", data=msgspec.json.encode(ns), headers=JSON_CT
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"create namespace: {r.status} {await r.text()}")
                sem = asyncio.Semaphore(SEED_CONCURRENCY)
                path = f"{proxy.url}/api/v1/namespaces/{NAMESPACE}/configmaps"
                encoded = [msgspec.json.encode(resourceusage_body(i)) for i in range(CONFIGMAPS)]

                async def post(body: bytes) -> None:
                    async with sem, http.post(path, data=body, headers=JSON_CT) as r:
                        if r.status != 201:
                            raise RuntimeError(f"POST configmap: {r.status} {await r.text()}")
                        await r.read()

                t0 = time.perf_counter()
                await asyncio.gather(*(post(b) for b in encoded))
                wall = time.perf_counter() - t0
        finally:
            proxy.close()
        return {
            "objects": CONFIGMAPS,
            "seconds": wall,
            "objects_per_s": CONFIGMAPS / wall,
            "request_bytes_avg": sum(map(len, encoded)) / len(encoded),
        }

    # -- one phase -----------------------------------------------------------------

    async def _list_once(self, http: aiohttp.ClientSession, url: str, loop: Loop) -> None:
        t0 = time.perf_counter()
        async with http.get(url) as r:
            body = await r.read()
            encoding = r.headers.get("Content-Encoding", "")
            status = r.status
        loop.latencies.append(time.perf_counter() - t0)
        loop.wire_bytes += len(body)
        if status != 200:
            loop.error(f"HTTP {status}: {body[:200]!r}")
            return
        if encoding == "gzip":
            body = zlib.decompress(body, wbits=31)
        loop.json_bytes += len(body)
        try:
            n = len(decode_items(body).items)
        except msgspec.DecodeError as exc:
            loop.error(f"undecodable list: {exc}")
            return
        if n != CONFIGMAPS:
            loop.error(f"list had {n} items, expected {CONFIGMAPS}")

    def _profile(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy over the whole measured phase, when asked for and installed."""
        if self.profile_dir is None:
            return None
        exe = Path(sys.executable).with_name("py-spy")
        if not exe.exists():
            print(f"  (no {exe}: not profiling)")
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / (name.replace(" ", "-") + ".txt")
        args = [str(exe), "record", "-p", str(pid), "-d", str(int(self.seconds)), "-r", "200"]
        args += ["-f", "raw", "-o", str(out)]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def run_phase(self, phase: Phase) -> dict[str, Any]:
        print(f"phase: {phase.name} ({self.seconds:.0f} s)", flush=True)
        proxy_stats: ProcStats | None = None
        if phase.proxy_args is None:
            base_url = self.sim.url
        else:
            self.proxy = ProxyProcess(self.sim.kubeconfig, *phase.proxy_args)
            assert self.proxy.proc is not None
            proxy_stats = ProcStats(self.proxy.proc.pid)
            base_url = self.proxy.url
        url = base_url + LIST_PATH
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        # One keep-alive connection, bodies read as sent (so gzip bytes are seen).
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=phase.headers, auto_decompress=False
        ) as http:
            warm = Loop()
            for _ in range(WARMUP_RUNS):
                await self._list_once(http, url, warm)
            if warm.bad:
                print(f"  warm-up errors: {warm.errors}")
            start = self._snapshot(proxy_stats)
            profiler = self._profile(proxy_stats.pid, phase.name) if proxy_stats else None
            loop = Loop()
            t0 = time.perf_counter()
            deadline = t0 + self.seconds
            while time.perf_counter() < deadline:
                await self._list_once(http, url, loop)
            wall = time.perf_counter() - t0
            end = self._snapshot(proxy_stats)
            if profiler is not None:
                profiler.wait()
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        return self._figures(phase, loop, wall, start, end)

    def _snapshot(self, proxy_stats: ProcStats | None) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "sim_cpu_s": self.sim_stats.cpu_seconds(),
            "client_cpu_s": own_cpu_seconds(),
            "sim_memory_mb": self.sim_stats.memory_mb(),
        }
        if proxy_stats is not None and self.proxy is not None:
            text = self.proxy.admin("/metrics")
            snap |= {
                "proxy_cpu_s": proxy_stats.cpu_seconds(),
                "proxy_memory_mb": proxy_stats.memory_mb(),
                "proxy_disk_write_bytes": disk_write_bytes(proxy_stats.pid),
                "upstream_bytes": metric_sum(text, UPSTREAM_BYTES),
                "client_bytes": metric_sum(text, CLIENT_BYTES),
            }
        return snap

    def _figures(
        self, phase: Phase, loop: Loop, wall: float, start: dict[str, Any], end: dict[str, Any]
    ) -> dict[str, Any]:
        n = len(loop.latencies)
        lat = summary(loop.latencies) if n > 1 else None
        out: dict[str, Any] = {
            "phase": phase.name,
            "proxy_args": phase.proxy_args,
            "accept_encoding": phase.headers["Accept-Encoding"],
            "lists": n,
            "seconds": wall,
            "lists_per_s": n / wall,
            "latency_s": lat,
            "incomplete_lists": loop.bad,
            "errors": loop.errors,
            "served_wire_bytes": loop.wire_bytes,
            "served_json_bytes": loop.json_bytes,
            "sim_cpu_s": end["sim_cpu_s"] - start["sim_cpu_s"],
            "sim_cpu_ms_per_list": 1000 * (end["sim_cpu_s"] - start["sim_cpu_s"]) / max(n, 1),
            "client_cpu_ms_per_list": 1000
            * (end["client_cpu_s"] - start["client_cpu_s"])
            / max(n, 1),
            "sim_memory_end_mb": end["sim_memory_mb"],
        }
        if "proxy_cpu_s" in end:
            cpu = end["proxy_cpu_s"] - start["proxy_cpu_s"]
            cloud = end["upstream_bytes"] - start["upstream_bytes"]
            out |= {
                "proxy_cpu_s": cpu,
                "proxy_cpu_ms_per_list": 1000 * cpu / max(n, 1),
                "proxy_rss_end_mb": end["proxy_memory_mb"]["VmRSS"],
                "proxy_peak_rss_mb": end["proxy_memory_mb"]["VmHWM"],
                "proxy_disk_write_bytes": end["proxy_disk_write_bytes"]
                - start["proxy_disk_write_bytes"],
                "cloud_bytes": cloud,
                "cloud_bytes_since_start": end["upstream_bytes"],
                "proxy_client_sent_bytes": end["client_bytes"] - start["client_bytes"],
                "cloud_over_served": cloud / loop.wire_bytes if loop.wire_bytes else 0.0,
            }
        else:
            # Straight against the simulator every byte served crosses the link.
            out |= {"cloud_bytes": loop.wire_bytes, "cloud_over_served": 1.0}
        return out


# -- output ------------------------------------------------------------------------


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}{spec}}"


def print_report(r: dict[str, Any], wall: float) -> None:
    phases = r["phases"]
    base = phases[0]
    s = r["seeding"]
    print(
        f"\nedge-proxy resourceusage benchmark ({r['cpus']} CPUs, {r['seconds_per_phase']:.0f} s"
        f" per phase, {r['configmaps']} ConfigMaps labelSelector={r['selector']},"
        f" {base['served_json_bytes'] / max(base['lists'], 1) / 1e6:.2f} MB per list)"
    )
    print(
        f"seeded through the proxy: {s['objects']} ConfigMaps in {s['seconds']:.2f} s"
        f" ({s['objects_per_s']:.0f}/s, {s['request_bytes_avg']:.0f} B each)"
    )
    print(
        "\nTHROUGHPUT AND LATENCY (one client, one keep-alive connection; ratio = phase / baseline)"
    )
    head = (
        f"{'phase':<24}{'lists':>7}{'lists/s':>9}{'x base':>8}{'median ms':>10}{'x base':>8}"
        f"{'p99 ms':>9}{'x base':>8}{'bad':>5}"
    )
    print(head)
    print("-" * len(head))
    bl = base["latency_s"]
    for p in phases:
        lat = p["latency_s"]
        med = lat["median"] if lat else None
        p99 = lat["p99"] if lat else None
        print(
            f"{p['phase']:<24}{p['lists']:>7}{p['lists_per_s']:9.1f}"
            f"{p['lists_per_s'] / base['lists_per_s']:8.2f}"
            f"{fmt(med and med * 1000, '.1f', 10)}"
            f"{fmt(med and bl and med / bl['median'], '.2f', 8)}"
            f"{fmt(p99 and p99 * 1000, '.1f', 9)}"
            f"{fmt(p99 and bl and p99 / bl['p99'], '.2f', 8)}{p['incomplete_lists']:>5}"
        )
    print(
        "\nCPU AND MEMORY (CPU ms per list; baseline sim = the sim answering the client itself;"
        " RSS of the proxy)"
    )
    head = (
        f"{'phase':<24}{'proxy CPU s':>12}{'proxy ms':>10}{'sim ms':>8}{'x base':>8}"
        f"{'client ms':>10}{'proxy+sim':>10}{'x base':>8}{'peak MB':>9}{'end MB':>8}"
    )
    print(head)
    print("-" * len(head))
    base_sim = base["sim_cpu_ms_per_list"]
    for p in phases:
        proxy_ms = p.get("proxy_cpu_ms_per_list")
        both = (proxy_ms or 0.0) + p["sim_cpu_ms_per_list"]
        print(
            f"{p['phase']:<24}{fmt(p.get('proxy_cpu_s'), '.2f', 12)}{fmt(proxy_ms, '.2f', 10)}"
            f"{p['sim_cpu_ms_per_list']:8.2f}"
            f"{fmt(p['sim_cpu_ms_per_list'] / base_sim if base_sim else None, '.2f', 8)}"
            f"{p['client_cpu_ms_per_list']:10.2f}{both:10.2f}"
            f"{fmt(both / base_sim if base_sim else None, '.2f', 8)}"
            f"{fmt(p.get('proxy_peak_rss_mb'), '.1f', 9)}{fmt(p.get('proxy_rss_end_mb'), '.1f', 8)}"
        )
    print(
        "\nBYTES (served = response bodies the client read; cloud = bytes the proxy received"
        " from the sim during the phase, from its metrics;"
        " disk = bytes the proxy wrote to storage during the phase)"
    )
    head = (
        f"{'phase':<24}{'served MB':>10}{'KB/list':>9}{'proxy-counted MB':>17}{'cloud MB':>10}"
        f"{'cloud/served':>13}{'cloud since start MB':>21}{'disk MB':>9}"
    )
    print(head)
    print("-" * len(head))
    for p in phases:
        n = max(p["lists"], 1)
        sent = p.get("proxy_client_sent_bytes")
        since = p.get("cloud_bytes_since_start")
        disk = p.get("proxy_disk_write_bytes")
        print(
            f"{p['phase']:<24}{p['served_wire_bytes'] / 1e6:10.1f}"
            f"{p['served_wire_bytes'] / n / 1e3:9.1f}{fmt(sent and sent / 1e6, '.1f', 17)}"
            f"{p['cloud_bytes'] / 1e6:10.2f}{p['cloud_over_served']:12.3%}"
            f"{fmt(since and since / 1e6, '.2f', 21)}{fmt(disk and disk / 1e6, '.1f', 9)}"
        )
    failed = [p for p in phases if p["incomplete_lists"]]
    for p in failed:
        print("\n" + "!" * 72)
        print(f"!! INCOMPLETE LISTS in {p['phase']}: {p['incomplete_lists']} of {p['lists']}")
        for e in p["errors"]:
            print(f"!! {e}")
        print("!" * 72)
    if not failed:
        print(f"\ncheck: every list held all {r['configmaps']} ConfigMaps")
    m = r["sim_memory_end_mb"]
    print(f"sim memory at the end: RSS {m['VmRSS']:.1f} MB, peak {m['VmHWM']:.1f} MB")
    print(f"total wall time {wall:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, help="seconds per phase (default 60)")
    parser.add_argument("--quick", action="store_true", help="10 s per phase")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run py-spy (raw folded stacks) on the proxy during each proxy phase",
    )
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    started = time.perf_counter()
    bench = Bench(seconds, args.profile)
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
    return 1 if any(p["incomplete_lists"] for p in results["phases"]) else 0


if __name__ == "__main__":
    sys.exit(main())

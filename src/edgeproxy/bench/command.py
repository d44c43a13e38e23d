"""`edge-proxy bench`: start the upstream, run the chosen suites, write the report.

The upstream is a fresh `edge-proxy sim` (the default, `--against sim`), a
real etcd + kube-apiserver started on loopback for the run (`--against
real`: every suite runs against it, the link cut by a relay), or someone's
cluster (`--against KUBECONFIG`): then only the suites that cut nothing and
create nothing but ConfigMaps in namespaces of their own run, and those
namespaces are deleted at the end. A suite that does not run says why in
the report. Results go to `--out` as JSON, Markdown and PNG charts
(matplotlib, the `bench` extra); without matplotlib the charts are skipped
with a message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeproxy.bench import cloud, report
from edgeproxy.bench.baselines import TARGETS
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.runner import MIN_RUNS, Progress
from edgeproxy.bench.session import FULL, QUICK, REAL, Session, Sizes, SuiteResult

SUITES = ("challenge", "scale", "outage", "restart", "bandwidth", "watchcache", "filters")
DEFAULT_SUITES = SUITES
# Sockets: 100 watchers on each side of a proxy, nginx's too, plus headroom.
OPEN_FILES = 8192


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tools: dict[str, str | None] = {}
    for tool, args in (("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "--version"])):
        if shutil.which(tool):
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            tools[tool] = (done.stdout + done.stderr).strip().splitlines()[0][:80]
        else:
            tools[tool] = None
    return {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "tools": tools,
    }


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < OPEN_FILES:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(OPEN_FILES, hard), hard))


def _start_upstream(against: str, workdir: Path, progress: Progress) -> Upstream:
    if against == "sim":
        progress.say("starting edge-proxy sim")
        return cloud.start_sim(workdir / "sim")
    if against == "real":
        progress.say("starting etcd + kube-apiserver (edgeproxy.controlplane)")
        t0 = time.monotonic()
        upstream = cloud.start_real(workdir / "real")
        progress.say(f"kube-apiserver ready in {time.monotonic() - t0:.1f} s at {upstream.url}")
        return upstream
    return cloud.cluster(Path(against), workdir / "keys")


def _describe(against: str, upstream: Upstream) -> str:
    """What the report says the upstream was: the real one's version is worth naming."""
    if upstream.control is None:
        return against
    status, body = upstream.control.request("GET", "/version")
    version = json.loads(body).get("gitVersion", "?") if status == 200 else "?"
    return f"real: kube-apiserver {version} + etcd on loopback, started for the run"


def _suite(name: str) -> ModuleType:
    return importlib.import_module(f"edgeproxy.bench.suites.{name}")


async def _run_suites(session: Session, names: list[str]) -> dict[str, SuiteResult]:
    results: dict[str, SuiteResult] = {}
    for name in names:
        module = _suite(name)
        reason: str = module.OWN_UPSTREAM_ONLY
        if reason and not session.upstream.owned:
            reason = f"skipped: {reason}; run it against the simulator or `--against real`"
            session.say(f"{name}: {reason}")
            results[name] = SuiteResult(name, module.TITLE, module.__doc__ or "", notes=[reason])
            continue
        session.say(f"== suite {name}: {module.TITLE}")
        results[name] = await module.run(session)
    return results


async def _cleanup_namespaces(upstream: Upstream) -> None:
    """Against someone's cluster: delete the namespaces the suites created."""
    async with upstream.api() as api:
        status, body = await api.get_bytes("/api/v1/namespaces")
        if status != 200:
            return
        import msgspec

        for item in msgspec.json.decode(body)["items"]:
            name = item["metadata"]["name"]
            if name.startswith(("ch-", "ru-", "bench-")):
                await api.delete(f"/api/v1/namespaces/{name}")


def run(
    suites: list[str],
    against: str,
    out: Path,
    *,
    quick: bool = False,
    runs: int = MIN_RUNS,
    targets: tuple[str, ...] = TARGETS,
    sizes: Sizes | None = None,
    peers: tuple[str, ...] = (),
    peer_runs: int | None = None,
    charts: bool = True,
) -> int:
    """Run `suites` (all when empty) against `against`; write the report to `out`.

    `sizes` replaces the size set as is, runs included (tests run once);
    otherwise the set is QUICK, REAL or FULL with at least MIN_RUNS runs.
    With `peers` (e.g. yurthub), the peers bench runs instead: one edge
    node's workload through direct, strict, cache-first and each peer, on a
    real control plane of its own (edgeproxy.bench.peers_bench).
    """
    if peers:
        from edgeproxy.bench import peers_bench

        if against != "real" or suites:
            print("edge-proxy bench --peers: runs alone, against a real control plane of its own")
        sizes_ = peers_bench.TINY if quick else peers_bench.FULL
        return peers_bench.run(peers, out, sizes=sizes_, runs=peer_runs, charts=charts)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        print(
            f"edge-proxy bench: unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}"
        )
        return 2
    names = suites or list(DEFAULT_SUITES)
    if sizes is None:
        base: Sizes = QUICK if quick else REAL if against == "real" else FULL
        sizes = dataclasses.replace(base, runs=max(runs, MIN_RUNS))
    _raise_open_files()
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="edge-proxy-bench-"))
    started = datetime.now(UTC)
    t0 = time.monotonic()
    load0 = os.getloadavg()
    upstream: Upstream | None = None
    try:
        upstream = _start_upstream(against, workdir, progress)
        described = _describe(against, upstream)
        session = Session(upstream, sizes, targets, progress, workdir)
        results = asyncio.run(_run_suites(session, names))
        if not upstream.owned:
            asyncio.run(_cleanup_namespaces(upstream))
    finally:
        if upstream is not None:
            cloud.stop(upstream)
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "against": described,
        "suites": names,
        "runs": sizes.runs,
        "quick": quick,
        "sizes": {f: getattr(sizes, f) for f in sizes.__slots__},
        "wall_s": time.monotonic() - t0,
        "seeding_s": session.dataset.seconds,
        # The machine is shared: the 1-minute load average at the start and the end.
        "load": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
    }
    written = report.write(out, meta, results, charts=charts)
    progress.say(f"done in {meta['wall_s']:.0f} s; wrote {', '.join(str(p) for p in written)}")
    print()
    print(report.markdown(meta, {k: v.to_json() for k, v in results.items()}))
    return 1 if any(r.failures for r in results.values()) else 0

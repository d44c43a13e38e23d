"""`edge-proxy bench`: start the upstream, run the chosen suites, write the report.

The upstream is a fresh `edge-proxy sim` (the default, `--against sim`) or a
real cluster (`--against KUBECONFIG`): then only the suites that need no
fault injection and create nothing but ConfigMaps in namespaces of their own
run, and those namespaces are deleted at the end. Results go to `--out` as
JSON, Markdown and PNG charts (matplotlib, the `bench` extra); without
matplotlib the charts are skipped with a message.
"""

from __future__ import annotations

import asyncio
import importlib
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

from edgeproxy.bench import report
from edgeproxy.bench.baselines import TARGETS, Upstream
from edgeproxy.bench.runner import MIN_RUNS, Progress
from edgeproxy.bench.session import FULL, QUICK, Session, Sizes, SuiteResult
from edgeproxy.testing import SimProcess

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


def _real_cluster(kubeconfig: Path, workdir: Path) -> Upstream:
    from edgeproxy.upstream import credentials

    creds = credentials.from_kubeconfig(kubeconfig)
    ctx = credentials.ssl_context(creds, workdir / "keys")
    headers = credentials.TokenSource(creds).headers()
    return Upstream(creds.servers[0], kubeconfig, ssl_context=ctx, headers=headers)


def _suite(name: str) -> ModuleType:
    return importlib.import_module(f"edgeproxy.bench.suites.{name}")


async def _run_suites(session: Session, names: list[str]) -> dict[str, SuiteResult]:
    results: dict[str, SuiteResult] = {}
    for name in names:
        module = _suite(name)
        if module.SIM_ONLY and not session.upstream.faults:
            reason = "needs fault injection or creates Pods/Services: run it against the simulator"
            session.say(f"{name}: skipped against a real cluster ({reason})")
            results[name] = SuiteResult(name, module.TITLE, module.__doc__ or "", notes=[reason])
            continue
        session.say(f"== suite {name}: {module.TITLE}")
        results[name] = await module.run(session)
    return results


async def _cleanup_namespaces(upstream: Upstream) -> None:
    """Against a real cluster: delete the namespaces the suites created."""
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
) -> int:
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        print(
            f"edge-proxy bench: unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}"
        )
        return 2
    names = suites or list(DEFAULT_SUITES)
    base: Sizes = QUICK if quick else FULL
    sizes = Sizes(**{**{f: getattr(base, f) for f in base.__slots__}, "runs": max(runs, MIN_RUNS)})
    _raise_open_files()
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="edge-proxy-bench-"))
    sim: SimProcess | None = None
    if against == "sim":
        progress.say("starting edge-proxy sim")
        sim = SimProcess(workdir=workdir / "sim")
        upstream = Upstream(sim.url, sim.kubeconfig, sim=sim)
    else:
        upstream = _real_cluster(Path(against), workdir)
    session = Session(upstream, sizes, targets, progress, workdir)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        results = asyncio.run(_run_suites(session, names))
        if sim is None:
            asyncio.run(_cleanup_namespaces(upstream))
    finally:
        if sim is not None:
            sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "against": against,
        "suites": names,
        "runs": sizes.runs,
        "quick": quick,
        "wall_s": time.monotonic() - t0,
        "seeding_s": session.dataset.seconds,
        "machine": machine(),
    }
    written = report.write(out, meta, results)
    progress.say(f"done in {meta['wall_s']:.0f} s; wrote {', '.join(str(p) for p in written)}")
    print()
    print(report.markdown(meta, {k: v.to_json() for k, v in results.items()}))
    return 1 if any(r.failures for r in results.values()) else 0

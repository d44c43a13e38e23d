"""`edge-proxy bench --peers yurthub`: one edge node's workload through every way in.

The claim edge-proxy exists for is that it does what OpenYurt's YurtHub does
with fewer cloud bytes, less node CPU and memory, and correct list/watch
behaviour offline. This measures it on one real control plane (etcd +
kube-apiserver, `edgeproxy.controlplane`), started, seeded and shared by
every run: in each run all targets (straight to the cloud, edge-proxy
strict, edge-proxy cache-first, YurtHub) go side by side through one
timeline (peers_run): idle, churn, an outage with a restart of the proxy and
the kubelet, the restore. Figures per target are medians over `runs` with
min and max; a target that cannot do something shows it in its figures and
in a note, and one that failed shows its error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeproxy.bench import cloud, peers, peers_report
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.peers_churn import seed
from edgeproxy.bench.peers_run import PeerSizes, one_run
from edgeproxy.bench.peers_way import grant_tokens
from edgeproxy.bench.runner import Progress, Run, aggregate
from edgeproxy.controlplane import ControlPlane

TARGETS = ("direct", "strict", "cache-first", "yurthub", "superedge")

# Medians of 3 in about 8 minutes on 2 cores with the binaries cached. The
# outage outlasts YurtHub's ~45 s before its health checks declare the cloud
# gone, so "fresh client synced offline" is measured for it, not cut short.
FULL = PeerSizes(1_000, 50, 30, 10.0, idle_s=20, churn_s=20, outage_s=50, runs=3)
TINY = PeerSizes(20, 5, 3, 5.0, idle_s=3, churn_s=3, outage_s=12, runs=1)


def _yurthub_config(control: ControlPlane) -> None:
    """YurtHub caches only listed components: the hollow kubelet calls itself kubemark."""
    status, answer = control.request("POST", "/api/v1/namespaces/kube-system/configmaps", {
        "metadata": {"name": "yurt-hub-cfg", "labels": {"openyurt.io/configmap-name": "yurt-hub-cfg"}},
        "data": {"cache_agents": "kubemark"},
    })  # fmt: skip
    if status not in (201, 409):
        raise RuntimeError(f"yurt-hub-cfg: HTTP {status} {answer[:200]!r}")


def run(
    peer_names: tuple[str, ...],
    out: Path,
    *,
    sizes: PeerSizes = FULL,
    runs: int | None = None,
    charts: bool = True,
) -> int:
    """Run the node workload through direct, strict, cache-first and each peer; write the report."""
    unknown = [p for p in peer_names if p not in peers.PEERS]
    if unknown:
        print(
            f"edge-proxy bench: unknown peer(s) {', '.join(unknown)}; known: {', '.join(peers.PEERS)}"
        )
        return 2
    for name in peer_names:
        try:
            peers.binary(name)
        except peers.PeerMissing as exc:
            print(f"edge-proxy bench --peers: {exc}")
            return 2
    if runs is not None:
        sizes = dataclasses.replace(sizes, runs=runs)
    say = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="edge-proxy-peers-"))
    started = datetime.now(UTC)
    t0 = time.monotonic()
    upstream: Upstream | None = None
    per_target: dict[str, list[Run]] = {}
    notes: list[str] = []
    failures: list[str] = []
    targets = ("direct", "strict", "cache-first", *peer_names)
    try:
        say.say("starting etcd + kube-apiserver (edgeproxy.controlplane)")
        upstream = cloud.start_real(workdir / "real")
        assert upstream.control is not None
        peers.grant(upstream.control)
        tokens = grant_tokens(upstream.control, targets)
        _yurthub_config(upstream.control)
        seeded = asyncio.run(seed(upstream, sizes.services, sizes.endpoints_per_service))
        say.say(f"seeded {sizes.services} Services + EndpointSlices in {seeded:.1f} s")
        for k in range(sizes.runs):
            say.say(f"peers run {k + 1}/{sizes.runs}: {', '.join(targets)} side by side")
            for t in one_run(k, targets, upstream, sizes, workdir, say, tokens):
                if t.failure is not None:
                    failures.append(t.failure)
                    say.say(f"peers / {t.name}: FAILED: {t.failure[:500]}")
                    continue
                per_target.setdefault(t.name, []).append(t.run)
                notes += [n for n in t.notes if n not in notes]
        version = _version(upstream.control)
    finally:
        if upstream is not None:
            cloud.stop(upstream)
        shutil.rmtree(workdir, ignore_errors=True)
    from edgeproxy.bench.command import machine

    meta: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "against": f"real: kube-apiserver {version} + etcd on loopback, started for the run",
        "peers": list(peer_names),
        "runs": sizes.runs,
        "sizes": dataclasses.asdict(sizes),
        "wall_s": time.monotonic() - t0,
        "machine": machine(),
    }
    suite = {
        "title": "one edge node through each way in (hollow kubelet, kube-proxy, coredns)",
        "about": __doc__ or "",
        "targets": {t: aggregate(rs) for t, rs in per_target.items()},
        "order": list(targets),
        "notes": notes,
        "failures": failures,
        "runs": per_target,
    }
    written = peers_report.write(out, meta, suite, charts=charts)
    say.say(f"done in {meta['wall_s']:.0f} s; wrote {', '.join(str(p) for p in written)}")
    print()
    print(peers_report.markdown(meta, suite))
    return 1 if failures else 0


def _version(control: ControlPlane | None) -> str:
    if control is None:
        return "?"
    status, body = control.request("GET", "/version")
    return str(json.loads(body).get("gitVersion", "?")) if status == 200 else "?"

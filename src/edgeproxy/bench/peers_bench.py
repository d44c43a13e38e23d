"""`edge-proxy bench --peers yurthub`: one edge node's workload through every way in.

The claim edge-proxy exists for is that it does what OpenYurt's YurtHub does
with fewer cloud bytes, less node CPU and memory, and correct list/watch
behaviour offline. This measures it on one real control plane (etcd +
kube-apiserver, `edgeproxy.controlplane`) in one run: for each target
(straight to the cloud, edge-proxy strict, edge-proxy cache-first, YurtHub)
a fresh counting relay (`edgeproxy.link.Relay`) stands for the cloud link,
an `EdgeNode` (hollow kubelet + kube-proxy-like + coredns-like informers)
runs through the target, and the cloud changes EndpointSlices and Services
at a steady rate. Measured per target: cloud bytes idle and under churn,
the proxy's CPU and peak RSS, the clients' CPU, and across a black-holed
link: relists and 410s the informers saw, LISTs reaching kube-apiserver
after the link is back (its audit log), time until the informers have the
cloud's latest state and until the node's Lease renews again, and whether a
client started while offline gets its lists. A target that cannot do
something shows it in its figures (0 for "synced offline") and in a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeproxy.bench import cloud, objects, peers, peers_report
from edgeproxy.bench.baselines import MODE_ARGS
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.peers_node import COREDNS_UA, COREDNS_WATCHES, EdgeNode, wait_until
from edgeproxy.bench.procstat import ProcGroup
from edgeproxy.bench.runner import Progress, Run, aggregate
from edgeproxy.clientgo import Informer
from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import LinkRelay
from edgeproxy.testing import ProxyProcess

TARGETS = ("direct", "strict", "cache-first", "yurthub")
SVC_NS = "peers-svc"
CONVERGE_TIMEOUT = 90.0
# Every change of every Churn, across targets and runs.
_SEQ = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PeerSizes:
    services: int
    endpoints_per_service: int
    pods: int
    churn_per_s: float
    idle_s: float
    churn_s: float
    outage_s: float
    runs: int


# One run per target: 3 of each do not fit the 15-minute bar on 2 cores.
FULL = PeerSizes(1_000, 50, 30, 10.0, idle_s=20, churn_s=20, outage_s=60, runs=1)
TINY = PeerSizes(20, 5, 3, 5.0, idle_s=3, churn_s=3, outage_s=12, runs=1)


class Churn:
    """Changes in the cloud at a steady rate, in a thread of its own, straight to kube-apiserver.

    Nine in ten touch an EndpointSlice (as a rollout does), one in ten a
    Service. `last` is the latest EndpointSlice (key, resourceVersion): a
    client that has handled it has caught up.
    """

    def __init__(self, upstream: Upstream, services: int, rate: float) -> None:
        self.upstream = upstream
        self.services = services
        self.rate = rate
        self.n = 0
        self.last = ("", "")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"churn failed: {self.error}")

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _loop(self) -> None:
        slices = f"/apis/discovery.k8s.io/v1/namespaces/{SVC_NS}/endpointslices"
        async with self.upstream.writer() as writer:
            t0 = time.monotonic()
            done = 0
            while not self._stop.is_set():
                self.n += 1
                i = self.n % self.services
                # A value never written before in this process: a merge patch
                # that changes nothing is a no-op (same resourceVersion, no event).
                body = {"metadata": {"annotations": {"bench/seq": str(next(_SEQ))}}}
                if self.n % 10 == 0:
                    await writer.patch(f"/api/v1/namespaces/{SVC_NS}/services/svc-{i:04d}", body)
                else:
                    name = objects.endpointslice_name(i)
                    rv, _ = await writer.patch(f"{slices}/{name}", body)
                    self.last = (f"{SVC_NS}/{name}", str(rv))
                done += 1
                ahead = t0 + done / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)


async def _seed(upstream: Upstream, sizes: PeerSizes) -> float:
    async with upstream.writer() as writer:
        await writer.ensure_namespace(SVC_NS)
        seconds = await writer.create_all(
            f"/api/v1/namespaces/{SVC_NS}/services",
            [objects.service_body(SVC_NS, i) for i in range(sizes.services)],
        )
        seconds += await writer.create_all(
            f"/apis/discovery.k8s.io/v1/namespaces/{SVC_NS}/endpointslices",
            [
                objects.endpointslice_body(SVC_NS, i, sizes.endpoints_per_service)
                for i in range(sizes.services)
            ],
        )
    return seconds


def _yurthub_config(control: ControlPlane) -> None:
    """YurtHub caches only listed components: the hollow kubelet calls itself kubemark."""
    status, answer = control.request("POST", "/api/v1/namespaces/kube-system/configmaps", {
        "metadata": {"name": "yurt-hub-cfg", "labels": {"openyurt.io/configmap-name": "yurt-hub-cfg"}},
        "data": {"cache_agents": "kubemark"},
    })  # fmt: skip
    if status not in (201, 409):
        raise RuntimeError(f"yurt-hub-cfg: HTTP {status} {answer[:200]!r}")


def _audit_lists(control: ControlPlane, since: int) -> int:
    """LISTs kube-apiserver answered after byte `since` of its audit log, the bench's own left out."""
    count = 0
    with control.audit_log.open("rb") as log:
        log.seek(since)
        for line in log:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("verb") != "list" or event.get("stage") != "ResponseComplete":
                continue
            if event.get("userAgent", "").lower().startswith("python"):
                continue
            count += 1
    return count


def _gone(informer: Informer, since: float) -> int:
    """410 Gone (as watch errors, or list/watch errors saying so) after `since`."""
    n = 0
    for r in informer.records():
        if r.get("time", 0) < since:
            continue
        error = str(r.get("error", ""))
        expired = r["type"] in ("list", "watch") and ("too old" in error or "Expired" in error)
        if expired or (r["type"] == "watch_error" and r.get("code") == 410):
            n += 1
    return n


class Way:
    """One target in front of the relay: the process between (if any) and the clients' URL."""

    def __init__(
        self, name: str, upstream: Upstream, link: LinkRelay, workdir: Path, node: str
    ) -> None:
        control = upstream.control
        assert control is not None
        self.name = name
        self.proxy: ProxyProcess | None = None
        self.hub: peers.YurtHub | None = None
        self.token: str | None = None
        self.ca_file: Path | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        through = workdir / "through-link.kubeconfig"
        through.write_text(control.kubeconfig.read_text().replace(control.url, link.url("https")))
        if name == "direct":
            self.url, self.kubeconfig = link.url("https"), through
            self.token, self.ca_file = control.token, control.ca_file
            self.procs: ProcGroup | None = None
        elif name in MODE_ARGS:
            self.proxy = ProxyProcess(through, *MODE_ARGS[name], workdir=workdir / "proxy")
            assert self.proxy.proc is not None
            self.url, self.kubeconfig = self.proxy.url, self.proxy.kubeconfig
            self.procs = ProcGroup(self.proxy.proc.pid)
        elif name == "yurthub":
            self.hub = peers.YurtHub(control, link.url("https"), workdir, node)
            assert self.hub.proc is not None
            self.url = self.hub.url
            self.kubeconfig = workdir / "yurthub-client.kubeconfig"
            self.kubeconfig.write_text(
                "apiVersion: v1\nkind: Config\n"
                f"clusters:\n- name: hub\n  cluster:\n    server: {self.url}\n"
                "users:\n- name: node\n  user: {}\n"
                "contexts:\n- name: hub\n  context: {cluster: hub, user: node}\n"
                "current-context: hub\n"
            )
            self.procs = ProcGroup(self.hub.proc.pid)
        else:
            raise ValueError(f"unknown target {name!r}")

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.hub is not None:
            self.hub.stop()


def _one(
    name: str, k: int, upstream: Upstream, sizes: PeerSizes, workdir: Path, say: Progress
) -> tuple[Run, list[str]]:
    """One measured run of target `name`: figures, and notes on what it could not do."""
    control = upstream.control
    assert control is not None
    notes: list[str] = []
    run: Run = {}
    link = LinkRelay("127.0.0.1", control.port)
    way = node = None
    churn = Churn(upstream, sizes.services, sizes.churn_per_s)
    try:
        way = Way(name, upstream, link, workdir, f"edge-{name}-{k}")
        node = EdgeNode(
            control, f"edge-{name}-{k}", f"peers-{name}-{k}", workdir / "node",
            url=way.url, kubeconfig=way.kubeconfig, token=way.token, ca_file=way.ca_file,
        )  # fmt: skip
        run["kubelet: Ready + pods Running (s)"] = node.start_kubelet(sizes.pods)
        run["informers synced (s)"] = node.start_informers()
        time.sleep(3)  # the kubelet's and informers' start-up traffic settles

        b0, t0 = link.relay.down_bytes, time.monotonic()
        cpu0 = way.procs.cpu_seconds() if way.procs else math.nan
        time.sleep(sizes.idle_s)
        run["idle cloud bytes (KB/s)"] = (
            (link.relay.down_bytes - b0) / 1024 / (time.monotonic() - t0)
        )
        say.say(f"peers / {name}: idle {run['idle cloud bytes (KB/s)']:.1f} KB/s")

        clients = node.clients()
        ccpu0 = clients.cpu_seconds() if clients else math.nan
        b0 = link.relay.down_bytes
        n0 = churn.n
        churn.start()
        time.sleep(sizes.churn_s)
        churn.stop()
        run["cloud changes in the churn window"] = float(churn.n - n0)
        wait_until(lambda: node.has_seen(*churn.last), 60, f"{name}: informers caught up")
        run["churn cloud bytes (MB)"] = (link.relay.down_bytes - b0) / 1e6
        if way.procs is not None:
            run["proxy CPU, idle + churn (s)"] = way.procs.cpu_seconds() - cpu0
        if clients is not None:
            run["clients CPU, churn (s)"] = clients.cpu_seconds() - ccpu0
        say.say(f"peers / {name}: churn {run['churn cloud bytes (MB)']:.2f} MB")

        # -- offline: the link black-holed while the cloud goes on changing ----
        relists0 = sum(i.relists() for i in node.informers)
        cut_at = time.time()
        link.blackhole()
        churn.start()
        # A client started 5 s into the outage: how long until a proxy serves
        # it from its cache (YurtHub first waits for its health checks to
        # declare the cloud gone: ~40 s after the cut here).
        time.sleep(5)
        late = node.start_informer("coredns-offline", COREDNS_WATCHES, COREDNS_UA)
        try:
            late.wait_synced(timeout=max(1.0, sizes.outage_s - 5))
            run["offline: fresh client synced (1 = yes)"] = 1.0
            run["offline: fresh client synced, after the cut (s)"] = time.time() - cut_at
        except AssertionError:
            run["offline: fresh client synced (1 = yes)"] = 0.0
            notes.append(
                f"{name}: a client started while offline got no lists"
                f" within {sizes.outage_s:g} s of the cut"
            )
        churn.stop()
        audit_at = control.audit_log.stat().st_size
        restored = datetime.now(UTC)
        link.restore()
        t_restore = time.monotonic()
        try:
            run["converged after restore (s)"] = wait_until(
                lambda: node.has_seen(*churn.last), CONVERGE_TIMEOUT, f"{name}: converged"
            )
        except RuntimeError:
            notes.append(f"{name}: informers did not catch up within {CONVERGE_TIMEOUT:.0f} s")
        try:
            left = max(1.0, 60 - (time.monotonic() - t_restore))
            wait_until(lambda: node.lease_renewed_after(restored), left, "lease")
            run["Lease renewed after restore (s)"] = time.monotonic() - t_restore
        except RuntimeError:
            notes.append(f"{name}: the node's Lease was not renewed within 60 s of restore")
        time.sleep(3)  # late relists land in the audit log
        run["informer relists, outage"] = float(
            sum(i.relists() for i in node.informers[:2]) - relists0
        )
        run["410 Gone seen by informers"] = float(sum(_gone(i, cut_at) for i in node.informers))
        run["upstream LISTs after restore"] = float(_audit_lists(control, audit_at))
        if way.procs is not None:
            run["proxy peak RSS (MB)"] = way.procs.peak_rss_mb()
        run["cloud bytes, whole run (MB)"] = link.relay.down_bytes / 1e6
        return run, notes
    finally:
        # Each step on its own: a failed one must not leave processes behind.
        for step in (churn.stop, node.stop if node else None, way.close if way else None):
            if step is not None:
                with contextlib.suppress(RuntimeError, OSError):
                    step()
        link.close()


def run(
    peer_names: tuple[str, ...], out: Path, *, sizes: PeerSizes = FULL, runs: int | None = None
) -> int:
    """Run the node workload through direct, strict, cache-first and each peer; write the report."""
    unknown = [p for p in peer_names if p not in peers.PEERS]
    if unknown:
        print(f"edge-proxy bench: unknown peer(s) {', '.join(unknown)}; known: yurthub")
        return 2
    try:
        peers.binary("yurthub")
    except peers.PeerMissing as exc:
        print(f"edge-proxy bench --peers: {exc}")
        return 2
    if runs is not None:
        sizes = PeerSizes(**{**{f: getattr(sizes, f) for f in PeerSizes.__slots__}, "runs": runs})
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
        _yurthub_config(upstream.control)
        seeded = asyncio.run(_seed(upstream, sizes))
        say.say(f"seeded {sizes.services} Services + EndpointSlices in {seeded:.1f} s")
        for k in range(sizes.runs):
            for name in targets:
                say.say(f"peers / {name}: run {k + 1}/{sizes.runs}")
                try:
                    figures, said = _one(name, k, upstream, sizes, workdir / f"{name}-{k}", say)
                except (RuntimeError, OSError, AssertionError) as exc:
                    failures.append(f"{name}: {exc}"[:2000])
                    say.say(f"peers / {name}: FAILED: {str(exc)[:500]}")
                    continue
                per_target.setdefault(name, []).append(figures)
                notes += [n for n in said if n not in notes]
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
        "sizes": {f: getattr(sizes, f) for f in PeerSizes.__slots__},
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
    written = peers_report.write(out, meta, suite)
    say.say(f"done in {meta['wall_s']:.0f} s; wrote {', '.join(str(p) for p in written)}")
    print()
    print(peers_report.markdown(meta, suite))
    return 1 if failures else 0


def _version(control: ControlPlane | None) -> str:
    if control is None:
        return "?"
    status, body = control.request("GET", "/version")
    return str(json.loads(body).get("gitVersion", "?")) if status == 200 else "?"

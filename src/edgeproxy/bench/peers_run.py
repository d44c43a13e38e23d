"""One run of the peers bench: every target side by side through one timeline.

All targets (straight to the cloud, edge-proxy strict and cache-first,
YurtHub) run at once, each with its own edge node (hollow kubelet,
kube-proxy-like and coredns-like informers) behind its own counting relay,
and live through the same windows: idle, the same churn, the same outage.
What is measured per target stays per target: bytes are counted by its own
relay, CPU and memory are its own processes', and upstream LISTs are
kube-apiserver audit events of its own user (peers_way). Side by side
every target sees exactly the same changes and the same outage, and a run
takes the time of one target instead of four: the 2-core machine is shared
by all of them, which slows the start-up and catch-up times alike for all.

The outage: the links are black-holed while the cloud goes on changing;
right away each target's proxy and hollow kubelet are restarted (edge-proxy
from its journal, YurtHub from its disk cache; direct has no proxy) and a
fresh coredns-like client starts; after `outage_s` the links come back.
Then, per target: how long until the clients have the cloud's latest
change, until the Node is Ready with a heartbeat newer than the restore and
its Lease renewed; what the clients missed or got twice, their relists and
410s, and the LISTs that reached kube-apiserver after the restore.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edgeproxy.bench import peers_delivery as delivery
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.peers_churn import Churn
from edgeproxy.bench.peers_node import COREDNS_UA, COREDNS_WATCHES, EdgeNode
from edgeproxy.bench.peers_way import Way
from edgeproxy.bench.runner import Progress, Run
from edgeproxy.clientgo import Informer
from edgeproxy.link import LinkRelay

CATCH_UP_TIMEOUT = 60.0
# Each of: kubelet Ready with its pods Running, informers synced (all targets
# wait for the slowest: a target that cannot start must not hold them long).
SETUP_TIMEOUT = 75.0
# Offline figures a target may have no number for (each then gets a note saying why).
SERVING = "offline: proxy serving after restart (s)"
LATE = "offline: fresh client synced after restart (s)"
CONVERGED = "converged after restore (s)"
NODE_READY = "node Ready again after restore (s)"
LEASE = "Lease renewed after restore (s)"


@dataclass(frozen=True, slots=True)
class PeerSizes:
    """The workload (dataset, pods, churn rate) and the timeline's windows, in seconds."""

    services: int
    endpoints_per_service: int
    pods: int
    churn_per_s: float
    idle_s: float
    churn_s: float
    outage_s: float
    runs: int
    # How long after the restore to wait for each target's clients, Node and
    # Lease: past it, what did not happen is reported as "not within".
    restore_s: float = 90.0


@dataclass
class Target:
    """One target's part of a run: its link, way in, node, figures and notes."""

    name: str
    link: LinkRelay
    way: Way | None = None
    node: EdgeNode | None = None
    late: Informer | None = None
    run: Run = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failure: str | None = None
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def note(self, text: str) -> None:
        self.notes.append(f"{self.name}: {text}")

    def lacks(self, figure: str, why: str) -> None:
        """A figure this target has no number for, and why: shown, never silently left out."""
        self.note(f"no “{figure}”: {why}")


def _each(targets: list[Target], step: Callable[[Target], None]) -> None:
    """`step` on every live target at once; a target whose step raises is failed, not the run."""
    live = [t for t in targets if t.ok]
    with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
        futures = {t.name: pool.submit(step, t) for t in live}
    for t in live:
        error = futures[t.name].exception()
        if error is not None:
            said = str(error).splitlines()[0][:300] if str(error) else ""
            lines = [f"{t.name}: {type(error).__name__}: {said}"]
            if t.way is not None:
                lines += t.way.diagnosis()
            t.failure = "\n".join(lines)[:3000]


def _poll(targets: list[Target], checks: dict[str, Callable[[Target], bool]], t0: float,
          timeout: float) -> None:  # fmt: skip
    """Until every check holds for every live target (or `timeout`): each one's seconds into `marks`."""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        pending = False
        for t in targets:
            for name, check in checks.items():
                if not t.ok or name in t.marks:
                    continue
                try:
                    done = check(t)
                except (OSError, RuntimeError, ValueError, KeyError):
                    done = False
                if done:
                    t.marks[name] = time.monotonic() - t0
                else:
                    pending = True
        if not pending:
            return
        time.sleep(0.25)


def one_run(
    k: int, names: tuple[str, ...], upstream: Upstream, sizes: PeerSizes, workdir: Path,
    say: Progress, tokens: dict[str, str],
) -> list[Target]:  # fmt: skip
    """Run `k` of every target in `names`; each Target carries its figures, notes or failure."""
    control = upstream.control
    assert control is not None
    pods = sizes.pods
    targets = [Target(n, LinkRelay("127.0.0.1", control.port)) for n in names]
    churn = Churn(upstream, sizes.services, sizes.churn_per_s)
    try:
        # -- start: every target's proxy, kubelet, pods and informers at once --
        def setup(t: Target) -> None:
            node_name = f"edge-{t.name}-{k}"
            t.way = Way(
                t.name, control, t.link, workdir / f"{t.name}-{k}", node_name, tokens[t.name]
            )
            t.node = EdgeNode(
                control, node_name, f"peers-{t.name}-{k}", workdir / f"{t.name}-{k}" / "node",
                url=t.way.url, kubeconfig=t.way.kubeconfig, token=t.way.token,
                ca_file=t.way.ca_file,
            )  # fmt: skip
            t.run["kubelet: Ready + pods Running (s)"] = t.node.start_kubelet(pods, SETUP_TIMEOUT)
            t.run["informers synced (s)"] = t.node.start_informers(SETUP_TIMEOUT)

        _each(targets, setup)
        say.say(f"peers run {k + 1}: started {', '.join(t.name for t in targets if t.ok)}")
        time.sleep(2)  # the kubelets' and informers' start-up traffic settles
        _measure_idle_and_churn(targets, churn, sizes.idle_s, sizes.churn_s, say)
        _outage(targets, churn, sizes, upstream, say)
        return targets
    finally:
        with contextlib.suppress(RuntimeError):
            churn.stop()

        def teardown(t: Target) -> None:
            for step in (t.node.stop if t.node else None, t.way.close if t.way else None):
                if step is not None:
                    with contextlib.suppress(RuntimeError, OSError, AssertionError):
                        step()
            t.link.close()

        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            list(pool.map(teardown, targets))


def _live(targets: list[Target]) -> list[Target]:
    return [t for t in targets if t.ok and t.way is not None and t.node is not None]


def _measure_idle_and_churn(
    targets: list[Target], churn: Churn, idle_s: float, churn_s: float, say: Progress
) -> None:
    live = _live(targets)
    b0 = {t.name: t.link.relay.down_bytes for t in live}
    cpu0 = {t.name: t.way.procs.cpu_seconds() if t.way and t.way.procs else math.nan for t in live}
    t0 = time.monotonic()
    time.sleep(idle_s)
    for t in live:
        kb = (t.link.relay.down_bytes - b0[t.name]) / 1024 / (time.monotonic() - t0)
        t.run["idle cloud bytes (KB/s)"] = kb
    clients = {t.name: t.node.clients() if t.node else None for t in live}
    ccpu0 = {n: c.cpu_seconds() if c else math.nan for n, c in clients.items()}
    b0 = {t.name: t.link.relay.down_bytes for t in live}
    n0 = churn.n
    churn.start()
    time.sleep(churn_s)
    churn.stop()
    t0 = time.monotonic()
    _poll(live, {"caught up": lambda t: bool(t.node and t.node.has_seen(*churn.last))}, t0,
          CATCH_UP_TIMEOUT)  # fmt: skip
    for t in live:
        assert t.way is not None
        t.run["cloud changes in the churn window"] = float(churn.n - n0)
        if "caught up" not in t.marks:
            t.note(f"informers did not catch up with the churn within {CATCH_UP_TIMEOUT:.0f} s")
        t.run["churn cloud bytes (MB)"] = (t.link.relay.down_bytes - b0[t.name]) / 1e6
        if t.way.procs is not None:
            t.run["proxy CPU, idle + churn (s)"] = t.way.procs.cpu_seconds() - cpu0[t.name]
            t.marks["peak RSS before restart"] = t.way.procs.peak_rss_mb()
        client_procs = clients[t.name]
        if client_procs is not None:
            t.run["clients CPU, churn (s)"] = client_procs.cpu_seconds() - ccpu0[t.name]
    said = ", ".join(f"{t.name} {t.run['churn cloud bytes (MB)']:.2f}" for t in live)
    say.say(f"churn cloud bytes (MB): {said}")


def _outage(
    targets: list[Target], churn: Churn, sizes: PeerSizes, upstream: Upstream, say: Progress
) -> None:
    outage_s = sizes.outage_s
    control = upstream.control
    assert control is not None
    live = _live(targets)
    relists0 = {t.name: sum(i.relists() for i in t.node.informers) for t in live if t.node}
    first_write = len(churn.writes)
    cut_at = time.time()
    for t in live:
        t.link.blackhole()
    churn.start()
    t_cut = time.monotonic()

    def restart(t: Target) -> None:
        assert t.way is not None and t.node is not None
        t.marks["restart"] = time.monotonic()
        t.way.restart()
        t.node.restart_kubelet()
        t.late = t.node.start_informer("coredns-offline", COREDNS_WATCHES, COREDNS_UA)

    _each(live, restart)
    say.say(f"link black-holed; proxies and kubelets restarted offline ({outage_s:g} s outage)")

    def late_synced(t: Target) -> bool:
        return t.late is not None and any(r["type"] == "synced" for r in t.late.records())

    _poll(live, {"serving": lambda t: bool(t.way and t.way.serving()), "late synced": late_synced},
          t_cut, outage_s)  # fmt: skip
    time.sleep(max(0.0, t_cut + outage_s - time.monotonic()))
    churn.stop()
    writes = churn.writes[first_write:]
    specs = sorted({s for t in live if t.node for i in t.node.informers for s in i.watches})
    cloud = delivery.truth(control, specs)
    audit_at = control.audit_log.stat().st_size
    restored = datetime.now(UTC)
    t_restore = time.monotonic()
    for t in live:
        t.link.restore()
    say.say(f"link restored; {len(writes)} changes were made in the cloud while offline")
    _poll(
        live,
        {
            "converged": lambda t: bool(t.node and t.node.has_seen(*churn.last)),
            "node Ready": lambda t: bool(t.node and t.node.node_ready(since=restored)),
            "lease": lambda t: bool(t.node and t.node.lease_renewed_after(restored)),
        },
        t_restore,
        sizes.restore_s,
    )
    say.say("after the restore: " + ", ".join(
        f"{t.name} {' '.join(m for m in ('converged', 'node Ready', 'lease') if m in t.marks) or '-'}"
        for t in live
    ))  # fmt: skip
    time.sleep(2)  # late relists land in the audit log
    for t in live:
        if t.ok:
            _offline_figures(t, cut_at, t_cut, sizes, writes, cloud, relists0, audit_at)


def _offline_figures(
    t: Target, cut_at: float, t_cut: float, sizes: PeerSizes, writes: list[delivery.Write],
    cloud: dict[str, dict[str, str]], relists0: dict[str, int], audit_at: int,
) -> None:  # fmt: skip
    assert t.way is not None and t.node is not None
    outage_s, pods = sizes.outage_s, sizes.pods
    control = t.node.control
    run, restart = t.run, t.marks["restart"] - t_cut
    if t.way.has_process:
        if "serving" in t.marks:
            run[SERVING] = t.marks["serving"] - restart
        else:
            t.lacks(SERVING, f"the restarted proxy did not serve within the {outage_s:g} s outage")
    synced = "late synced" in t.marks
    run["offline: fresh client synced (1 = yes)"] = 1.0 if synced else 0.0
    if synced:
        run[LATE] = t.marks["late synced"] - restart
    else:
        t.lacks(
            LATE, f"a client started while offline got no lists within the {outage_s:g} s outage"
        )
    for mark, figure in (("converged", CONVERGED), ("node Ready", NODE_READY), ("lease", LEASE)):
        if mark in t.marks:
            run[figure] = t.marks[mark]
        else:
            t.lacks(figure, f"not within {sizes.restore_s:g} s of the restore")
    run["pods Running after restore"] = float(t.node.running_pods())
    if run["pods Running after restore"] != pods:
        t.note(f"{run['pods Running after restore']:.0f} of {pods} pods Running after the restore")
    steady = t.node.informers[:2]
    clients = [*steady, *([t.late] if t.late is not None else [])]
    run["cloud changes while offline"] = float(len(writes))
    run["events missed (outage changes)"] = float(
        sum(delivery.missed(i.records("event"), i.watches, writes) for i in steady)
    )
    run["events delivered twice"] = float(
        sum(delivery.twice(i.records("event"), cut_at) for i in clients)
    )
    wrong = 0
    for informer in clients:
        try:
            cache = informer.dump(timeout=20)
        except AssertionError:
            t.note(f"{informer.out_path.stem}: no cache dump, its objects count as wrong")
            wrong += sum(len(cloud[s]) for s in informer.watches)
            continue
        wrong += delivery.cache_mismatches(cache, {s: cloud[s] for s in informer.watches})
    run["client caches wrong vs cloud (objects)"] = float(wrong)
    run["informer relists, outage"] = float(sum(i.relists() for i in steady) - relists0[t.name])
    run["410 Gone seen by informers"] = float(
        sum(delivery.gone(i.records(), cut_at) for i in clients)
    )
    run["upstream LISTs after restore"] = float(
        delivery.audit_lists(control.audit_log, audit_at, t.way.users)
    )
    if t.way.procs is not None:
        before = t.marks.get("peak RSS before restart", 0.0)
        run["proxy peak RSS (MB)"] = max(before, t.way.procs.peak_rss_mb())
    run["cloud bytes, whole run (MB)"] = t.link.relay.down_bytes / 1e6

"""The cloud a benchmark runs against, and the link the targets reach it through.

Three upstreams (`edge-proxy bench --against`):

- `sim` (the default): a fresh `edge-proxy sim`, plain http; it cuts its own
  API port on request and takes writes "in the cloud" on a control port that
  faults never touch;
- `real`: a real etcd + kube-apiserver started on loopback for the run
  (`edgeproxy.controlplane.ControlPlane`), HTTPS with the admin's client
  certificate and token, stopped at the end;
- a kubeconfig: someone's cluster. The bench owns neither its data nor its
  network, so only what creates nothing but ConfigMaps in namespaces of its
  own, and cuts nothing, runs there.

Cutting the link is the same for every upstream the bench owns: the sim
black-holes its API port; in front of the real apiserver `relay.link()`
puts a `Relay` that black-holes (TLS passes through it untouched). Either
way the targets lose the cloud and the writer does not: `writer()` goes
straight to the cloud, never through the link.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeproxy.bench.kubeclient import Api, BenchError
from edgeproxy.bench.procstat import ProcGroup
from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import Relay
from edgeproxy.testing import SimProcess
from edgeproxy.upstream.credentials import Credentials

# The dataset's Services carry fixed cluster IPs (10.96.x.y for the shared
# dataset, 10.97.x.y for the filters suite): kube-apiserver must accept them,
# and its own default/kubernetes Service takes the range's first address
# (10.64.0.1 here), which is none of theirs. The ControlPlane's /24 has 254.
REAL_SERVICE_RANGE = "10.64.0.0/10"


@dataclass(slots=True)
class Upstream:
    """The cloud as the targets reach it (`url`, `kubeconfig`) and as the writer does."""

    url: str
    kubeconfig: Path
    sim: SimProcess | None = None
    ssl_context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The kubeconfig's credentials, for nginx in front of an HTTPS upstream.
    creds: Credentials | None = None
    # The real control plane started for this run (its processes are measured).
    control: ControlPlane | None = None
    # The relay between the targets and the cloud, when a suite cuts the link.
    relay: Relay | None = None
    # The cloud's own URL when `url` is the relay's: writes go there.
    origin: str = ""

    @property
    def owned(self) -> bool:
        """Whether the bench started this upstream (it may fill it, cut it, throw it away)."""
        return self.sim is not None or self.control is not None

    @property
    def faults(self) -> bool:
        """Whether the link can be cut: the sim's own switch, or a relay in front."""
        return self.sim is not None or self.relay is not None

    @property
    def kind(self) -> str:
        if self.sim is not None:
            return "the simulator"
        return "the real kube-apiserver" if self.control is not None else "the cluster"

    async def cut(self) -> None:
        """Black-hole the link: requests and watch streams stall, nothing answers."""
        if self.relay is not None:
            await self.relay.set_state("blackhole")
        elif self.sim is not None:
            self.sim.fault(blackhole=True)
        else:
            raise BenchError(f"the link to {self.url} cannot be cut")

    async def heal(self) -> None:
        if self.relay is not None:
            await self.relay.set_state("up")
        elif self.sim is not None:
            self.sim.heal()

    def api(self, connections: int = 0) -> Api:
        return Api(
            self.url, ssl_context=self.ssl_context, headers=self.headers, connections=connections
        )

    def writer(self) -> Api:
        """Writes "in the cloud": through the sim's control port, or straight to the cloud.

        Never through the link a suite cuts: a change made during an outage
        must reach the cloud, not the target.
        """
        if self.sim is not None:
            return Api(self.sim.control_url)
        return Api(self.origin or self.url, ssl_context=self.ssl_context, headers=self.headers)

    def procs(self) -> ProcGroup | None:
        """The cloud's processes: the sim, or kube-apiserver and etcd (read afresh each time)."""
        if self.sim is not None:
            return ProcGroup(self.sim.proc.pid)
        cp = self.control
        if cp is not None and cp.apiserver is not None and cp.etcd is not None:
            return ProcGroup(cp.apiserver.pid, others=(cp.etcd.pid,))
        return None


def cluster(kubeconfig: Path, keys: Path, control: ControlPlane | None = None) -> Upstream:
    """An HTTPS (or http) cluster as its kubeconfig describes it."""
    from edgeproxy.upstream import credentials

    creds = credentials.from_kubeconfig(kubeconfig)
    ctx = credentials.ssl_context(creds, keys)
    headers = credentials.TokenSource(creds).headers()
    return Upstream(
        creds.servers[0], kubeconfig, ssl_context=ctx, headers=headers, creds=creds, control=control
    )


def start_real(workdir: Path, extra_args: Sequence[str] = ()) -> Upstream:
    """A real etcd + kube-apiserver for this run (k8s/build.sh's cached binaries)."""
    control = ControlPlane(
        workdir, apiserver_args=(f"--service-cluster-ip-range={REAL_SERVICE_RANGE}", *extra_args)
    )
    try:
        return cluster(control.kubeconfig, workdir / "keys", control)
    except Exception:
        control.stop()
        raise


def start_sim(workdir: Path) -> Upstream:
    sim = SimProcess(workdir=workdir)
    return Upstream(sim.url, sim.kubeconfig, sim=sim)


def stop(upstream: Upstream) -> None:
    if upstream.sim is not None:
        upstream.sim.stop()
    if upstream.control is not None:
        upstream.control.stop()

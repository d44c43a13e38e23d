"""One way into the cloud for the peers bench: the process in between (if any) and its identity.

The peers bench runs every target side by side on one control plane, each
behind its own counting relay, so what kube-apiserver's audit log says
happened must be told apart per target: each target reaches the cloud as a
user of its own, `bench:<target>` in group system:masters like the admin
(a client certificate issued from the control plane's CA, and a static
token for the informer program, which takes no certificate); YurtHub as
the node identity its certificate managers want. `Way` starts the target,
restarts it in place (edge-proxy from its journal, YurtHub and
lite-apiserver from their disk caches: the same directories), and says
which audit users are its own.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import urllib.request
from pathlib import Path

from edgeproxy.bench import peers
from edgeproxy.bench.baselines import MODE_ARGS
from edgeproxy.bench.peers_superedge import LiteApiserver
from edgeproxy.bench.procstat import ProcGroup
from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import LinkRelay
from edgeproxy.testing import ProxyProcess

ADMIN_GROUP = "system:masters"


def user(target: str) -> str:
    """The user target `target` reaches the cloud as (YurtHub: its node's, see Way)."""
    return f"bench:{target}"


def grant_tokens(control: ControlPlane, targets: tuple[str, ...]) -> dict[str, str]:
    """A static token per target for its own user, for the clients that take a token only
    (the informer program): kube-apiserver reads them at a restart, so once per run."""
    tokens = {t: f"{t}-{secrets.token_hex(16)}" for t in targets}
    for target, token in tokens.items():
        control.add_token(token, user(target), user(target), (ADMIN_GROUP,))
    control.restart_apiserver()
    return tokens


def _identity_kubeconfig(
    control: ControlPlane, server: str, user: str, path: Path, *, extra: str = ""
) -> Path:
    """A kubeconfig for `server` as `user` (a client certificate only, no token)."""
    pem = peers.issue(control, user, (ADMIN_GROUP,), server=False)
    cut = pem.index(b"-----BEGIN EC PRIVATE KEY-----")
    ca = base64.b64encode(control.bundle.ca_cert.read_bytes()).decode()
    cert, key = (base64.b64encode(part).decode() for part in (pem[:cut], pem[cut:]))
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: cloud\n  cluster:\n    server: {server}\n"
        f"    certificate-authority-data: {ca}\n{extra}"
        f"users:\n- name: {user}\n  user:\n"
        f"    client-certificate-data: {cert}\n    client-key-data: {key}\n"
        f"contexts:\n- name: cloud\n  context: {{cluster: cloud, user: {user}}}\n"
        "current-context: cloud\n"
    )
    path.chmod(0o600)
    return path


class Way:
    """Target `name` in front of `link`: its URL for the node's clients, its process, its users."""

    def __init__(
        self, name: str, control: ControlPlane, link: LinkRelay, workdir: Path, node: str,
        token: str,
    ) -> None:  # fmt: skip
        self.name = name
        self.proxy: ProxyProcess | None = None
        self.hub: peers.YurtHub | None = None
        self.lite: LiteApiserver | None = None
        self.token: str | None = None
        self.ca_file: Path | None = None
        self.procs: ProcGroup | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        through = _identity_kubeconfig(
            control, link.url("https"), user(name), workdir / "through-link.kubeconfig"
        )
        self.users = frozenset({user(name)})
        if name == "direct":
            self.url, self.kubeconfig = link.url("https"), through
            self.token, self.ca_file = token, control.ca_file
        elif name in MODE_ARGS:
            self.proxy = ProxyProcess(through, *MODE_ARGS[name], workdir=workdir / "proxy")
            self.url, self.kubeconfig = self.proxy.url, self.proxy.kubeconfig
        elif name == "yurthub":
            self.hub = peers.YurtHub(control, link.url("https"), workdir, node)
            self.users = frozenset({f"system:node:{node}"})
            self.url = self.hub.url
            self.kubeconfig = workdir / "yurthub-client.kubeconfig"
            self.kubeconfig.write_text(
                "apiVersion: v1\nkind: Config\n"
                f"clusters:\n- name: hub\n  cluster:\n    server: {self.url}\n"
                "users:\n- name: node\n  user: {}\n"
                "contexts:\n- name: hub\n  context: {cluster: hub, user: node}\n"
                "current-context: hub\n"
            )
        elif name == "superedge":
            self.lite = LiteApiserver(control, "127.0.0.1", link.port, workdir, user(name))
            self.url, self.token, self.ca_file = self.lite.url, token, self.lite.ca_file
            # The kubelet presents the certificate lite-apiserver has a transport for.
            self.kubeconfig = _identity_kubeconfig(
                control,
                self.url,
                user(name),
                workdir / "lite-apiserver-client.kubeconfig",
                extra="    disable-compression: true\n",
            )
        else:
            raise ValueError(f"unknown target {name!r}")
        self._measure()

    def _measure(self) -> None:
        proc = next((p.proc for p in (self.proxy, self.hub, self.lite) if p is not None), None)
        self.procs = ProcGroup(proc.pid) if proc is not None else None

    @property
    def has_process(self) -> bool:
        return any(p is not None for p in (self.proxy, self.hub, self.lite))

    def restart(self) -> None:
        """Stop the process in between and start it again on the same directories
        (edge-proxy: its journal and cache; YurtHub: its disk cache and certificates).
        Returns once it runs, not once it serves: `serving()` says that. Direct: nothing."""
        if self.proxy is not None:
            self.proxy.stop()
            # start() waits for /healthz; a proxy that does not answer offline
            # is what the bench measures, not an error (one that exits is).
            with contextlib.suppress(RuntimeError):
                self.proxy.start(timeout=2)
            if self.proxy.proc is not None and self.proxy.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited after its restart:\n{self.proxy.log()}")
        elif self.hub is not None:
            self.hub.stop()
            self.hub.spawn()
        elif self.lite is not None:
            self.lite.stop()
            self.lite.spawn()
        self._measure()

    def serving(self) -> bool:
        """Whether the process in between answers its readiness check (direct: always)."""
        if self.hub is not None:
            return self.hub.healthy()
        if self.lite is not None:
            return self.lite.healthy()
        if self.proxy is not None:
            try:
                with urllib.request.urlopen(self.proxy.admin_url + "/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False
        return True

    def diagnosis(self) -> list[str]:
        """The peer's own error lines, for a report that says why it failed."""
        return self.lite.errors() if self.lite is not None else []

    def log(self) -> str:
        if self.proxy is not None:
            return self.proxy.log()
        if self.hub is not None:
            return self.hub.log()
        return self.lite.log() if self.lite is not None else ""

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.hub is not None:
            self.hub.stop()
        if self.lite is not None:
            self.lite.stop()

"""A real Kubernetes control plane on loopback: etcd and kube-apiserver.

The simulator is checked against this, and the proxy is tested in front of
it: the same binaries operators run, built from their Go modules by
`k8s/build.sh`, started the way controller-runtime's envtest starts them
(two processes, certificates generated for the run, etcd without fsync).
Unlike envtest, RBAC and the Node authorizer are on and the admin identity
has both a client certificate (O=system:masters) and a static token, so
tests can also act as other users and service accounts.

No kube-controller-manager runs unless a test starts one: no namespace
finalization, no EndpointSlice or token controllers. Tests create what they
need directly; only default/kubernetes' Endpoints and EndpointSlice, which
every cluster has, are written at start.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edgeproxy.sim.tls import TLSBundle, generate_bundle, write_kubeconfig
from edgeproxy.testing import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "k8s" / "build.sh"

# The service range envtest uses; the apiserver takes its first address for
# default/kubernetes.
SERVICE_CIDR = "10.0.0.0/24"
# Where default/kubernetes' endpoints say the apiserver is (see _kubernetes_endpoints).
ADVERTISED_IP = "192.0.2.1"


def binaries(build: bool = True) -> Path:
    """The directory holding etcd, kube-apiserver, kubemark and our clients.

    `EDGEPROXY_K8S_BIN` names a directory to use as is; otherwise
    `k8s/build.sh` builds what is missing into its cache (minutes on a cold
    machine) and prints the directory, or with `build=False` only looks.
    """
    given = os.environ.get("EDGEPROXY_K8S_BIN")
    if given:
        return Path(given)
    if not BUILD_SCRIPT.is_file():
        raise RuntimeError(f"{BUILD_SCRIPT} is missing: run from a source checkout")
    args = [str(BUILD_SCRIPT)] if build else [str(BUILD_SCRIPT), "--print"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"k8s/build.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class ControlPlane:
    """etcd + kube-apiserver in child processes, with admin access at hand."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        bin_dir: Path | None = None,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-proxy-k8s-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin_dir = bin_dir or binaries()
        self.apiserver_args = tuple(apiserver_args)
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        # Named as the simulator's TLS directory, so helpers that find a
        # simulator's CA and client certificate find these the same way.
        self.pki = self.workdir / "tls"
        self.tls = True
        self.bundle: TLSBundle = generate_bundle(self.pki, ["127.0.0.1", "localhost"])
        self._service_account_keys()
        self.tokens_file = self.pki / "tokens.csv"
        self._tokens: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self.add_token(self.bundle.token, "admin", "admin", ("system:masters",))
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        write_kubeconfig(self.kubeconfig, self.url, self.bundle, context="real")
        self.audit_log = self.workdir / "audit.log"
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.csr_signer: subprocess.Popen[bytes] | None = None
        self._logs: list[Any] = []
        self.start()

    # -- identity ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.bundle.token

    @property
    def ca_file(self) -> Path:
        return self.bundle.ca_cert

    def add_token(self, token: str, user: str, uid: str, groups: Sequence[str] = ()) -> None:
        """A static token for `user` (read by the apiserver at its next start)."""
        self._tokens[token] = (user, uid, tuple(groups))
        lines = []
        for tok, (name, ident, grps) in self._tokens.items():
            line = f"{tok},{name},{ident}"
            if grps:
                line += ',"' + ",".join(grps) + '"'
            lines.append(line)
        self.tokens_file.write_text("\n".join(lines) + "\n")
        self.tokens_file.chmod(0o600)

    def _service_account_keys(self) -> None:
        self.sa_key = self.pki / "sa.key"
        self.sa_pub = self.pki / "sa.pub"
        if self.sa_key.is_file() and self.sa_pub.is_file():
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        self.sa_key.chmod(0o600)
        self.sa_pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # -- processes ---------------------------------------------------------

    def start(self) -> None:
        """Start etcd and kube-apiserver; on failure leave nothing running.

        Ports come from free_port(): another process may bind one before etcd
        or kube-apiserver does. That start is retried on new ports (twice);
        any other failure stops what did start and is raised.
        """
        for attempt in range(3):
            try:
                self.start_etcd()
                self.start_apiserver()
                self._kubernetes_endpoints()
                return
            except BaseException as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
            self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
            write_kubeconfig(self.kubeconfig, self.url, self.bundle, context="real")
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def _kubernetes_endpoints(self) -> None:
        """default/kubernetes' Endpoints and EndpointSlice, as the endpoint reconciler writes them.

        With `--endpoint-reconciler-type=none` nothing writes them, yet clients
        and the proxy's filters (forwardkubesvctraffic, masterservice) read them
        on every real cluster. Validation refuses a loopback address in both,
        which is why the reconciler is off, so they name the apiserver by
        TEST-NET-1 (RFC 5737) with its real port: the shape kube-apiserver
        writes, an address no test dials.
        """
        port = {"name": "https", "port": self.port, "protocol": "TCP"}
        objects = [
            (
                "/api/v1/namespaces/default/endpoints",
                {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {"name": "kubernetes", "namespace": "default"},
                    "subsets": [{"addresses": [{"ip": ADVERTISED_IP}], "ports": [port]}],
                },
            ),
            (
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "kubernetes",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "kubernetes"},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [ADVERTISED_IP], "conditions": {"ready": True}}],
                    "ports": [port],
                },
            ),
        ]
        for path, body in objects:
            status, answer = self.request("POST", path, body)
            if status not in (201, 409):  # 409: a restart over the same etcd
                raise RuntimeError(f"cannot create {path}/kubernetes: {status} {answer[:300]!r}")
        # The Service itself is the apiserver's to create, a moment after /readyz.
        assert self.apiserver is not None
        service = "/api/v1/namespaces/default/services/kubernetes"
        self._wait(lambda: self.request("GET", service)[0] == 200, service, self.apiserver)

    def start_etcd(self) -> None:
        data = self.workdir / "etcd"
        args = [
            str(self.bin_dir / "etcd"),
            f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        self.etcd = self._spawn("etcd", args)
        self._wait(lambda: self.etcd_call("maintenance/status", {}) is not None, "etcd", self.etcd)

    def start_apiserver(self) -> None:
        args = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.bundle.server_cert}",
            f"--tls-private-key-file={self.bundle.server_key}",
            f"--client-ca-file={self.bundle.ca_cert}",
            f"--token-auth-file={self.tokens_file}",
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The lease reconciler refuses a loopback address for default/kubernetes.
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            # As envtest: no controller-manager creates default ServiceAccounts.
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-log-path={self.audit_log}",
            f"--audit-policy-file={self._audit_policy()}",
            "--profiling=false",
            "--v=1",
            *self.apiserver_args,
        ]
        self.apiserver = self._spawn("kube-apiserver", args)
        self._wait(self._ready, "kube-apiserver", self.apiserver, timeout=90)

    def _audit_policy(self) -> Path:
        path = self.pki / "audit-policy.yaml"
        # Metadata level: who made each request, not the bodies.
        path.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
            "omitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
        )
        return path

    def start_csr_signer(self, duration: str = "10m") -> None:
        """kube-controller-manager with only its csrsigning controller, signing with the CA.

        Approved CSRs to the kubernetes.io signers (kubelet-serving included)
        are signed by this run's CA, the one kube-apiserver trusts for client
        certificates and tests trust as the cluster CA. Nothing approves them:
        tests do, through `/approval`, as an operator would.
        """
        if self.csr_signer is not None and self.csr_signer.poll() is None:
            return
        args = [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=csrsigning",
            f"--cluster-signing-cert-file={self.bundle.ca_cert}",
            f"--cluster-signing-key-file={self.bundle.ca_key}",
            f"--cluster-signing-duration={duration}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--secure-port=0",
            "--v=2",
        ]
        self.csr_signer = self._spawn("kube-controller-manager", args)
        time.sleep(0.5)
        if self.csr_signer.poll() is not None:
            raise RuntimeError(
                f"kube-controller-manager exited:\n{self.log('kube-controller-manager')}"
            )

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver (its watch cache starts afresh)."""
        if self.apiserver is not None:
            stop_process(self.apiserver)
        self.start_apiserver()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        self._logs.append(log)
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def _wait(
        self, check: Any, name: str, proc: subprocess.Popen[bytes], timeout: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {timeout}s:\n{self.log(name)}")

    def _ready(self) -> bool:
        status, _ = self.request("GET", "/readyz")
        return status == 200

    def log(self, name: str = "kube-apiserver") -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in (self.csr_signer, self.apiserver, self.etcd):
            if proc is not None:
                stop_process(proc)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.bundle.ca_cert))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> tuple[int, bytes]:
        """One request as admin (or as `token`'s user); errors are returned."""
        data = None
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token or self.token}"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a counter's series on /metrics that carry `labels`."""
        _, body = self.request("GET", "/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name + "{"):
                continue
            series, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    # -- etcd --------------------------------------------------------------

    def etcd_call(self, path: str, body: dict[str, Any]) -> Any:
        """etcd's JSON gateway (`/v3/<path>`)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.etcd_port}/v3/{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def etcd_revision(self) -> int:
        key = base64.b64encode(b"/registry/").decode()
        answer = self.etcd_call("kv/range", {"key": key, "limit": 1, "keys_only": True})
        return int(answer["header"]["revision"])

    def compact(self) -> int:
        """Compact history up to now: older RVs answer 410 Gone from then on.

        etcd is compacted as kube-apiserver does every 5 minutes; then
        kube-apiserver restarts, because its watch cache and list snapshots
        would otherwise go on serving the compacted events for minutes (on a
        real cluster that window ends by time or by event count). The
        simulator's `compact()` has the same effect at once.
        """
        revision = self.etcd_revision()
        self.etcd_call("kv/compaction", {"revision": revision, "physical": True})
        self.restart_apiserver()
        return revision

"""The peers edge-proxy is measured against, as child processes: OpenYurt's YurtHub.

YurtHub is the most used node-side proxy with a disk cache; `edge-proxy
bench --peers yurthub` runs the same node workload through it as through
edge-proxy. The binary comes from `k8s/build-peers.sh` (a wrapper module that
pins openyurt; not part of `make test`). `binary()` only looks: a bench that
wants YurtHub and finds it unbuilt fails with a message naming the script.

YurtHub normally gets its two certificates from CSRs that OpenYurt's
yurt-manager approves (a client one, CN `system:node:<node>`, O
`system:nodes` + `openyurt:yurthub`, and a kubelet-serving one) and waits up
to 4 minutes for them. Nothing here runs a signer, so `YurtHub` pre-seeds
`<root>/pki/` with both, issued from the control plane's CA with exactly the
subject, DNS names and IPs YurtHub's certificate managers ask for: a
certificate that satisfies the template is used as is and only rotated near
expiry (a year away). Everything else is unprivileged: no dummy interface,
no iptables, every port free on loopback.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeproxy.controlplane import REPO_ROOT, ControlPlane
from edgeproxy.testing import free_port, stop_process

BUILD_SCRIPT = REPO_ROOT / "k8s" / "build-peers.sh"
# Peer (as `--peers` names it) -> its binary (as k8s/build-peers.sh builds it).
BINARIES = {"yurthub": "yurthub", "superedge": "lite-apiserver"}
PEERS = tuple(BINARIES)
# The address YurtHub puts in its serving certificate when no dummy interface is set.
DUMMY_IF_IP = "169.254.2.1"
SERVER_DNS = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
YURTHUB_ORG = "openyurt:yurthub"
NODES_GROUP = "system:nodes"
VALIDITY = datetime.timedelta(days=365)
# OpenYurt's chart binds its own ClusterRole to the `openyurt:yurthub` group;
# here the group gets cluster-admin, so YurtHub reads exactly what the admin
# identity the other targets use reads (no difference in 403s to explain).
RBAC_BINDING = "edge-proxy-bench-yurthub"


class PeerMissing(RuntimeError):
    """A peer's binary is not built; the message names the build script."""


def binary(name: str = "yurthub") -> Path:
    """The cached peer binary; raises PeerMissing (never builds: minutes on 2 cores)."""
    if name not in PEERS:
        raise PeerMissing(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    exe = BINARIES[name]
    done = subprocess.run(
        [str(BUILD_SCRIPT), "--print", exe], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    path = Path(done.stdout.strip().splitlines()[-1]) / exe if done.returncode == 0 else None
    if path is None or not path.is_file():
        raise PeerMissing(
            f"the {exe} binary is not built: run `{BUILD_SCRIPT.relative_to(REPO_ROOT)} {exe}` "
            "first (about 3-10 minutes on 2 cores; the binary is cached)"
        )
    return path


def grant(control: ControlPlane) -> None:
    """Let YurtHub's identity read and write what the admin can (once per control plane)."""
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": RBAC_BINDING},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": YURTHUB_ORG}
        ],
    }
    status, answer = control.request(
        "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body
    )
    if status not in (201, 409):
        raise RuntimeError(f"cannot bind {YURTHUB_ORG}: HTTP {status} {answer[:200]!r}")


def _kubernetes_service_ip(control: ControlPlane) -> str | None:
    """default/kubernetes's cluster IP: YurtHub wants it in its serving certificate."""
    import json

    # kube-apiserver creates it a moment after it first reports ready.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = control.request("GET", "/api/v1/namespaces/default/services/kubernetes")
        if status == 200:
            ip = json.loads(body).get("spec", {}).get("clusterIP")
            return str(ip) if ip else None
        time.sleep(0.2)
    return None


def issue(
    control: ControlPlane,
    common_name: str,
    orgs: tuple[str, ...],
    *,
    server: bool,
    ips: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
) -> bytes:
    """Certificate + key in one PEM, as client-go's certificate FileStore keeps `*-current.pem`."""
    ca_cert = x509.load_pem_x509_certificate(control.bundle.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(control.bundle.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise RuntimeError(f"{control.bundle.ca_key}: not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs),
        ]
    )
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class YurtHub:
    """`yurthub --working-mode=edge` for node `node`, its cloud at `server` (e.g. a relay).

    Clients use `url` (YurtHub's plain-http proxy port, as the kubelet does
    on an OpenYurt node); `proc` is the process to measure.
    """

    def __init__(
        self, control: ControlPlane, server: str, workdir: Path, node: str, *, pool: str = "edge"
    ) -> None:
        self.bin = binary("yurthub")
        self.control = control
        self.server = server
        self.workdir = workdir
        self.node = node
        self.pool = pool
        self.root = workdir / "yurthub"
        self.port = free_port()  # the plain-http proxy port clients use
        self.secure_port = free_port()
        self.serve_port = free_port()  # healthz, metrics
        self.mux_port = free_port()
        self.log_path = workdir / "yurthub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._seed()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _seed(self) -> None:
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        node_cn = f"system:node:{self.node}"
        client = issue(self.control, node_cn, (YURTHUB_ORG, NODES_GROUP), server=False)
        ips = ["127.0.0.1", DUMMY_IF_IP]
        svc_ip = _kubernetes_service_ip(self.control)
        if svc_ip:
            ips.append(svc_ip)
        serving = issue(
            self.control, node_cn, (NODES_GROUP,), server=True, ips=tuple(ips), dns=SERVER_DNS
        )
        for name, pem in (("yurthub-current.pem", client), ("yurthub-server-current.pem", serving)):
            (pki / name).write_bytes(pem)
            (pki / name).chmod(0o600)
        # Only read to request a certificate, which never happens here (the
        # seeded ones satisfy the template); its CA is what YurtHub trusts.
        ca = base64.b64encode(self.control.bundle.ca_cert.read_bytes()).decode()
        self.bootstrap = self.root / "bootstrap-hub.conf"
        self.bootstrap.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: cloud\n  cluster:\n    server: {self.server}\n"
            f"    certificate-authority-data: {ca}\n"
            f"users:\n- name: bootstrap\n  user:\n    token: {self.control.token}\n"
            "contexts:\n- name: bootstrap\n  context: {cluster: cloud, user: bootstrap}\n"
            "current-context: bootstrap\n"
        )

    def start(self, timeout: float = 60.0) -> float:
        """Start YurtHub; returns seconds until its /v1/readyz answered 200.

        Ready, not merely healthy: until its certificates, the yurt-hub-cfg
        ConfigMap and its filters' informers are synced, YurtHub answers
        every client 503.
        """
        t0 = time.monotonic()
        self.spawn()
        ready = self.wait_ready(timeout)
        if ready is None:
            raise RuntimeError(f"yurthub not ready after {timeout:.0f} s:\n{self.log()}")
        return time.monotonic() - t0

    def spawn(self) -> None:
        """Start the process (from what its root dir holds: certificates, disk cache)."""
        args = [
            str(self.bin),
            f"--node-name={self.node}",
            f"--nodepool-name={self.pool}",
            f"--server-addr={self.server}",
            f"--bootstrap-file={self.bootstrap}",
            "--working-mode=edge",
            f"--root-dir={self.root}",
            f"--disk-cache-path={self.root / 'cache'}/",
            "--enable-dummy-if=false",
            "--enable-iptables=false",
            "--node-ip=127.0.0.1",
            "--bind-address=127.0.0.1",
            "--bind-proxy-address=127.0.0.1",
            f"--serve-port={self.serve_port}",
            f"--proxy-port={self.port}",
            f"--proxy-secure-port={self.secure_port}",
            f"--multiplexer-port={self.mux_port}",
            # No NodePool CRD on this control plane: nothing to list for it.
            "--enable-node-pool=false",
            "--profiling=false",
            "--v=2",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds until /v1/readyz answers 200, or None after `timeout`; raises if it exits."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"yurthub exited with {code}:\n{self.log()}")
            if self.healthy():
                return time.monotonic() - t0
            time.sleep(0.2)
        return None

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.serve_port}/v1/readyz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

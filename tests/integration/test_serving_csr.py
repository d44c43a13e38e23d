"""The secure listener's certificate, issued by the real cluster through a CSR.

No certificate files are given: edge-proxy, running as the node
(system:node:<name>, as the kubelet's credentials make it), sends a CSR to
the kubernetes.io/kubelet-serving signer. The test approves it as an
operator would; kube-controller-manager's csrsigning controller (the only
controller running) signs it with the cluster CA. Pods' TLS clients then
verify `kubernetes.default.svc` against that CA. With a renewal margin
longer than the rest of the certificate's life, the proxy asks again; once
the second CSR is approved, new connections get the new certificate while a
keep-alive connection opened before goes on working. Offline restarts serve
with the pair on disk, or, with none, leave the secure listener off and say
so in one line, then start it once the link is back.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import LinkRelay
from edgeproxy.sim.tls import issue_client_pem
from edgeproxy.testing import ProxyProcess, free_port

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
MASTER_SERVICE = "169.254.2.1"


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s")


def pending_csr(real: ControlPlane, user: str, seen: set[str]) -> dict[str, Any] | None:
    code, body = real.request("GET", CSRS)
    assert code == 200, body[:300]
    for csr in json.loads(body)["items"]:
        if csr["spec"]["username"] == user and csr["metadata"]["name"] not in seen:
            return dict(csr)
    return None


def approve(real: ControlPlane, csr: dict[str, Any]) -> None:
    csr.setdefault("status", {}).setdefault("conditions", []).append(
        {
            "type": "Approved",
            "status": "True",
            "reason": "TestApproval",
            "message": "approved by test_serving_csr",
        }
    )
    path = f"{CSRS}/{csr['metadata']['name']}/approval"
    code, body = real.request("PUT", path, csr)
    assert code == 200, body[:300]


def peer_certificate(real: ControlPlane, port: int) -> x509.Certificate | None:
    """The secure listener's certificate as a pod's client verifies it, or None if it is down."""
    ctx = ssl.create_default_context(cafile=str(real.ca_file))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (ConnectionRefusedError, ssl.SSLError):
        return None
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_serving_certificate_from_a_csr_renewed_and_kept_offline(
    real: ControlPlane, tmp_path: Path
) -> None:
    real.start_csr_signer("10m")
    node = f"edge-{uuid.uuid4().hex[:8]}"
    user = f"system:node:{node}"
    creds = tmp_path / "node.pem"
    creds.write_bytes(issue_client_pem(real.bundle, user, ["system:nodes"]))
    creds.chmod(0o600)
    link = LinkRelay("127.0.0.1", real.port)
    upstream = tmp_path / "node.kubeconfig"
    upstream.write_text(
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "cloud", "cluster": {
                "server": link.url("https"), "certificate-authority": str(real.ca_file)}}],
            "users": [{"name": node, "user": {
                "client-certificate": str(creds), "client-key": str(creds)}}],
            "contexts": [{"name": "node", "context": {"cluster": "cloud", "user": node}}],
            "current-context": "node",
        })
    )  # fmt: skip
    port = free_port()
    # The kubelet-serving signer gives 10 minutes; renewing with less than
    # 590 s left makes the proxy ask again about 10 s after each issue.
    proxy = ProxyProcess(
        upstream,
        f"--secure-listen=127.0.0.1:{port}",
        f"--node-name={node}",
        f"--master-service-addr={MASTER_SERVICE}:443",
        "--serving-cert-renew-before=590",
        workdir=tmp_path / "proxy",
    )
    seen: set[str] = set()
    try:
        csr = wait_for(lambda: pending_csr(real, user, seen), 60, "the proxy's CSR")
        seen.add(csr["metadata"]["name"])
        spec = csr["spec"]
        assert spec["signerName"] == "kubernetes.io/kubelet-serving"
        assert sorted(spec["usages"]) == ["digital signature", "server auth"]
        assert "system:nodes" in spec["groups"]
        assert peer_certificate(real, port) is None  # nothing to serve with yet
        approve(real, csr)

        first = wait_for(lambda: peer_certificate(real, port), 60, "the secure listener")
        subject = first.subject
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
        assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
        sans = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(sans.get_values_for_type(x509.DNSName)) == {
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        }
        _, service = real.request("GET", "/api/v1/namespaces/default/services/kubernetes")
        cluster_ip = json.loads(service)["spec"]["clusterIP"]
        assert set(sans.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address(ip) for ip in (cluster_ip, MASTER_SERVICE, "127.0.0.1")
        }
        pki = proxy.cache_dir / "pki"
        for name in ("serving.crt", "serving.key"):
            assert (pki / name).stat().st_mode & 0o777 == 0o600, name

        # A keep-alive connection, as a pod's client holds one.
        ctx = ssl.create_default_context(cafile=str(real.ca_file))
        kept = http.client.HTTPSConnection("kubernetes.default.svc", port, context=ctx, timeout=30)
        kept.connect = _connect_to_loopback(kept, port)  # type: ignore[method-assign]

        def version_on_kept() -> None:
            kept.request("GET", "/version", headers={"Authorization": f"Bearer {real.token}"})
            resp = kept.getresponse()
            assert resp.status == 200, resp.read()[:300]
            resp.read()

        version_on_kept()
        kept_socket = kept.sock

        def renewal_requested() -> dict[str, Any] | None:
            version_on_kept()
            return pending_csr(real, user, seen)

        second = wait_for(renewal_requested, 90, "a renewal CSR")
        seen.add(second["metadata"]["name"])
        approve(real, second)

        def renewed() -> x509.Certificate | None:
            version_on_kept()
            cert = peer_certificate(real, port)
            return cert if cert is not None and cert.serial_number != first.serial_number else None

        new = wait_for(renewed, 60, "a new certificate on new connections")
        assert new.not_valid_after_utc > first.not_valid_after_utc
        version_on_kept()
        assert kept.sock is kept_socket  # the same connection, never dropped
        assert isinstance(kept.sock, ssl.SSLSocket)
        old_der = kept.sock.getpeercert(binary_form=True)
        assert old_der is not None
        assert x509.load_der_x509_certificate(old_der).serial_number == first.serial_number
        kept.close()

        # Offline restart with a valid pair on disk: served with it.
        proxy.stop()
        link.blackhole()
        on_disk = x509.load_pem_x509_certificate((pki / "serving.crt").read_bytes())
        proxy.start()
        served = wait_for(lambda: peer_certificate(real, port), 30, "the listener, offline")
        assert served.serial_number == on_disk.serial_number

        # Offline restart with none: no listener, one line saying why, no traceback.
        proxy.stop()
        for name in ("serving.crt", "serving.key"):
            os.unlink(pki / name)
        mark = len(proxy.log_path.read_text(errors="replace"))
        proxy.start()
        wait_for(
            lambda: "secure listener not started" in proxy.log_path.read_text()[mark:],
            60,
            "the log line saying why the secure listener is off",
        )
        assert peer_certificate(real, port) is None
        link.restore()
        third = wait_for(lambda: pending_csr(real, user, seen), 90, "a CSR once back online")
        seen.add(third["metadata"]["name"])
        approve(real, third)
        wait_for(lambda: peer_certificate(real, port), 60, "the listener once back online")
        assert "Traceback" not in proxy.log_path.read_text(errors="replace")
    finally:
        proxy.close()
        link.close()


def _connect_to_loopback(conn: http.client.HTTPSConnection, port: int) -> Callable[[], None]:
    """Dial 127.0.0.1 while verifying the name pods use, kubernetes.default.svc."""

    def connect() -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sock = conn._context.wrap_socket(  # type: ignore[attr-defined]
            raw, server_hostname="kubernetes.default.svc"
        )

    return connect

"""The secure listener's certificate, issued by the cluster through a CSR.

Pods trust the cluster CA, so the certificate they see on the secure
listener must come from it. When no `--tls-cert-file` is given, edge-proxy
asks for one as the kubelet asks for its serving certificate: an ECDSA
P-256 key made here (it never leaves the node), a CertificateSigningRequest
to the `kubernetes.io/kubelet-serving` signer in the name of the node
(CN `system:node:<node>`, O `system:nodes`), sent with the proxy's own
upstream identity. Such CSRs are not auto-approved: an operator or an
approver (kubelet-csr-approver, ...) approves them, kube-controller-manager
signs them.

The pair is kept in `<cache-dir>/pki/` (key 0600, each file written to a
temp file and renamed, the key first), so a restart while offline serves
with it as long as it is valid. It is renewed when 80% of its lifetime has
passed (or when less than `--serving-cert-renew-before` is left): the new
pair is written and swapped into the listening context by
`ServingCertificate.check`, so established connections keep theirs and
new handshakes get the new certificate; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeproxy.errors import ConfigError, UpstreamUnreachable
from edgeproxy.server.tlsserving import ServingCertificate
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

SIGNER = "kubernetes.io/kubelet-serving"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
# The names pods' in-cluster config and the kubernetes Service go by.
SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
RENEW_FRACTION = 0.8
POLL_SECONDS = 2.0
# An unapproved CSR is given up on after this long and a new one sent, as the
# kubelet does: the approver may have missed it, or it may have been deleted.
PENDING_GIVE_UP_SECONDS = 900.0
RETRY_SECONDS = (5.0, 10.0, 30.0, 60.0)


class CSRRefused(Exception):
    """Upstream answered, but with no certificate (refused, denied, failed)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _san(host: str) -> x509.GeneralName | None:
    host = host.strip().strip("[]")
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return x509.DNSName(host.lower())
    return None if ip.is_unspecified else x509.IPAddress(ip)


def build_csr(
    key: ec.EllipticCurvePrivateKey, node: str, hosts: list[str]
) -> x509.CertificateSigningRequest:
    """A CSR the kubelet-serving signer accepts: node subject, DNS/IP SANs only."""
    names: list[x509.GeneralName] = []
    for host in [*hosts, *SERVICE_NAMES]:
        san = _san(host)
        if san is not None and san not in names:
            names.append(san)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file and rename: a crash never leaves half a file behind."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ClusterServingCertificate:
    """Obtains, keeps and renews the secure listener's certificate from the cluster."""

    def __init__(
        self,
        upstream: Upstream,
        pki_dir: Path,
        node: str,
        hosts: list[str],
        *,
        renew_before: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.pki_dir = pki_dir
        self.cert_file = pki_dir / "serving.crt"
        self.key_file = pki_dir / "serving.key"
        self.node = node
        self.hosts = hosts  # the master-service address and the listener's
        self.renew_before = renew_before
        self.serving: ServingCertificate | None = None
        self.issued = 0

    # -- what is on disk ------------------------------------------------------

    def _on_disk(self) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (OSError, ValueError):
            return None

    def load(self) -> ServingCertificate | None:
        """The pair on disk if it is still valid and loads; None otherwise (says why)."""
        cert = self._on_disk()
        if cert is None:
            log.info("no serving certificate in %s yet: asking the cluster for one", self.pki_dir)
            return None
        if cert.not_valid_after_utc <= _now():
            log.info(
                "the serving certificate in %s has expired: asking for a new one", self.pki_dir
            )
            return None
        try:
            self.serving = ServingCertificate(self.cert_file, self.key_file)
        except ConfigError as exc:
            log.warning("the serving certificate on disk does not load (%s): asking anew", exc)
            return None
        return self.serving

    def renew_at(self) -> datetime.datetime:
        """When the current certificate is due: 80% of its life, or the margin, if earlier."""
        cert = self._on_disk()
        if cert is None:
            return _now()
        stale = self._stale(cert)
        if stale:
            log.info("the serving certificate %s: renewing now", stale)
            return _now()
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        due = start + (end - start) * RENEW_FRACTION
        if self.renew_before > 0:
            due = min(due, end - datetime.timedelta(seconds=self.renew_before))
        return due

    def _stale(self, cert: x509.Certificate) -> str:
        """Why `cert` no longer fits the configuration (another node name or address), or ""."""
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns or cns[0].value != f"system:node:{self.node}":
            return f"is not for system:node:{self.node}"
        try:
            names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            names = set()
        for host in self.hosts:
            san = _san(host)
            if san is not None and san not in names:
                return f"does not name {host}"
        return ""

    # -- asking the cluster ---------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        resp = await self.upstream.request(method, path, headers=headers, data=data)
        try:
            raw = await resp.read()
        finally:
            resp.release()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, {"message": raw[:200].decode(errors="replace")}

    async def _cluster_ip(self) -> str | None:
        """default/kubernetes' ClusterIP, which pods' KUBERNETES_SERVICE_HOST names."""
        try:
            code, doc = await self._call("GET", "/api/v1/namespaces/default/services/kubernetes")
        except UpstreamUnreachable:
            return None
        ip = doc.get("spec", {}).get("clusterIP") if code == 200 else None
        if not isinstance(ip, str) or not ip or ip == "None":
            log.info("serving certificate: default/kubernetes' ClusterIP unreadable (%d)", code)
            return None
        return ip

    async def request_certificate(self) -> tuple[bytes, bytes]:
        """Send a CSR and wait for its certificate: (key PEM, certificate PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        hosts = list(self.hosts)
        cluster_ip = await self._cluster_ip()
        if cluster_ip:
            hosts.insert(0, cluster_ip)
        csr = build_csr(key, self.node, hosts)
        body = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "edge-proxy-serving-"},
            "spec": {
                "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                "signerName": SIGNER,
                # What the kubelet asks for with an ECDSA key: no key encipherment.
                "usages": ["digital signature", "server auth"],
            },
        }
        code, doc = await self._call("POST", CSR_PATH, body)
        if code != 201:
            raise CSRRefused(f"creating the CSR got {code}: {doc.get('message', '')}")
        name = doc["metadata"]["name"]
        log.info(
            "serving certificate: CSR %s sent to %s as system:node:%s (SANs %s); "
            "waiting for it to be approved and signed",
            name,
            SIGNER,
            self.node,
            ", ".join([*hosts, *SERVICE_NAMES]),
        )
        pem = await self._wait_issued(name)
        cert = x509.load_pem_x509_certificate(pem)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise CSRRefused(f"CSR {name}: the issued certificate is not for our key")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, pem

    async def _wait_issued(self, name: str) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_GIVE_UP_SECONDS
        while loop.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            try:
                code, doc = await self._call("GET", f"{CSR_PATH}/{name}")
            except UpstreamUnreachable:
                continue  # the CSR is upstream's; it may be approved while we are cut off
            if code == 404:
                raise CSRRefused(f"CSR {name} was deleted before it was signed")
            if code != 200:
                continue
            status = doc.get("status", {})
            for cond in status.get("conditions") or []:
                if cond.get("type") in ("Denied", "Failed") and cond.get("status") == "True":
                    raise CSRRefused(
                        f"CSR {name} {cond['type'].lower()}: {cond.get('message') or ''}"
                    )
            if status.get("certificate"):
                return base64.b64decode(status["certificate"])
        raise CSRRefused(f"CSR {name} was not signed within {PENDING_GIVE_UP_SECONDS:.0f}s")

    def _store(self, key_pem: bytes, cert_pem: bytes) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(self.key_file, key_pem, 0o600)
        _write(self.cert_file, cert_pem, 0o600)

    # -- the loop -------------------------------------------------------------

    async def run(self, on_first: Callable[[ServingCertificate], Awaitable[None]]) -> None:
        """Obtain a certificate when none is valid, renew it when due, forever.

        `on_first` starts the secure listener the first time a pair loads.
        Failures are one log line each and retried with backoff.
        """
        failures = 0
        while True:
            if self.serving is not None:
                wait = (self.renew_at() - _now()).total_seconds()
                if wait > 0:
                    await asyncio.sleep(min(wait, 3600.0))
                    continue
            try:
                key_pem, cert_pem = await self.request_certificate()
                self._store(key_pem, cert_pem)
            except (UpstreamUnreachable, CSRRefused, OSError, ValueError, KeyError) as exc:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                state = "keeping the current one" if self.serving else "secure listener not started"
                log.warning(
                    "serving certificate: %s; %s, retrying in %.0fs",
                    str(exc) or type(exc).__name__,
                    state,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.issued += 1
            cert = x509.load_pem_x509_certificate(cert_pem)
            log.info(
                "serving certificate issued: serial %x, valid until %s",
                cert.serial_number,
                cert.not_valid_after_utc.isoformat(timespec="seconds"),
            )
            if self.serving is None:
                try:
                    self.serving = ServingCertificate(self.cert_file, self.key_file)
                except ConfigError as exc:
                    log.warning("serving certificate: %s; asking again", exc)
                    continue
                await on_first(self.serving)
            else:
                self.serving.check()

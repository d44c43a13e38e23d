"""TLS and authentication for the simulator's `--tls` mode.

kubectl and the official clients are written against an HTTPS apiserver that
authenticates every request, so the simulator has to look like one: a private
CA, a serving certificate for the addresses clients dial, an admin client
certificate (O=system:masters, as kubeadm's admin.conf) and a bearer token,
and a kubeconfig that carries all of it. Requests with neither a verified
client certificate nor the token get the apiserver's 401 Status.

The bundle is kept on disk and reused across restarts so kubeconfigs handed
out earlier stay valid; only parts that are missing, expiring, or (for the
serving certificate) do not cover the requested hosts are re-issued.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import ipaddress
import os
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeproxy.kube import status

# Long enough that a development setup never notices; the simulator is not
# meant to hold real secrets.
_VALIDITY = datetime.timedelta(days=365)
# Backdate so a client whose clock runs a little behind accepts a fresh cert.
_BACKDATE = datetime.timedelta(hours=1)
# Re-issue before expiry rather than fail a client mid-session.
_RENEW_BEFORE = datetime.timedelta(days=7)
# Always valid for loopback, whatever the caller binds to.
_DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")
# kube-apiserver lets anonymous users read exactly these (ClusterRole
# system:public-info-viewer, https://kubernetes.io/docs/reference/access-authn-authz/rbac/).
_PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})


@dataclass(frozen=True, slots=True)
class TLSBundle:
    """Where the simulator's credentials live, plus the bearer token."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    token: str

    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()

    def client_cert_pem(self) -> bytes:
        return self.client_cert.read_bytes()

    def client_key_pem(self) -> bytes:
        return self.client_key.read_bytes()


def generate_bundle(directory: Path, hosts: Sequence[str]) -> TLSBundle:
    """Create (or reuse) the CA, serving cert, client cert and token in `directory`."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    paths = {name: directory / name for name in _FILES}
    sans = _sans([*_DEFAULT_HOSTS, *hosts])
    now = datetime.datetime.now(datetime.UTC)

    ca = _load_pair(paths["ca.crt"], paths["ca.key"], now)
    fresh_ca = ca is None
    if ca is None:
        ca = _issue_ca(now)
        _write_pair(paths["ca.crt"], paths["ca.key"], ca)

    server = None if fresh_ca else _load_pair(paths["server.crt"], paths["server.key"], now)
    if server is None or not _issued_by(server[0], ca[0]) or not sans <= _cert_sans(server[0]):
        server = _issue_leaf(ca, now, x509.Name(_cn("edge-proxy-sim")), sans, server_auth=True)
        _write_pair(paths["server.crt"], paths["server.key"], server)

    client = None if fresh_ca else _load_pair(paths["client.crt"], paths["client.key"], now)
    if client is None or not _issued_by(client[0], ca[0]):
        subject = x509.Name(
            [*_cn("sim-admin"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]
        )
        client = _issue_leaf(ca, now, subject, set(), server_auth=False)
        _write_pair(paths["client.crt"], paths["client.key"], client)

    token_path = paths["token"]
    token = "" if fresh_ca or not token_path.is_file() else token_path.read_text().strip()
    if not token:
        token = secrets.token_urlsafe(32)
        _write(token_path, token.encode() + b"\n", 0o600)

    return TLSBundle(
        ca_cert=paths["ca.crt"],
        ca_key=paths["ca.key"],
        server_cert=paths["server.crt"],
        server_key=paths["server.key"],
        client_cert=paths["client.crt"],
        client_key=paths["client.key"],
        token=token,
    )


def issue_client_pem(bundle: TLSBundle, user: str, groups: Sequence[str] = ()) -> bytes:
    """A new client certificate for `user` in `groups`, signed by the bundle's CA.

    Certificate and key in one PEM, as the kubelet keeps its rotating
    `kubelet-client-current.pem`. Each call gives a new key and serial.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = x509.load_pem_x509_certificate(bundle.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(bundle.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{bundle.ca_key}: not the EC key this module issues")
    subject = x509.Name(
        [*_cn(user), *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups)]
    )
    cert, key = _issue_leaf((ca_cert, ca_key), now, subject, set(), server_auth=False)
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def server_ssl_context(bundle: TLSBundle) -> ssl.SSLContext:
    """HTTPS serving context that verifies client certificates when one is offered."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(bundle.server_cert, bundle.server_key)
    ctx.load_verify_locations(cafile=bundle.ca_cert)
    # Optional: token-only clients send no certificate; a certificate that is
    # sent but not signed by our CA fails the handshake.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # aiohttp speaks HTTP/1.1 only; say so rather than let clients guess.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def default_exempt(path: str) -> bool:
    """Paths kube-apiserver serves to anonymous clients."""
    return path in _PUBLIC_PATHS


def auth_middleware(
    bundle: TLSBundle, exempt: Callable[[str], bool] = default_exempt
) -> Middleware:
    """Reject requests with neither a verified client cert nor the bearer token."""
    expected = bundle.token.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request.path) or _has_client_cert(request) or _token_ok(request, expected):
            return await handler(request)
        err = status.unauthorized()
        return web.Response(
            status=err.code, body=err.body(), content_type="application/json", headers=err.headers()
        )

    return authenticate


def write_kubeconfig(
    path: Path, server_url: str, bundle: TLSBundle | None, *, context: str = "edge-proxy-sim"
) -> None:
    """Write a kubeconfig for `server_url`; with a bundle it carries CA, cert and token."""
    cluster: dict[str, str] = {"server": server_url}
    user: dict[str, str] = {}
    if bundle is not None:
        cluster["certificate-authority-data"] = base64.b64encode(bundle.ca_pem()).decode()
        user["client-certificate-data"] = base64.b64encode(bundle.client_cert_pem()).decode()
        user["client-key-data"] = base64.b64encode(bundle.client_key_pem()).decode()
        user["token"] = bundle.token
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "preferences": {},
    }
    _write(path, yaml.safe_dump(config, sort_keys=False).encode(), 0o600)


# --- request checks -------------------------------------------------------------

_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key", "token")


def _has_client_cert(request: web.Request) -> bool:
    # With CERT_OPTIONAL a certificate that reaches here has been verified
    # against our CA; getpeercert() is None/empty when none was sent.
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


def _token_ok(request: web.Request, expected: bytes) -> bool:
    # Parsed as the apiserver's bearer authenticator does: "<scheme> <token>",
    # scheme case-insensitive, empty token rejected.
    parts = request.headers.get("Authorization", "").strip().split(" ")
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return False
    return hmac.compare_digest(parts[1].encode(), expected)


# --- certificates ---------------------------------------------------------------

_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _cn(name: str) -> list[x509.NameAttribute[str]]:
    return [x509.NameAttribute(NameOID.COMMON_NAME, name)]


def _sans(hosts: Sequence[str]) -> set[x509.GeneralName]:
    names: set[x509.GeneralName] = set()
    for raw in hosts:
        host = raw.strip().strip("[]")
        if not host:
            continue
        try:
            names.add(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.add(x509.DNSName(host.lower()))
    return names


def _cert_sans(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return set(ext.value)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_pair(cert_path: Path, key_path: Path, now: datetime.datetime) -> _Pair | None:
    """A stored cert and its key, or None if missing, mismatched or expiring soon."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    if cert.not_valid_after_utc - now < _RENEW_BEFORE:
        return None
    return cert, key


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _issue_ca(now: datetime.datetime) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(_cn("edge-proxy-sim-ca"))
    cert = (
        _builder(name, name, key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_leaf(
    ca: _Pair,
    now: datetime.datetime,
    subject: x509.Name,
    sans: set[x509.GeneralName],
    *,
    server_auth: bool,
) -> _Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_auth else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        # Sorted so the same hosts give the same certificate layout.
        ordered = sorted(sans, key=lambda n: (type(n).__name__, str(n.value)))
        builder = builder.add_extension(x509.SubjectAlternativeName(ordered), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- files ----------------------------------------------------------------------


def _write_pair(cert_path: Path, key_path: Path, pair: _Pair) -> None:
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    _write(key_path, pair[1].private_bytes(pem, pkcs8, serialization.NoEncryption()), 0o600)
    _write(cert_path, pair[0].public_bytes(pem), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file and rename, so a crash never leaves half a key behind."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

"""When the cluster-issued serving certificate is renewed, and what its CSR asks for.

The CSR round trip itself runs against kube-apiserver and
kube-controller-manager in tests/integration/test_serving_csr.py; here the
renewal rule (80% of the lifetime, or the configured margin if earlier) and
the CSR's subject and SANs are checked on certificates made for the purpose.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeproxy import config
from edgeproxy.errors import ConfigError
from edgeproxy.server.servingcert import ClusterServingCertificate, build_csr

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def write_cert(
    pki: Path, lifetime: datetime.timedelta, node: str = "n", ip: str = "127.0.0.1"
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")])
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(START + lifetime)
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    pki.mkdir(exist_ok=True)
    (pki / "serving.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issuer(pki: Path, renew_before: float = 0.0) -> ClusterServingCertificate:
    # renew_at reads only the files: no upstream is needed.
    return ClusterServingCertificate(
        cast(Any, None), pki, "n", ["127.0.0.1"], renew_before=renew_before
    )


def test_renewed_at_80_percent_of_its_life(tmp_path: Path) -> None:
    write_cert(tmp_path / "pki", datetime.timedelta(days=10))
    assert issuer(tmp_path / "pki").renew_at() == START + datetime.timedelta(days=8)


def test_a_margin_renews_earlier_but_never_later(tmp_path: Path) -> None:
    write_cert(tmp_path / "pki", datetime.timedelta(minutes=10))
    early = issuer(tmp_path / "pki", renew_before=590).renew_at()
    assert early == START + datetime.timedelta(seconds=10)
    late = issuer(tmp_path / "pki", renew_before=30).renew_at()
    assert late == START + datetime.timedelta(minutes=8)  # 80% comes first


@pytest.mark.parametrize(("node", "ip"), [("other", "127.0.0.1"), ("n", "127.0.0.2")])
def test_a_certificate_for_another_node_or_address_is_due_now(
    tmp_path: Path, node: str, ip: str
) -> None:
    write_cert(tmp_path / "pki", datetime.timedelta(days=10), node=node, ip=ip)
    assert issuer(tmp_path / "pki").renew_at() < START


def test_no_certificate_is_due_now(tmp_path: Path) -> None:
    before = datetime.datetime.now(datetime.UTC)
    assert issuer(tmp_path / "pki").renew_at() >= before


def test_the_csr_names_the_node_and_every_address_pods_use() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_csr(key, "edge-1", ["10.0.0.1", "169.254.2.1", "0.0.0.0", "proxy.example"])
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:edge-1"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # 0.0.0.0 (listen everywhere) is no address a client dials: left out.
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("169.254.2.1"),
    }
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "proxy.example",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    assert csr.is_signature_valid


def test_secure_listen_without_files_is_valid_but_half_a_pair_is_not(tmp_path: Path) -> None:
    base = {"server_addrs": ("https://127.0.0.1:6443",), "secure_listen": "127.0.0.1:10268"}
    config.build({}, base)  # the certificate comes from the cluster
    with pytest.raises(ConfigError, match="go together"):
        config.build({}, {**base, "tls_cert_file": tmp_path / "serving.crt"})

"""Upstream credentials: kubeconfig and --server-addr parsing, TLS context, token rotation.

Kubeconfigs are written to tmp_path in every form kubectl accepts; the TLS
context is proven against a real HTTPS simulator, with no mocks.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgeproxy.errors import ConfigError
from edgeproxy.sim.tls import TLSBundle, generate_bundle
from edgeproxy.testing import SimProcess
from edgeproxy.upstream.credentials import (
    Credentials,
    TokenSource,
    from_kubeconfig,
    from_server_addrs,
    ssl_context,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSBundle:
    return generate_bundle(tmp_path_factory.mktemp("pki"), ["127.0.0.1"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    directory: Path,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
) -> Path:
    """A two-context kubeconfig: "main" (current) and "other", with the given entries."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "http://other:8080"}},
            {"name": "main", "cluster": cluster or {"server": "https://10.0.0.1:6443"}},
        ],
        "users": [
            {"name": "nobody", "user": {}},
            {"name": "admin", "user": user or {}},
        ],
        "contexts": [
            {"name": "main", "context": {"cluster": "main", "user": "admin"}},
            {"name": "other", "context": {"cluster": "other", "user": "nobody"}},
        ],
        "current-context": "main",
    }
    doc.update(top or {})
    path = directory / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


# --- kubeconfig: field forms ----------------------------------------------------


def test_inline_data(tmp_path: Path, pki: TLSBundle) -> None:
    path = kubeconfig(
        tmp_path,
        {"server": "https://10.0.0.1:6443/", "certificate-authority-data": b64(pki.ca_pem())},
        {
            "client-certificate-data": b64(pki.client_cert_pem()),
            "client-key-data": b64(pki.client_key_pem()),
            "token": "abc",
        },
    )
    creds = from_kubeconfig(path)
    assert creds.servers == ("https://10.0.0.1:6443",)
    assert creds.ca_pem == pki.ca_pem()
    assert creds.client_cert_pem == pki.client_cert_pem()
    assert creds.client_key_pem == pki.client_key_pem()
    assert creds.token == "abc"
    assert creds.source == f"kubeconfig {path} context main"
    assert not creds.insecure_skip_verify
    assert TokenSource(creds).headers() == {"Authorization": "Bearer abc"}


def test_relative_and_absolute_files(tmp_path: Path, pki: TLSBundle) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(pki.ca_pem())
    (tmp_path / "certs" / "token").write_text("from-file\n")
    path = kubeconfig(
        tmp_path,
        {
            "server": "https://api.example:443",
            "certificate-authority": "certs/ca.crt",
            "tls-server-name": "kubernetes.default",
        },
        {
            "client-certificate": str(pki.client_cert),
            "client-key": str(pki.client_key),
            "tokenFile": "certs/token",
        },
    )
    creds = from_kubeconfig(path)
    assert creds.ca_pem == pki.ca_pem()
    assert creds.client_key_pem == pki.client_key_pem()
    assert creds.tls_server_name == "kubernetes.default"
    assert creds.token == "from-file"
    assert creds.token_file == tmp_path / "certs" / "token"


def test_context_selection_and_insecure(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path, {"server": "https://x", "insecure-skip-tls-verify": True}, {"token": "t"}
    )
    main = from_kubeconfig(path)
    assert main.insecure_skip_verify
    other = from_kubeconfig(path, "other")
    assert other.servers == ("http://other:8080",)
    assert other.token is None
    assert other.source.endswith("context other")
    assert TokenSource(other).headers() == {}


def test_basic_auth(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, user={"username": "admin", "password": "s3cret"})
    creds = from_kubeconfig(path)
    expected = "Basic " + b64(b"admin:s3cret")
    assert TokenSource(creds).headers() == {"Authorization": expected}


def test_token_file_rotation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    creds = from_kubeconfig(kubeconfig(tmp_path, user={"tokenFile": str(token)}))
    clock = [1000.0]
    source = TokenSource(creds, clock=lambda: clock[0])
    token.write_text("two")
    assert source.headers() == {"Authorization": "Bearer one"}  # not re-read yet
    assert source.headers(now=1059.0) == {"Authorization": "Bearer one"}
    clock[0] = 1060.0
    assert source.headers() == {"Authorization": "Bearer two"}
    token.unlink()
    with caplog.at_level(logging.WARNING):
        assert source.headers(now=1121.0) == {"Authorization": "Bearer two"}
    assert "keeping the previous token" in caplog.text
    token.write_text("three")
    assert source.headers(now=1150.0) == {"Authorization": "Bearer two"}
    assert source.headers(now=1181.0) == {"Authorization": "Bearer three"}


# --- kubeconfig: every error names the entry ------------------------------------


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"kubeconfig {missing}: cannot read"):
        from_kubeconfig(missing)
    bad = tmp_path / "bad"
    bad.write_text("clusters: [\n")
    with pytest.raises(ConfigError, match=f"kubeconfig {bad}: not valid YAML"):
        from_kubeconfig(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="not a kubeconfig"):
        from_kubeconfig(bad)


def test_context_errors(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, top={"current-context": ""})
    with pytest.raises(ConfigError, match=f"kubeconfig {path}: current-context is not set"):
        from_kubeconfig(path)
    with pytest.raises(
        ConfigError, match=r'context "prod" not found in contexts \(have: main, other\)'
    ):
        from_kubeconfig(path, "prod")
    path = kubeconfig(
        tmp_path,
        top={"contexts": [{"name": "main", "context": {"cluster": "gone", "user": "admin"}}]},
    )
    with pytest.raises(ConfigError, match='cluster "gone" not found in clusters'):
        from_kubeconfig(path)
    path = kubeconfig(
        tmp_path,
        top={"contexts": [{"name": "main", "context": {"cluster": "main", "user": "ghost"}}]},
    )
    with pytest.raises(ConfigError, match='user "ghost" not found in users'):
        from_kubeconfig(path)
    path = kubeconfig(tmp_path, top={"contexts": [{"name": "main", "context": {"user": "admin"}}]})
    with pytest.raises(ConfigError, match=r'contexts\[0\] "main": cluster is missing'):
        from_kubeconfig(path)


USER = 'users\\[1\\] "admin"'
CLUSTER = 'clusters\\[1\\] "main"'


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"server": ""}, {}, f"{CLUSTER}: server is missing"),
        ({"server": "ftp://x"}, {}, f"{CLUSTER}: server: 'ftp://x' must start with http"),
        ({"server": "https://x/k8s/c1"}, {}, f"{CLUSTER}: server: .*no path"),
        ({"server": "https://x:99999"}, {}, f"{CLUSTER}: server: .* not a valid URL"),
        (
            {"server": "https://x", "certificate-authority-data": "%%%"},
            {},
            f"{CLUSTER}: certificate-authority-data is not valid base64",
        ),
        (
            {"server": "https://x", "certificate-authority-data": b64(b"hello")},
            {},
            f"{CLUSTER}: certificate-authority-data is not PEM",
        ),
        (
            {"server": "https://x", "certificate-authority": "missing.crt"},
            {},
            f"{CLUSTER}: certificate-authority .*missing.crt: cannot read",
        ),
        (
            {"server": "https://x", "insecure-skip-tls-verify": "yes"},
            {},
            f"{CLUSTER}: insecure-skip-tls-verify must be true or false",
        ),
        (
            {"server": "https://x", "proxy-url": "http://p"},
            {},
            f"{CLUSTER}: proxy-url is not supported yet",
        ),
        (None, {"client-key-data": "!!"}, f"{USER}: client-key-data is not valid base64"),
        (None, {"exec": {"command": "aws"}}, f"{USER}: exec is not supported yet"),
        (None, {"auth-provider": {"name": "oidc"}}, f"{USER}: auth-provider is not supported"),
        (None, {"as": "someone-else"}, f"{USER}: as is not supported yet"),
        (None, {"token": 42}, f"{USER}: token must be a string"),
        (None, {"tokenFile": "nope"}, f"{USER}: tokenFile .*nope: cannot read"),
        (None, {"token": "t", "username": "u"}, f"{USER}: more than one auth method"),
    ],
)
def test_entry_errors(
    tmp_path: Path, cluster: dict[str, Any] | None, user: dict[str, Any], message: str
) -> None:
    path = kubeconfig(tmp_path, cluster, user)
    with pytest.raises(ConfigError, match=f"^kubeconfig {re.escape(str(path))}: {message}"):
        from_kubeconfig(path)


def test_cert_key_pairing_errors(tmp_path: Path, pki: TLSBundle) -> None:
    cert, key = b64(pki.client_cert_pem()), b64(pki.client_key_pem())
    cases = [
        ({"client-certificate-data": cert}, "client-certificate is set but client-key is not"),
        ({"client-key-data": key}, "client-key is set but client-certificate is not"),
        (
            {"client-key-data": key, "client-key": "k", "client-certificate-data": cert},
            "both client-key and client-key-data are set",
        ),
    ]
    for user, message in cases:
        path = kubeconfig(tmp_path, user=user)
        with pytest.raises(
            ConfigError, match=f"^kubeconfig {re.escape(str(path))}: {USER}: {message}"
        ):
            from_kubeconfig(path)


# --- --server-addr --------------------------------------------------------------


def test_server_addrs(tmp_path: Path, pki: TLSBundle) -> None:
    token = tmp_path / "token"
    token.write_text("tok\n")
    creds = from_server_addrs(
        ["https://a:6443/", "https://[::1]:6443,http://b"],
        ca_file=pki.ca_cert,
        token_file=token,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
    )
    assert creds.servers == ("https://a:6443", "https://[::1]:6443", "http://b")
    assert creds.ca_pem == pki.ca_pem()
    assert creds.token == "tok"
    assert creds.source == "--server-addr"


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("10.0.0.1:6443", "must start with http"),
        ("https://", "has no host"),
        ("https://a/api", "no path"),
        ("https://user@a", "no path or user"),
        ("https://a:port", "not a valid URL"),
    ],
)
def test_server_addr_errors(addr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^--server-addr '{addr}': .*{message}"):
        from_server_addrs(["https://good", addr])


def test_server_addr_flag_errors(tmp_path: Path, pki: TLSBundle) -> None:
    with pytest.raises(ConfigError, match="no server URL"):
        from_server_addrs([" , "])
    with pytest.raises(ConfigError, match="--client-cert and --client-key"):
        from_server_addrs(["https://a"], client_cert=pki.client_cert)
    with pytest.raises(ConfigError, match="--ca-file with --insecure"):
        from_server_addrs(["https://a"], ca_file=pki.ca_cert, insecure=True)
    with pytest.raises(ConfigError, match=f"--ca-file {tmp_path}/x: cannot read"):
        from_server_addrs(["https://a"], ca_file=tmp_path / "x")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"--token-file .*empty: file is empty"):
        from_server_addrs(["https://a"], token_file=tmp_path / "empty")


# --- ssl_context ----------------------------------------------------------------


def test_plain_http_needs_no_context(tmp_path: Path) -> None:
    creds = from_server_addrs(["http://a", "http://b"])
    assert ssl_context(creds, tmp_path / "keys") is None


def test_key_files_are_private_and_reused(tmp_path: Path, pki: TLSBundle) -> None:
    creds = from_server_addrs(["https://a"], client_cert=pki.client_cert, client_key=pki.client_key)
    keys = tmp_path / "keys"
    assert ssl_context(creds, keys) is not None
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    files = sorted(keys.iterdir())
    assert [f.suffix for f in files] == [".crt", ".key"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert ssl_context(creds, keys) is not None
    assert sorted(keys.iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_mismatched_key(tmp_path: Path, pki: TLSBundle) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    creds = dataclasses.replace(
        from_server_addrs(["https://a"]),
        client_cert_pem=pki.client_cert_pem(),
        client_key_pem=other,
    )
    with pytest.raises(ConfigError, match=r"^--server-addr: client certificate and key"):
        ssl_context(creds, tmp_path / "keys")


async def _get(sim: SimProcess, creds: Credentials, key_dir: Path) -> int:
    ctx = ssl_context(creds, key_dir)
    assert ctx is not None
    headers = TokenSource(creds).headers()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{creds.servers[0]}/api/v1/namespaces", ssl=ctx, headers=headers) as resp,
    ):
        await resp.read()
        assert creds.servers[0] == sim.url
        return resp.status


async def test_against_tls_simulator(sim_tls: SimProcess, tmp_path: Path) -> None:
    creds = from_kubeconfig(sim_tls.kubeconfig)
    assert creds.client_cert_pem and creds.token
    cert_only = dataclasses.replace(creds, token=None)
    assert await _get(sim_tls, cert_only, tmp_path / "k1") == 200
    token_only = dataclasses.replace(creds, client_cert_pem=None, client_key_pem=None)
    assert await _get(sim_tls, token_only, tmp_path / "k2") == 200
    neither = dataclasses.replace(token_only, token=None)
    assert await _get(sim_tls, neither, tmp_path / "k3") == 401

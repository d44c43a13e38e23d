"""The simulator's --tls mode against real clients on loopback.

A real HTTPS aiohttp server with the generated bundle, then aiohttp, kubectl
and the official Python client talk to it the way users will.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509

from edgeproxy.kube import status
from edgeproxy.sim.tls import (
    TLSBundle,
    auth_middleware,
    default_exempt,
    generate_bundle,
    server_ssl_context,
    write_kubeconfig,
)


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    port: int
    bundle: TLSBundle


@pytest.fixture
def bundle(tmp_path: Path) -> TLSBundle:
    return generate_bundle(tmp_path / "tls", ["127.0.0.1"])


@pytest.fixture
async def server(bundle: TLSBundle) -> AsyncIterator[Server]:
    port = 0

    async def api(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}
                ],
            }
        )

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "32", "gitVersion": "v1.32.0"})

    app = web.Application(middlewares=[auth_middleware(bundle)])
    app.router.add_get("/api", api)
    app.router.add_get("/api/", api)  # the Python client asks with a slash
    app.router.add_get("/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(bundle))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"https://127.0.0.1:{port}", port, bundle)
    finally:
        await runner.cleanup()


def client_ctx(bundle: TLSBundle, *, cert: TLSBundle | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=bundle.ca_cert)
    if cert is not None:
        ctx.load_cert_chain(cert.client_cert, cert.client_key)
    return ctx


async def get(
    url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=ctx, headers=headers) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


# --- bundle -----------------------------------------------------------------------


def test_bundle_files_and_modes(bundle: TLSBundle) -> None:
    assert stat.S_IMODE(bundle.ca_cert.parent.stat().st_mode) == 0o700
    for key in (bundle.ca_key, bundle.server_key, bundle.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bundle.token) >= 32


def test_server_cert_sans_and_client_identity(tmp_path: Path) -> None:
    b = generate_bundle(tmp_path, ["10.0.0.7", "edge.example", "[fd00::1]"])
    server = x509.load_pem_x509_certificate(b.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert ips == {"127.0.0.1", "::1", "10.0.0.7", "fd00::1"}
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "edge.example"}

    client = x509.load_pem_x509_certificate(b.client_cert_pem())
    assert client.subject.rfc4514_string() == "O=system:masters,CN=sim-admin"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]


def test_bundle_reused_on_restart(tmp_path: Path) -> None:
    first = generate_bundle(tmp_path, ["127.0.0.1"])
    pems = [p.read_bytes() for p in (first.ca_cert, first.server_cert, first.client_cert)]
    second = generate_bundle(tmp_path, ["localhost"])
    assert second == first
    assert [p.read_bytes() for p in (first.ca_cert, first.server_cert, first.client_cert)] == pems


def test_new_host_reissues_only_server_cert(tmp_path: Path) -> None:
    first = generate_bundle(tmp_path, [])
    ca, client, server = first.ca_pem(), first.client_cert_pem(), first.server_cert.read_bytes()
    second = generate_bundle(tmp_path, ["192.0.2.1"])
    assert second.token == first.token
    assert (second.ca_pem(), second.client_cert_pem()) == (ca, client)
    assert second.server_cert.read_bytes() != server
    cert = x509.load_pem_x509_certificate(second.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.0.2.1") in san.get_values_for_type(x509.IPAddress)


def test_broken_ca_regenerates_everything(tmp_path: Path) -> None:
    first = generate_bundle(tmp_path, [])
    ca = first.ca_pem()
    first.ca_key.write_bytes(b"garbage")
    second = generate_bundle(tmp_path, [])
    assert second.token != first.token
    assert second.ca_pem() != ca


def test_default_exempt() -> None:
    assert all(default_exempt(p) for p in ("/livez", "/readyz", "/healthz", "/version"))
    assert not any(default_exempt(p) for p in ("/api", "/", "/livez/x", "/apis"))


def test_plain_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, "http://127.0.0.1:8080", None, context="plain")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "plain"
    assert config["clusters"] == [{"name": "plain", "cluster": {"server": "http://127.0.0.1:8080"}}]
    assert config["users"] == [{"name": "plain", "user": {}}]


# --- server -----------------------------------------------------------------------


async def test_client_cert_accepted(server: Server) -> None:
    code, _, body = await get(server.url + "/api", client_ctx(server.bundle, cert=server.bundle))
    assert code == 200
    assert json.loads(body)["kind"] == "APIVersions"


async def test_bearer_token_accepted(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.bundle.token}"}
    code, _, _ = await get(server.url + "/api", client_ctx(server.bundle), headers)
    assert code == 200


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
)
async def test_unauthenticated_gets_401_status(
    server: Server, headers: dict[str, str] | None
) -> None:
    code, content_type, body = await get(server.url + "/api", client_ctx(server.bundle), headers)
    assert (code, content_type) == (401, "application/json")
    assert body == status.unauthorized().body()


async def test_version_is_public(server: Server) -> None:
    code, _, _ = await get(server.url + "/version", client_ctx(server.bundle))
    assert code == 200


async def test_foreign_client_cert_rejected(server: Server, tmp_path: Path) -> None:
    other = generate_bundle(tmp_path / "other", [])
    with pytest.raises(aiohttp.ClientError):
        await get(server.url + "/api", client_ctx(server.bundle, cert=other))


@pytest.mark.kubectl
async def test_kubectl_accepts_kubeconfig(server: Server, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server.url, server.bundle)
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(tmp_path / "cache"),
        "get",
        "--raw",
        "/api",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["versions"] == ["v1"]


async def test_python_client_accepts_kubeconfig(server: Server, tmp_path: Path) -> None:
    from kubernetes import client, config

    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server.url, server.bundle)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)

    def call() -> list[str]:
        with client.ApiClient(configuration) as api:
            versions = client.CoreApi(api).get_api_versions()
            return list(versions.versions)

    assert await asyncio.to_thread(call) == ["v1"]

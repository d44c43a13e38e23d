"""The secure listener's certificate: refused loudly at start, followed when it rotates.

A real HTTPS listener (server/connections.py) on loopback; each check opens
a fresh TLS connection and compares the certificate it was shown.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.errors import ConfigError
from edgeproxy.server.connections import Listener, ListenerLimits
from edgeproxy.server.tlsserving import ServingCertificate, secure_middleware
from edgeproxy.sim.tls import TLSBundle, generate_bundle


@pytest.fixture
def pair(tmp_path: Path) -> tuple[TLSBundle, TLSBundle]:
    return (
        generate_bundle(tmp_path / "a", ["127.0.0.1"]),
        generate_bundle(tmp_path / "b", ["127.0.0.1"]),
    )


def install(bundle: TLSBundle, cert: Path, key: Path) -> None:
    shutil.copyfile(bundle.server_cert, cert)
    shutil.copyfile(bundle.server_key, key)


def test_a_missing_or_bad_file_is_a_startup_error_naming_it(
    tmp_path: Path, pair: tuple[TLSBundle, TLSBundle]
) -> None:
    a, b = pair
    missing = tmp_path / "nope.crt"
    with pytest.raises(ConfigError, match=f"--tls-cert-file {missing}: cannot read"):
        ServingCertificate(missing, a.server_key)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    with pytest.raises(ConfigError, match=f"--tls-private-key-file {junk}: not a PEM file"):
        ServingCertificate(a.server_cert, junk)
    with pytest.raises(ConfigError, match="cannot be used as a serving certificate"):
        ServingCertificate(a.server_cert, b.server_key)  # not this certificate's key


@pytest.fixture
async def served(
    tmp_path: Path, pair: tuple[TLSBundle, TLSBundle]
) -> AsyncIterator[tuple[ServingCertificate, int]]:
    cert, key = tmp_path / "serving.crt", tmp_path / "serving.key"
    install(pair[0], cert, key)
    serving = ServingCertificate(cert, key)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[secure_middleware(anonymous=False)])
    app.router.add_get("/{tail:.*}", ok)
    listener = Listener(app, ListenerLimits("secure", 16))
    port = await listener.start("127.0.0.1", 0, ssl=serving.context)
    try:
        yield serving, port
    finally:
        await listener.cleanup()


async def shown_certificate(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()


def der_of(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


async def test_a_rotated_certificate_is_used_by_new_connections(
    served: tuple[ServingCertificate, int], pair: tuple[TLSBundle, TLSBundle]
) -> None:
    serving, port = served
    a, b = pair
    assert await shown_certificate(port) == der_of(a.server_cert)
    ctx = ssl.create_default_context(cafile=str(a.ca_cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as old:
        url = f"https://127.0.0.1:{port}/api"
        headers = {"Authorization": "Bearer t"}
        async with old.get(url, headers=headers) as resp:
            assert resp.status == 200

        install(b, serving.cert_file, serving.key_file)
        assert serving.check()
        assert await shown_certificate(port) == der_of(b.server_cert)
        # A connection made before goes on with the certificate it was shown.
        async with old.get(url, headers=headers) as resp:
            assert resp.status == 200

    # Mid-rotation: the new certificate with the old key. Refused; B stays.
    shutil.copyfile(a.server_cert, serving.cert_file)
    assert not serving.check()
    assert await shown_certificate(port) == der_of(b.server_cert)
    assert serving.reloads == 1


async def test_no_token_is_a_401_status(
    served: tuple[ServingCertificate, int], pair: tuple[TLSBundle, TLSBundle]
) -> None:
    _, port = served
    ctx = ssl.create_default_context(cafile=str(pair[0].ca_cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.get(f"https://127.0.0.1:{port}/api/v1/pods") as resp:
            assert resp.status == 401
            doc = await resp.json()
        assert doc["kind"] == "Status" and doc["reason"] == "Unauthorized"
        assert "--secure-anonymous-auth" in doc["message"]
        basic = {"Authorization": "Basic YTpi"}
        async with http.get(f"https://127.0.0.1:{port}/api/v1/pods", headers=basic) as resp:
            assert resp.status == 401

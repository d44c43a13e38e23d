"""The upstream client certificate follows its files, and a half-rotated pair is never used.

A TLS server on loopback that requires a client certificate (trusting two
CAs) reports which certificate each new connection presented.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeproxy.sim.tls import TLSBundle, generate_bundle
from edgeproxy.upstream.certreload import CertificateReloader


@pytest.fixture
def pair(tmp_path: Path) -> tuple[TLSBundle, TLSBundle]:
    return (
        generate_bundle(tmp_path / "a", ["127.0.0.1"]),
        generate_bundle(tmp_path / "b", ["127.0.0.1"]),
    )


@pytest.fixture
async def server(pair: tuple[TLSBundle, TLSBundle]) -> AsyncIterator[int]:
    a, b = pair
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.server_cert, a.server_key)
    ctx.load_verify_locations(cafile=str(a.ca_cert))
    ctx.load_verify_locations(cafile=str(b.ca_cert))
    ctx.verify_mode = ssl.CERT_REQUIRED

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(der)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def presented(port: int, ctx: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def der_of(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


async def test_rotation_and_a_half_written_pair(
    tmp_path: Path, server: int, pair: tuple[TLSBundle, TLSBundle]
) -> None:
    a, b = pair
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    shutil.copyfile(a.client_cert, cert)
    shutil.copyfile(a.client_key, key)
    ctx = ssl.create_default_context(cafile=str(a.ca_cert))
    ctx.load_cert_chain(cert, key)
    reloader = CertificateReloader(ctx, cert, key)
    assert await presented(server, ctx) == der_of(a.client_cert)

    # The kubelet wrote the new certificate but not yet its key: keep the old pair.
    shutil.copyfile(b.client_cert, cert)
    assert not reloader.check()
    assert await presented(server, ctx) == der_of(a.client_cert)

    shutil.copyfile(b.client_key, key)
    assert reloader.check()
    assert await presented(server, ctx) == der_of(b.client_cert)
    assert reloader.reloads == 1

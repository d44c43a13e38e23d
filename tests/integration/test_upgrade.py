"""Protocol upgrades through the proxy: exec/attach/port-forward over WebSocket and SPDY.

The proxy runs in-process (`ProxyServer`) in front of real upstream servers on
loopback: an aiohttp app with a WebSocket echo (kubectl >= 1.30 exec, with the
`v5.channel.k8s.io` subprotocol), and a hand-written asyncio server that
answers `101 Switching Protocols` / `Upgrade: SPDY/3.1` and echoes raw bytes,
or refuses with a 403 Status, over plain HTTP and over TLS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.config import ServeConfig
from edgeproxy.server.proxyserver import ProxyServer
from edgeproxy.sim.tls import generate_bundle, server_ssl_context

EXEC = "/api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true&stdout=true"
PORTFORWARD = "/api/v1/namespaces/default/pods/p/portforward"
DENIED = "/api/v1/namespaces/default/pods/denied/exec"
V5 = "v5.channel.k8s.io"
FORBIDDEN = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'pods "denied" is forbidden: cannot create resource "pods/exec"',
    "reason": "Forbidden",
    "details": {"name": "denied", "kind": "pods"},
    "code": 403,
}


async def start_proxy(tmp_path: Path, url: str, **config: Any) -> ProxyServer:
    proxy = ProxyServer(
        ServeConfig(
            server_addrs=(url,),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            cache_dir=tmp_path / "cache",
            **config,
        )
    )
    await proxy.start()
    return proxy


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("proxy-token\n")
    return path


# -- (a) WebSocket exec ----------------------------------------------------------------


@pytest.fixture
async def ws_upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An aiohttp apiserver stand-in with a WebSocket echo as pods/exec."""
    seen: list[dict[str, str]] = []

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def exec_(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=(V5, "v4.channel.k8s.io"), max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/namespaces/default/pods/p/exec", exec_)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_websocket_exec_echoes_text_and_binary(
    tmp_path: Path, token_file: Path, ws_upstream: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = ws_upstream
    proxy = await start_proxy(tmp_path, url, token_file=token_file)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"http://127.0.0.1:{proxy.port}{EXEC}",
                protocols=(V5, "v4.channel.k8s.io"),
                headers={"Authorization": "Bearer client-token"},
                max_msg_size=0,
            ) as ws,
        ):
            assert ws.protocol == V5
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=5) == "hello"
            await ws.send_bytes(b"\x00stdin\xff")
            assert await ws.receive_bytes(timeout=5) == b"\x00stdin\xff"
            big = bytes(range(256)) * 4096  # 1 MiB
            await ws.send_bytes(big)
            assert await ws.receive_bytes(timeout=10) == big
            for i in range(50):  # many small frames in flight at once
                await ws.send_str(f"line {i}")
            assert [await ws.receive_str(timeout=5) for _ in range(50)] == [
                f"line {i}" for i in range(50)
            ]
        (headers,) = seen
        offered = [p.strip() for p in headers["Sec-WebSocket-Protocol"].split(",")]
        assert offered == [V5, "v4.channel.k8s.io"]
        # A client with its own token is forwarded as itself (docs/identity.md).
        assert headers["Authorization"] == "Bearer client-token"
        assert headers["Host"] == url.removeprefix("http://")
        assert headers["Upgrade"].lower() == "websocket"
    finally:
        await proxy.stop()


# -- (b, c) raw SPDY upgrade and a refused upgrade, over HTTP and HTTPS -----------------


@dataclass
class RawUpstream:
    url: str
    server: asyncio.Server
    heads: list[bytes] = field(default_factory=list)
    sessions_ended: int = 0


async def start_raw_upstream(tls: ssl.SSLContext | None) -> RawUpstream:
    """Just enough of an apiserver: /readyz, a SPDY echo (closing after b"bye"),
    and a 403 Status with a chunked body for DENIED."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            upstream.heads.append(head)
            path = head.split(b" ")[1].decode()
            if path == "/readyz":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            elif path.startswith(DENIED):
                body = json.dumps(FORBIDDEN).encode()
                a, b = body[:10], body[10:]
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                    b"Audit-Id: 1234\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                    % (len(a), a, len(b), b)
                )
            else:
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
                )
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                    if data.endswith(b"bye"):
                        break
                upstream.sessions_ended += 1
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    upstream = RawUpstream(f"{'https' if tls else 'http'}://127.0.0.1:{port}", server)
    return upstream


@pytest.fixture(params=["http", "https"])
async def raw_upstream(
    request: pytest.FixtureRequest, tmp_path: Path, token_file: Path
) -> AsyncIterator[tuple[RawUpstream, ProxyServer]]:
    config: dict[str, Any] = {"token_file": token_file}
    tls = None
    if request.param == "https":
        bundle = generate_bundle(tmp_path / "tls", ["127.0.0.1"])
        tls = server_ssl_context(bundle)
        config["ca_file"] = bundle.ca_cert
    upstream = await start_raw_upstream(tls)
    proxy = await start_proxy(tmp_path, upstream.url, **config)
    try:
        yield upstream, proxy
    finally:
        await proxy.stop()
        upstream.server.close()


async def raw_request(port: int, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.replace("\n", "\r\n").encode())
    await writer.drain()
    return reader, writer


SPDY_HEAD = (
    "POST {path} HTTP/1.1\n"
    "Host: 127.0.0.1\n"
    "Connection: Upgrade\n"
    "Upgrade: SPDY/3.1\n"
    "X-Stream-Protocol-Version: portforward.k8s.io\n"
    "Content-Length: 0\n"
    "\n"
)


async def test_spdy_upgrade_splices_raw_bytes(
    raw_upstream: tuple[RawUpstream, ProxyServer],
) -> None:
    upstream, proxy = raw_upstream
    reader, writer = await raw_request(proxy.port, SPDY_HEAD.format(path=PORTFORWARD))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        lines = head.decode().lower().split("\r\n")
        assert "upgrade: spdy/3.1" in lines
        assert "x-stream-protocol-version: portforward.k8s.io" in lines
        assert not any(line.startswith(("content-length", "transfer-encoding")) for line in lines)

        # Not HTTP: the proxy must not parse it (aiohttp would, for a non-websocket upgrade).
        frame = b"\x80\x03\x00\x01GET / HTTP/1.1\r\n\r\n\x00\x00"
        writer.write(frame)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(frame)), 5) == frame

        big = bytes(range(256)) * 32768  # 8 MiB both ways, through bounded buffers

        async def send() -> None:
            writer.write(big)
            await writer.drain()

        _, echoed = await asyncio.wait_for(asyncio.gather(send(), reader.readexactly(len(big))), 20)
        assert echoed == big
    finally:
        writer.close()

    sent = [h for h in upstream.heads if PORTFORWARD.encode() in h]
    assert len(sent) == 1
    got = sent[0].decode().split("\r\n")
    assert got[0] == f"POST {PORTFORWARD} HTTP/1.1"
    # Without credentials of its own, a loopback client acts as the proxy.
    assert "Authorization: Bearer proxy-token" in got
    assert f"Host: {upstream.url.split('://')[1]}" in got
    assert "Connection: Upgrade" in got and "Upgrade: SPDY/3.1" in got


async def test_spdy_session_ends_with_either_side(
    raw_upstream: tuple[RawUpstream, ProxyServer],
) -> None:
    upstream, proxy = raw_upstream
    # upstream closes: the client connection is closed after the last bytes
    reader, writer = await raw_request(proxy.port, SPDY_HEAD.format(path=PORTFORWARD))
    try:
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
            b"HTTP/1.1 101"
        )
        writer.write(b"bye")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b"bye"
    finally:
        writer.close()
    # client closes: the upstream connection is closed
    reader, writer = await raw_request(proxy.port, SPDY_HEAD.format(path=PORTFORWARD))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
    writer.close()
    await _until(lambda: upstream.sessions_ended == 2)


async def test_refused_upgrade_is_relayed(
    raw_upstream: tuple[RawUpstream, ProxyServer],
) -> None:
    _, proxy = raw_upstream
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"http://127.0.0.1:{proxy.port}{DENIED}?command=ls",
            headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"},
        )
        async with resp:
            assert resp.status == 403
            assert resp.headers["Content-Type"] == "application/json"
            assert resp.headers["Audit-Id"] == "1234"
            assert await resp.json() == FORBIDDEN


async def test_refused_websocket_upgrade_is_relayed(
    tmp_path: Path, ws_upstream: tuple[str, list[dict[str, str]]]
) -> None:
    url, _ = ws_upstream
    proxy = await start_proxy(tmp_path, url)
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(
                    f"http://127.0.0.1:{proxy.port}/api/v1/namespaces/default/pods/nope/exec",
                    protocols=(V5,),
                )
            assert info.value.status == 404
            # The connection stays usable as HTTP after a refused upgrade.
            async with http.get(f"http://127.0.0.1:{proxy.port}/readyz") as resp:
                assert resp.status == 200
    finally:
        await proxy.stop()


# -- (d) link down ---------------------------------------------------------------------


async def test_upgrade_while_link_is_down_gets_503(tmp_path: Path) -> None:
    upstream = await start_raw_upstream(None)
    proxy = await start_proxy(tmp_path, upstream.url)
    try:
        upstream.server.close()
        await upstream.server.wait_closed()

        async def attempt() -> aiohttp.ClientResponse:
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    f"http://127.0.0.1:{proxy.port}{PORTFORWARD}",
                    headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"},
                )
                await resp.read()
                return resp

        await _assert_503(await attempt())  # refused at once, maybe before the probes noticed
        await _until(lambda: not proxy.upstream.healthy)
        await _assert_503(await attempt())  # known down: not even tried
    finally:
        await proxy.stop()


async def _assert_503(resp: aiohttp.ClientResponse) -> None:
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    body = await resp.json()
    assert body["kind"] == "Status" and body["code"] == 503
    assert "unreachable" in body["message"]


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in 10 s")

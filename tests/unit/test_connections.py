"""The connection cap in-process: idle connections make room, busy ones do not."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from edgeproxy.server.connections import Listener, ListenerLimits
from edgeproxy.server.openfiles import client_connection_cap

REQUEST = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"


async def _app_with_a_slow_handler() -> tuple[web.Application, asyncio.Event]:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app, release


async def test_at_the_cap_busy_connections_refuse_newcomers_with_a_status() -> None:
    app, release = await _app_with_a_slow_handler()
    listener = Listener(app, ListenerLimits("client", 2), access_log=None)
    port = await listener.start("127.0.0.1", 0)
    try:
        busy = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            busy.append((reader, writer))
        await asyncio.sleep(0.2)
        refused_reader, refused_writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(refused_reader.read(), 10)
        refused_writer.close()
        await refused_writer.wait_closed()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 Too Many Requests")
        assert b"Retry-After: 1" in head
        assert json.loads(body)["reason"] == "TooManyRequests"
        assert listener.limiter.refused == 1
        release.set()
        for reader, writer in busy:  # the busy ones were not disturbed
            assert b"done" in await asyncio.wait_for(reader.read(200), 10)
            writer.close()
            await writer.wait_closed()
    finally:
        await listener.cleanup()


async def test_at_the_cap_an_idle_connection_makes_room() -> None:
    app, release = await _app_with_a_slow_handler()
    release.set()
    listener = Listener(app, ListenerLimits("client", 2), access_log=None)
    port = await listener.start("127.0.0.1", 0)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        assert b"done" in await asyncio.wait_for(reader.read(200), 10)
        assert await asyncio.wait_for(idle[0][0].read(), 10) == b""  # the oldest idle one
        assert listener.limiter.evicted == 1
        for _, w in [*idle, (reader, writer)]:
            w.close()
            await w.wait_closed()
    finally:
        await listener.cleanup()


def test_the_client_cap_fits_the_open_file_limit() -> None:
    assert client_connection_cap(4096, 1 << 20) == 4096
    assert client_connection_cap(4096, 1024) == (1024 - 128 - 64) // 2
    assert client_connection_cap(4096, 100) == 16  # never below a usable minimum

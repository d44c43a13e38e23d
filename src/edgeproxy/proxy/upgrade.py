"""Protocol upgrades passed through: exec, attach, port-forward and watch over WebSocket.

kubectl opens these with `Connection: Upgrade` and either `Upgrade: SPDY/3.1`
(the legacy streaming protocol) or `Upgrade: websocket` with the
`v5.channel.k8s.io` subprotocols (kubectl >= 1.30). Neither fits a
request/response forwarder, so an upgrade gets its own raw connection to the
cloud apiserver (`Upstream.open_raw`):

1. the client's request head is written as is, minus hop-by-hop headers, the
   client's credentials and identity headers (`forward.upstream_headers`),
   plus the client's bearer token if it sent one, else the proxy's
   credentials (docs/identity.md), and the upstream Host; a request body,
   if any, is streamed;
2. upstream's response head is read. Anything but `101 Switching Protocols`
   (a 400/403/404 Status, say) is relayed like any other response;
3. on 101 the client connection is taken over from aiohttp (`_take_over`),
   the 101 and upstream's headers go to the client, and bytes are spliced
   both ways until either side closes. Each direction holds at most about
   `CLIENT_BUFFER` / the stream reader's limit before it stops reading, so a
   slow reader slows its writer instead of growing memory.

While the link is down, `UpstreamUnreachable` reaches the router, which
answers 503 with Retry-After like any other write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDict

from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.kube import status
from edgeproxy.proxy.forward import CHUNK, HOP_BY_HOP, upstream_headers
from edgeproxy.proxy.identity import bearer_token
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

# Client bytes queued for upstream before the client socket stops being read.
CLIENT_BUFFER = 256 * 1024
# kube-apiserver answers an exec only once the kubelet has: allow for a slow node.
HEAD_TIMEOUT = 60.0
# Response headers the proxy frames itself when relaying a refused upgrade.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

OnBytes = Callable[[int], None]


class _BadHead(Exception):
    """Upstream's answer to the upgrade request is not HTTP/1.1."""


async def passthrough_upgrade(
    request: web.Request, upstream: Upstream, *, on_bytes: OnBytes | None = None
) -> web.StreamResponse:
    """Forward one upgrade request; returns only when the upgraded stream has ended."""
    if not request.headers.get("Upgrade"):
        raise status.bad_request("Connection: Upgrade without an Upgrade header")
    if not upstream.healthy:
        raise UpstreamUnreachable("link is down")
    reader, writer, server, extra = await upstream.open_raw(bearer_token(request.headers))
    try:
        try:
            await _send_request(request, writer, extra)
            code, reason, headers = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamUnreachable(f"{server.url} broke off the upgrade: {exc!r}") from exc
        except TimeoutError:
            raise status.timeout(
                f"{server.url} did not answer the upgrade request within {HEAD_TIMEOUT:.0f}s"
            ) from None
        except (_BadHead, asyncio.LimitOverrunError, ValueError) as exc:
            raise status.internal_error(f"bad response to an upgrade request: {exc}") from exc
        if code != 101:
            return await _relay(request, code, reason, headers, reader)
        return await _switch(request, headers, reader, writer, on_bytes)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# -- upstream side -------------------------------------------------------------------


async def _send_request(
    request: web.Request, writer: asyncio.StreamWriter, extra: Mapping[str, str]
) -> None:
    # Headers named in Connection are hop-by-hop too (RFC 9110 sec. 7.6.1).
    named = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    drop = named | {k.lower() for k in extra}
    lines = [f"{request.method} {request.raw_path} HTTP/1.1"]
    # The same client headers every forwarded request carries (credentials and
    # identity headers removed), minus what this connection frames itself.
    kept = upstream_headers(request.headers)
    lines += [f"{k}: {v}" for k, v in kept.items() if k.lower() not in drop]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines += ["Connection: Upgrade", f"Upgrade: {request.headers['Upgrade']}"]
    chunked = request.body_exists and request.content_length is None
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif request.body_exists:
        lines.append(f"Content-Length: {request.content_length}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
    if request.body_exists:
        async for chunk in request.content.iter_chunked(CHUNK):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, CIMultiDict[str]]:
    """Status and headers of upstream's answer, skipping interim 100 Continue heads."""
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")  # bounded by the reader's limit
        first, *rest = raw[:-4].decode("latin-1").split("\r\n")
        version, _, tail = first.partition(" ")
        code_text, _, reason = tail.partition(" ")
        if not version.startswith("HTTP/1.") or not code_text.isdigit():
            raise _BadHead(f"status line {first[:80]!r}")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in rest:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadHead(f"header line {line[:80]!r}")
            headers.add(name, value.strip())
        if int(code_text) != 100:
            return int(code_text), reason, headers


async def _relay(
    request: web.Request,
    code: int,
    reason: str,
    headers: CIMultiDict[str],
    reader: asyncio.StreamReader,
) -> web.StreamResponse:
    """A refused upgrade (400/403/404/500 Status, ...) streamed to the client as it came."""
    resp = web.StreamResponse(status=code, reason=reason or None)
    for name, value in headers.items():
        if name.lower() not in _FRAMING and name.lower() not in HOP_BY_HOP:
            resp.headers.add(name, value)
    chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
    length = None if chunked else headers.get("Content-Length")
    if length is not None:
        resp.content_length = int(length)
    await resp.prepare(request)
    try:
        if chunked:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await resp.write(await reader.readexactly(size))
                await reader.readexactly(2)
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
        else:
            left = int(length) if length is not None else -1
            while left != 0 and (
                chunk := await reader.read(CHUNK if left < 0 else min(left, CHUNK))
            ):
                await resp.write(chunk)
                left -= len(chunk) if left > 0 else 0
        await resp.write_eof()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        # Cut the client off too, so it sees a truncated answer, not a complete-looking one.
        log.warning("upstream answer to upgrade %s broke off: %r", request.path, exc)
        if request.transport is not None:
            request.transport.close()
    return resp


# -- client side ---------------------------------------------------------------------


async def _switch(
    request: web.Request,
    headers: CIMultiDict[str],
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    on_bytes: OnBytes | None,
) -> web.StreamResponse:
    """Answer 101 with upstream's headers, then splice bytes until either side closes."""
    resp = web.StreamResponse(status=101, reason="Switching Protocols")
    for name, value in headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            resp.headers.add(name, value)
    resp.force_close()  # never another HTTP request on this connection
    client = _take_over(request)  # before the 101: no client byte may reach the HTTP parser
    writer = await resp.prepare(request)
    transport = request.transport
    if transport is None or writer is None:
        return resp

    async def to_upstream() -> None:
        while data := await client.read():
            up_writer.write(data)
            await up_writer.drain()
        if up_writer.can_write_eof():
            up_writer.write_eof()

    async def to_client() -> None:
        while data := await up_reader.read(CHUNK):
            transport.write(data)
            if on_bytes is not None:
                on_bytes(len(data))
            await writer.drain()

    tasks = [
        asyncio.create_task(to_upstream(), name=f"upgrade-up {request.path}"),
        asyncio.create_task(to_client(), name=f"upgrade-down {request.path}"),
    ]
    try:
        # Either side closing ends the session (aiohttp closes the client
        # connection on a half-close anyway, and kubelet streams end with upstream).
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None and not isinstance(exc, OSError):
                log.warning("upgraded stream %s failed: %r", request.path, exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()  # flushes what is buffered, then closes
    return resp


def _take_over(request: web.Request) -> _ClientBytes:
    """Detach the client connection from aiohttp's HTTP parser; return its raw bytes.

    aiohttp has no public API for raw upgrades. `WebSocketResponse` takes a
    connection over by installing a payload parser with
    `RequestHandler.set_parser()` (web_ws.py `_post_start`), and this mirrors it:
    from then on `RequestHandler.data_received()` hands every byte to
    `parser.feed_data()` instead of parsing HTTP, bytes already buffered after an
    upgrade request head (`_message_tail`) are fed at once, and
    `connection_lost()` calls `parser.feed_eof()`. `keep_alive(False)` stops
    aiohttp from reading another request off the connection, and the caller's
    handler must not return before the upgraded stream ends.

    Note aiohttp's parser only switches to "upgraded" by itself for `websocket`;
    for `SPDY/3.1` it would parse further bytes as HTTP, so this must run before
    the client sees the 101 (clients send nothing before it).
    """
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    feed = _ClientBytes(transport, CLIENT_BUFFER)
    protocol = request.protocol
    # set_parser is typed for WebSocketReader; only feed_data/feed_eof are used.
    protocol.set_parser(cast(Any, feed))
    protocol.keep_alive(False)
    return feed


class _ClientBytes:
    """Raw client bytes, fed by aiohttp's protocol; pauses the socket when full."""

    def __init__(self, transport: asyncio.Transport, limit: int) -> None:
        self._transport = transport
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """aiohttp's payload-parser interface: (message complete?, unparsed tail)."""
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
            if self._size >= self._limit and not self._paused:
                self._paused = True
                self._transport.pause_reading()
            self._wake()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next chunk the client sent; b"" once it has closed."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size <= self._limit // 2:
            self._paused = False
            self._transport.resume_reading()
        return data

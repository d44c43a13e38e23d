"""Listeners a local process cannot exhaust: a connection cap, a header timeout, Status errors.

aiohttp's server has no cap on connections and no timeout for a request
head, so 200 connections trickling header bytes were held for minutes, and
1,100 idle ones used every file descriptor of a 1,024 limit: every list and
/healthz failed for the whole attack, with nothing logged. Each listener
(client and admin, each with its own cap, so monitoring keeps answering)
therefore runs its connections through `LimitedHandler`, aiohttp's
`RequestHandler` plus:

- a cap: at `max_connections`, a new connection closes the longest-open
  idle one (no request in progress: keep-alive, or a head still arriving),
  as nginx drains reusable connections; only when every connection is busy
  is the new one refused, with a 429 Status and Retry-After that client-go
  retries. So an attacker's idle connections cannot lock a client out;
- a header timeout, as Go's `ReadHeaderTimeout`: a request head must be
  complete `header_timeout` after the connection opened or the next
  request's first byte arrived, or the connection is closed;
- kube-apiserver's header size: Go's `MaxHeaderBytes` of 1 MiB for the
  request line and headers together (a 10,000-term label selector is a
  100 KB URL), where aiohttp's default refuses a line over 8,190 bytes;
- malformed requests answered with a Status (414, 431, 400) and one log
  line, instead of aiohttp's plain-text 400 and a traceback at ERROR.

Each decision is logged, throttled (throttledlog.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from ssl import SSLContext
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from edgeproxy.kube import status
from edgeproxy.kube.status import StatusError
from edgeproxy.throttledlog import ThrottledLog

log = logging.getLogger(__name__)

# Go's http.DefaultMaxHeaderBytes, which kube-apiserver serves with; Go reads
# 4 KiB past it before refusing (net/http initialReadLimitSize).
MAX_HEADER_BYTES = 1 << 20
HEADER_SLACK = 4096


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    name: str  # "client" or "admin", for the log
    max_connections: int
    # kube-apiserver allows 32 s ("just shy of requestTimeoutUpperBound"), for
    # clients across the internet. This listener's clients are on the node:
    # a head arrives in microseconds even on a loaded node, so 10 s is
    # generous and frees a slowloris connection three times sooner.
    header_timeout: float = 10.0
    # kube-apiserver's IdleTimeout, and client-go's idle-connection timeout:
    # a keep-alive connection without a request is closed after this.
    idle_timeout: float = 90.0
    max_header_bytes: int = MAX_HEADER_BYTES

    def handler_args(self) -> dict[str, Any]:
        """aiohttp `RequestHandler` settings (AppRunner passes them through)."""
        return {
            "keepalive_timeout": self.idle_timeout,
            # Per line and per field; the total is LimitedHandler's check.
            "max_line_size": self.max_header_bytes + HEADER_SLACK,
            "max_field_size": self.max_header_bytes + HEADER_SLACK,
            # Go counts bytes, not headers: the byte limit bounds the count.
            "max_headers": self.max_header_bytes // 8,
        }


class ConnectionLimiter:
    """The open connections of one listener, and who goes when it is full."""

    def __init__(self, limits: ListenerLimits) -> None:
        self.limits = limits
        self._open: dict[LimitedHandler, None] = {}  # in accept order
        self._log = ThrottledLog(log)
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, handler: LimitedHandler) -> bool:
        """Make room for a new connection if it is needed and possible."""
        cap = self.limits.max_connections
        if len(self._open) >= cap:
            victim = next((h for h in self._open if h.idle), None)
            if victim is None:
                self.refused += 1
                self._log.warning(
                    ("refused", self.limits.name),
                    "%s listener: all %d connections are busy (--max-connections); "
                    "refused a new one with 429",
                    self.limits.name,
                    cap,
                )
                return False
            self.evicted += 1
            self._log.warning(
                ("evicted", self.limits.name),
                "%s listener: at its cap of %d connections (--max-connections); "
                "closed the longest-open idle one to admit a new one",
                self.limits.name,
                cap,
            )
            del self._open[victim]
            victim.force_close()
        self._open[handler] = None
        return True

    def release(self, handler: LimitedHandler) -> None:
        self._open.pop(handler, None)

    def note_malformed(self, remote: str | None, err: StatusError) -> None:
        self._log.info(
            ("malformed", self.limits.name, err.code),
            "%s listener: answered a malformed request from %s with %d: %s",
            self.limits.name,
            remote,
            err.code,
            err.message,
        )

    def note_timeout(self, handler: LimitedHandler) -> None:
        self.timed_out += 1
        self._log.info(
            ("timeout", self.limits.name),
            "%s listener: closed a connection from %s that sent no complete request "
            "head within %.0fs",
            self.limits.name,
            handler.peername,
            self.limits.header_timeout,
        )


class LimitedHandler(RequestHandler):
    """aiohttp's connection handler, counted, timed and answering errors with a Status."""

    __slots__ = ("_admitted", "_head_bytes", "_head_line_len", "_head_timer", "_limiter")

    def __init__(self, manager: Server, limiter: ConnectionLimiter, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limiter = limiter
        self._admitted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        # Where the request line ended: a head too long is a 414 or a 431.
        self._head_line_len: int | None = None

    @property
    def _waiting_for_head(self) -> bool:
        """No request is queued or being served, and none has been taken over."""
        if self._messages or self._request_in_progress or self._payload_parser is not None:
            return False
        if self._upgraded:
            return False
        # Before the first request, or start() is waiting for the next one (not
        # between requests, where it may still be reading an unread body).
        return self._request_count == 0 or (self._waiter is not None and not self._waiter.done())

    @property
    def idle(self) -> bool:
        """Closing this connection loses no request: it may make room for another."""
        return self._admitted and self._waiting_for_head

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._limiter.admit(self):
            assert isinstance(transport, asyncio.Transport)
            err = status.too_many_requests(
                f"edge-proxy's {self._limiter.limits.name} listener is at its cap of "
                f"{self._limiter.limits.max_connections} connections, all busy",
                retry_after=1,
            )
            transport.write(_raw_response(err))
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._limiter.release(self)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._waiting_for_head:
            if self._head_timer is None:  # the first byte of a keep-alive request
                self._arm()
            if self._head_line_len is None and (end := data.find(b"\n")) >= 0:
                self._head_line_len = self._head_bytes + end
            # Only the head counts, not a body sent with it. (A head whose final
            # CRLF CRLF is split across reads counts its whole last read.)
            end = data.find(b"\r\n\r\n")
            head_part = end + 4 if end >= 0 else len(data)
            if self._head_bytes + head_part > self._limiter.limits.max_header_bytes + HEADER_SLACK:
                self._head_bytes += head_part
                self._refuse_head()
                return
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._waiting_for_head:
            self._disarm()

    # -- the head --------------------------------------------------------------------

    def _arm(self) -> None:
        """A new head begins: count its bytes and start its clock."""
        self._disarm()
        self._head_bytes = 0
        self._head_line_len = None
        self._head_timer = self._loop.call_later(
            self._limiter.limits.header_timeout, self._head_timed_out
        )

    def _disarm(self) -> None:
        # The counts stay: an error answer for this head reads them.
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head and self.transport is not None:
            self._limiter.note_timeout(self)
            self.force_close()

    def _refuse_head(self) -> None:
        """A head over the size limit that the parser has not refused by itself."""
        err = _too_long(self._head_line_len, self._limiter.limits.max_header_bytes)
        self._limiter.note_malformed(self._remote(), err)
        if self.transport is not None:
            self.transport.write(_raw_response(err))
        self.force_close()

    def _remote(self) -> str | None:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else None

    # -- errors ----------------------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's error answer, as a Status; parse errors get one line, not a traceback."""
        if isinstance(exc, HttpProcessingError):
            err = _parse_error(exc, self._head_line_len, self._limiter.limits.max_header_bytes)
            self._limiter.note_malformed(request.remote, err)
        else:  # a handler's bug or timeout: the traceback is worth its lines
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            err = _server_error(status)
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("the response was started, cannot send an error instead")
        resp = web.Response(
            status=err.code,
            body=err.body(),
            content_type="application/json",
            headers=err.headers(),
        )
        resp.force_close()
        return resp


def _too_long(line_len: int | None, limit: int) -> StatusError:
    if line_len is None or line_len > limit:
        return StatusError(414, "", f"the request URI is longer than {limit} bytes")
    return StatusError(431, "", f"the request headers are longer than {limit} bytes")


def _parse_error(exc: HttpProcessingError, line_len: int | None, limit: int) -> StatusError:
    if isinstance(exc, LineTooLong):
        return _too_long(line_len, limit)
    text = " ".join(str(exc.message).split())[:200] or type(exc).__name__
    return status.bad_request(f"malformed HTTP request: {text}")


def _server_error(code: int) -> StatusError:
    if code == 504:
        return status.timeout("the request handler timed out")
    return status.internal_error("unhandled error serving the request")


def _raw_response(err: StatusError) -> bytes:
    """A whole HTTP/1.1 response, for where there is no aiohttp request to answer."""
    body = err.body()
    head = [
        f"HTTP/1.1 {err.code} {HTTPStatus(err.code).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in err.headers().items()),
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# -- the listener ----------------------------------------------------------------------


class _LimitedSite(web.BaseSite):
    """A TCP site whose connections are made by `factory` instead of the runner's server."""

    __slots__ = ("_factory", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        backlog: int,
        factory: Callable[[], LimitedHandler],
        ssl_context: SSLContext | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._factory = factory

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            ssl=self._ssl_context,
        )

    @property
    def bound_port(self) -> int:
        server: Any = self._server
        return int(server.sockets[0].getsockname()[1])


class Listener:
    """One aiohttp application on one address, behind a `ConnectionLimiter`."""

    def __init__(self, app: web.Application, limits: ListenerLimits, **runner_args: Any) -> None:
        self.limiter = ConnectionLimiter(limits)
        self.runner = web.AppRunner(app, **runner_args, **limits.handler_args())

    async def start(
        self, host: str, port: int, *, backlog: int = 128, ssl: SSLContext | None = None
    ) -> int:
        """Listen (HTTPS with `ssl`); returns the bound port."""
        await self.runner.setup()
        server = self.runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        # The same settings aiohttp's own Server.__call__ builds its handlers with.
        handler_args = server._kwargs

        def factory() -> LimitedHandler:
            return LimitedHandler(server, self.limiter, loop=loop, **handler_args)

        site = _LimitedSite(self.runner, host, port, backlog, factory, ssl)
        await site.start()
        return site.bound_port

    async def cleanup(self) -> None:
        await self.runner.cleanup()

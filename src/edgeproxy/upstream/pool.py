"""Connections to the cloud apiserver(s): health, failover, and error mapping.

Health is active and passive (ARCHITECTURE.md sec. 4). A probe asks
`/readyz` every `probe_interval` with a short timeout, so a black-holed link
(packets dropped, no RST) is noticed after `failure_threshold` missed probes
(about 2.5 s with the defaults) instead of a 30 s TCP timeout; a refused or
reset connection on any request marks the server down at once. Servers are
tried in order (failover) or in turn (round-robin). This is the one place
where aiohttp client errors become `UpstreamUnreachable`.

Requests go with the proxy's own credentials unless the caller passes a
client's bearer token (docs/identity.md): then the token is sent instead,
over a second session whose TLS context has no client certificate, since a
certificate is presented per connection and would otherwise authenticate
the pod's request as the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import yarl

from edgeproxy.errors import UpstreamUnreachable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    # Probe twice a second: cheap (/readyz is a few bytes) and keeps detection < 3 s.
    probe_interval: float = 0.5
    # A healthy apiserver answers /readyz in milliseconds; 1 s allows for a slow link.
    probe_timeout: float = 1.0
    # Two missed probes in a row: one lost packet does not flip the state.
    failure_threshold: int = 2
    # A TCP/TLS handshake that takes longer than this is as good as a cut link.
    connect_timeout: float = 1.0
    # Reads wait this long for response headers before falling back to the cache
    # when the link is not known to be healthy right now.
    fallback_after: float = 1.0
    # "failover": always the first healthy server; "round-robin": take turns.
    strategy: Literal["failover", "round-robin"] = "failover"
    # Idle keep-alive connections are dropped after this (kube-apiserver keeps 90 s).
    keepalive_timeout: float = 60.0


@dataclass(slots=True)
class ServerState:
    url: str
    healthy: bool = True
    failures: int = 0
    last_ok: float = 0.0
    last_error: str = ""
    requests: int = 0


StateListener = Callable[[bool], None]


class Upstream:
    """A pool of upstream servers behind one aiohttp session."""

    def __init__(
        self,
        servers: list[str],
        *,
        ssl: Any = None,
        headers: Callable[[], Mapping[str, str]] = dict,
        settings: UpstreamSettings | None = None,
        server_hostname: str | None = None,
        bare_ssl: Any = None,
    ) -> None:
        if not servers:
            raise ValueError("at least one upstream server is required")
        self.settings = settings or UpstreamSettings()
        self.servers = [ServerState(url.rstrip("/")) for url in servers]
        self._ssl = ssl
        # The TLS context for client-token requests: same CA, no client certificate.
        self._bare_ssl = bare_ssl if bare_ssl is not None else ssl
        self._auth_headers = headers
        self._server_hostname = server_hostname
        self._session: aiohttp.ClientSession | None = None
        self._bare_session: aiohttp.ClientSession | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._listeners: list[StateListener] = []
        self._turn = 0
        self._was_healthy = True
        self.changed = asyncio.Event()
        # Set once any probe or request has reached a server since start.
        self._confirmed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._session = self._new_session()
        self._bare_session = self._new_session(self._bare_ssl)
        self._probe_task = asyncio.create_task(self._probe_loop(), name="upstream-probe")

    def _new_session(self, ssl: Any = None) -> aiohttp.ClientSession:
        ssl = self._ssl if ssl is None else ssl
        connector = aiohttp.TCPConnector(
            ssl=ssl if ssl is not None else False,
            limit=0,
            keepalive_timeout=self.settings.keepalive_timeout,
            enable_cleanup_closed=True,
            socket_factory=_keepalive_socket,
        )
        return aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
        )

    async def reset_connections(self) -> None:
        """Close every upstream connection; later requests open new ones.

        After a client certificate rotation (certreload.py), as the kubelet
        does: kept-alive connections would otherwise go on presenting the old
        certificate. Open watches end and their reflectors resume from their RV.
        """
        old, self._session = self._session, self._new_session()
        if old is not None:
            await old.close()

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self._session is not None:
            await self._session.close()
        if self._bare_session is not None:
            await self._bare_session.close()

    # -- state -----------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return any(s.healthy for s in self.servers)

    @property
    def confirmed(self) -> bool:
        """Whether upstream has answered at all since this process started."""
        return self._confirmed.is_set()

    async def wait_confirmed(self, wait_seconds: float) -> bool:
        if self._confirmed.is_set():
            return True
        try:
            await asyncio.wait_for(self._confirmed.wait(), wait_seconds)
        except TimeoutError:
            return False
        return True

    def recently_ok(self) -> bool:
        """Some server answered within the last probe period (plus grace)."""
        horizon = time.monotonic() - (self.settings.probe_interval + self.settings.probe_timeout)
        return any(s.healthy and s.last_ok >= horizon for s in self.servers)

    def on_state_change(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _pick(self) -> list[ServerState]:
        healthy = [s for s in self.servers if s.healthy]
        if not healthy:
            return []
        if self.settings.strategy == "round-robin" and len(healthy) > 1:
            self._turn = (self._turn + 1) % len(healthy)
            return healthy[self._turn :] + healthy[: self._turn]
        return healthy

    def _mark(self, server: ServerState, ok: bool, error: str = "") -> None:
        if ok:
            self._confirmed.set()
            server.failures = 0
            server.last_ok = time.monotonic()
            if not server.healthy:
                log.warning("upstream %s is reachable again", server.url)
            server.healthy = True
        else:
            server.failures += 1
            server.last_error = error
            if server.healthy and server.failures >= self.settings.failure_threshold:
                server.healthy = False
                log.warning("upstream %s is unreachable: %s", server.url, error)
        self._notify()

    def _fail_now(self, server: ServerState, error: str) -> None:
        """A refused/reset connection is definite: no need to wait for probes."""
        server.failures = max(server.failures, self.settings.failure_threshold - 1)
        self._mark(server, False, error)

    def _notify(self) -> None:
        healthy = self.healthy
        if healthy != self._was_healthy:
            self._was_healthy = healthy
            log.warning("cloud link is %s", "up" if healthy else "DOWN")
            self.changed.set()
            self.changed = asyncio.Event()
            for listener in self._listeners:
                listener(healthy)

    async def _probe_loop(self) -> None:
        # A probe starts every interval even while earlier ones still wait: on a
        # black-holed link each probe takes the whole probe_timeout, and waiting
        # for it would space the misses 1.5 s apart (detection > 3 s). At most
        # probe_timeout / probe_interval + 1 probes per server are in flight.
        probes: set[asyncio.Task[None]] = set()
        try:
            while True:
                for server in self.servers:
                    task = asyncio.create_task(self._probe(server), name=f"probe {server.url}")
                    probes.add(task)
                    task.add_done_callback(probes.discard)
                await asyncio.sleep(self.settings.probe_interval)
        finally:
            for task in probes:
                task.cancel()

    async def _probe(self, server: ServerState) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.settings.probe_timeout)
        try:
            async with self._session.get(
                server.url + "/readyz",
                headers=self._auth_headers(),
                timeout=timeout,
                server_hostname=self._server_hostname,
            ) as resp:
                await resp.read()
                # Any HTTP answer means the link works; a 401/403/500 is not a cut.
                self._mark(server, True)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._mark(server, False, _describe(exc))

    # -- requests --------------------------------------------------------------

    async def request(
        self,
        method: str,
        path_qs: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        retry_other_servers: bool = True,
        read_timeout: float | None = None,
        client_token: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request to a healthy server; the caller must release the response.

        `path_qs` is sent as it is, already percent-encoded: never decoded,
        re-encoded or dot-segment normalized, so upstream reads the very path
        the client sent (`configmaps/../secrets` stays that, not `secrets`).
        Raises UpstreamUnreachable when no server could be reached. Idempotent
        requests (no body) move on to the next server after a connection error.
        With `client_token` the request is the client's: that token and no
        client certificate, never the proxy's credentials.
        """
        assert self._session is not None, "Upstream.start() was not awaited"
        session = self._session if client_token is None else self._bare_session
        assert session is not None
        candidates = self._pick()
        if not candidates:
            raise UpstreamUnreachable("no upstream server is reachable")
        merged = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        if client_token is None:
            merged.update(self._auth_headers())
        else:
            merged["Authorization"] = f"Bearer {client_token}"
        # aiohttp labels a body without Content-Type application/octet-stream,
        # which kube-apiserver rejects with 415; a missing one it reads as JSON
        # (the official Python client sends creates without it), so keep it missing.
        has_type = any(k.lower() == "content-type" for k in merged)
        skip_auto = () if has_type else ("Content-Type",)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.settings.connect_timeout, sock_read=read_timeout
        )
        last_error = "no server tried"
        # A server whose accept queue is full drops SYNs, which are resent after
        # 1 s: a slow handshake while the probes find the link healthy is
        # congestion, not a cut, so an idempotent request waits longer once.
        patient = aiohttp.ClientTimeout(
            total=None, sock_connect=3 * self.settings.connect_timeout, sock_read=read_timeout
        )
        attempts = [(server, timeout) for server in candidates]
        while attempts:
            server, attempt_timeout = attempts.pop(0)
            server.requests += 1
            try:
                resp = await session.request(
                    method,
                    yarl.URL(server.url + path_qs, encoded=True),
                    headers=merged,
                    data=data,
                    timeout=attempt_timeout,
                    allow_redirects=False,
                    server_hostname=self._server_hostname,
                    skip_auto_headers=skip_auto,
                )
            except (
                aiohttp.ClientConnectorError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                ConnectionError,
            ) as exc:
                last_error = _describe(exc)
                self._fail_now(server, last_error)
                if data is not None or not retry_other_servers:
                    break
                continue
            except (TimeoutError, aiohttp.ClientError) as exc:
                last_error = _describe(exc)
                if (
                    isinstance(exc, aiohttp.ConnectionTimeoutError)
                    and data is None
                    and attempt_timeout is timeout
                    and server.healthy
                    and self.recently_ok()
                ):
                    attempts.insert(0, (server, patient))
                    continue
                break
            self._mark(server, True)
            return resp
        raise UpstreamUnreachable(f"upstream unreachable: {last_error}")

    async def open_raw(
        self, client_token: str | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ServerState, dict[str, str]]:
        """A raw TCP (TLS for https) connection to the first healthy server that answers.

        For protocol upgrades (exec, attach, port-forward), which aiohttp's client
        cannot pass through. Same TLS context, server name and failover as
        `request`. Also returns the headers the request on it must carry (Host and
        the proxy's credentials); the caller writes the request and closes the writer.
        """
        last_error = "no upstream server is reachable"
        for server in self._pick():
            server.requests += 1
            url = urlsplit(server.url)
            tls = url.scheme == "https"
            own = self._ssl if client_token is None else self._bare_ssl
            ssl_ctx = (own if own is not None else True) if tls else None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        url.hostname,
                        url.port or (443 if tls else 80),
                        ssl=ssl_ctx,
                        server_hostname=(self._server_hostname or url.hostname) if tls else None,
                    ),
                    self.settings.connect_timeout,
                )
            except TimeoutError as exc:  # black-holed: let the probes decide
                last_error = _describe(exc)
                self._mark(server, False, last_error)
                continue
            except OSError as exc:  # refused, reset, TLS failure (ssl.SSLError is an OSError)
                last_error = _describe(exc)
                self._fail_now(server, last_error)
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:  # a dead link under a quiet exec session is noticed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                    if hasattr(socket, name):
                        sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            self._mark(server, True)
            auth = (
                self._auth_headers()
                if client_token is None
                else {"Authorization": f"Bearer {client_token}"}
            )
            extra = {"Host": url.netloc.rpartition("@")[2], **auth}
            return reader, writer, server, extra
        raise UpstreamUnreachable(f"upstream unreachable: {last_error}")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _keepalive_socket(addr_info: Any) -> socket.socket:
    """Sockets with TCP keepalive, so a dead link under a quiet watch is noticed."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock

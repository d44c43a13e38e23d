"""The cloud link as a TCP relay: counted, and cut and restored at will.

"Bytes from the cloud" must be measured the same way for every target, and
outside the process under test: the proxy's own counter
(`edgeproxy_upstream_received_bytes_total`) counts forwarded and listed
bodies but not what its reflectors' lists and watch streams receive. So the
benchmarks point every target at a `Relay`, which forwards TCP to the
upstream and counts every byte each way, headers included.

Tests cut the link the same way, outside every process: `blackhole()` keeps
connections open and new ones accepted but forwards nothing (a dead route:
only timeouts and probes notice), `refuse()` resets every connection and
refuses new ones (a host that is down), `restore()` forwards again. The
relay works for any upstream, the simulator or the real kube-apiserver (TLS
passes through untouched), so a cut never depends on a simulator switch.
`LinkRelay` runs one in a thread of its own for synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeproxy.testing import free_port

CHUNK = 256 * 1024

LinkState = Literal["up", "blackhole", "refuse"]


@dataclass(slots=True)
class Relay:
    upstream_host: str
    upstream_port: int
    port: int = field(default_factory=free_port)
    down_bytes: int = 0  # upstream -> clients: the cloud's bytes
    up_bytes: int = 0
    connections: int = 0  # accepted while up: how often clients (re)connected
    state: LinkState = "up"
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    # The connection handlers (asyncio.start_server's tasks), awaited on stop:
    # a handler cancelled at loop shutdown is logged as an error by Python 3.11.
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    # Connections that lived through a black hole: their streams lost bytes,
    # so they are closed when the link comes back.
    _stale: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        """Close every relayed connection: both pipes see EOF and their handlers return."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=5)
            await self._server.wait_closed()
            self._server = None

    async def set_state(self, state: LinkState) -> None:
        previous, self.state = self.state, state
        if state == "blackhole":
            self._stale |= self._writers
        elif state == "refuse":
            for writer in list(self._writers):
                _reset(writer)
        elif previous == "blackhole":
            for writer in list(self._stale):
                _reset(writer)
        if state == "up":
            self._stale.clear()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        try:
            while chunk := await src.read(CHUNK):
                if self.state != "up" or dst in self._stale:
                    continue  # the black hole swallows it
                if down:
                    self.down_bytes += len(chunk)
                else:
                    self.up_bytes += len(chunk)
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                dst.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        if self.state == "refuse":
            _reset(writer)
            return
        if self.state == "blackhole":
            # Accepted by the dead route's far end, never answered.
            self._writers.add(writer)
            self._stale.add(writer)
            try:
                while await reader.read(CHUNK):
                    pass
            except (ConnectionError, OSError):
                pass
            finally:
                self._writers.discard(writer)
                self._stale.discard(writer)
                writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, down=False), self._pipe(up_reader, writer, down=True)
            )
        finally:
            self._writers -= {writer, up_writer}
            self._stale -= {writer, up_writer}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a host that went away does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


class LinkRelay:
    """A `Relay` on an event loop of its own thread, for synchronous tests."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.relay = Relay(upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link", daemon=True)
        self._thread.start()
        self._call(self.relay.start())

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def state(self) -> LinkState:
        return self.relay.state

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.relay.port}"

    def blackhole(self) -> None:
        self._call(self.relay.set_state("blackhole"))

    def refuse(self) -> None:
        self._call(self.relay.set_state("refuse"))

    def restore(self) -> None:
        self._call(self.relay.set_state("up"))

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self.relay.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> LinkRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

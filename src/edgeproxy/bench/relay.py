"""A byte-counting TCP relay in front of the upstream: the cloud link, measured.

"Bytes from the cloud" must be measured the same way for every target, and
outside the process under test: the proxy's own counter
(`edgeproxy_upstream_received_bytes_total`) counts forwarded and listed
bodies but not what its reflectors' lists and watch streams receive. So the
bandwidth suite points every target (the client itself for direct, nginx,
the proxies) at this relay, which forwards TCP to the upstream and counts
every byte each way, headers included.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeproxy.bench.baselines import Upstream
from edgeproxy.testing import free_port

CHUNK = 256 * 1024


@dataclass(slots=True)
class Relay:
    upstream_host: str
    upstream_port: int
    port: int = field(default_factory=free_port)
    down_bytes: int = 0  # upstream -> clients: the cloud's bytes
    up_bytes: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    # The connection handlers (asyncio.start_server's tasks), awaited on stop:
    # a handler cancelled at loop shutdown is logged as an error by Python 3.11.
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)

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

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        try:
            while chunk := await src.read(CHUNK):
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
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, down=False), self._pipe(up_reader, writer, down=True)
            )
        finally:
            self._writers -= {writer, up_writer}


def relayed(upstream: Upstream, relay: Relay, workdir: Path) -> Upstream:
    """The same upstream, reached through `relay` (a kubeconfig pointing at it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "relayed.kubeconfig"
    kubeconfig.write_text(upstream.kubeconfig.read_text().replace(upstream.url, relay.url))
    return Upstream(relay.url, kubeconfig, sim=upstream.sim, headers=upstream.headers)

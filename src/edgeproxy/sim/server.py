"""Running the simulator: listeners, TLS, fault hooks, startup and shutdown.

`SimServer` is used in-process by tests and benchmarks and by
`edge-proxy sim`. The main listener serves the API (and can be faulted); an
optional control listener serves `/_sim/…` and is never faulted, so a
test can lift a `refuse` fault even while the API port is closed; it also
serves the API itself without faults, so a test can change upstream state
while the API port is cut (watch streams there still obey a black-hole).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from edgeproxy.kube.resources import ResourceRegistry
from edgeproxy.sim import identity, seed, tls
from edgeproxy.sim.app import ADMIN_PREFIX, SimApp, SimSettings, handle_admin
from edgeproxy.sim.faults import Faults
from edgeproxy.sim.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 6443  # 0 picks a free port
    tls: bool = False
    # Where the generated CA, certs and token live (reused across restarts).
    tls_dir: Path | None = None
    kubeconfig_out: Path | None = None
    # Events kept per resource for watch resume / paginated snapshots.
    history: int = 10_000
    seed_files: tuple[Path, ...] = ()
    seed_objects: tuple[dict[str, Any], ...] = ()
    control_host: str | None = None
    control_port: int = 0
    settings: SimSettings = field(default_factory=SimSettings)


class SimServer:
    """One running simulated apiserver."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.registry = ResourceRegistry()
        self.store = Store(self.registry, history_limit=config.history)
        self.faults = Faults()
        self.faults.on_refuse = self._set_refusing
        self.app: SimApp | None = None
        self.bundle: tls.TLSBundle | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._control_runner: web.AppRunner | None = None
        self.port = config.port
        self.control_port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls else "http"

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def control_url(self) -> str:
        if self._control_runner is not None:
            return f"http://{self.config.control_host}:{self.control_port}"
        return self.url

    async def start(self) -> None:
        cfg = self.config
        objects = list(
            seed.system_objects(
                cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1", cfg.port or 6443
            )
        )
        for path in cfg.seed_files:
            objects.extend(seed.read_seed_file(path))
        objects.extend(cfg.seed_objects)
        self.app = SimApp(self.store, self.faults, cfg.settings)
        seed.load(self.app.ops, self.registry, objects)

        middlewares = []
        ssl_context = None
        if cfg.tls:
            tls_dir = cfg.tls_dir or Path.home() / ".cache" / "edge-proxy" / "sim-tls"
            self.bundle = tls.generate_bundle(tls_dir, [cfg.host])
            ssl_context = tls.server_ssl_context(self.bundle)
            middlewares.append(tls.auth_middleware(self.bundle))
        # After authentication: the user it decided on, impersonation applied.
        middlewares.append(identity.identity_middleware(cfg.tls, self.faults.gate))
        webapp = web.Application(
            middlewares=middlewares, client_max_size=cfg.settings.max_body_bytes
        )
        webapp.router.add_route("*", "/{tail:.*}", self.app.handle)
        # kube-apiserver reads a request line and headers of up to 1 MiB in all
        # (Go's MaxHeaderBytes): a long label selector is a long URL.
        self._runner = web.AppRunner(
            webapp,
            access_log=None,
            handler_cancellation=True,
            max_line_size=1 << 20,
            max_field_size=1 << 20,
        )
        await self._runner.setup()
        self._ssl_context = ssl_context
        await self._open_site()
        self.app.server_address = f"{cfg.host}:{self.port}"

        if cfg.control_host is not None:
            control = web.Application()
            app = self.app
            control.router.add_route("*", "/{tail:.*}", lambda r: _control_handle(app, r))
            self._control_runner = web.AppRunner(control, access_log=None)
            await self._control_runner.setup()
            site = web.TCPSite(self._control_runner, cfg.control_host, cfg.control_port)
            await site.start()
            self.control_port = _bound_port(site)

        if cfg.kubeconfig_out is not None:
            tls.write_kubeconfig(cfg.kubeconfig_out, self.url, self.bundle)
        log.info("simulator serving on %s (resourceVersion %d)", self.url, self.store.rv)

    async def _open_site(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(
            self._runner,
            self.config.host,
            self.port,
            ssl_context=self._ssl_context,
            reuse_address=True,
        )
        await site.start()
        self._site = site
        self.port = _bound_port(site)

    async def _set_refusing(self, refuse: bool) -> None:
        """Close (or reopen) the API listener and reset its open connections."""
        if refuse and self._site is not None:
            await self._site.stop()
            self._site = None
            server = self._runner.server if self._runner else None
            for handler in list(server.connections if server else []):
                transport = handler.transport
                if transport is not None:
                    transport.abort()
        elif not refuse and self._site is None:
            await self._open_site()

    async def stop(self) -> None:
        self.store.close_watchers("server shutting down")
        await asyncio.sleep(0)
        if self._control_runner is not None:
            await self._control_runner.cleanup()
        if self._runner is not None:
            await self._runner.cleanup()


async def _control_handle(app: SimApp, request: web.Request) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return await handle_admin(app, request)
    return await app.handle_unfaulted(request)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


async def serve_forever(config: SimConfig) -> None:
    server = SimServer(config)
    await server.start()
    print(f"edge-proxy sim: serving the Kubernetes API on {server.url}", flush=True)
    if config.kubeconfig_out:
        print(f"edge-proxy sim: kubeconfig written to {config.kubeconfig_out}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()

"""Assembling and running `edge-proxy serve`: credentials, upstream, cache, listeners.

Startup order matters for restarts while offline: the journal is loaded
into memory before the client listener opens, so the first request after a
restart is already answered from disk. Shutdown is graceful: listeners stop
accepting, open watches end cleanly, reflectors stop, and the journal is
flushed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgeproxy import footprint
from edgeproxy.cache.manager import CacheManager, CacheSettings
from edgeproxy.config import ServeConfig, filter_set, master_service_addr, node_name
from edgeproxy.errors import ConfigError, StorageError
from edgeproxy.kube.resources import ResourceRegistry
from edgeproxy.metrics import Metrics
from edgeproxy.nodewiring import check_not_self
from edgeproxy.proxy.authorization import Authorizer
from edgeproxy.proxy.filtering import FilterRuntime
from edgeproxy.proxy.router import ProxyRouter
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.server import openfiles
from edgeproxy.server.admin import admin_app
from edgeproxy.server.connections import Listener, ListenerLimits
from edgeproxy.server.tlsserving import ServingCertificate, secure_middleware
from edgeproxy.storage.decisions import DecisionStore
from edgeproxy.storage.journal import Journal
from edgeproxy.upstream import credentials
from edgeproxy.upstream.certreload import CertificateReloader
from edgeproxy.upstream.pool import Upstream, UpstreamSettings

if TYPE_CHECKING:
    # cryptography costs ~8 MB resident: loaded only when the cluster issues our certificate.
    from edgeproxy.server.servingcert import ClusterServingCertificate

log = logging.getLogger(__name__)

# How often to look for evictions to trim after: a trim costs ~10 ms of a
# thread per few hundred MB of heap, and evictions come in rounds.
TRIM_CHECK_SECONDS = 5.0


async def _bind(listener: Listener, host: str, port: int, flag: str, **kwargs: Any) -> int:
    """Start `listener`; a port in use or not ours is a ConfigError naming the flag.

    The operator's fix is in the configuration (another port, or stop what
    holds it), so it is reported as one line with exit code 2, not a traceback.
    """
    try:
        return await listener.start(host, port, **kwargs)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"{flag} {host}:{port}: cannot listen: {reason.lower()}") from None


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class ProxyServer:
    config: ServeConfig

    def __post_init__(self) -> None:
        self.metrics = Metrics()
        self.registry = ResourceRegistry()
        self._listeners: list[Listener] = []
        self.port = 0
        self.admin_port = 0
        self.secure_port = 0
        self.serving: ServingCertificate | None = None
        self._serving_reloader: asyncio.Task[None] | None = None
        self.cluster_serving: ClusterServingCertificate | None = None
        self._cluster_serving_task: asyncio.Task[None] | None = None
        self.journal: Journal | None = None
        self.journal_problem = ""
        self._trimmer: asyncio.Task[None] | None = None
        self._cert_reloader: asyncio.Task[None] | None = None
        # Upstream sessions are open: a failed start must stop() to close them.
        self.opened = False

    def _credentials(self) -> credentials.Credentials:
        cfg = self.config
        if cfg.kubeconfig is not None:
            return credentials.from_kubeconfig(cfg.kubeconfig, cfg.context)
        return credentials.from_server_addrs(
            cfg.server_addrs,
            ca_file=cfg.ca_file,
            token_file=cfg.token_file,
            client_cert=cfg.client_cert,
            client_key=cfg.client_key,
            insecure=cfg.insecure_skip_tls_verify,
        )

    async def start(self) -> None:
        cfg = self.config
        started = time.monotonic()
        if cfg.secure_listen and cfg.tls_cert_file and cfg.tls_private_key_file:
            # First: a serving certificate that does not load is a ConfigError now.
            self.serving = ServingCertificate(cfg.tls_cert_file, cfg.tls_private_key_file)
        creds = self._credentials()
        check_not_self(creds.servers, cfg.listen)
        cfg.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ssl_ctx = credentials.ssl_context(creds, cfg.cache_dir / "keys")
        tokens = credentials.TokenSource(creds)
        self.upstream = Upstream(
            list(creds.servers),
            ssl=ssl_ctx,
            headers=tokens.headers,
            settings=UpstreamSettings(
                probe_interval=cfg.probe_interval,
                fallback_after=cfg.fallback_after,
                strategy="round-robin" if cfg.upstream_strategy == "round-robin" else "failover",
            ),
            server_hostname=creds.tls_server_name,
            # Requests with a client's own token present no client certificate.
            bare_ssl=credentials.ssl_context(creds, cfg.cache_dir / "keys", client_cert=False),
        )
        # The disk budget is the cache manager's: only it knows which scopes are in use.
        journal = Journal(cfg.cache_dir / "cache.db")
        try:
            moved = journal.open()
            if moved is not None and journal.salvage is not None:
                log.warning(
                    "the cache file was damaged; kept %d scopes, lost %d; the damaged file is %s",
                    len(journal.salvage.kept),
                    len(journal.salvage.lost),
                    moved,
                )
            elif moved is not None:
                log.warning("the cache file was not ours; moved it to %s and started empty", moved)
            self.journal = journal
        except StorageError as exc:
            log.error("cannot open the cache journal, running from memory only: %s", exc)
            self.journal_problem = str(exc)
        self.cache = CacheManager(
            self.registry,
            self.upstream,
            self.journal,
            CacheSettings(
                max_memory_bytes=cfg.max_memory_cache_bytes,
                max_disk_bytes=cfg.max_cache_bytes,
                watcher_max_bytes=cfg.max_watcher_queue_bytes,
                watchers_max_bytes=cfg.max_watcher_queues_total_bytes,
                watch_list=cfg.upstream_watch_list,
            ),
            on_upstream_bytes=self.metrics.upstream_bytes.labels("reflector").inc,
            on_stream_bytes=self.metrics.upstream_stream_bytes_inc,
        )
        self.cache.load()
        if cfg.secure_listen and self.serving is None:
            self.cluster_serving = self._cluster_serving()
            self.serving = self.cluster_serving.load()
        self.filters = FilterRuntime(
            filter_set(cfg),
            self.cache,
            node_name=node_name(cfg),
            pool_label=cfg.pool_label,
            metrics=self.metrics,
        )
        if self.filters.filters:
            log.info(
                "edge filters: %s (node %s)",
                ", ".join(f.name for f in self.filters.filters.filters),
                self.filters.node_name,
            )
        self.authorizer = Authorizer(self.upstream, DecisionStore(cfg.cache_dir / "decisions.db"))
        self.authorizer.load()
        self.router = ProxyRouter(
            self.upstream,
            self.cache,
            self.filters,
            self.metrics,
            ProxySettings(
                consistency="cache-first" if cfg.consistency == "cache-first" else "strict",
                cache_first_resources=frozenset(cfg.cache_first_resources),
                bookmark_interval=cfg.bookmark_interval,
                serve_protobuf=cfg.serve_protobuf,
                protobuf_cache_bytes=cfg.max_protobuf_cache_bytes,
            ),
            authorizer=self.authorizer,
        )
        await self.upstream.start()
        self.opened = True
        if ssl_ctx is not None and creds.client_cert_file and creds.client_key_file:
            reloader = CertificateReloader(
                ssl_ctx,
                creds.client_cert_file,
                creds.client_key_file,
                on_change=self.upstream.reset_connections,
            )
            self._cert_reloader = asyncio.create_task(reloader.run(), name="cert-reloader")
        self.cache.start()
        self._trimmer = asyncio.create_task(self._trim_after_evictions(), name="heap-trimmer")

        client = web.Application(client_max_size=0)
        client.router.add_route("*", "/{tail:.*}", self.router.handle)
        # Each listener has its own connection cap (server/connections.py), so a
        # flood of client connections leaves health checks and metrics answering.
        cap = openfiles.client_connection_cap(cfg.max_connections, openfiles.open_file_limit())
        listener = self._client_listener(client, "client", cap)
        host, port = _split(cfg.listen)
        # A node's components reconnect together after a restart; kube-apiserver
        # listens with the system maximum backlog, aiohttp's default is 128.
        self.port = await _bind(listener, host, port, "--listen", backlog=1024)
        if self.serving is not None:
            await self._start_secure(cap)
        if self.cluster_serving is not None:

            async def first(serving: ServingCertificate) -> None:
                self.serving = serving
                try:
                    await self._start_secure(cap)
                except ConfigError as exc:  # a port taken meanwhile: say so, keep running
                    log.error("the secure listener cannot start: %s", exc)

            self._cluster_serving_task = asyncio.create_task(
                self.cluster_serving.run(first), name="serving-csr"
            )

        stats = self.journal.stats if self.journal is not None else self._no_journal
        admin = admin_app(
            self.upstream,
            self.cache,
            self.metrics,
            stats,
            self.filters.debug,
            protobuf=self.router.protobuf,
        )
        admin_listener = Listener(
            admin, ListenerLimits("admin", openfiles.ADMIN_MAX_CONNECTIONS), access_log=None
        )
        self._listeners.append(admin_listener)
        ahost, aport = _split(cfg.admin_listen)
        self.admin_port = await _bind(admin_listener, ahost, aport, "--admin-listen")
        log.info(
            "edge-proxy serving on %s:%d (admin %s:%d, at most %d and %d connections), "
            "upstream %s, %d objects from the journal in %.0f ms",
            host,
            self.port,
            ahost,
            self.admin_port,
            cap,
            openfiles.ADMIN_MAX_CONNECTIONS,
            ", ".join(creds.servers),
            self.cache.loaded_objects,
            (time.monotonic() - started) * 1000,
        )

    def _cluster_serving(self) -> ClusterServingCertificate:
        """No certificate files given: the cluster issues one through a CSR (servingcert.py)."""
        from edgeproxy.server.servingcert import ClusterServingCertificate

        cfg = self.config
        hosts = [_split(cfg.secure_listen)[0]]
        master = master_service_addr(cfg)
        if master is not None:
            hosts.insert(0, master[0])
        return ClusterServingCertificate(
            self.upstream,
            cfg.cache_dir / "pki",
            node_name(cfg),
            hosts,
            renew_before=cfg.serving_cert_renew_before,
        )

    async def _start_secure(self, cap: int) -> None:
        """The HTTPS listener for pods: the same router, each client as itself."""
        assert self.serving is not None
        secure = web.Application(
            client_max_size=0,
            middlewares=[secure_middleware(self.config.secure_anonymous_auth)],
        )
        secure.router.add_route("*", "/{tail:.*}", self.router.handle)
        listener = self._client_listener(secure, "secure", cap)
        host, port = _split(self.config.secure_listen)
        self.secure_port = await _bind(
            listener, host, port, "--secure-listen", backlog=1024, ssl=self.serving.context
        )
        self._serving_reloader = asyncio.create_task(self.serving.run(), name="serving-cert")
        log.info(
            "edge-proxy serving HTTPS on %s:%d with %s (anonymous requests %s)",
            host,
            self.secure_port,
            self.serving.cert_file,
            "act as the proxy" if self.config.secure_anonymous_auth else "refused",
        )

    async def _trim_after_evictions(self) -> None:
        """Return the pages of evicted scopes to the system (footprint.trim_heap)."""
        seen = 0
        while True:
            await asyncio.sleep(TRIM_CHECK_SECONDS)
            evicted = sum(self.cache.evictions.values())
            if evicted != seen:
                seen = evicted
                await asyncio.to_thread(footprint.trim_heap)

    def _client_listener(self, app: web.Application, name: str, cap: int) -> Listener:
        """A listener for clients (plain or secure): its own connection cap, handlers
        cancelled when their client goes, two seconds to drain on shutdown."""
        listener = Listener(
            app,
            ListenerLimits(name, cap, header_timeout=self.config.request_header_timeout),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=2.0,
        )
        self._listeners.append(listener)
        return listener

    def _no_journal(self) -> dict[str, Any]:
        return {"state": "unavailable", "reason": self.journal_problem, "errors": 0}

    async def stop(self) -> None:
        log.info("shutting down")
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self._cert_reloader is not None:
            self._cert_reloader.cancel()
        if self._serving_reloader is not None:
            self._serving_reloader.cancel()
        if self._cluster_serving_task is not None:
            self._cluster_serving_task.cancel()
        for store in self.cache.stores.values():
            store.close_watchers("proxy shutting down")
        for listener in self._listeners:
            await listener.cleanup()
        await self.cache.close()
        await self.upstream.close()
        self.authorizer.close()


async def serve_forever(config: ServeConfig) -> None:
    openfiles.raise_open_file_limit()  # before any connection: the caps are derived from it
    server = ProxyServer(config)
    try:
        await server.start()
    except BaseException:
        # A listener that cannot bind (or a later start failure): close what
        # was opened, upstream sessions and the journal, before saying why.
        if server.opened:
            await server.stop()
        raise
    print(
        f"edge-proxy: serving on {config.listen.rpartition(':')[0]}:{server.port}, "
        f"admin on port {server.admin_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


__all__ = ["ConfigError", "ProxyServer", "serve_forever"]

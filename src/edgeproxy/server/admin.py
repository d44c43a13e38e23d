"""The admin listener: health, readiness, Prometheus metrics, cache debug.

Separate from the client listener (default 127.0.0.1:10267) so monitoring
never competes with, or is confused with, API traffic. /readyz is ready when
upstream is reachable or the cache has been loaded from disk: either way
clients get answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeproxy.cache.manager import CacheManager
from edgeproxy.metrics import Metrics
from edgeproxy.upstream.pool import Upstream


def admin_app(
    upstream: Upstream,
    cache: CacheManager,
    metrics: Metrics,
    journal_stats: Callable[[], dict[str, Any]],
    filters_debug: Callable[[], Any] | None = None,
) -> web.Application:
    def refresh_gauges() -> None:
        for server in upstream.servers:
            metrics.upstream_healthy.labels(server.url).set(1 if server.healthy else 0)
        stores = list(cache.stores.values())
        metrics.cache_scopes.set(len(stores))
        metrics.cache_objects.set(sum(len(s) for s in stores))
        metrics.cache_bytes.set(sum(s.bytes for s in stores))
        metrics.reflectors.set(len(cache.reflectors))
        journal = journal_stats()
        metrics.journal_errors.set(journal.get("errors", 0))
        metrics.journal_writable.set(1 if journal.get("state", "ok") == "ok" else 0)
        metrics.served_not_durable.set(cache.published_not_durable)
        usage = cache.usage()
        for tier in ("memory", "disk"):
            metrics.cache_budget_bytes.labels(tier).set(usage[tier]["budgetBytes"] or 0)
            metrics.cache_used_bytes.labels(tier).set(usage[tier]["usedBytes"])
            metrics.cache_evictions.labels(tier).set(usage[tier]["evictions"])
        metrics.cache_scopes_on_disk.set(usage["disk"]["scopesOnlyOnDisk"])
        metrics.nonresource_entries.set(usage["nonResource"]["entries"])
        metrics.nonresource_bytes.set(usage["nonResource"]["bytes"])
        queues = usage["watchQueues"]
        metrics.watch_queue_bytes.set(queues["usedBytes"])
        metrics.watch_queue_budget_bytes.labels("watcher").set(queues["perWatcherBytes"])
        metrics.watch_queue_budget_bytes.labels("total").set(queues["budgetBytes"])
        metrics.watchers_disconnected.labels("slow").set(queues["disconnectedSlow"])
        metrics.watchers_disconnected.labels("over-budget").set(queues["disconnectedOverBudget"])

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        link = upstream.healthy
        loaded = bool(cache.stores or cache.on_disk)
        ok = link or loaded
        if "verbose" in request.query:
            lines = [
                f"[{'+' if link else '-'}]upstream {'reachable' if link else 'unreachable'}",
                f"[{'+' if loaded else '-'}]cache {len(cache.stores)} scopes in memory, "
                f"{len(cache.on_disk)} only on disk",
                _journal_line(journal_stats()),
                f"readyz check {'passed' if ok else 'failed'}",
            ]
            return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 503)
        return web.Response(
            text="ok" if ok else "not ready: upstream unreachable and no cache",
            status=200 if ok else 503,
        )

    async def metrics_handler(request: web.Request) -> web.Response:
        refresh_gauges()
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def debug_cache(request: web.Request) -> web.Response:
        doc = {
            "upstream": [
                {
                    "server": s.url,
                    "healthy": s.healthy,
                    "lastError": s.last_error,
                    "requests": s.requests,
                }
                for s in upstream.servers
            ],
            "journal": journal_stats(),
            "budgets": cache.usage(),
            "scopes": cache.debug(),
            "filteredViews": filters_debug() if filters_debug is not None else [],
        }
        return web.Response(
            body=msgspec.json.encode(doc), headers={"Content-Type": "application/json"}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/debug/cache", debug_cache)
    return app


def _journal_line(stats: dict[str, Any]) -> str:
    """The journal's check: a journal that cannot write is reported, not fatal.

    The proxy answers from memory meanwhile (ARCHITECTURE.md sec. 5), so it
    stays ready; what it serves is not durable until the journal is written again.
    """
    state, reason = stats.get("state", "ok"), stats.get("reason", "")
    if state == "ok":
        return "[+]journal ok"
    return f"[-]journal {state}: {reason or 'unknown'} (serving from memory, not durable)"

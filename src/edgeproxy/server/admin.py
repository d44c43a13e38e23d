"""The admin listener: health, readiness, Prometheus metrics, cache debug.

Separate from the client listener (default 127.0.0.1:10267) so monitoring
never competes with, or is confused with, API traffic. /readyz is ready when
upstream is reachable or the cache has been loaded from disk: either way
clients get answers. `/` lists the endpoints; /debug/cache is for people as
much as for programs (indented JSON, or an HTML table for a browser), and is
what `edge-proxy status` reads (status.py).
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeproxy.cache import inventory
from edgeproxy.cache.manager import CacheManager
from edgeproxy.cache.protoforms import ProtobufForms
from edgeproxy.metrics import Metrics
from edgeproxy.upstream.pool import Upstream

ENDPOINTS = (
    ("/healthz", "the process is alive"),
    ("/livez", "the same as /healthz"),
    ("/readyz", "200 when clients get answers: upstream reachable or a cache loaded (?verbose)"),
    ("/metrics", "Prometheus metrics"),
    ("/debug/cache", "link, journal, budgets, every scope and filtered view (JSON; HTML for "
     "a browser)"),
)  # fmt: skip


def admin_app(
    upstream: Upstream,
    cache: CacheManager,
    metrics: Metrics,
    journal_stats: Callable[[], dict[str, Any]],
    filters_debug: Callable[[], Any] | None = None,
    protobuf: ProtobufForms | None = None,
) -> web.Application:
    started = time.monotonic()

    def link() -> dict[str, Any]:
        """The cloud link as the probes see it; "unknown" until upstream first answers."""
        if not upstream.healthy:
            # Counted from the last answer, so the probes' detection time is included.
            last_ok = max((s.last_ok for s in upstream.servers), default=0.0)
            offline = time.monotonic() - (last_ok or started)
            return {"state": "down", "offlineSeconds": round(offline, 1)}
        return {"state": "up" if upstream.confirmed else "unknown", "offlineSeconds": 0.0}

    def journal() -> dict[str, Any]:
        path = cache.journal.path if cache.journal is not None else None
        return {**journal_stats(), "diskBytes": _disk_bytes(path)}

    def refresh_gauges() -> None:
        for server in upstream.servers:
            metrics.upstream_healthy.labels(server.url).set(1 if server.healthy else 0)
        metrics.offline_seconds.set(link()["offlineSeconds"])
        now = time.monotonic()
        rows = []
        for scope, store in cache.stores.items():
            since = cache.seconds_since_sync(store, now)
            if since is not None:
                labels = (scope.group, scope.version, scope.resource, scope.namespace)
                rows.append(((*labels, scope.label_selector, scope.field_selector), since))
        metrics.scope_since_sync.replace(rows)
        stores = list(cache.stores.values())
        metrics.cache_scopes.set(len(stores))
        metrics.cache_objects.set(sum(len(s) for s in stores))
        metrics.cache_bytes.set(sum(s.bytes for s in stores))
        metrics.reflectors.set(cache.upstream_reflectors)
        stats = journal()
        metrics.journal_errors.set(stats.get("errors", 0))
        metrics.journal_writable.set(1 if stats.get("state", "ok") == "ok" else 0)
        metrics.journal_disk_bytes.set(stats["diskBytes"])
        metrics.served_not_durable.set(cache.published_not_durable)
        usage = inventory.usage(cache)
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
        if protobuf is not None:
            metrics.protobuf_encoded.labels("encoded").set(protobuf.encoded)
            metrics.protobuf_encoded.labels("memoized").set(protobuf.hits)
            metrics.protobuf_cache_bytes.set(protobuf.bytes)

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

    async def root(request: web.Request) -> web.Response:
        if _wants(request, "application/json"):
            doc = {"endpoints": [{"path": p, "description": d} for p, d in ENDPOINTS]}
            return _json(doc)
        width = max(len(p) for p, _ in ENDPOINTS)
        lines = [f"{p:<{width}}  {d}" for p, d in ENDPOINTS]
        return web.Response(text="\n".join(lines) + "\n")

    async def debug_cache(request: web.Request) -> web.Response:
        doc = {
            "link": link(),
            "upstream": [
                {
                    "server": s.url,
                    "healthy": s.healthy,
                    "lastError": s.last_error,
                    "requests": s.requests,
                }
                for s in upstream.servers
            ],
            "journal": journal(),
            "budgets": inventory.usage(cache),
            "scopes": inventory.scopes(cache),
            "filteredViews": filters_debug() if filters_debug is not None else [],
        }
        if _wants(request, "text/html"):
            return web.Response(text=_cache_page(doc), content_type="text/html")
        return _json(doc)

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/debug/cache", debug_cache)
    return app


def _wants(request: web.Request, media_type: str) -> bool:
    """Whether the client's Accept names `media_type` (a browser's names text/html first)."""
    return media_type in request.headers.get("Accept", "")


def _json(doc: Any) -> web.Response:
    # Indented: read by people with curl as often as by programs, which do not mind.
    body = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
    return web.Response(body=body, headers={"Content-Type": "application/json"})


def _disk_bytes(path: Path | None) -> int:
    """The journal's bytes on disk: the file, its WAL (and shared-memory index, if any)."""
    if path is None:
        return 0
    total = 0
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            total += os.stat(name).st_size
        except OSError:
            continue
    return total


def _cache_page(doc: dict[str, Any]) -> str:
    """/debug/cache for a browser: the link, the budgets and one row per scope."""
    esc = html.escape
    link, journal, budgets = doc["link"], doc["journal"], doc["budgets"]
    memory, disk = budgets["memory"], budgets["disk"]
    facts = [
        f"link {esc(link['state'])}"
        + (f", offline for {link['offlineSeconds']:.0f} s" if link["state"] == "down" else ""),
        f"journal {esc(str(journal.get('state', 'ok')))}, {journal['diskBytes']} bytes on disk",
        f"memory {memory['usedBytes']} of {memory['budgetBytes']} bytes, "
        f"disk {disk['usedBytes']} of {disk['budgetBytes']} bytes",
        f"{len(doc['scopes'])} scopes, {len(doc['filteredViews'])} filtered views",
    ]
    columns = [
        "scope",
        "resident",
        "synced",
        "objects",
        "bytes",
        "secondsSinceSync",
        "watchers",
        "unusedSeconds",
    ]
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(_cell(scope.get(c)))}</td>" for c in columns) + "</tr>"
        for scope in doc["scopes"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edge-proxy cache</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        "<h1>edge-proxy cache</h1><ul>"
        + "".join(f"<li>{fact}</li>" for fact in facts)
        + f"</ul><table><tr>{head}</tr>{rows}</table>"
        "<p>The same as JSON: <code>curl http://ADMIN/debug/cache</code></p></body></html>\n"
    )


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _journal_line(stats: dict[str, Any]) -> str:
    """The journal's check: a journal that cannot write is reported, not fatal.

    The proxy answers from memory meanwhile (ARCHITECTURE.md sec. 5), so it
    stays ready; what it serves is not durable until the journal is written again.
    """
    state, reason = stats.get("state", "ok"), stats.get("reason", "")
    if state == "ok":
        return "[+]journal ok"
    return f"[-]journal {state}: {reason or 'unknown'} (serving from memory, not durable)"

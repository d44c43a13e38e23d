"""Prometheus metrics of the proxy, in one registry passed around explicitly.

What an operator of thousands of edge nodes needs to see: requests by verb,
resource, code and where they were answered from (upstream, cache, offline),
bytes from the cloud vs bytes served, link health, and cache size.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SERVED_FROM = ("upstream", "cache", "offline", "proxy")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edgeproxy_requests",
            "Client requests by verb, resource, code and where they were served from",
            ["verb", "resource", "code", "served_from"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "edgeproxy_request_duration_seconds",
            "Time to the response headers (watches: to the stream start)",
            ["verb", "served_from"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.upstream_bytes = Counter(
            "edgeproxy_upstream_received_bytes",
            "Bytes received from the cloud apiserver",
            ["kind"],
            registry=r,
        )
        self.client_bytes = Counter(
            "edgeproxy_client_sent_bytes",
            "Bytes sent to clients",
            ["served_from"],
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "edgeproxy_upstream_healthy",
            "1 when the upstream server is reachable",
            ["server"],
            registry=r,
        )
        self.cache_objects = Gauge("edgeproxy_cache_objects", "Objects held in memory", registry=r)
        self.cache_bytes = Gauge("edgeproxy_cache_bytes", "Object bytes held in memory", registry=r)
        self.cache_scopes = Gauge("edgeproxy_cache_scopes", "Scopes held in memory", registry=r)
        self.watchers = Gauge("edgeproxy_watchers", "Open client watches", registry=r)
        # Budgets (cache/budget.py) and what is held against them.
        self.cache_budget_bytes = Gauge(
            "edgeproxy_cache_budget_bytes",
            "Cache budget by tier (memory, disk)",
            ["tier"],
            registry=r,
        )
        self.cache_used_bytes = Gauge(
            "edgeproxy_cache_used_bytes",
            "Cache bytes held against the budget by tier (memory: estimated, disk: journal content)",
            ["tier"],
            registry=r,
        )
        self.cache_evictions = Gauge(
            "edgeproxy_cache_evictions", "Scopes evicted so far, by tier", ["tier"], registry=r
        )
        self.cache_scopes_on_disk = Gauge(
            "edgeproxy_cache_scopes_on_disk",
            "Scopes kept only on disk (loaded back into memory when needed)",
            registry=r,
        )
        self.nonresource_entries = Gauge(
            "edgeproxy_cache_nonresource_entries",
            "Non-resource answers (discovery, /version, openapi) kept for offline use",
            registry=r,
        )
        self.nonresource_bytes = Gauge(
            "edgeproxy_cache_nonresource_bytes", "Bytes of those answers", registry=r
        )
        self.watch_queue_bytes = Gauge(
            "edgeproxy_watch_queue_bytes",
            "Bytes queued for client watches (each frame once) and being written to them",
            registry=r,
        )
        self.watch_queue_budget_bytes = Gauge(
            "edgeproxy_watch_queue_budget_bytes",
            "Most bytes one watcher (per=watcher) and all watchers (per=total) may hold",
            ["per"],
            registry=r,
        )
        self.watchers_disconnected = Gauge(
            "edgeproxy_watchers_disconnected",
            "Watches disconnected so far for holding too much: past their own bound (slow) "
            "or the slowest when all were past theirs (over-budget)",
            ["reason"],
            registry=r,
        )
        self.refilter_seconds = Histogram(
            "edgeproxy_filter_refilter_duration_seconds",
            "Time to re-filter cached views after a filter input (Node, Service) changed",
            ["input"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.refiltered_objects = Counter(
            "edgeproxy_filter_refiltered_objects",
            "Objects whose filtered form changed because a filter input changed",
            ["input"],
            registry=r,
        )
        self.filtered_views = Gauge(
            "edgeproxy_filter_views", "Filtered views (scope x filter chain) held", registry=r
        )
        self.reflectors = Gauge("edgeproxy_reflectors", "Running upstream reflectors", registry=r)
        self.journal_errors = Gauge(
            "edgeproxy_journal_errors", "Journal write errors so far", registry=r
        )
        self.journal_writable = Gauge(
            "edgeproxy_journal_writable",
            "1 while the journal commits (what clients see is durable), 0 while it is "
            "read-only or its writes fail (serving from memory; /readyz?verbose says why)",
            registry=r,
        )
        self.served_not_durable = Gauge(
            "edgeproxy_journal_served_not_durable",
            "Changes served to clients before the journal had committed them (it failed or stalled)",
            registry=r,
        )

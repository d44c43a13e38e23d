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

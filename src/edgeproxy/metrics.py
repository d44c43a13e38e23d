"""Prometheus metrics of the proxy, in one registry passed around explicitly.

What an operator of thousands of edge nodes needs to see: requests by verb,
resource, code and where they were answered from (upstream, cache, offline),
bytes from the cloud vs bytes served, link health, and cache size; and for
a node cut off, how long it has been and how stale each cached scope is.

Counters are named `_total` and have no `_created` series (one more series
per counter child that dashboards never use; Kubernetes' own components do
not expose them). Counts that live in the cache or the journal are read at
scrape time and exposed as counters by `RunningCount`.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeproxy import __version__

SERVED_FROM = ("upstream", "cache", "offline", "proxy")
# The labels of a scope's series: one series per cached scope, which the
# memory budget already bounds; the cap guards the scrape against a budget
# set very high (the stalest scopes are kept: they are the ones to alert on).
SCOPE_LABELS = ("group", "version", "resource", "namespace", "label_selector", "field_selector")
MAX_SCOPE_SERIES = 1000


class RunningCount(Collector):
    """A count kept elsewhere (the cache, the journal) exposed as a counter.

    prometheus_client's Counter can only be incremented, and these counts are
    not ours to increment: they are set from their owner before each scrape.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def labels(self, *values: str) -> _RunningChild:
        return _RunningChild(self, tuple(values))

    def set(self, value: float) -> None:
        self._values[()] = value

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in sorted(self._values.items()):
            family.add_metric(list(values), value)
        return [family]


class _RunningChild:
    def __init__(self, parent: RunningCount, values: tuple[str, ...]) -> None:
        self._parent, self._key = parent, values

    def set(self, value: float) -> None:
        self._parent._values[self._key] = value


class ScopeSeries(Collector):
    """A gauge per cached scope, replaced whole at each scrape.

    Replacing rather than updating is what drops an evicted scope's series:
    only the scopes resident at the scrape are exposed.
    """

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._rows: list[tuple[tuple[str, ...], float]] = []
        registry.register(self)

    def replace(self, rows: Iterable[tuple[tuple[str, ...], float]]) -> None:
        ordered = sorted(rows, key=lambda row: row[1], reverse=True)
        self._rows = ordered[:MAX_SCOPE_SERIES]

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=SCOPE_LABELS)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=SCOPE_LABELS)
        for labels, value in self._rows:
            family.add_metric(list(labels), value)
        yield family


class Metrics:
    def __init__(self) -> None:
        # A module-wide switch in prometheus_client, read when samples are
        # collected: our explicit registry's counters and histograms included.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "edgeproxy_build_info",
            "1, labelled with the edge-proxy version and the Python it runs on",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
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
        self.forwarded_lists = Counter(
            "edgeproxy_forwarded_lists",
            "Lists forwarded to the cloud apiserver by how much of upstream's answer the "
            "proxy read: head (only its metadata: the cache held that state), probe (a "
            "one-item list for its RV: the cache held that state and answered, filtered), "
            "items (read and applied to the cache), relay (a form the cache does not keep)",
            ["read"],
            registry=r,
        )
        self.upstream_stream_bytes = Counter(
            "edgeproxy_upstream_stream_received_bytes",
            "Bytes the cache's reflectors received from the cloud apiserver, by stream "
            "(list, watch, watch-list) and content encoding (gzip, identity)",
            ["stream", "encoding"],
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
        self.offline_seconds = Gauge(
            "edgeproxy_upstream_offline_seconds",
            "Seconds since the cloud last answered, while no upstream server is reachable "
            "(0 while one is)",
            registry=r,
        )
        self.scope_since_sync = ScopeSeries(
            "edgeproxy_cache_scope_seconds_since_sync",
            "Per scope in memory, seconds since upstream last confirmed it (a list, an event "
            "or bookmark; 0 while its watch streams over a healthy link)",
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
        self.cache_evictions = RunningCount(
            "edgeproxy_cache_evictions", "Scopes evicted, by tier", ["tier"], registry=r
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
        self.watchers_disconnected = RunningCount(
            "edgeproxy_watchers_disconnected",
            "Watches disconnected for holding too much: past their own bound (slow) "
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
        self.protobuf_encoded = RunningCount(
            "edgeproxy_protobuf_encoded",
            "Objects and watch frames encoded as protobuf for clients that prefer it "
            "(once per object version; hits are served from memory)",
            ["result"],
            registry=r,
        )
        self.protobuf_cache_bytes = Gauge(
            "edgeproxy_protobuf_cache_bytes",
            "Bytes of memoized protobuf forms (and the JSON they were encoded from)",
            registry=r,
        )
        self.journal_errors = RunningCount(
            "edgeproxy_journal_errors", "Journal write errors", registry=r
        )
        self.journal_disk_bytes = Gauge(
            "edgeproxy_journal_disk_bytes",
            "Bytes of the journal on disk: the SQLite file and its write-ahead log",
            registry=r,
        )
        self.journal_writable = Gauge(
            "edgeproxy_journal_writable",
            "1 while the journal commits (what clients see is durable), 0 while it is "
            "read-only or its writes fail (serving from memory; /readyz?verbose says why)",
            registry=r,
        )
        self.served_not_durable = RunningCount(
            "edgeproxy_journal_served_not_durable",
            "Changes served to clients before the journal had committed them (it failed or stalled)",
            registry=r,
        )

    def upstream_stream_bytes_inc(self, stream: str, encoding: str, size: int) -> None:
        """A reflector's bytes from upstream (cache/reflector.py `on_stream_bytes`)."""
        self.upstream_stream_bytes.labels(stream, encoding).inc(size)

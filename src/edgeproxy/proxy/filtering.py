"""Filters at work: per-request chains, filtered views, and the inputs they read.

`FilterRuntime` is where the filter framework meets the cache:
- it picks a request's chain (by the client's User-Agent component, the
  resource and the verb) and hands out one `FilteredView` per (scope, chain),
  shared by every client with that chain;
- it keeps the inputs the chains declared synced as ordinary cached scopes
  (all Nodes, or only this node; all Services), so they are journaled and
  survive a restart while offline like everything else, and it answers the
  filters' reads (`FilterInputs`) from them;
- it follows those input scopes and, when an input changes, re-filters the
  views that depend on it, and in them only what the change can affect: a
  Node label change that some chain's filters read (`reads_node_labels`)
  re-filters that chain's views, all of their objects for this node and only
  the objects naming the node for another node; a Service change re-filters
  only the Endpoints/EndpointSlices of that Service. Node status heartbeats
  and labels no filter reads cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

from edgeproxy.cache.broadcast import Event
from edgeproxy.cache.manager import CacheManager
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.cache.views import FilteredView
from edgeproxy.filters.base import Chain, FilterSet, Need, component_of
from edgeproxy.filters.topology import service_of
from edgeproxy.kube.objects import ObjectRecord, object_key
from edgeproxy.kube.resources import ResourceType
from edgeproxy.metrics import Metrics

log = logging.getLogger(__name__)

_NO_CHAIN = Chain(())
_INPUT_KEY = "#filter-inputs"


class _InputFollower:
    """Registered on an input store like a view: tells the runtime what changed."""

    def __init__(self, runtime: FilterRuntime, what: str) -> None:
        self.runtime = runtime
        self.what = what

    def on_base_event(self, event: Event) -> None:
        self.runtime.input_changed(self.what, event)

    def on_base_rv(self, rv: int) -> None:
        pass

    def rebuild(self) -> None:
        self.runtime.input_reloaded(self.what)


class FilterRuntime:
    def __init__(
        self,
        filters: FilterSet,
        cache: CacheManager,
        *,
        node_name: str,
        pool_label: str = "apps.openyurt.io/nodepool",
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.filters = filters
        self.cache = cache
        self._node_name = node_name
        self._pool_label = pool_label
        self._views: list[tuple[FilteredView, Chain]] = []
        self._node_stores: list[ScopeStore] = []
        self._service_store: ScopeStore | None = None
        self._services: dict[str, tuple[int, dict[str, Any]]] = {}
        # Figures for /metrics and the benchmark.
        self.refilter_seconds_total = 0.0
        self.refiltered_objects = 0
        cache.on_evict.append(self._forget)

    # -- FilterInputs ------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def pool_label(self) -> str:
        return self._pool_label

    def node_labels(self, name: str) -> Mapping[str, str] | None:
        for store in self._node_stores:
            record = store.objects.get(name)
            if record is not None:
                return record.labels
        return None

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        store = self._service_store
        if store is None:
            return None
        key = object_key(namespace, name)
        record = store.objects.get(key)
        if record is None:
            return None
        known = self._services.get(key)
        if known is not None and known[0] == record.rv:
            return known[1]
        try:
            obj = msgspec.json.decode(record.raw)
        except msgspec.DecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        self._services[key] = (record.rv, obj)
        return obj

    def all_services(self) -> Iterator[Mapping[str, Any]]:
        store = self._service_store
        for record in list(store.objects.values()) if store is not None else ():
            obj = self.service(record.namespace, record.name)
            if obj is not None:
                yield obj

    # -- chains and views ------------------------------------------------------------

    def chain_for(self, user_agent: str, resource: str, verb: str) -> Chain:
        if not self.filters:
            return _NO_CHAIN
        return self.filters.chain_for(component_of(user_agent), resource, verb)

    def view_for(self, store: ScopeStore, chain: Chain) -> ScopeStore:
        """The store as `chain` shows it: the store itself when nothing applies."""
        if not chain:
            return store
        view = store.views.get(chain.key)
        if isinstance(view, FilteredView):
            return view
        self._ensure_inputs(chain.needs)

        def apply(record: ObjectRecord) -> ObjectRecord | None:
            return chain.apply(record, self)

        view = FilteredView(store, chain.key, apply)
        self._views.append((view, chain))
        if self.metrics is not None:
            self.metrics.filtered_views.set(len(self._views))
        log.info("filtered view %s of %s", chain.key, store.scope.key)
        return view

    def _forget(self, store: ScopeStore) -> None:
        """A scope left memory: its views go with it (rebuilt if it comes back)."""
        self._views = [(view, chain) for view, chain in self._views if view.base is not store]
        if self.metrics is not None:
            self.metrics.filtered_views.set(len(self._views))

    def filter_one(self, chain: Chain, record: ObjectRecord) -> ObjectRecord | None:
        """One object through a chain (gets, pages of a list)."""
        if not chain:
            return record
        self._ensure_inputs(chain.needs)
        return chain.apply(record, self)

    async def prepare(self, chain: Chain, wait_seconds: float) -> None:
        """Start the chain's inputs; wait up to `wait_seconds` until they are synced.

        Filters may still find an input unknown (upstream slow, or offline with
        nothing cached): each filter documents what it does then.
        """
        if not chain.needs:
            return
        self._ensure_inputs(chain.needs)
        stores = list(self._node_stores)
        if self._service_store is not None and "services" in chain.needs:
            stores.append(self._service_store)
        for store in stores:  # an input only on disk is read back, online or not
            await self.cache.loaded(store)
        if wait_seconds <= 0:
            return
        waits = [self.cache.reflector_for(s).synced.wait() for s in stores if not s.synced]
        if not waits:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*waits), wait_seconds)
        except TimeoutError:
            log.warning(
                "filter inputs not synced after %.0fs; filtering with what is known", wait_seconds
            )

    # -- inputs ----------------------------------------------------------------------

    def _rt(self, resource: str) -> ResourceType:
        return self.cache.resource_type("", "v1", resource, namespaced=resource != "nodes")

    def _ensure_inputs(self, needs: frozenset[Need]) -> None:
        if "nodes" in needs:
            self._input(Scope("", "v1", "nodes"), "nodes")
        elif "local-node" in needs:
            self._input(
                Scope("", "v1", "nodes", field_selector=f"metadata.name={self._node_name}"), "nodes"
            )
        if "services" in needs and self._service_store is None:
            self._service_store = self._input(Scope("", "v1", "services"), "services")

    def _input(self, scope: Scope, what: str) -> ScopeStore:
        store = self.cache.store_for(scope, self._rt(scope.resource))
        if _INPUT_KEY not in store.views:
            store.views[_INPUT_KEY] = _InputFollower(self, what)
            store.pinned = True
            if what == "nodes":
                # The broadest node scope first: it answers for every node.
                self._node_stores.append(store)
                self._node_stores.sort(key=lambda s: bool(s.scope.field_selector))
            self.cache.reflector_for(store)
            log.info("filter input %s: %s", what, scope.key)
        return store

    def input_changed(self, what: str, event: Event) -> None:
        if what == "nodes":
            self._node_changed(event)
            return
        namespace, name = event.obj.namespace, event.obj.name

        def of_service(view: FilteredView) -> Any:
            resource = view.rt.resource
            return lambda r: service_of(r, resource) == (namespace, name)

        self._refilter("services", lambda c: "services" in c.needs, of_service, event.rv)

    def _node_changed(self, event: Event) -> None:
        node, prev = event.obj, event.prev
        if prev is not None and event.type != "DELETED":
            before, after = prev.labels, node.labels
            keys = frozenset(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
            if not keys:
                return  # status heartbeats: nothing a filter reads
        else:
            keys = None  # a node appearing or going: known and unknown nodes differ
        local = node.name == self._node_name

        def wanted(chain: Chain) -> bool:
            if not ("nodes" in chain.needs or (local and "local-node" in chain.needs)):
                return False
            return keys is None or chain.reads_node_labels(keys, self)

        if not any(wanted(chain) for _, chain in self._views):
            log.debug("node %s: label change no filter reads (%s)", node.name, sorted(keys or ()))
            return
        keys_of = None
        if not local:
            # Filters read another node's labels only for objects naming it.
            needle = b'"' + node.name.encode() + b'"'

            def naming(view: FilteredView) -> Callable[[ObjectRecord], bool]:
                return lambda r: needle in r.raw

            keys_of = naming
        self._refilter("nodes", wanted, keys_of, event.rv)

    def input_reloaded(self, what: str) -> None:
        self._services.clear()
        need = "services" if what == "services" else "nodes"
        self._refilter(
            need,
            lambda c: need in c.needs or (need == "nodes" and "local-node" in c.needs),
            None,
            0,
        )

    def _refilter(self, what: str, wanted: Any, keys_of: Any, input_rv: int) -> None:
        started = time.perf_counter()
        changed = 0
        for view, chain in self._views:
            if wanted(chain):
                changed += view.refilter(keys_of(view) if keys_of else None, input_rv)
        seconds = time.perf_counter() - started
        self.refilter_seconds_total += seconds
        self.refiltered_objects += changed
        if self.metrics is not None:
            self.metrics.refilter_seconds.labels(what).observe(seconds)
            self.metrics.refiltered_objects.labels(what).inc(changed)
        if changed:
            log.info(
                "filter inputs changed: %d objects re-filtered in %.1f ms",
                changed,
                (time.perf_counter() - started) * 1000,
            )

    def debug(self) -> list[dict[str, Any]]:
        return [
            {
                "scope": view.scope.key,
                "chain": chain.key,
                "resourceVersion": str(view.rv),
                "objects": len(view),
                "watchers": len(view.watchers),
                "refilters": view.refilters,
            }
            for view, chain in self._views
        ]

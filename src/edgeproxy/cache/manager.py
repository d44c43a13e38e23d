"""The cache: every scope's store, its reflector, and the journal behind them.

Finds the synced scope that covers a request, creates scopes and starts
reflectors on demand (a client watch, or the same scope listed again),
stops idle reflectors (their data stays, in memory and in the journal), and
writes every change through to the journal so a restart while offline
serves the same answers (ARCHITECTURE.md sec. 2, 5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edgeproxy.cache.reflector import Reflector, ReflectorSettings
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.kube.objects import ObjectRecord, object_key, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.storage.journal import Journal
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

_RAW_PREFIX = "raw|"


@dataclass(frozen=True, slots=True)
class CacheSettings:
    # Events kept per scope for watch resume (kube's watch cache keeps ~75 s).
    history: int = 10_000
    # A reflector with no watcher and no list for this long is stopped.
    idle_seconds: float = 300.0
    # Listing the same scope this many times starts a reflector for it.
    lists_before_reflector: int = 2
    reflector: ReflectorSettings = field(default_factory=ReflectorSettings)


class _ScopeMeta(msgspec.Struct):
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    namespace: str = ""
    label_selector: str = ""
    field_selector: str = ""
    typed_items: bool = False


class CacheManager:
    def __init__(
        self,
        registry: ResourceRegistry,
        upstream: Upstream,
        journal: Journal | None,
        settings: CacheSettings | None = None,
        on_upstream_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.on_upstream_bytes = on_upstream_bytes
        self.registry = registry
        self.upstream = upstream
        self.journal = journal
        self.settings = settings or CacheSettings()
        self.stores: dict[Scope, ScopeStore] = {}
        self.reflectors: dict[Scope, Reflector] = {}
        self._list_counts: dict[Scope, int] = {}
        self._janitor: asyncio.Task[None] | None = None
        self.loaded_objects = 0
        # Non-resource GETs (discovery, /version, openapi) kept for offline replay:
        # key -> (content type, content encoding, body).
        self._raw: dict[str, tuple[str, str, bytes]] = {}

    # -- lifecycle -------------------------------------------------------------

    def load(self) -> None:
        """Restore scopes from the journal (before serving)."""
        if self.journal is None:
            return
        for stored in self.journal.load():
            if stored.key.startswith(_RAW_PREFIX):
                self._load_raw(stored.key, stored.meta, stored.objects.get("body", b""))
                continue
            try:
                meta = msgspec.json.decode(stored.meta, type=_ScopeMeta)
                rt = self.resource_type(
                    meta.group, meta.version, meta.resource, meta.kind, meta.namespaced
                )
                scope = Scope(
                    meta.group,
                    meta.version,
                    meta.resource,
                    meta.namespace,
                    meta.label_selector,
                    meta.field_selector,
                )
                records = {}
                for raw in stored.objects.values():
                    record = record_from_bytes(rt, raw)
                    records[record.key] = record
                store = self._new_store(scope, rt)
                store.typed_items = meta.typed_items
                store.load(records, int(stored.rv))
                self.loaded_objects += len(records)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                log.warning("journal scope %s is unreadable, dropping it: %s", stored.key, exc)
                self.journal.drop(stored.key)
        log.info(
            "loaded %d scopes, %d objects from the journal", len(self.stores), self.loaded_objects
        )

    def start(self) -> None:
        self._janitor = asyncio.create_task(self._stop_idle(), name="cache-janitor")

    async def close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        for store in self.stores.values():
            store.close_watchers("proxy shutting down")
        await asyncio.gather(*(r.stop() for r in self.reflectors.values()))
        self.reflectors.clear()
        if self.journal is not None:
            await self.journal.close()

    # -- resource types ----------------------------------------------------------

    def resource_type(
        self, group: str, version: str, resource: str, kind: str = "", namespaced: bool = True
    ) -> ResourceType:
        rt = self.registry.get(group, version, resource)
        if rt is not None:
            return rt
        # An unknown (e.g. custom) resource: selectors limited to metadata fields.
        kind = kind or resource.capitalize()
        return ResourceType(group, version, resource, kind, namespaced)

    # -- scopes ------------------------------------------------------------------

    def _new_store(self, scope: Scope, rt: ResourceType) -> ScopeStore:
        store = ScopeStore(scope, rt, self.settings.history)
        store.persist = self._persist
        self.stores[scope] = store
        return store

    def store_for(self, scope: Scope, rt: ResourceType) -> ScopeStore:
        store = self.stores.get(scope)
        if store is None:
            store = self._new_store(scope, rt)
        return store

    def covering(self, request: Scope, rt: ResourceType) -> ScopeStore | None:
        """The synced store that answers `request`, preferring the narrowest."""
        exact = self.stores.get(request)
        if exact is not None and exact.synced:
            return exact
        best: ScopeStore | None = None
        for scope, store in self.stores.items():
            # The fields the store holds values of: those of the type it was made with.
            covers = store.synced and scope.covers(request, store.rt.field_paths)
            if covers and (best is None or len(store) < len(best)):
                best = store
        return best

    def reflector_for(self, store: ScopeStore, seed_rv: int | None = None) -> Reflector:
        """The scope's running reflector, started if needed.

        `seed_rv`: for a scope not synced yet, take its first list at this RV
        (a client's watch RV), so that client misses nothing.
        """
        reflector = self.reflectors.get(store.scope)
        if reflector is None:
            reflector = Reflector(
                store,
                self.upstream,
                self.settings.reflector,
                on_bytes=self.on_upstream_bytes,
            )
            if seed_rv and not store.synced:
                reflector.seed_rv = seed_rv
            self.reflectors[store.scope] = reflector
            reflector.start()
            log.info("started reflector for %s", store.scope.key)
        return reflector

    def note_list(self, scope: Scope) -> bool:
        """Count a forwarded list; True when the scope now deserves a reflector."""
        count = self._list_counts.get(scope, 0) + 1
        self._list_counts[scope] = count
        return count >= self.settings.lists_before_reflector

    def find_object(self, rt: ResourceType, namespace: str, name: str) -> ObjectRecord | None:
        """The newest copy of one object in any scope of its resource."""
        key = object_key(namespace, name)
        best: ObjectRecord | None = None
        for scope, store in self.stores.items():
            if scope.gvr != (rt.group, rt.version, rt.resource):
                continue
            record = store.objects.get(key)
            if record is not None and (best is None or record.rv > best.rv):
                best = record
        return best

    def remember_object(self, rt: ResourceType, record: ObjectRecord) -> None:
        """Keep an object fetched by a get, for offline gets of it."""
        scope = Scope(
            rt.group, rt.version, rt.resource, record.namespace, "", f"metadata.name={record.name}"
        )
        store = self.store_for(scope, rt)
        store.replace({record.key: record}, max(record.rv, store.rv))

    # -- raw responses (discovery) ----------------------------------------------------

    def raw_get(self, key: str) -> tuple[str, str, bytes] | None:
        return self._raw.get(key)

    def remember_raw(self, key: str, content_type: str, encoding: str, body: bytes) -> None:
        entry = (content_type, encoding, body)
        if self._raw.get(key) == entry:
            return
        self._raw[key] = entry
        if self.journal is not None:
            meta = msgspec.json.encode({"contentType": content_type, "contentEncoding": encoding})
            self.journal.put_snapshot(_RAW_PREFIX + key, "0", meta, {"body": body})

    def _load_raw(self, journal_key: str, meta: bytes, body: bytes) -> None:
        try:
            info = msgspec.json.decode(meta)
            self._raw[journal_key[len(_RAW_PREFIX) :]] = (
                str(info.get("contentType", "application/json")),
                str(info.get("contentEncoding", "")),
                body,
            )
        except (msgspec.DecodeError, AttributeError):
            log.warning("journal entry %s is unreadable, ignoring it", journal_key)

    # -- persistence ---------------------------------------------------------------

    def _persist(
        self, store: ScopeStore, rv: int, upserts: Mapping[str, bytes], deletes: list[str] | None
    ) -> None:
        if self.journal is None:
            return
        key = store.scope.key
        if deletes is None:
            scope = store.scope
            meta = _ScopeMeta(
                scope.group,
                scope.version,
                scope.resource,
                store.rt.kind,
                store.rt.namespaced,
                scope.namespace,
                scope.label_selector,
                scope.field_selector,
                store.typed_items,
            )
            self.journal.put_snapshot(key, str(rv), msgspec.json.encode(meta), upserts)
        else:
            self.journal.put_changes(key, str(rv), upserts, deletes)

    async def _stop_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.settings.idle_seconds / 2))
            now = time.monotonic()
            for scope, reflector in list(self.reflectors.items()):
                store = reflector.store
                if (
                    store.pinned
                    or store.watchers
                    or any(getattr(v, "watchers", None) for v in store.views.values())
                    or now - store.last_used < self.settings.idle_seconds
                ):
                    continue
                log.info("stopping idle reflector for %s", scope.key)
                del self.reflectors[scope]
                await reflector.stop()

    def debug(self) -> list[dict[str, Any]]:
        out = []
        for scope, store in sorted(self.stores.items(), key=lambda kv: kv[0].key):
            reflector = self.reflectors.get(scope)
            out.append(
                {
                    "scope": scope.key,
                    "resourceVersion": str(store.rv),
                    "synced": store.synced,
                    "objects": len(store),
                    "bytes": store.bytes,
                    "bytesFromUpstream": store.bytes_from_upstream,
                    "bytesServed": store.bytes_served,
                    "watchers": len(store.watchers),
                    "history": len(store.history),
                    "reflector": None
                    if reflector is None
                    else {
                        "bytesFromUpstream": reflector.bytes_in,
                        "relists": reflector.relists,
                        "watches": reflector.watches,
                        "lastError": reflector.last_error,
                    },
                }
            )
        return out

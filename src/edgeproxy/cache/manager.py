"""The cache: every scope's store, its reflector, and the journal behind them.

Finds the synced scope that covers a request, creates scopes and starts
reflectors on demand (a client watch, or the same scope listed again),
stops idle reflectors (their data stays), and writes every change through
to the journal so a restart while offline serves the same answers
(ARCHITECTURE.md sec. 2, 5).

Memory and disk are bounded (budget.py). A scope nothing uses leaves memory
when the memory budget is exceeded, least recently used first, and stays in
the journal (`on_disk`) until a request needs it: then it is loaded back,
unless a fresh list of it arrives first. Past the disk budget idle scopes
leave the journal too. After a restart the most recently used scopes are
loaded, as many as the memory budget holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import msgspec

from edgeproxy.cache.broadcast import WatchBudget
from edgeproxy.cache.budget import (
    DEFAULT_DISK_BYTES,
    DEFAULT_MEMORY_BYTES,
    DEFAULT_WATCHER_BYTES,
    DEFAULT_WATCHERS_BYTES,
    estimate,
    footprint,
    lru_victims,
)
from edgeproxy.cache.durability import DurableWrites
from edgeproxy.cache.follower import Follower, source_for
from edgeproxy.cache.rawcache import JOURNAL_PREFIX, RawCache, RawEntry
from edgeproxy.cache.reflector import Reflector, ReflectorSettings
from edgeproxy.cache.resourcetypes import ResourceTypes
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.cache.watchlist import WatchListSupport
from edgeproxy.kube.objects import ObjectRecord, object_key, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.storage.journal import Journal, StoredScope
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

# What can make a journal entry unusable: its metadata, an object, or its RV.
_UNREADABLE = (msgspec.DecodeError, msgspec.ValidationError, ValueError)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    # Events kept per scope for watch resume (kube's watch cache keeps ~75 s).
    history: int = 10_000
    # A reflector with no watcher and no list for this long is stopped.
    idle_seconds: float = 300.0
    # Listing the same scope this many times starts a reflector for it.
    lists_before_reflector: int = 2
    # Sync scopes with watch-list requests where upstream does them (watchlist.py).
    watch_list: bool = True
    reflector: ReflectorSettings = field(default_factory=ReflectorSettings)
    # The budgets; budget.py says why these defaults. None: the disk is not bounded.
    max_memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_disk_bytes: int | None = DEFAULT_DISK_BYTES
    watcher_max_bytes: int = DEFAULT_WATCHER_BYTES
    watchers_max_bytes: int = DEFAULT_WATCHERS_BYTES
    # A watcher past its own bound is cut off if still past it this much later:
    # changes come in bursts (a relist after an outage sends its whole
    # difference at once) that a reading client drains in milliseconds; one
    # still behind after 2 s is not keeping up.
    watcher_grace_seconds: float = 2.0
    # Non-resource answers kept: a cluster serves a few hundred discovery and
    # openapi documents (one per group version, per representation asked for).
    # Their bytes may take at most a quarter of the memory budget.
    raw_max_entries: int = 512
    # Watch events grow scopes between the checks made after each new list.
    budget_check_seconds: float = 1.0
    # A change is served once the journal has committed it (store.py), which
    # takes milliseconds. A disk that has not committed it after this long
    # (stalled, not failing: a failure is reported at once) no longer holds
    # clients back: they get it from memory, and the log says so.
    durable_wait_seconds: float = 1.0
    # Bytes queued for the journal before new lists wait for the disk: an 8 s
    # backlog on slow flash (4 MB/s), a tenth of a second on a fast disk.
    journal_backlog_bytes: int = 32 * 1024 * 1024


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

    def scope(self) -> Scope:
        return Scope(
            self.group,
            self.version,
            self.resource,
            self.namespace,
            self.label_selector,
            self.field_selector,
        )


@dataclass(slots=True)
class _OnDisk:
    """A scope only in the journal: enough to find it and to load it again."""

    meta: _ScopeMeta
    rv: int
    objects: int
    bytes: int
    last_used: float  # time.monotonic() of its last use


class CacheManager:
    def __init__(
        self,
        registry: ResourceRegistry,
        upstream: Upstream,
        journal: Journal | None,
        settings: CacheSettings | None = None,
        on_upstream_bytes: Callable[[int], None] | None = None,
        on_stream_bytes: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.on_upstream_bytes = on_upstream_bytes
        self.on_stream_bytes = on_stream_bytes
        self.registry = registry
        self.upstream = upstream
        self.journal = journal
        self.settings = s = settings or CacheSettings()
        self.stores: dict[Scope, ScopeStore] = {}
        self.on_disk: dict[Scope, _OnDisk] = {}
        # Scopes whose snapshot is in the journal or queued for it: only these
        # can leave memory and be loaded back.
        self._journaled: set[Scope] = set()
        # A scope's upstream reflector, or its follower of a broader one (follower.py).
        self.reflectors: dict[Scope, Reflector | Follower] = {}
        self._adoptions: set[asyncio.Task[None]] = set()
        # Which upstream servers do watch-list: learnt once for every reflector.
        self.watch_list = WatchListSupport(s.watch_list)
        self._list_counts: dict[Scope, int] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._loads: dict[Scope, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # reflectors of evicted scopes
        self.loaded_objects = 0
        # Non-resource GETs (discovery, /version, openapi) kept for offline replay.
        self.raw = RawCache(journal, s.raw_max_entries, s.max_memory_bytes // 4)
        # Types outside the built-in table, from upstream's discovery (kept in `raw`).
        self.types = ResourceTypes(registry, upstream, self.raw)
        self.watch_budget = WatchBudget(
            s.watchers_max_bytes, s.watcher_max_bytes, s.watcher_grace_seconds
        )
        self.evictions = {"memory": 0, "disk": 0}
        self.loads_from_disk = 0
        # Told of every scope evicted from memory (filtered views drop theirs).
        self.on_evict: list[Callable[[ScopeStore], None]] = []
        self._journal_touched = time.monotonic()
        self._warned_over = 0.0
        # Changes wait for the journal before clients see them (durability.py).
        self.writes = (
            DurableWrites(journal, s.durable_wait_seconds, s.journal_backlog_bytes)
            if journal is not None
            else None
        )
        # One listener for every reflector: a listener per reflector would keep
        # each stopped reflector, and its store, alive in the upstream's list.
        upstream.on_state_change(self._link_changed)

    # -- lifecycle -------------------------------------------------------------

    def load(self) -> None:
        """Restore from the journal (before serving).

        Most recently used first, as many scopes as the memory budget holds;
        the others stay on disk until a request needs them.
        """
        if self.journal is None:
            return
        wall, now = time.time(), time.monotonic()
        used = 0
        index = sorted(self.journal.index(), key=lambda i: i.last_used, reverse=True)
        # Non-resource answers first: discovery declares the types of the scopes.
        for info in index:
            if info.key.startswith(JOURNAL_PREFIX):
                stored = self.journal.read(info.key)
                if stored is not None:
                    self.raw.load(info.key, stored.meta, stored.objects.get("body", b""))
        for info in index:
            if info.key.startswith(JOURNAL_PREFIX):
                continue
            last_used = now - max(0.0, wall - info.last_used)
            try:
                meta = msgspec.json.decode(info.meta, type=_ScopeMeta)
                rv = int(info.rv)
            except _UNREADABLE as exc:
                self._unreadable(info.key, exc)
                continue
            scope = meta.scope()
            if used + estimate(info.objects, info.bytes) > self.settings.max_memory_bytes:
                self.on_disk[scope] = _OnDisk(meta, rv, info.objects, info.bytes, last_used)
                continue
            stored = self.journal.read(info.key)
            store = None if stored is None else self._restore(meta, stored)
            if store is not None:
                store.last_used = last_used
                used += footprint(store)
        log.info(
            "loaded %d scopes, %d objects from the journal (%d more scopes left on disk)",
            len(self.stores),
            self.loaded_objects,
            len(self.on_disk),
        )
        self.enforce()

    def _restore(self, meta: _ScopeMeta, stored: StoredScope) -> ScopeStore | None:
        scope = meta.scope()
        rt = self._rt_of(meta)
        try:
            records = _records(rt, stored.objects)
            rv, changed_rv = _rvs(stored)
        except _UNREADABLE as exc:
            self._unreadable(stored.key, exc)
            return None
        store = self._new_store(scope, rt)
        store.typed_items = meta.typed_items
        store.load(records, rv, changed_rv)
        self._journaled.add(scope)
        self.loaded_objects += len(records)
        return store

    def _unreadable(self, key: str, exc: Exception) -> None:
        log.warning("journal scope %s is unreadable, dropping it: %s", key, exc)
        if self.journal is not None:
            self.journal.drop(key)

    def start(self) -> None:
        self._janitor = asyncio.create_task(self._janitor_loop(), name="cache-janitor")
        if self.writes is not None:
            self.writes.attach(asyncio.get_running_loop())

    async def close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        await self.types.close()
        for task in [*self._loads.values(), *self._adoptions]:
            task.cancel()
        for store in self.stores.values():
            store.close_watchers("proxy shutting down")
        await asyncio.gather(*(r.stop() for r in self.reflectors.values()))
        self.reflectors.clear()
        await asyncio.gather(*self._stopping, *self._loads.values(), return_exceptions=True)
        if self.journal is not None:
            await self.journal.close()

    def _link_changed(self, healthy: bool) -> None:
        for reflector in list(self.reflectors.values()):
            reflector.link_changed(healthy)

    # -- resource types ----------------------------------------------------------

    def resource_type(
        self, group: str, version: str, resource: str, kind: str = "", namespaced: bool = True
    ) -> ResourceType:
        """The type as the table or cached discovery declares it (resourcetypes.py).

        Nothing declares it (offline, never seen): `kind` and `namespaced` as
        a journaled scope recorded them, else a guess.
        """
        known = self.types.known(group, version, resource)
        return known or self.types.guess(group, version, resource, kind, namespaced)

    def _rt_of(self, meta: _ScopeMeta) -> ResourceType:
        return self.resource_type(
            meta.group, meta.version, meta.resource, meta.kind, meta.namespaced
        )

    # -- scopes ------------------------------------------------------------------

    def _new_store(self, scope: Scope, rt: ResourceType) -> ScopeStore:
        store = ScopeStore(scope, rt, self.settings.history)
        store.persist = self._persist
        store.hurry = self._hurry
        self.stores[scope] = store
        return store

    def store_for(self, scope: Scope, rt: ResourceType) -> ScopeStore:
        """The scope's store, created if needed (loaded back if it is on disk only).

        A store being loaded back is not synced yet; a complete list applied
        to it meanwhile supersedes what is on disk.
        """
        store = self.stores.get(scope)
        if store is None:
            store = self._new_store(scope, rt)
            entry = self.on_disk.pop(scope, None)
            if entry is not None:
                self._load_back(store, entry)
        return store

    def covering(self, request: Scope, rt: ResourceType) -> ScopeStore | None:
        """The synced resident store that answers `request`, preferring the narrowest."""
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

    async def covering_or_load(self, request: Scope, rt: ResourceType) -> ScopeStore | None:
        """Like covering(), but a covering scope only on disk is loaded back first."""
        store = self.covering(request, rt)
        if store is not None:
            return store
        best: tuple[int, Scope, ResourceType] | None = None
        for scope, entry in self.on_disk.items():
            disk_rt = self._rt_of(entry.meta)  # what it is loaded back with
            if scope.covers(request, disk_rt.field_paths) and (
                best is None or entry.objects < best[0]
            ):
                best = (entry.objects, scope, disk_rt)
        for scope in self._loads:
            if scope.covers(request, self.stores[scope].rt.field_paths):
                best = (0, scope, self.stores[scope].rt)  # already on its way
        if best is None:
            return None
        store = self.store_for(best[1], best[2])
        await self.loaded(store)
        return store if store.synced else self.covering(request, rt)

    async def loaded(self, store: ScopeStore) -> None:
        """Wait until a store being loaded back from the journal is (or failed)."""
        task = self._loads.get(store.scope)
        if task is not None:
            await asyncio.shield(task)

    def covered_by_broader(self, scope: Scope, rt: ResourceType, rv: int) -> bool:
        """Whether a complete list of `scope` at `rv` needs no scope of its own.

        It does not when a broader synced scope holds its objects (the request's
        selectors are then applied locally, as for watches) and is at least as
        new, or is kept current by its reflector.
        """
        if scope in self.stores:
            return False
        broader = self.covering(scope, rt)
        return broader is not None and (broader.rv >= rv or broader.scope in self.reflectors)

    @contextlib.contextmanager
    def using(self, store: ScopeStore) -> Iterator[ScopeStore]:
        """Hold `store` in memory while a request awaits (e.g. a watch being set up)."""
        store.users += 1
        try:
            yield store
        finally:
            store.users -= 1

    def reflector_for(self, store: ScopeStore, seed_rv: int | None = None) -> Reflector | Follower:
        """The scope's running reflector, started if needed.

        `seed_rv`: for a scope not synced yet, take its first list at this RV
        (a client's watch RV), so that client misses nothing. A scope a
        running broader reflector covers follows that one's stream instead
        (follower.py), unless it needs such a first list.
        """
        reflector = self.reflectors.get(store.scope)
        if reflector is not None:
            return reflector
        source = source_for(store.scope, self.reflectors)
        if source is not None and (store.synced or not seed_rv):
            reflector = Follower(store, source)
            log.info("scope %s follows %s's stream", store.scope.key, source.store.scope.key)
        else:
            reflector = Reflector(
                store,
                self.upstream,
                self.settings.reflector,
                on_bytes=self.on_upstream_bytes,
                watch_list=self.watch_list,
                on_stream_bytes=self.on_stream_bytes,
            )
            if seed_rv and not store.synced:
                reflector.seed_rv = seed_rv
            log.info("started reflector for %s", store.scope.key)
        self.reflectors[store.scope] = reflector
        reflector.start()
        if isinstance(reflector, Reflector):
            task = asyncio.create_task(self._adopt(reflector), name="adopt narrower scopes")
            self._adoptions.add(task)
            task.add_done_callback(self._adoptions.discard)
        return reflector

    async def _adopt(self, source: Reflector) -> None:
        """Once `source` is synced, the narrower scopes it covers follow its stream.

        Their own upstream streams stop; followers of a reflector that now
        follows too are moved to `source`.
        """
        synced = asyncio.ensure_future(source.synced.wait())
        stopped = source.task  # a reflector stopped before it synced adopts nothing
        await asyncio.wait(
            [synced, stopped] if stopped else [synced], return_when="FIRST_COMPLETED"
        )
        synced.cancel()
        broad = source.store.scope
        if not source.synced.is_set() or self.reflectors.get(broad) is not source:
            return
        live = {id(r) for r in self.reflectors.values() if isinstance(r, Reflector)}
        for scope, reflector in sorted(
            self.reflectors.items(), key=lambda kv: isinstance(kv[1], Follower)
        ):
            store = self.stores.get(scope)
            if reflector is source or store is None or not store.synced:
                continue
            if not broad.covers(scope, source.store.rt.field_paths):
                continue
            if isinstance(reflector, Follower) and id(reflector.source) in live:
                continue  # follows a stream that still runs
            self._retire(reflector)
            live.discard(id(reflector))
            follower = Follower(store, source)
            self.reflectors[scope] = follower
            follower.start()
            log.info("scope %s now follows %s's stream", scope.key, broad.key)

    @property
    def upstream_reflectors(self) -> int:
        """Reflectors with an upstream stream of their own (not followers)."""
        return sum(1 for r in self.reflectors.values() if isinstance(r, Reflector))

    def _retire(self, reflector: Reflector | Follower) -> None:
        """Stop without waiting; its task is kept until it is done."""
        task = reflector.cancel()
        if task is not None:
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _orphaned(self, source: Reflector | Follower) -> None:
        """`source` stopped: scopes that followed it go back to their own stream."""
        for scope, follower in list(self.reflectors.items()):
            if isinstance(follower, Follower) and follower.source is source:
                self._retire(follower)
                del self.reflectors[scope]
                store = self.stores.get(scope)
                if store is not None and watched(store):
                    self.reflector_for(store)

    def note_list(self, scope: Scope) -> bool:
        """Count a forwarded list; True when the scope now deserves a reflector."""
        count = self._list_counts.get(scope, 0) + 1
        self._list_counts[scope] = count
        return count >= self.settings.lists_before_reflector

    def find_object(self, rt: ResourceType, namespace: str, name: str) -> ObjectRecord | None:
        """The newest copy of one object in any resident scope of its resource."""
        key = object_key(namespace, name)
        best: ObjectRecord | None = None
        for scope, store in self.stores.items():
            if scope.gvr != (rt.group, rt.version, rt.resource):
                continue
            record = store.objects.get(key)
            if record is not None and (best is None or record.rv > best.rv):
                best = record
        return best

    async def find_object_on_disk(
        self, rt: ResourceType, namespace: str, name: str
    ) -> ObjectRecord | None:
        """One object from the scopes only on disk (an offline get), newest scope first.

        Read from the journal without loading the scopes into memory: a get
        must not pull whole scopes back.
        """
        if self.journal is None:
            return None
        gvr = (rt.group, rt.version, rt.resource)
        candidates = sorted(
            (
                (entry.rv, scope)
                for scope, entry in self.on_disk.items()
                if scope.gvr == gvr and scope.namespace in ("", namespace)
            ),
            key=lambda c: c[0],
            reverse=True,
        )
        if not candidates:
            return None
        await self.journal.flush()
        key = object_key(namespace, name)
        for _, scope in candidates:
            stored = await asyncio.to_thread(self.journal.read, scope.key)
            raw = None if stored is None else stored.objects.get(key)
            if raw is not None:
                try:
                    return record_from_bytes(rt, raw)
                except _UNREADABLE:
                    continue
        return None

    def remember_object(self, rt: ResourceType, record: ObjectRecord) -> None:
        """Keep an object fetched by a get, for offline gets of it."""
        known = self.find_object(rt, record.namespace, record.name)
        if known is not None and known.rv >= record.rv:
            return  # a resident scope already has it, as new: no scope of its own
        scope = Scope(
            rt.group, rt.version, rt.resource, record.namespace, "", f"metadata.name={record.name}"
        )
        store = self.store_for(scope, rt)
        store.replace({record.key: record}, max(record.rv, store.rv))
        store.touch()
        self.enforce()

    # -- raw responses (discovery) ----------------------------------------------------

    def raw_get(self, key: str) -> RawEntry | None:
        return self.raw.get(key)

    def remember_raw(self, key: str, content_type: str, encoding: str, body: bytes) -> None:
        self.raw.put(key, content_type, encoding, body)

    # -- loading back ------------------------------------------------------------

    def _load_back(self, store: ScopeStore, entry: _OnDisk) -> None:
        scope = store.scope
        task = asyncio.create_task(self._read_back(store, entry), name=f"load {scope.key}")
        self._loads[scope] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._loads.get(scope) is finished:
                del self._loads[scope]

        task.add_done_callback(done)

    async def _read_back(self, store: ScopeStore, entry: _OnDisk) -> None:
        assert self.journal is not None  # scopes are on disk only with a journal
        await self.journal.flush()  # what it queued when it left memory, too
        stored = await asyncio.to_thread(self.journal.read, store.scope.key)
        if stored is None or store.complete or self.stores.get(store.scope) is not store:
            return  # gone from disk, or a fresh list got there first
        try:
            records = _records(store.rt, stored.objects)
            rv, changed_rv = _rvs(stored)
        except _UNREADABLE as exc:
            self._unreadable(stored.key, exc)
            return
        store.typed_items = entry.meta.typed_items
        store.load(records, rv, changed_rv)
        self._journaled.add(store.scope)
        reflector = self.reflectors.get(store.scope)
        if reflector is not None:
            reflector.synced.set()
        self.loads_from_disk += 1
        log.info(
            "loaded scope %s back from the journal: %d objects at RV %d",
            store.scope.key,
            len(records),
            rv,
        )
        self.enforce()

    # -- budgets -------------------------------------------------------------------

    def memory_used(self) -> int:
        return sum(footprint(s) for s in self.stores.values()) + self.raw.bytes

    def disk_used(self) -> int:
        """The journal's file in use once what is queued is committed.

        Its content (every scope's objects and every answer, as the journal
        counts them) times the file's pages in use per byte of content at the
        last commit: a 2 KB row fills a 4 KB page alone, so the file is up to
        twice its content, and that is what the disk budget is about.
        """
        resident = sum(s.bytes for s in self.stores.values() if s.synced)
        content = resident + sum(e.bytes for e in self.on_disk.values()) + self.raw.bytes
        return int(content * self._disk_per_byte())

    def _disk_per_byte(self) -> float:
        if self.journal is None:
            return 1.0
        stats = self.journal.stats()
        content, used = stats.get("bytes", 0), stats.get("used_bytes", 0)
        return max(1.0, used / content) if content > 0 and used > 0 else 1.0

    def _in_use(self, store: ScopeStore) -> bool:
        return bool(
            store.pinned
            or store.users
            or watched(store)
            or store.scope in self._loads
            # Not synced yet: its reflector is listing, or its first list is
            # journaled but not published yet.
            or (
                not store.synced
                and (store.scope in self.reflectors or store.scope in self._journaled)
            )
        )

    def enforce(self) -> None:
        """Evict what the budgets do not hold: from memory, then from disk (budget.py)."""
        s = self.settings
        used = self.memory_used()
        if used > s.max_memory_bytes:
            idle = [(st, footprint(st)) for st in self.stores.values() if not self._in_use(st)]
            for store, size in lru_victims(
                idle, lambda c: c[0].last_used, lambda c: c[1], used, s.max_memory_bytes
            ):
                used -= size
                self._evict(store, keep_on_disk=True)
                self._log_eviction("memory", store.scope, size, store.last_used, used)
            if used > s.max_memory_bytes:
                self._warn_over(used)
        if self.journal is None or s.max_disk_bytes is None:
            return
        used = self.disk_used()
        if used <= s.max_disk_bytes:
            return
        per_byte = self._disk_per_byte()
        candidates: list[tuple[Scope, float, int]] = [
            (scope, e.last_used, int(e.bytes * per_byte)) for scope, e in self.on_disk.items()
        ]
        candidates += [
            (st.scope, st.last_used, int(st.bytes * per_byte))
            for st in self.stores.values()
            if st.synced and not self._in_use(st)
        ]
        for scope, last_used, size in lru_victims(
            candidates, lambda c: c[1], lambda c: c[2], used, s.max_disk_bytes
        ):
            used -= size
            resident = self.stores.get(scope)
            if resident is not None:
                self._evict(resident, keep_on_disk=False)
            self.on_disk.pop(scope, None)
            self._journaled.discard(scope)
            self.journal.drop(scope.key)
            self._log_eviction("disk", scope, size, last_used, used)

    def _evict(self, store: ScopeStore, *, keep_on_disk: bool) -> None:
        """Take a scope out of memory; with `keep_on_disk` it is loaded back when needed."""
        scope = store.scope
        reflector = self.reflectors.pop(scope, None)
        if reflector is not None:
            self._retire(reflector)
        del self.stores[scope]
        if reflector is not None:
            self._orphaned(reflector)
        self._list_counts.pop(scope, None)
        store.persist = None  # a request still holding it must not write for it
        if keep_on_disk and scope in self._journaled:
            self.on_disk[scope] = _OnDisk(
                self._meta(store), store.rv, len(store), store.bytes, store.last_used
            )
        for listener in self.on_evict:
            listener(store)

    def _log_eviction(
        self, tier: str, scope: Scope, size: int, last_used: float, used: int
    ) -> None:
        self.evictions[tier] += 1
        limit = self.settings.max_memory_bytes if tier == "memory" else self.settings.max_disk_bytes
        kept = "kept on disk" if tier == "memory" and scope in self.on_disk else "dropped"
        log.info(
            "evicted scope %s from %s (%d bytes, unused for %.0fs, %s): %d of %s bytes used",
            scope.key,
            tier,
            size,
            time.monotonic() - last_used,
            kept,
            used,
            limit,
        )

    def _warn_over(self, used: int) -> None:
        now = time.monotonic()
        if now - self._warned_over > 60:
            self._warned_over = now
            log.warning(
                "cache memory %d bytes is over its %d-byte budget: what remains is in use "
                "(watched, filter inputs or being read)",
                used,
                self.settings.max_memory_bytes,
            )

    # -- persistence ---------------------------------------------------------------

    def _meta(self, store: ScopeStore) -> _ScopeMeta:
        scope = store.scope
        return _ScopeMeta(
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

    def _persist(
        self, store: ScopeStore, rv: int, upserts: Mapping[str, bytes], deletes: list[str] | None
    ) -> int | None:
        """Queue a store's change for the journal; the ticket to publish it at (store.py)."""
        if self.writes is None:
            return None
        if deletes is None:
            self._journaled.add(store.scope)
            meta = msgspec.json.encode(self._meta(store))
            return self.writes.snapshot(store, rv, meta, upserts)
        return self.writes.changes(store, rv, upserts, deletes)

    def _hurry(self) -> None:
        if self.writes is not None:
            self.writes.hurry()

    @property
    def published_not_durable(self) -> int:
        """Changes served before the journal had them (it failed or stalled)."""
        return 0 if self.writes is None else self.writes.published_not_durable

    async def settle(self) -> None:
        """Wait for the journal when clients outpace the disk (durability.py)."""
        if self.writes is not None:
            await self.writes.settle()

    async def _janitor_loop(self) -> None:
        idle_every = min(30.0, self.settings.idle_seconds / 2)
        next_idle = time.monotonic() + idle_every
        while True:
            await asyncio.sleep(self.settings.budget_check_seconds)
            if self.writes is not None:
                self.writes.publish_overdue()
            self.enforce()
            if time.monotonic() >= next_idle:
                self._touch_journal()
                await self._stop_idle()
                next_idle = time.monotonic() + idle_every

    def _touch_journal(self) -> None:
        """Tell the journal which scopes were used since the last time (LRU across restarts)."""
        since, self._journal_touched = self._journal_touched, time.monotonic()
        if self.journal is None:
            return
        for store in self.stores.values():
            if store.last_used > since:
                self.journal.touch(store.scope.key)

    async def _stop_idle(self) -> None:
        now = time.monotonic()
        for scope, reflector in list(self.reflectors.items()):
            store = reflector.store
            if store.pinned or watched(store) or now - store.last_used < self.settings.idle_seconds:
                continue
            log.info("stopping idle reflector for %s", scope.key)
            del self.reflectors[scope]
            await reflector.stop()
            self._orphaned(reflector)

    def seconds_since_sync(self, store: ScopeStore, now: float) -> float | None:
        """How stale a resident scope may be: seconds since upstream last confirmed it.

        0 while its watch streams over a link the probes find healthy (a quiet
        scope is current, not stale); None before its first sync in this
        process (a scope loaded from the journal, or still listing).
        """
        reflector = self.reflectors.get(store.scope)
        if reflector is not None and reflector.watching and self.upstream.healthy:
            return 0.0
        if not store.synced_at:
            return None
        return max(0.0, now - store.synced_at)


def watched(store: ScopeStore) -> bool:
    """Whether a client watches the store, or a filtered view of it."""
    return bool(store.watchers) or any(
        getattr(view, "watchers", None) for view in store.views.values()
    )


def _records(rt: ResourceType, objects: Mapping[str, bytes]) -> dict[str, ObjectRecord]:
    records = {}
    for raw in objects.values():
        record = record_from_bytes(rt, raw)
        records[record.key] = record
    return records


def _rvs(stored: StoredScope) -> tuple[int, int | None]:
    """A journaled scope's RV, and that of its last change when the journal knows it.

    A last change after the RV says nothing: store.load() replays from the
    lower of the two, so the scope is kept and resumes as if it were unknown.
    """
    return int(stored.rv), int(stored.changed_rv) if stored.changed_rv else None

"""A narrower scope fed by a broader scope's upstream stream: one stream for both.

kube-proxy watches EndpointSlices with a label selector, coredns without:
two scopes of the same objects. A client whose request a synced broader
scope covers is served from it (manager.covering), but a narrower scope
that already has its own store, or that a client asked for at an exact RV
before the broader one synced, would keep a second upstream stream of the
same objects. A `Follower` takes the place of such a scope's reflector: it
follows the broader store's published events and applies the narrower
selectors with kube's transition rules (an object that enters the selector
is ADDED, one that leaves it is DELETED, carrying its new state), so the
narrower store keeps its own RVs, history and watchers, unbroken.

The broader scope counts as watched while the narrower one is (`watchers`),
so its reflector is not stopped under it; if it stops anyway (evicted,
shut down), the manager gives the narrower scope its own reflector again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from edgeproxy.cache.broadcast import Event
from edgeproxy.cache.reflector import Reflector
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore, restamped
from edgeproxy.kube.objects import ObjectRecord

# A narrower store's RV follows the broader one's at most this often when no
# event of its own moves it: each move is a journal write.
BOOKMARK_EVERY_SECONDS = 1.0


class Follower:
    """In `CacheManager.reflectors` like a Reflector; fed by `source`, not upstream."""

    def __init__(self, store: ScopeStore, source: Reflector) -> None:
        self.store = store
        self.source = source
        self.synced = asyncio.Event()
        if store.synced:
            self.synced.set()
        self.task: asyncio.Task[None] | None = None
        self.seed_rv: int | None = None
        # What the debug inventory shows of a reflector: none of it upstream's.
        self.bytes_in = 0
        self.relists = 0
        self.watches = 0
        self.watch_lists = 0
        self.last_error = ""
        self._key = f"follower of {store.scope.key}"
        scope, broad = store.scope, source.store.scope
        self._prefix = scope.namespace + "/" if scope.namespace and not broad.namespace else ""
        self._labels = scope.labels()
        self._fields = broad.residual_fields(scope.fields())
        self._bookmarked = 0.0

    @property
    def watching(self) -> bool:
        return self.source.watching

    @property
    def watchers(self) -> bool:
        """Whether the narrower scope is watched: then so is the broader one."""
        store = self.store
        return bool(store.watchers) or any(
            getattr(view, "watchers", None) for view in store.views.values()
        )

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=self._key)

    async def stop(self) -> None:
        task = self.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel(self) -> asyncio.Task[None] | None:
        self.source.store.views.pop(self._key, None)
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        return task

    def link_changed(self, healthy: bool) -> None:
        """The source's reflector follows the link; nothing to do here."""

    async def _run(self) -> None:
        await self.source.synced.wait()
        self.source.store.views[self._key] = self
        self.rebuild()
        # Clients see it once the journal has it (store.py), as after a list.
        await self.store.published()
        self.synced.set()

    def _selects(self, record: ObjectRecord) -> bool:
        if self._prefix and not record.key.startswith(self._prefix):
            return False
        if not self._labels.matches(record.labels):
            return False
        return self._fields.empty or self._fields.matches(record.fields)

    # -- the Derived protocol (store.py): told of every published change of the source

    def rebuild(self) -> None:
        """The source's whole state: applied as a list is (the difference)."""
        source = self.source.store
        selected = {k: r for k, r in source.objects.items() if self._selects(r)}
        self.store.replace(selected, source.rv)

    def on_base_event(self, event: Event) -> None:
        store, record = self.store, event.obj
        if record.rv < event.rv:
            record = restamped(record, event.rv)
        held = store.applied(record.key)
        if event.type != "DELETED" and self._selects(record):
            store.apply_event("ADDED", record)  # MODIFIED when held
        elif event.type == "DELETED" and held is not None:
            store.apply_event("DELETED", record)
        elif held is not None and record.rv > store.applied_rv:
            # It left the selector: kube-apiserver sends a DELETED of the state
            # that matched, at the change's RV (cacher's watcher, sec. 3.6).
            store.apply_event("DELETED", restamped(held, record.rv))

    def on_base_rv(self, rv: int) -> None:
        store = self.store
        store.synced_at = self.source.store.synced_at
        now = time.monotonic()
        if rv > store.applied_rv and now - self._bookmarked >= BOOKMARK_EVERY_SECONDS:
            self._bookmarked = now
            store.bookmark(rv)


def source_for(scope: Scope, reflectors: dict[Scope, Reflector | Follower]) -> Reflector | None:
    """A running upstream reflector of a broader scope that covers `scope`, if any.

    The narrowest such scope, by objects held: its stream carries the least.
    """
    best: Reflector | None = None
    for other, reflector in reflectors.items():
        if other == scope or not isinstance(reflector, Reflector):
            continue
        if other.covers(scope, reflector.store.rt.field_paths) and (
            best is None or len(reflector.store) < len(best.store)
        ):
            best = reflector
    return best

"""One scope's state: objects as bytes, the RV they are valid at, recent events.

The store only ever moves forward along upstream's event stream: a watch
event newer than its RV, a bookmark, or a complete list (snapshot) that is
turned into the difference as ADDED/MODIFIED/DELETED events. It never
invents resourceVersions: `rv` is the last upstream RV whose every event
has been applied (ARCHITECTURE.md sec. 3). History is a bounded ring; a
watcher can resume from any RV at or after `compacted_rv`.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import msgspec

from edgeproxy.cache.broadcast import Event, TypeInfo, Watcher, fan_out
from edgeproxy.cache.rvwait import RVWaiters
from edgeproxy.cache.scope import Scope
from edgeproxy.kube.objects import ObjectRecord
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.wire import EventType

# Versions of store states, unique across stores: a scope evicted from memory and
# loaded again is a new store, and must not reuse a version of the old one
# (memoized list bodies are keyed by scope and version).
_VERSIONS = itertools.count(1)

# (scope, rv, upserts, deletes) — or a whole snapshot when deletes is None.
PersistHook = Callable[["ScopeStore", int, Mapping[str, bytes], list[str] | None], None]


class Derived(Protocol):
    """A view computed from a store (filters/views.py): told of every change."""

    def on_base_event(self, event: Event) -> None: ...

    def on_base_rv(self, rv: int) -> None: ...

    def rebuild(self) -> None: ...


class TooOld(Exception):
    """The requested RV is older than this scope's kept history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class ScopeStore:
    """Objects, RV, history and watchers of one scope."""

    def __init__(self, scope: Scope, rt: ResourceType, history_limit: int) -> None:
        self.scope = scope
        self.rt = rt
        self.types = TypeInfo(rt.kind, rt.api_version)
        self.objects: dict[str, ObjectRecord] = {}
        self._keys: list[str] = []
        self.rv = 0
        # Changes on every change of the objects; with `rv` it versions list bodies.
        self.version = 0
        # True once the store holds a complete state at `rv` (list or journal).
        self.synced = False
        # Every event with rv > compacted_rv is in `history`.
        self.compacted_rv = 0
        self.history: deque[Event] = deque()
        self.history_limit = history_limit
        # Object bytes of the events in `history` (for the memory budget).
        self.history_bytes = 0
        self.watchers: set[Watcher] = set()
        self.persist: PersistHook | None = None
        self.last_used = time.monotonic()
        self.bytes = 0
        # Bandwidth accounting: bytes received from upstream for this scope (lists
        # and watch streams) and bytes served to clients from it.
        self.bytes_from_upstream = 0
        self.bytes_served = 0
        # Whether upstream list items carry kind/apiVersion (custom resources).
        self.typed_items = False
        self._rv_waiters = RVWaiters()
        # Filtered views of this store, by chain key; each follows every change.
        self.views: dict[str, Derived] = {}
        # Names the store among views of the same scope (memoized bodies).
        self.view_key = ""
        # An input of filters: its reflector runs while the proxy does.
        self.pinned = False
        # Requests holding the store across an await (a watch being set up or
        # served): it is not evicted from memory meanwhile.
        self.users = 0

    def __len__(self) -> int:
        return len(self.objects)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    # -- reads ---------------------------------------------------------------

    def keys_from(self, start: str = "", prefix: str = "") -> Iterator[str]:
        lo = bisect.bisect_left(self._keys, max(start, prefix))
        for i in range(lo, len(self._keys)):
            key = self._keys[i]
            if prefix and not key.startswith(prefix):
                return
            yield key

    def get(self, key: str) -> ObjectRecord | None:
        return self.objects.get(key)

    def events_after(self, rv: int) -> list[Event]:
        if rv < self.compacted_rv:
            raise TooOld(rv, self.compacted_rv)
        events = list(self.history)
        idx = bisect.bisect_right([e.rv for e in events], rv)
        # A batch (a filtered view's re-filter) shares one RV: a client that
        # resumes from it may have missed part of it, so it gets all of it again.
        while idx > 0 and events[idx - 1].rv == rv and events[idx - 1].batch:
            idx -= 1
        return events[idx:]

    # -- writes --------------------------------------------------------------

    def load(self, records: Mapping[str, ObjectRecord], rv: int) -> None:
        """Start from a known state (journal or first list) without events."""
        self.version = next(_VERSIONS)
        self.objects = dict(records)
        self._keys = sorted(self.objects)
        self.bytes = sum(len(r.raw) for r in self.objects.values())
        self.rv = rv
        self.compacted_rv = rv
        self.history.clear()
        self.history_bytes = 0
        self.synced = True
        for view in list(self.views.values()):
            view.rebuild()

    def replace(self, records: Mapping[str, ObjectRecord], rv: int) -> list[Event]:
        """Apply a complete list at `rv` as the difference from the current state."""
        if not self.synced:
            self.load(records, rv)
            self._persist_snapshot()
            return []
        if rv < self.rv:
            return []  # older than what we have: nothing to learn
        changes: list[tuple[EventType, ObjectRecord, ObjectRecord | None]] = []
        for key, record in records.items():
            old = self.objects.get(key)
            if old is None:
                changes.append(("ADDED", record, None))
            elif old.rv != record.rv or old.raw != record.raw:
                changes.append(("MODIFIED", record, old))
        # ADDED/MODIFIED carry their own RVs, after our old RV. Deletions (and
        # changes without a newer RV) happened at unknown RVs up to the list's:
        # each takes the latest RV in (self.rv, rv] no other event uses. etcd
        # gives every write its own revision, so such RVs exist, and no two
        # events share one: a watch resumed from any event's RV misses nothing.
        taken = {rec.rv for _, rec, _ in changes if rec.rv > self.rv}
        free = (r for r in range(rv, self.rv, -1) if r not in taken)
        timed: list[tuple[int, EventType, ObjectRecord, ObjectRecord | None]] = [
            (rec.rv if rec.rv > self.rv else next(free, rv), t, rec, prev)
            for t, rec, prev in changes
        ]
        for key in [k for k in self.objects if k not in records]:
            old = self.objects[key]
            at = next(free, rv)
            # A DELETED carries the deletion's RV (sec. 3.4): with the old
            # object's RV a client resuming from it would go back in time.
            timed.append((at, "DELETED", restamped(old, at), old))
        timed.sort(key=lambda e: e[0])
        events = [self._apply(t, rec, prev, at) for at, t, rec, prev in timed]
        if not events and rv == self.rv:
            return events  # the same state we hold: nothing to write
        self.rv = rv
        # Journal only the difference: a list that changed nothing costs one
        # tiny write, not a rewrite of the whole scope (edge flash wears out).
        self._persist(
            {e.obj.key: e.obj.raw for e in events if e.type != "DELETED"},
            [e.obj.key for e in events if e.type == "DELETED"],
            rv,
        )
        return events

    def apply_event(self, event_type: EventType, record: ObjectRecord) -> Event | None:
        """One upstream watch event; events at or below our RV are already applied."""
        if record.rv <= self.rv:
            return None
        prev = self.objects.get(record.key)
        if event_type == "DELETED" and prev is None:
            self.rv = record.rv
            self._persist({}, [], record.rv)
            return None
        if event_type != "DELETED" and prev is not None and event_type == "ADDED":
            event_type = "MODIFIED"
        event = self._apply(event_type, record, prev, record.rv)
        self.rv = record.rv
        if event_type == "DELETED":
            self._persist({}, [record.key], record.rv)
        else:
            self._persist({record.key: record.raw}, [], record.rv)
        return event

    def bookmark(self, rv: int) -> bool:
        """Upstream promises every event up to `rv` was sent."""
        if rv <= self.rv:
            return False
        self.rv = rv
        self._persist({}, [], rv)
        return True

    def _apply(
        self,
        event_type: EventType,
        record: ObjectRecord,
        prev: ObjectRecord | None,
        rv: int,
        *,
        batch: bool = False,
    ) -> Event:
        key = record.key
        self.version = next(_VERSIONS)
        if event_type == "DELETED":
            if key in self.objects:
                self.bytes -= len(self.objects.pop(key).raw)
                del self._keys[bisect.bisect_left(self._keys, key)]
        else:
            if key not in self.objects:
                bisect.insort(self._keys, key)
            else:
                self.bytes -= len(self.objects[key].raw)
            self.objects[key] = record
            self.bytes += len(record.raw)
        event = Event(event_type, rv, record, prev, batch=batch)
        self.history.append(event)
        self.history_bytes += len(record.raw)
        while len(self.history) > self.history_limit:
            old = self.history.popleft()
            self.compacted_rv = old.rv
            self.history_bytes -= len(old.obj.raw)
        fan_out(self.watchers, event)
        for view in list(self.views.values()):
            view.on_base_event(event)
        return event

    async def wait_for_rv(self, rv: int, wait_seconds: float) -> bool:
        """Wait until the store has reached `rv`; False on timeout."""
        return await self._rv_waiters.wait(self.rv, rv, wait_seconds)

    def _wake_waiters(self) -> None:
        self._rv_waiters.notify(self.rv)

    def _persist(self, upserts: Mapping[str, bytes], deletes: list[str], rv: int) -> None:
        for view in list(self.views.values()):
            view.on_base_rv(rv)
        self._wake_waiters()
        if self.persist is not None:
            self.persist(self, rv, upserts, deletes)

    def _persist_snapshot(self) -> None:
        self._wake_waiters()
        if self.persist is not None:
            self.persist(self, self.rv, {k: r.raw for k, r in self.objects.items()}, None)

    def close_watchers(self, reason: str) -> None:
        for watcher in list(self.watchers):
            watcher.close(reason)
        self.watchers.clear()


def restamped(record: ObjectRecord, rv: int) -> ObjectRecord:
    """`record` with metadata.resourceVersion set to `rv`."""
    obj = msgspec.json.decode(record.raw)
    obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return dataclasses.replace(record, rv=rv, raw=msgspec.json.encode(obj))

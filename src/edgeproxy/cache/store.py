"""One scope's state: objects as bytes, the RV they are valid at, recent events.

The store only ever moves forward along upstream's event stream: a watch
event newer than its RV, a bookmark, or a complete list (snapshot) that is
turned into the difference as ADDED/MODIFIED/DELETED events. It never
invents resourceVersions: `rv` is the last upstream RV whose every event
has been applied (ARCHITECTURE.md sec. 3). History is a bounded ring; a
watcher can resume from any RV at or after `compacted_rv`.

Clients only ever see what is durable. A change is applied at once (the
reflector diffs and resumes from `applied_rv`), but it is *published* --
objects, `rv`, history, watchers, filtered views -- only once the journal has
committed it (`persist` returns the journal's ticket for it; the cache
manager calls `publish_through` when that ticket is committed). Otherwise a
kill -9 between sending RV X to a client and committing X would bring the
proxy back older than X, and an informer relisting "not older than X" would
go back in time (recent objects look deleted). Without a journal, or while
it cannot write, changes are published at once: then memory is all there is.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
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
# Returns the journal's ticket for the write, to publish the change once that
# ticket is committed; None to publish it at once.
PersistHook = Callable[["ScopeStore", int, Mapping[str, bytes], list[str] | None], int | None]


@dataclass(slots=True)
class _Staged:
    """Changes applied but not published: waiting for the journal to commit `ticket`."""

    ticket: int
    rv: int
    events: list[Event]
    # A complete state (the scope's first list), published as load() or as a diff.
    state: dict[str, ObjectRecord] | None
    number: int  # the store's count of changes staged so far, this one included
    since: float  # time.monotonic() it was staged


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
        # Every upstream event up to here is applied, published or not (>= rv).
        self.applied_rv = 0
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
        # time.monotonic() upstream last confirmed the scope (a list, a watch
        # answered, an event or bookmark); 0: not in this process.
        self.synced_at = 0.0
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
        # Applied, not yet durable: published in order as the journal commits.
        self._staged: deque[_Staged] = deque()
        # The applied state where it differs from the published one (None:
        # deleted); with _overlay_whole, the applied state is the overlay alone.
        self._overlay: dict[str, ObjectRecord | None] = {}
        self._overlay_whole = False
        self._numbered = 0  # changes staged so far
        self._published = RVWaiters()  # waiting for the change numbered N to be published
        # Asks the journal to commit now: someone waits for what is staged.
        self.hurry: Callable[[], None] | None = None

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

    def load(
        self, records: Mapping[str, ObjectRecord], rv: int, changed_rv: int | None = None
    ) -> None:
        """Start from a known state (journal or first list) without events.

        `changed_rv`: the RV of the state's last change, when known (the
        journal's): a watch from any RV since then has missed nothing, so it
        resumes there without a 410 -- a client's RV after a restart is often
        a bookmark's, newer than the last change.
        """
        self.version = next(_VERSIONS)
        self.objects = dict(records)
        self._keys = sorted(self.objects)
        self.bytes = sum(len(r.raw) for r in self.objects.values())
        self.rv = rv
        self.applied_rv = max(self.applied_rv, rv) if self._staged else rv
        self.compacted_rv = rv if changed_rv is None else min(rv, changed_rv)
        self.history.clear()
        self.history_bytes = 0
        self.synced = True
        for view in list(self.views.values()):
            view.rebuild()

    def replace(self, records: Mapping[str, ObjectRecord], rv: int) -> list[Event]:
        """Apply a complete list at `rv` as the difference from the current state."""
        self.synced_at = time.monotonic()  # only upstream's lists come here (not the journal's)
        if not self.synced and not self._overlay_whole:
            self._stage([], rv, {k: r.raw for k, r in records.items()}, None, dict(records))
            return []
        if rv < self.applied_rv:
            return []  # older than what we have: nothing to learn
        events = _difference(self._applied, self._applied_keys(), records, self.applied_rv, rv)
        if not events and rv == self.applied_rv:
            return events  # the same state we hold: nothing to write
        # Journal only the difference: a list that changed nothing costs one
        # tiny write, not a rewrite of the whole scope (edge flash wears out).
        self._stage(
            events,
            rv,
            {e.obj.key: e.obj.raw for e in events if e.type != "DELETED"},
            [e.obj.key for e in events if e.type == "DELETED"],
        )
        return events

    def apply_event(self, event_type: EventType, record: ObjectRecord) -> Event | None:
        """One upstream watch event; events at or below our RV are already applied."""
        if record.rv <= self.applied_rv:
            return None
        prev = self._applied(record.key)
        if event_type == "DELETED" and prev is None:
            self._stage([], record.rv, {}, [])
            return None
        if event_type != "DELETED" and prev is not None and event_type == "ADDED":
            event_type = "MODIFIED"
        event = Event(event_type, record.rv, record, prev)
        if event_type == "DELETED":
            self._stage([event], record.rv, {}, [record.key])
        else:
            self._stage([event], record.rv, {record.key: record.raw}, [])
        return event

    def bookmark(self, rv: int) -> bool:
        """Upstream promises every event up to `rv` was sent."""
        if rv <= self.applied_rv:
            return False
        self._stage([], rv, {}, [])
        return True

    # -- applied, then published once durable ----------------------------------

    def applied(self, key: str) -> ObjectRecord | None:
        """The object in the applied state (published or not), if held."""
        return self._applied(key)

    def _applied(self, key: str) -> ObjectRecord | None:
        if key in self._overlay:
            return self._overlay[key]
        return None if self._overlay_whole else self.objects.get(key)

    def _applied_keys(self) -> list[str]:
        if self._overlay_whole:
            return [k for k, r in self._overlay.items() if r is not None]
        keys = [k for k in self.objects if k not in self._overlay]
        keys += [k for k, r in self._overlay.items() if r is not None]
        return keys

    @property
    def complete(self) -> bool:
        """Holds a complete state, published (`synced`) or on its way to the journal."""
        return self.synced or self._overlay_whole

    @property
    def staged(self) -> int:
        """Changes applied and not yet published."""
        return len(self._staged)

    @property
    def staged_since(self) -> float | None:
        """time.monotonic() the oldest change not yet published was staged."""
        return self._staged[0].since if self._staged else None

    def _stage(
        self,
        events: list[Event],
        rv: int,
        upserts: Mapping[str, bytes],
        deletes: list[str] | None,
        state: dict[str, ObjectRecord] | None = None,
    ) -> None:
        """Journal a change and publish it now, or once the journal has committed it."""
        ticket = self.persist(self, rv, upserts, deletes) if self.persist is not None else None
        self.applied_rv = max(self.applied_rv, rv)
        self._numbered += 1
        unit = _Staged(ticket or 0, rv, events, state, self._numbered, time.monotonic())
        if ticket is None and not self._staged:
            self._publish(unit)  # nothing to wait for
            return
        if ticket is None:  # not journaled, but after what is: published with it
            unit.ticket = self._staged[-1].ticket
        if state is not None:
            self._overlay = dict(state)
            self._overlay_whole = True
        else:
            for event in events:
                self._overlay[event.obj.key] = None if event.type == "DELETED" else event.obj
        self._staged.append(unit)
        # A first state is awaited by whoever listed it; other changes only when a
        # client waits for them: else the group commit's interval batches them.
        waited = self.watchers or self._rv_waiters or self._published or self._watched_views()
        if self.hurry is not None and (waited or state is not None):
            self.hurry()

    def _watched_views(self) -> bool:
        return any(getattr(view, "watchers", None) for view in self.views.values())

    def publish_through(self, ticket: int) -> int:
        """Publish what waited for journal tickets up to `ticket`; how many changes."""
        done = 0
        while self._staged and self._staged[0].ticket <= ticket:
            self._publish(self._staged.popleft())
            done += 1
        if not self._staged:
            self._overlay = {}
            self._overlay_whole = False
        return done

    def publish_all(self) -> int:
        """Publish everything staged, durable or not (the journal cannot write)."""
        return self.publish_through(self._staged[-1].ticket) if self._staged else 0

    def _publish(self, unit: _Staged) -> None:
        if self.synced and unit.rv < self.rv:
            pass  # a newer state was loaded meanwhile (read back from disk): nothing to add
        elif unit.state is not None and not self.synced:
            self.load(unit.state, unit.rv)
        else:
            if unit.state is not None:  # a state loaded meanwhile: go on from it
                for event in _difference(
                    self.objects.get, list(self.objects), unit.state, self.rv, unit.rv
                ):
                    self._publish_event(event)
            for event in unit.events:
                self._publish_event(event)
        self.rv = max(self.rv, unit.rv)
        for view in list(self.views.values()):
            view.on_base_rv(self.rv)
        self._wake_waiters()
        self._published.notify(unit.number)

    def _apply(
        self,
        event_type: EventType,
        record: ObjectRecord,
        prev: ObjectRecord | None,
        rv: int,
        *,
        batch: bool = False,
    ) -> Event:
        """Make and publish one event now (filtered views: they have nothing to wait for)."""
        event = Event(event_type, rv, record, prev, batch=batch)
        self._publish_event(event)
        return event

    def _publish_event(self, event: Event) -> None:
        key, record, event_type = event.obj.key, event.obj, event.type
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
        self.history.append(event)
        self.history_bytes += len(record.raw)
        while len(self.history) > self.history_limit:
            old = self.history.popleft()
            self.compacted_rv = old.rv
            self.history_bytes -= len(old.obj.raw)
        fan_out(self.watchers, event)
        for view in list(self.views.values()):
            view.on_base_event(event)

    async def wait_for_rv(self, rv: int, wait_seconds: float | None) -> bool:
        """Wait until the store has published `rv`; False on timeout (None: no timeout)."""
        if rv > self.rv and self._staged and self.hurry is not None:
            self.hurry()
        return await self._rv_waiters.wait(self.rv, rv, wait_seconds)

    async def published(self) -> None:
        """Wait until everything applied so far is published (durable)."""
        if self._staged:
            if self.hurry is not None:
                self.hurry()
            await self._published.wait(self._staged[0].number - 1, self._numbered, None)

    def _wake_waiters(self) -> None:
        self._rv_waiters.notify(self.rv)

    def _persist(self, upserts: Mapping[str, bytes], deletes: list[str], rv: int) -> None:
        """A filtered view's RV moved (views publish at once: nothing of theirs is journaled)."""
        for view in list(self.views.values()):
            view.on_base_rv(rv)
        self._wake_waiters()
        if self.persist is not None:
            self.persist(self, rv, upserts, deletes)

    def close_watchers(self, reason: str) -> None:
        for watcher in list(self.watchers):
            watcher.close(reason)
        self.watchers.clear()


def restamped(record: ObjectRecord, rv: int) -> ObjectRecord:
    """`record` with metadata.resourceVersion set to `rv`."""
    obj = msgspec.json.decode(record.raw)
    obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return dataclasses.replace(record, rv=rv, raw=msgspec.json.encode(obj))


def _difference(
    current: Callable[[str], ObjectRecord | None],
    keys: Iterable[str],
    records: Mapping[str, ObjectRecord],
    from_rv: int,
    rv: int,
) -> list[Event]:
    """The events that take the state `current` at `from_rv` to `records` at `rv`."""
    changes: list[tuple[EventType, ObjectRecord, ObjectRecord | None]] = []
    for key, record in records.items():
        old = current(key)
        if old is None:
            changes.append(("ADDED", record, None))
        elif old.rv != record.rv or old.raw != record.raw:
            changes.append(("MODIFIED", record, old))
    # ADDED/MODIFIED carry their own RVs, after our old RV. Deletions (and
    # changes without a newer RV) happened at unknown RVs up to the list's:
    # each takes the latest RV in (from_rv, rv] no other event uses. etcd
    # gives every write its own revision, so such RVs exist, and no two
    # events share one: a watch resumed from any event's RV misses nothing.
    taken = {rec.rv for _, rec, _ in changes if rec.rv > from_rv}
    free = (r for r in range(rv, from_rv, -1) if r not in taken)
    timed: list[tuple[int, EventType, ObjectRecord, ObjectRecord | None]] = [
        (rec.rv if rec.rv > from_rv else next(free, rv), t, rec, prev) for t, rec, prev in changes
    ]
    for key in [k for k in keys if k not in records]:
        old = current(key)
        assert old is not None
        at = next(free, rv)
        # A DELETED carries the deletion's RV (sec. 3.4): with the old
        # object's RV a client resuming from it would go back in time.
        timed.append((at, "DELETED", restamped(old, at), old))
    timed.sort(key=lambda e: e[0])
    return [Event(t, at, rec, prev) for at, t, rec, prev in timed]

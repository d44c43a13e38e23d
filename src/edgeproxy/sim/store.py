"""The simulator's in-memory store: objects, resource versions, history, watchers.

One global counter hands out resourceVersions like etcd revisions. Each
resource keeps its objects as `ObjectRecord`s (raw bytes + selector inputs)
in key order, a bounded ring of recent events, and its watchers. The ring is
the simulator's MVCC window: it serves watches that resume from an RV,
paginated lists at the first page's snapshot, and Exact-RV lists; anything
older gets 410 (k8s-api-semantics.md sec. 2.2, 3.5).

All methods run on the event loop thread; a mutation and its fan-out happen
without an await in between, so a watcher registered at RV X sees exactly
the events after X.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Iterator

from edgeproxy.cache.broadcast import Event, Watcher, fan_out
from edgeproxy.cache.rvwait import RVWaiters
from edgeproxy.cache.store import TooOld
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.kube.wire import EventType

__all__ = ["Event", "ResourceStore", "Store", "TooOld", "Watcher"]

log = logging.getLogger(__name__)


class ResourceStore:
    """Objects, history and watchers of one resource type."""

    def __init__(self, rt: ResourceType, history_limit: int) -> None:
        self.rt = rt
        self.objects: dict[str, ObjectRecord] = {}
        self._keys: list[str] = []
        self.history: deque[Event] = deque()
        self.history_limit = history_limit
        # Every event with rv > compacted_rv is still in `history`.
        self.compacted_rv = 0
        self.watchers: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self.objects)

    def get(self, key: str) -> ObjectRecord | None:
        return self.objects.get(key)

    def keys_from(self, start: str = "", prefix: str = "") -> Iterator[str]:
        """Keys in order, from `start` (inclusive), restricted to `prefix`."""
        lo = bisect.bisect_left(self._keys, max(start, prefix))
        for i in range(lo, len(self._keys)):
            key = self._keys[i]
            if prefix and not key.startswith(prefix):
                return
            yield key

    def apply(self, event: Event) -> None:
        key = event.obj.key
        if event.type == "DELETED":
            del self.objects[key]
            del self._keys[bisect.bisect_left(self._keys, key)]
        else:
            if key not in self.objects:
                bisect.insort(self._keys, key)
            self.objects[key] = event.obj
        self.history.append(event)
        while len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv
        fan_out(self.watchers, event)

    def compact(self, rv: int) -> None:
        self.history.clear()
        self.compacted_rv = rv

    def check_available(self, rv: int) -> None:
        if rv < self.compacted_rv:
            raise TooOld(rv, self.compacted_rv)

    def events_after(self, rv: int) -> list[Event]:
        """History events with RV > rv; raises TooOld if some were compacted."""
        self.check_available(rv)
        idx = bisect.bisect_right([e.rv for e in self.history], rv) if self.history else 0
        return list(self.history)[idx:]

    def snapshot(self, rv: int) -> dict[str, ObjectRecord]:
        """The objects as they were at `rv` (undoing later events from history)."""
        later = self.events_after(rv)
        if not later:
            return self.objects
        state = dict(self.objects)
        for event in reversed(later):
            if event.type == "ADDED":
                state.pop(event.obj.key, None)
            elif event.prev is not None:
                state[event.obj.key] = event.prev
        return state


class Store:
    """All resources, one RV counter."""

    def __init__(self, registry: ResourceRegistry, history_limit: int = 10_000) -> None:
        self.registry = registry
        self.rv = 1
        self._resources = {rt: ResourceStore(rt, history_limit) for rt in registry}
        self._rv_waiters = RVWaiters()

    def resource(self, rt: ResourceType) -> ResourceStore:
        return self._resources[rt]

    def resources(self) -> list[ResourceStore]:
        return list(self._resources.values())

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def commit(
        self,
        rt: ResourceType,
        event_type: EventType,
        raw: bytes,
        prev: ObjectRecord | None,
        rv: int,
    ) -> Event:
        """Record a change whose bytes already carry `rv`, and fan it out."""
        event = Event(event_type, rv, record_from_bytes(rt, raw), prev)
        self._resources[rt].apply(event)
        self._notify()
        return event

    def _notify(self) -> None:
        self._rv_waiters.notify(self.rv)

    async def wait_for_rv(self, rv: int, wait_seconds: float) -> bool:
        """Wait until the store has reached `rv`; False on timeout."""
        return await self._rv_waiters.wait(self.rv, rv, wait_seconds)

    def compact(self) -> None:
        for res in self._resources.values():
            res.compact(self.rv)
        log.info("history compacted at resourceVersion %d", self.rv)

    def close_watchers(self, reason: str) -> int:
        count = 0
        for res in self._resources.values():
            for watcher in list(res.watchers):
                watcher.close(reason)
                count += 1
            res.watchers.clear()
        return count

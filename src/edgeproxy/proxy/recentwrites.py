"""Read-your-writes for cached reads of writes made through the proxy."""

from __future__ import annotations

import time

from edgeproxy.cache.store import ScopeStore
from edgeproxy.kube.objects import ObjectRecord
from edgeproxy.kube.resources import ResourceType


class RecentWrites:
    """Writes made through the proxy, for read-your-writes on cached reads.

    A cached read waits only for writes its scope can see: the written object
    matches the scope's selectors, or the scope holds it now (the write may
    move it out). Entries expire after `ttl` seconds: by then the reflector
    has applied them or the read has stopped waiting anyway.
    """

    def __init__(self, ttl: float = 30.0, limit: int = 10_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._writes: dict[tuple[str, str, str, str], tuple[int, ObjectRecord, float]] = {}

    def add(self, rt: ResourceType, record: ObjectRecord) -> None:
        now = time.monotonic()
        if len(self._writes) >= self.limit:
            self._writes = {k: v for k, v in self._writes.items() if now - v[2] < self.ttl}
        key = (rt.group, rt.version, rt.resource, record.key)
        old = self._writes.get(key)
        if old is None or old[0] < record.rv:
            self._writes[key] = (record.rv, record, now)

    def pending_for(self, rt: ResourceType, store: ScopeStore) -> int:
        """The newest RV among recent writes `store` would see, 0 if none."""
        if not self._writes:
            return 0
        now = time.monotonic()
        scope = store.scope
        gvr = (rt.group, rt.version, rt.resource)
        labels = fields = None
        want = 0
        for (group, version, resource, key), (rv, record, at) in list(self._writes.items()):
            if now - at >= self.ttl:
                del self._writes[(group, version, resource, key)]
                continue
            if (group, version, resource) != gvr or rv <= store.rv or rv <= want:
                continue
            if scope.namespace and record.namespace != scope.namespace:
                continue
            if key not in store.objects:
                if labels is None or fields is None:
                    labels, fields = scope.labels(), scope.fields()
                if not (
                    labels.matches(record.labels)
                    and (fields.empty or fields.matches(record.fields))
                ):
                    continue
            want = rv
        return want

"""Memoized response bodies for lists served from a scope's store.

A list served locally is a pure function of the store's state and the
request's shape (namespace, selectors, page, representation, encoding), so
repeated reads — the resourceusage loop, every kubelet's relist — are served
from bytes built once per store version (ARCHITECTURE.md sec. 2). Bounded by
total bytes, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class BodyMemo:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_entries: int = 1024) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        body = self._entries.get(key)
        if body is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        if len(body) > self.max_bytes // 4:
            return  # one huge body must not flush everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._entries[key] = body
        self.bytes += len(body)
        while self._entries and (
            self.bytes > self.max_bytes or len(self._entries) > self.max_entries
        ):
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)

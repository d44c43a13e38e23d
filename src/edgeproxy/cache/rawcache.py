"""Non-resource answers (discovery, /version, /openapi) kept for offline replay.

Clients read discovery before anything else (kubectl, every informer
factory): offline they get the last answer upstream gave. An answer depends
on the path and the representation asked for (`Accept`: aggregated discovery
v2, protobuf or JSON openapi), not on the query: client-go adds `timeout=32s`
to discovery, openapi v3 adds `hash=` (upstream redirects a stale one), and a
client may add anything. So entries are keyed by path and Accept: the answer
to `/api/v1?timeout=32s` also answers `/api/v1` offline, and `/version?n=1`,
`?n=2`, ... are one entry, not one each.

Entries are capped in number and bytes, least recently used out first, in
memory and in the journal alike (ARCHITECTURE.md sec. 5).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import msgspec

from edgeproxy.storage.journal import Journal

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "raw|"


@dataclass(frozen=True, slots=True)
class RawEntry:
    content_type: str
    encoding: str
    body: bytes


def raw_key(path: str, accept: str) -> str:
    """The cache key of a non-resource GET: its path (no query) and its Accept header."""
    return f"{path.partition('?')[0]}|{accept}"


class RawCache:
    def __init__(self, journal: Journal | None, max_entries: int, max_bytes: int) -> None:
        self.journal = journal
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, RawEntry] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> RawEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def peek(self, key: str) -> bool:
        return key in self._entries

    def put(self, key: str, content_type: str, encoding: str, body: bytes) -> None:
        entry = RawEntry(content_type, encoding, body)
        old = self._entries.get(key)
        if old == entry:
            self._entries.move_to_end(key)
            return
        if len(body) > self.max_bytes:
            log.info(
                "not caching %s: %d bytes, over the %d-byte cap", key, len(body), self.max_bytes
            )
            self._remove(key, "replaced by an answer over the cap")
            return
        self._store(key, entry)
        if self.journal is not None:
            meta = msgspec.json.encode({"contentType": content_type, "contentEncoding": encoding})
            self.journal.put_snapshot(JOURNAL_PREFIX + key, "0", meta, {"body": body})
        self._trim()

    def load(self, journal_key: str, meta: bytes, body: bytes) -> None:
        """One entry from the journal at startup, most recently used first.

        Entries stored by earlier versions under their full query are filed
        under their path; of several, the first loaded (the newest) is kept.
        """
        stored = journal_key[len(JOURNAL_PREFIX) :]
        path_qs, sep, accept = stored.partition("|")
        key = raw_key(path_qs, accept) if sep else stored
        try:
            info = msgspec.json.decode(meta)
            entry = RawEntry(
                str(info.get("contentType", "application/json")),
                str(info.get("contentEncoding", "")),
                body,
            )
        except (msgspec.DecodeError, AttributeError):
            log.warning("journal entry %s is unreadable, dropping it", journal_key)
            self._drop_stored(journal_key)
            return
        if key in self._entries or len(self._entries) >= self.max_entries:
            self._drop_stored(journal_key)
            return
        if self.bytes + len(body) > self.max_bytes:
            self._drop_stored(journal_key)
            return
        self._entries[key] = entry
        self._entries.move_to_end(key, last=False)  # loaded newest first: this one is older
        self.bytes += len(body)
        if journal_key != JOURNAL_PREFIX + key:
            self._drop_stored(journal_key)
            if self.journal is not None:
                self.journal.put_snapshot(JOURNAL_PREFIX + key, "0", meta, {"body": body})

    def _store(self, key: str, entry: RawEntry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self._entries[key] = entry
        self.bytes += len(entry.body)

    def _trim(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            key = next(iter(self._entries))
            self._remove(key, "least recently used")

    def _remove(self, key: str, why: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= len(entry.body)
        self.evictions += 1
        self._drop_stored(JOURNAL_PREFIX + key)
        log.info(
            "evicted non-resource answer %s (%d bytes, %s; %d entries, %d bytes kept)",
            key,
            len(entry.body),
            why,
            len(self._entries),
            self.bytes,
        )

    def _drop_stored(self, journal_key: str) -> None:
        if self.journal is not None:
            self.journal.drop(journal_key)

"""The budgets' pure parts: byte quantities, LRU victims, non-resource keys and caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproxy.cache.budget import estimate, footprint, lru_victims
from edgeproxy.cache.rawcache import JOURNAL_PREFIX, RawCache, raw_key
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.kube.objects import record_from_bytes
from edgeproxy.kube.quantity import parse_bytes
from edgeproxy.kube.resources import ResourceRegistry
from edgeproxy.storage.journal import Journal

CONFIGMAPS = ResourceRegistry().get("", "v1", "configmaps")
assert CONFIGMAPS is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1073741824", 1073741824),
        (4096, 4096),
        ("512Mi", 512 * 1024**2),
        ("1Gi", 1024**3),
        ("1.5Gi", 1610612736),
        ("64Ki", 65536),
        ("500M", 500_000_000),
        ("2k", 2000),
        ("1Ti", 1024**4),
        (" 3Mi ", 3 * 1024**2),
        ("0", 0),
    ],
)
def test_parse_bytes(value: str | int, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    "value", ["", "Mi", "1.5", "1.0005k", "-1", "-1Mi", "1e9", "1mi", "1MB", "1Zi", "lots", True]
)
def test_parse_bytes_refuses(value: str | int) -> None:
    with pytest.raises(ValueError):
        parse_bytes(value)


def test_lru_victims_take_the_least_recently_used_until_within() -> None:
    entries = [("a", 3.0, 10), ("b", 1.0, 10), ("c", 2.0, 10), ("d", 4.0, 10)]
    pick = lru_victims(entries, lambda e: e[1], lambda e: e[2], used=35, limit=20)
    assert [e[0] for e in pick] == ["b", "c"]
    assert lru_victims(entries, lambda e: e[1], lambda e: e[2], used=20, limit=20) == []
    # Not enough candidates (the rest is in use): all of them.
    assert len(lru_victims(entries, lambda e: e[1], lambda e: e[2], used=100, limit=0)) == 4


def test_footprint_counts_objects_history_and_overhead() -> None:
    store = ScopeStore(Scope("", "v1", "configmaps", "ns"), CONFIGMAPS, history_limit=2)
    empty = footprint(store)
    raw = b'{"metadata":{"name":"a","namespace":"ns","resourceVersion":"5"},"data":{"k":"v"}}'
    record = record_from_bytes(CONFIGMAPS, raw)
    store.load({record.key: record}, 5)
    assert footprint(store) == empty + len(raw) + estimate(1, 0) - estimate(0, 0)
    for rv in (6, 7, 8):
        changed = raw.replace(b'"5"', f'"{rv}"'.encode())
        store._apply("MODIFIED", record_from_bytes(CONFIGMAPS, changed), None, rv)
    # The history keeps two events: their bytes count, the dropped one's not.
    assert store.history_bytes == 2 * len(raw)
    assert footprint(store) == empty + 3 * len(raw) + estimate(1, 0) - estimate(0, 0)


def test_raw_key_ignores_the_query() -> None:
    assert raw_key("/api/v1", "application/json") == raw_key(
        "/api/v1?timeout=32s", "application/json"
    )
    assert raw_key("/api/v1", "application/json") != raw_key("/api/v1", "application/protobuf")
    assert raw_key("/version", "") != raw_key("/version/x", "")


def test_raw_cache_caps_entries_and_bytes_least_recently_used_first(tmp_path: Path) -> None:
    cache = RawCache(None, max_entries=3, max_bytes=100)
    for i in range(3):
        cache.put(f"/p{i}|", "application/json", "", b"x" * 10)
    assert cache.get("/p0|") is not None  # now the most recently used
    cache.put("/p3|", "application/json", "", b"x" * 10)
    assert len(cache) == 3 and cache.get("/p1|") is None and cache.get("/p0|") is not None
    cache.put("/big|", "application/json", "", b"x" * 90)
    assert cache.bytes <= 100 and cache.get("/big|") is not None
    assert cache.evictions >= 2
    cache.put("/huge|", "application/json", "", b"x" * 101)  # never fits: not kept
    assert cache.get("/huge|") is None and cache.bytes <= 100


async def test_raw_cache_files_old_query_keys_under_their_path(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "cache.db")
    journal.open()
    try:
        meta = b'{"contentType":"application/json","contentEncoding":""}'
        # As an earlier version stored them: the full query in the key.
        journal.put_snapshot(
            JOURNAL_PREFIX + "/api/v1?timeout=32s|application/json", "0", meta, {"body": b"new"}
        )
        journal.put_snapshot(
            JOURNAL_PREFIX + "/api/v1?timeout=1s|application/json", "0", meta, {"body": b"old"}
        )
        assert await journal.flush()
        cache = RawCache(journal, max_entries=10, max_bytes=1000)
        for key in (
            JOURNAL_PREFIX + "/api/v1?timeout=32s|application/json",
            JOURNAL_PREFIX + "/api/v1?timeout=1s|application/json",
        ):  # newest first, as the manager loads them
            stored = journal.read(key)
            assert stored is not None
            cache.load(key, stored.meta, stored.objects["body"])
        entry = cache.get(raw_key("/api/v1", "application/json"))
        assert entry is not None and entry.body == b"new" and len(cache) == 1
        assert await journal.flush()
        keys = {info.key for info in journal.index()}
        assert keys == {JOURNAL_PREFIX + "/api/v1|application/json"}
    finally:
        await journal.close()

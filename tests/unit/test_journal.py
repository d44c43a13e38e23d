"""The durable journal on a real SQLite file: round trips, coalescing, eviction, failures.

Every test runs the real writer thread against a file under tmp_path; the
crash test (kill -9 mid-write) lives in tests/fault/test_journal_crash.py.
"""

from __future__ import annotations

import asyncio
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.storage.journal import Journal, StoredScope


def as_dict(scopes: list[StoredScope]) -> dict[str, tuple[str, bytes, dict[str, bytes]]]:
    return {s.key: (s.rv, s.meta, s.objects) for s in scopes}


def reopen(path: Path) -> dict[str, tuple[str, bytes, dict[str, bytes]]]:
    j = Journal(path)
    j.open()
    try:
        return as_dict(j.load())
    finally:
        j.close_sync()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = Journal(tmp_path / "cache" / "journal.db", commit_interval=0.01)
    assert j.open() is None
    yield j
    await j.close()


async def test_round_trip(journal: Journal) -> None:
    journal.put_snapshot("s1", "10", b'{"kind":"ConfigMapList"}', {"ns/a": b"A1", "ns/b": b"B1"})
    journal.put_snapshot("s2", "11", b"{}", {"ns/x": b"X"})
    journal.put_changes("s1", "12", {"ns/c": b"C1", "ns/a": b"A2"}, ["ns/b"])
    assert await journal.flush()
    journal.put_changes("s1", "13", {}, ["ns/c"])
    journal.drop("s2")
    journal.put_snapshot("s3", "5", b"m", {})
    await journal.close()
    assert reopen(journal.path) == {
        "s1": ("13", b'{"kind":"ConfigMapList"}', {"ns/a": b"A2"}),
        "s3": ("5", b"m", {}),
    }


async def test_snapshot_replaces_scope_and_changes_without_base_are_ignored(
    journal: Journal,
) -> None:
    journal.put_snapshot("s", "1", b"m1", {"a": b"1", "b": b"1"})
    assert await journal.flush()
    journal.put_snapshot("s", "2", b"m2", {"c": b"2"})
    journal.put_changes("nobase", "3", {"a": b"3"}, [])
    assert await journal.flush()
    assert as_dict(journal.load()) == {"s": ("2", b"m2", {"c": b"2"})}
    assert journal.stats()["objects"] == 1
    assert journal.stats()["bytes"] == 1


async def test_stats_and_batching(journal: Journal) -> None:
    journal.put_snapshot("s", "0", b"", {})
    for n in range(1, 1001):
        journal.put_changes("s", str(n), {f"k{n % 10}": b"x" * n}, [])
    assert await journal.flush()
    stats = journal.stats()
    assert stats["scopes"] == 1 and stats["objects"] == 10
    assert stats["bytes"] == sum(range(991, 1001))
    assert stats["commits"] < 10  # coalesced into a few group commits, not 1001
    assert stats["errors"] == 0 and stats["last_commit_seconds"] > 0


async def test_a_committed_batch_is_not_held_while_the_writer_waits(journal: Journal) -> None:
    """After a relist the batch's bytes are the replaced objects: nothing may keep them."""
    payload = b"x" * 4096 + str(time.monotonic()).encode()  # referenced only here
    held_here = sys.getrefcount(payload)
    journal.put_snapshot("s", "1", b"", {"ns/a": payload})
    assert sys.getrefcount(payload) > held_here  # queued
    assert await journal.flush()
    deadline = time.monotonic() + 5
    # The writer thread lets go just after it answers flush(); no event says when.
    while sys.getrefcount(payload) > held_here and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert sys.getrefcount(payload) == held_here
    assert as_dict(journal.load())["s"][2] == {"ns/a": payload}


async def test_lru_eviction(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", max_bytes=250, commit_interval=0.01)
    j.open()
    for name in ("a", "b", "c"):
        j.put_snapshot(name, "1", b"", {"o": b"x" * 100})
        assert await j.flush()
        await asyncio.sleep(0.002)  # distinct last_used
    # 300 bytes > 250: the least recently used, "a", went first.
    assert sorted(s.key for s in j.load()) == ["b", "c"]
    j.touch("b")
    j.put_snapshot("d", "1", b"", {"o": b"x" * 100})
    assert await j.flush()
    assert sorted(s.key for s in j.load()) == ["b", "d"]
    assert j.evictions == 2 and j.stats()["evictions"] == 2
    assert j.stats()["bytes"] == 200
    await j.close()


async def test_permissions(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "j.db"
    j = Journal(path)
    j.open()
    j.put_snapshot("s", "1", b"", {"a": b"1"})
    assert await j.flush()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    await j.close()


async def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    garbage = b"this is not a database" * 500
    path.write_bytes(garbage)
    j = Journal(path)
    moved = j.open()
    assert moved is not None and j.recovered_from == moved
    assert moved.name.startswith("j.db.corrupt-") and moved.read_bytes() == garbage
    assert j.load() == []
    j.put_snapshot("s", "1", b"", {"a": b"1"})
    await j.close()
    assert reopen(path) == {"s": ("1", b"", {"a": b"1"})}


async def test_foreign_sqlite_file_is_moved_aside(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "j.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    j = Journal(path)
    assert j.open() is not None
    assert j.load() == []
    await j.close()


async def test_disk_full_keeps_batch_and_retries(journal: Journal) -> None:
    journal.put_snapshot("s", "1", b"", {"a": b"small"})
    assert await journal.flush()
    conn = journal._conn
    assert conn is not None
    with journal._db_lock:  # a real SQLITE_FULL: cap the file at its current size
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    journal.put_changes("s", "2", {"b": b"x" * 100_000}, ["a"])
    assert not await journal.flush()
    assert journal.stats()["errors"] >= 1
    journal.put_changes("s", "3", {"c": b"C"}, [])
    with journal._db_lock:
        conn.execute("PRAGMA max_page_count = 1073741823")
    assert await journal.flush()
    assert as_dict(journal.load()) == {"s": ("3", b"", {"b": b"x" * 100_000, "c": b"C"})}


async def test_close_commits_pending_and_later_ops_are_ignored(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", commit_interval=60)
    j.open()
    j.put_snapshot("s", "1", b"", {"a": b"1"})
    j.close_sync()
    j.put_snapshot("t", "1", b"", {})  # after close: dropped, no exception
    assert reopen(tmp_path / "j.db") == {"s": ("1", b"", {"a": b"1"})}


def test_load_performance(tmp_path: Path) -> None:
    """10k objects of 1 KB must load in well under a second; the figure is printed."""
    path = tmp_path / "j.db"
    j = Journal(path)
    j.open()
    for s in range(10):
        objs = {f"ns/obj-{i}": (b"%d" % i).ljust(1024, b"x") for i in range(1000)}
        j.put_snapshot(f"scope-{s}", "1", b"{}", objs)
    started = time.perf_counter()
    j.close_sync()
    write = time.perf_counter() - started
    j = Journal(path)
    started = time.perf_counter()
    j.open()
    opened = time.perf_counter() - started
    started = time.perf_counter()
    scopes = j.load()
    load = time.perf_counter() - started
    j.close_sync()
    assert sum(len(s.objects) for s in scopes) == 10_000
    print(f"\njournal: commit 10k x 1 KB {write:.3f}s, open {opened:.3f}s, load {load:.3f}s")
    assert load < 5


# -- coalescing against a model ---------------------------------------------

SCOPES = st.sampled_from(["s0", "s1", "s2"])
KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.binary(min_size=0, max_size=8)
OPS = st.one_of(
    st.tuples(st.just("snapshot"), SCOPES, st.dictionaries(KEYS, VALUES, max_size=4)),
    st.tuples(
        st.just("changes"),
        SCOPES,
        st.dictionaries(KEYS, VALUES, max_size=3),
        st.lists(KEYS, max_size=2),
    ),
    st.tuples(st.just("drop"), SCOPES),
    st.tuples(st.just("touch"), SCOPES),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=40))
def test_coalescing_matches_model(ops: list[tuple[object, ...]]) -> None:
    model: dict[str, tuple[str, bytes, dict[str, bytes]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.db"
        j = Journal(path, commit_interval=0.002)
        j.open()
        for rv, op in enumerate(ops):
            match op:
                case ("snapshot", str(scope), dict(objs)):
                    j.put_snapshot(scope, str(rv), b"m%d" % rv, objs)
                    model[scope] = (str(rv), b"m%d" % rv, dict(objs))
                case ("changes", str(scope), dict(ups), list(dels)):
                    j.put_changes(scope, str(rv), ups, dels)
                    if scope in model:
                        _, meta, objs = model[scope]
                        for key in dels:
                            objs.pop(key, None)
                        objs.update(ups)
                        model[scope] = (str(rv), meta, objs)
                case ("drop", str(scope)):
                    j.drop(scope)
                    model.pop(scope, None)
                case ("touch", str(scope)):
                    j.touch(scope)
                case ("flush",):
                    assert asyncio.run(j.flush())
                case ("reopen",):
                    j.close_sync()
                    j = Journal(path, commit_interval=0.002)
                    j.open()
                    assert as_dict(j.load()) == model
        j.close_sync()
        assert reopen(path) == model

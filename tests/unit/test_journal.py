"""The durable journal on a real SQLite file: round trips, coalescing, eviction, failures.

Every test runs the real writer thread against a file under tmp_path; the
crash test (kill -9 mid-write) lives in tests/fault/test_journal_crash.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.storage import database
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
    for name in (path, Path(f"{path}-wal")):
        assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    # Exclusive locking: the WAL index is in memory, there is no -shm file to leak.
    assert sorted(p.name for p in path.parent.iterdir()) == ["j.db", "j.db-wal"]
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
    # The RV of each scope's last change to its objects: a snapshot's own, or
    # that of the last changes that upserted or deleted something.
    changed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.db"
        j = Journal(path, commit_interval=0.002)
        j.open()
        for rv, op in enumerate(ops):
            match op:
                case ("snapshot", str(scope), dict(objs)):
                    j.put_snapshot(scope, str(rv), b"m%d" % rv, objs)
                    model[scope] = (str(rv), b"m%d" % rv, dict(objs))
                    changed[scope] = str(rv)
                case ("changes", str(scope), dict(ups), list(dels)):
                    j.put_changes(scope, str(rv), ups, dels)
                    if scope in model:
                        _, meta, objs = model[scope]
                        for key in dels:
                            objs.pop(key, None)
                        objs.update(ups)
                        model[scope] = (str(rv), meta, objs)
                        if ups or dels:
                            changed[scope] = str(rv)
                case ("drop", str(scope)):
                    j.drop(scope)
                    model.pop(scope, None)
                    changed.pop(scope, None)
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
        j = Journal(path)
        j.open()
        try:
            assert {s.key: s.changed_rv for s in j.load()} == changed
            assert {i.key: i.changed_rv for i in j.index()} == changed
        finally:
            j.close_sync()


async def test_bookmarks_move_the_rv_and_keep_the_last_change(journal: Journal) -> None:
    """A watch after a restart resumes from any RV since the last change (store.load)."""
    journal.put_snapshot("s", "10", b"m", {"a": b"A"})
    assert await journal.flush()
    assert [(s.rv, s.changed_rv) for s in journal.load()] == [("10", "10")]
    journal.put_changes("s", "12", {"a": b"A2"}, [])
    journal.put_changes("s", "15", {}, [])  # a bookmark, in the same batch
    assert await journal.flush()
    journal.put_changes("s", "20", {}, [])
    assert await journal.flush()
    stored = journal.read("s")
    assert stored is not None and (stored.rv, stored.changed_rv) == ("20", "12")
    journal.put_changes("s", "21", {}, ["a"])
    assert await journal.flush()
    assert [(s.rv, s.changed_rv) for s in journal.load()] == [("21", "21")]


# A journal as version 1 wrote it: no scopes.changed_rv.
SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE scopes (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, rv TEXT NOT NULL, meta BLOB NOT NULL,
    last_used REAL NOT NULL, objects INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE objects (
    scope_id INTEGER NOT NULL, okey TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (scope_id, okey)
);
CREATE TRIGGER objects_ins AFTER INSERT ON objects BEGIN UPDATE scopes
    SET objects = objects + 1, bytes = bytes + length(NEW.data) WHERE id = NEW.scope_id; END;
CREATE TRIGGER objects_del AFTER DELETE ON objects BEGIN UPDATE scopes
    SET objects = objects - 1, bytes = bytes - length(OLD.data) WHERE id = OLD.scope_id; END;
CREATE TRIGGER objects_upd AFTER UPDATE OF data ON objects BEGIN UPDATE scopes
    SET bytes = bytes + length(NEW.data) - length(OLD.data) WHERE id = NEW.scope_id; END;
INSERT INTO scopes VALUES (1, 's', '7', X'6d', 0, 0, 0);
INSERT INTO objects VALUES (1, 'a', X'41');
"""


def write_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1)
    conn.close()


async def test_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_v1(path)
    j = Journal(path, commit_interval=0.01)
    assert j.open() is None and j.durable  # nothing moved aside
    assert [(s.key, s.rv, s.changed_rv, s.objects) for s in j.load()] == [
        ("s", "7", "", {"a": b"A"})
    ]
    j.put_changes("s", "8", {}, [])  # a bookmark: the last change is still unknown
    assert await j.flush()
    assert [(s.rv, s.changed_rv) for s in j.load()] == [("8", "")]
    j.put_changes("s", "9", {"b": b"B"}, [])
    await j.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone() == (
        database.SCHEMA_VERSION,
    )
    conn.close()
    j = Journal(path)
    j.open()
    assert [(s.rv, s.changed_rv, s.objects) for s in j.load()] == [
        ("9", "9", {"a": b"A", "b": b"B"})
    ]
    j.close_sync()
    assert [name for name in os.listdir(tmp_path) if ".corrupt-" in name] == []


async def test_version_1_file_read_only_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_v1(path)
    os.mkdir(f"{path}-wal")  # read-write cannot open it (see the test above)
    j = Journal(path, commit_interval=0.01)
    assert j.open() is None
    assert j.readonly is not None
    assert [(s.rv, s.changed_rv, s.objects) for s in j.load()] == [("7", "", {"a": b"A"})]
    assert [(i.key, i.changed_rv) for i in j.index()] == [("s", "")]
    stored = j.read("s")
    assert stored is not None and stored.objects == {"a": b"A"}
    j.close_sync()


# -- durability tickets ------------------------------------------------------


async def test_tickets_are_reported_when_committed(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", commit_interval=0.01)
    j.open()
    reported: list[tuple[int, bool]] = []
    j.on_commit = lambda ticket, ok: reported.append((ticket, ok))
    first = j.put_snapshot("s", "1", b"", {"a": b"1"})
    second = j.put_changes("s", "2", {"b": b"2"}, [])
    assert second > first
    assert await j.flush()
    deadline = time.monotonic() + 5
    while not reported and time.monotonic() < deadline:  # noqa: ASYNC110 (a thread reports)
        await asyncio.sleep(0.01)
    assert reported[-1] == (second, True)
    assert j.durable and j.state() == ("ok", "")
    await j.close()


async def test_expedite_commits_before_the_interval(tmp_path: Path) -> None:
    """A client waiting for a change does not wait for the group commit's interval."""
    j = Journal(tmp_path / "j.db", commit_interval=30)
    j.open()
    committed = asyncio.Event()
    loop = asyncio.get_running_loop()
    j.on_commit = lambda ticket, ok: loop.call_soon_threadsafe(committed.set)
    j.put_snapshot("s", "1", b"", {"a": b"1"})
    started = time.monotonic()
    j.expedite()
    await asyncio.wait_for(committed.wait(), 5)
    assert time.monotonic() - started < 1
    await j.close()


async def test_failed_commit_is_reported_and_not_durable(journal: Journal) -> None:
    reported: list[tuple[int, bool]] = []
    journal.on_commit = lambda ticket, ok: reported.append((ticket, ok))
    journal.put_snapshot("s", "1", b"", {"a": b"small"})
    assert await journal.flush()
    conn = journal._conn
    assert conn is not None
    with journal._db_lock:  # a real SQLITE_FULL
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    ticket = journal.put_changes("s", "2", {"b": b"x" * 100_000}, [])
    assert not await journal.flush()
    assert (ticket, False) in reported
    assert not journal.durable
    state, reason = journal.state()
    assert state == "writes failing" and "SQLITE_FULL" in reason, reason
    with journal._db_lock:
        conn.execute("PRAGMA max_page_count = 1073741823")
    assert await journal.flush()
    assert journal.durable and journal.state() == ("ok", "")


# -- faults that are not corruption: never discard ------------------------------


async def test_unopenable_wal_opens_read_only_and_recovers(tmp_path: Path) -> None:
    """An error that says nothing about the content keeps the file: read-only, then writable."""
    path = tmp_path / "j.db"
    j = Journal(path)
    j.open()
    j.put_snapshot("s", "1", b"m", {"a": b"A"})
    await j.close()  # checkpointed: the data is in the main file, the WAL is gone
    wal = f"{path}-wal"
    os.mkdir(wal)  # the WAL cannot be opened (as root, chmod would not stop us)
    j = Journal(path, commit_interval=0.01)
    assert j.open() is None  # nothing moved aside
    assert j.readonly is not None and not j.durable
    assert j.state()[0] == "read-only"
    assert as_dict(j.load()) == {"s": ("1", b"m", {"a": b"A"})}
    j.put_changes("s", "2", {"b": b"B"}, [])  # kept in memory meanwhile
    assert not await j.flush()
    assert j.errors >= 1
    os.rmdir(wal)
    assert await j.flush()  # retried: writable again, nothing lost
    assert j.readonly is None and j.durable
    await j.close()
    assert reopen(path) == {"s": ("2", b"m", {"a": b"A", "b": b"B"})}
    assert [name for name in os.listdir(tmp_path) if ".corrupt-" in name] == []


async def test_scope_with_missing_rows_is_left_out_whole(journal: Journal) -> None:
    journal.put_snapshot("keep", "1", b"", {"a": b"1"})
    journal.put_snapshot("hole", "1", b"", {"a": b"1", "b": b"2"})
    assert await journal.flush()
    conn = journal._conn
    assert conn is not None
    with journal._db_lock:  # a row gone without the counters knowing (a lost page)
        conn.execute("DROP TRIGGER objects_del")
        conn.execute("DELETE FROM objects WHERE okey = 'b'")
    assert journal.read("hole") is None
    assert sorted(as_dict(journal.load())) == ["keep"]
    assert journal.errors >= 2


# -- a damaged page: salvage what is intact ---------------------------------------


def damaged_copy(path: Path, needle: bytes, *, other_than: bytes | None = None) -> int:
    """Write garbage over the page holding `needle` (and not `other_than`); its number."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    start = 0
    while True:
        at = data.find(needle, start)
        assert at >= 0, f"{needle!r} not in {path}"
        page = at // page_size
        content = bytes(data[page * page_size : (page + 1) * page_size])
        if other_than is None or other_than not in content:
            break
        start = at + 1
    garbage = bytes((i * 131 + 7) % 256 for i in range(page_size))
    data[page * page_size : (page + 1) * page_size] = garbage
    path.write_bytes(bytes(data))
    return page


def three_scopes(path: Path) -> dict[str, tuple[str, bytes, dict[str, bytes]]]:
    j = Journal(path)
    j.open()
    for name in ("a", "b", "c"):
        objects = {
            f"ns/{name}-obj-{i:03d}": f"MARK-{name}-{i:03d}-".encode() + b"x" * 300
            for i in range(60)
        }
        j.put_snapshot(name, str(ord(name)), b"meta-" + name.encode(), objects)
        j.close_sync()  # one commit per scope, checkpointed: rows of a scope share pages
        j = Journal(path)
        j.open()
    scopes = as_dict(j.load())
    j.close_sync()
    assert not Path(f"{path}-wal").exists()
    return scopes


async def test_damaged_table_page_costs_only_its_scope(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    before = three_scopes(path)
    damaged_copy(path, b"MARK-b-030-")
    j = Journal(path)
    moved = j.open()
    assert moved is not None and moved.name.startswith("j.db.corrupt-")
    assert j.salvage is not None
    assert sorted(j.salvage.kept) == ["a", "c"] and j.salvage.lost == ["b"]
    after = as_dict(j.load())
    assert after == {k: v for k, v in before.items() if k != "b"}
    assert j.stats()["lostScopes"] == ["b"]
    # The rebuilt file is a sound journal: it takes new writes, and they last.
    j.put_snapshot("b", "99", b"fresh", {"o": b"1"})
    await j.close()
    assert reopen(path)["b"] == ("99", b"fresh", {"o": b"1"})
    assert moved.exists()  # the damaged file is kept for a post-mortem


async def test_damaged_index_page_loses_nothing(tmp_path: Path) -> None:
    """The objects are read by a table scan when their index page is the damaged one."""
    path = tmp_path / "j.db"
    before = three_scopes(path)
    damaged_copy(path, b"ns/b-obj-030", other_than=b"MARK-b-030-")
    j = Journal(path)
    assert j.open() is not None
    assert j.salvage is not None and j.salvage.lost == []
    assert as_dict(j.load()) == before
    await j.close()


async def test_no_room_to_create_the_file_retries_later(tmp_path: Path) -> None:
    """An empty file SQLite could not write its schema into (a full disk): created later."""
    path = tmp_path / "j.db"
    path.write_bytes(b"")
    os.mkdir(f"{path}-wal")  # nothing can be written yet
    j = Journal(path, commit_interval=0.01)
    assert j.open() is None
    assert j.state()[0] == "read-only" and j.load() == [] and j.index() == []
    j.put_snapshot("s", "1", b"", {"a": b"1"})
    assert not await j.flush()
    os.rmdir(f"{path}-wal")
    assert await j.flush()
    assert j.state() == ("ok", "")
    await j.close()
    assert reopen(path) == {"s": ("1", b"", {"a": b"1"})}


async def test_wal_file_is_bounded_after_a_big_commit(tmp_path: Path) -> None:
    """A 24 MB snapshot passes through the WAL; the file must not keep that size."""
    path = tmp_path / "j.db"
    j = Journal(path, commit_interval=0.01)
    j.open()
    j.put_snapshot("big", "1", b"", {f"o{i}": b"x" * 4096 for i in range(6000)})
    assert await j.flush()
    # Later small commits: the auto-checkpoint resets the WAL, which is then cut.
    for rv in range(2, 40):
        j.put_changes("big", str(rv), {f"o{rv}": b"y" * 4096}, ())
        assert await j.flush()
    wal = os.path.getsize(f"{path}-wal")  # noqa: ASYNC240 (a test, nothing else waits)
    assert wal <= database.WAL_SIZE_LIMIT + 2 * 1024 * 1024, wal
    assert j.read("big") is not None
    await j.close()

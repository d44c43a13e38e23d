"""The durable journal: every cached scope on disk, so the proxy can answer offline after a restart.

An edge node often restarts exactly while the cloud is unreachable, and the
in-memory store dies with the process. The journal keeps, per scope, the
objects as raw JSON bytes plus the upstream RV they are valid at
(ARCHITECTURE.md sec. 3, 5).

- **Consistent prefix.** A scope's queued operations and its new RV go into
  one SQLite transaction. WAL with ``synchronous=NORMAL`` keeps that true
  across kill -9 and power loss: a commit is an append of checksummed WAL
  frames, kept whole or lost whole; power loss may lose the last commits,
  which makes the on-disk RV older, never wrong. ``FULL`` (an fsync per
  commit) would only save those last commits; the reflector resumes anyway.
- **The event loop never waits for the disk.** ``put_*``/``touch``/``drop``
  merge into an in-memory batch under a short lock; one writer thread commits
  the batch in ONE transaction every ``commit_interval``, sooner when large.
- **Bounded queue.** Operations are coalesced as they are queued (a snapshot
  supersedes what was queued for its scope; changes merge last-write-wins per
  object; the last RV wins), so however many arrive while the disk is slow,
  the queue holds at most the newest bytes of each pending (scope, object):
  no more than one extra copy of what the in-memory store holds.
- **Write errors never reach the event loop.** A failed batch is logged,
  counted and merged back *under* the newer queued operations, then retried
  with backoff as one transaction, so the next commit is again a consistent
  prefix.
- **A broken file is not fatal**: it is moved to ``<name>.corrupt-<time>``
  and the journal starts empty (it is a cache).
- ``put_changes`` to a scope with no snapshot on disk (never written, dropped,
  evicted) is ignored: changes without their base are not a state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproxy.errors import StorageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Wake the writer before the interval once this many object writes are queued:
# bounds one transaction's size (and its stall of readers of the file) to a few MB.
_BATCH_WEIGHT = 5_000
# SQLite's page cache, in KiB (`PRAGMA cache_size` = -KiB). Its 2 MiB default
# stays resident after the first big commit (+2 MB RSS with 10,000 Pods cached).
# Reads are full scans at startup and writes append to the WAL, so a small cache
# costs nothing measurable (10,000-row commit: 62 vs 66 ms).
_PAGE_CACHE_KIB = 256
# After a failed commit wait this long (doubling, capped) before retrying so a
# full disk does not spin a core; a flush() retries at once.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES ({SCHEMA_VERSION});
CREATE TABLE scopes (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, rv TEXT NOT NULL, meta BLOB NOT NULL,
    last_used REAL NOT NULL, objects INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE objects (
    scope_id INTEGER NOT NULL, okey TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (scope_id, okey)
);
-- Per-scope counters kept by the database itself, in the same transaction as the rows.
CREATE TRIGGER objects_ins AFTER INSERT ON objects BEGIN UPDATE scopes
    SET objects = objects + 1, bytes = bytes + length(NEW.data) WHERE id = NEW.scope_id; END;
CREATE TRIGGER objects_del AFTER DELETE ON objects BEGIN UPDATE scopes
    SET objects = objects - 1, bytes = bytes - length(OLD.data) WHERE id = OLD.scope_id; END;
CREATE TRIGGER objects_upd AFTER UPDATE OF data ON objects BEGIN UPDATE scopes
    SET bytes = bytes + length(NEW.data) - length(OLD.data) WHERE id = NEW.scope_id; END;
COMMIT;
"""


@dataclass(frozen=True, slots=True)
class StoredScope:
    """One scope as persisted: its objects are valid exactly at `rv`."""

    key: str
    rv: str
    meta: bytes
    objects: dict[str, bytes]
    last_used: float


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    """One persisted scope without its objects: enough to decide whether to load it."""

    key: str
    rv: str
    meta: bytes
    last_used: float
    objects: int
    bytes: int


@dataclass(slots=True)
class _Snapshot:
    rv: str
    meta: bytes
    objects: dict[str, bytes]


@dataclass(slots=True)
class _Changes:
    rv: str
    updates: dict[str, bytes | None]  # None = delete


class _Drop:
    __slots__ = ()


_Op = _Snapshot | _Changes | _Drop


@dataclass(slots=True)
class _Entry:
    """Everything queued for one scope, already coalesced."""

    op: _Op | None = None
    last_used: float | None = None
    weight: int = 0  # object writes queued, to start a commit early


def _compose(first: _Entry, then: _Entry) -> _Entry:
    """`first` followed by `then`, as one entry; may reuse `first`'s dicts."""
    a, b = first.op, then.op
    op: _Op | None
    if b is None:
        op = a
    elif isinstance(b, _Snapshot | _Drop) or a is None:
        op = b
    elif isinstance(a, _Drop):
        op = a  # changes to a dropped scope have no base: ignored
    elif isinstance(a, _Snapshot):
        for key, data in b.updates.items():
            if data is None:
                a.objects.pop(key, None)
            else:
                a.objects[key] = data
        a.rv = b.rv
        op = a
    else:
        a.updates.update(b.updates)
        a.rv = b.rv
        op = a
    last_used = then.last_used if then.last_used is not None else first.last_used
    return _Entry(op, last_used, first.weight + then.weight)


class Journal:
    """SQLite-backed durable store of scopes; see the module docstring for guarantees."""

    def __init__(
        self, path: Path, *, max_bytes: int | None = None, commit_interval: float = 0.05
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.commit_interval = commit_interval
        self.recovered_from: Path | None = None  # where a corrupt file was moved
        self.evictions = 0
        self.commits = 0
        self.errors = 0
        self.last_commit_seconds = 0.0
        self._counts = (0, 0, 0)  # scopes, objects, bytes after the last commit
        self._pages = (0, 0)  # bytes of the file's pages, and of those in use
        self._conn: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # one user of the connection at a time
        self._cond = threading.Condition()  # guards everything below
        self._pending: dict[str, _Entry] = {}
        self._weight = 0
        self._first_at = 0.0  # monotonic time the oldest pending op was queued
        self._seq = 0  # ops queued so far
        self._done_seq = 0  # ops covered by the last successful commit
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._urgent = False
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------

    def open(self) -> Path | None:
        """Open or create the database; returns where a corrupt file was moved, if any.

        Raises StorageError only when the directory or file cannot be created at
        all; the caller then runs from memory.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)  # mkdir honours umask and skips existing dirs
            try:
                self._conn = self._connect()
            except sqlite3.DatabaseError as exc:  # also: not our schema
                self._move_aside(exc)
                self._conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open journal {self.path}: {exc}") from exc
        self._refresh_counts()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()
        return self.recovered_from

    def _connect(self) -> sqlite3.Connection:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.DatabaseError(f"journal_mode is {mode!r}")
            conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode: see module docstring
            conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "schema_version" not in tables:
                if tables:
                    raise sqlite3.DatabaseError(f"unknown tables {sorted(tables)}")
                conn.executescript(_SCHEMA)
            (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
            if version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        return conn

    def _move_aside(self, exc: BaseException) -> None:
        """Rename the file (and its WAL, which must not meet a fresh file) out of the way."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        target = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        n = 1
        while target.exists():
            target = target.with_name(f"{target.name.split('~')[0]}~{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        self.recovered_from = target
        log.warning(
            "journal %s unreadable (%s); moved to %s, starting empty", self.path, exc, target
        )

    async def flush(self) -> bool:
        """Wait until everything queued so far has been committed.

        Returns False (never raises) when that commit failed; the data stays
        queued for a retry.
        """
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._thread is None:  # not open, or closed
                return not self._pending
            if self._done_seq >= self._seq:
                return True
            fut: asyncio.Future[bool] = loop.create_future()
            self._waiters.append((self._seq, loop, fut))
            self._urgent = True
            self._cond.notify()
        return await fut

    async def close(self) -> None:
        """Commit what is queued and close (graceful shutdown)."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Blocking variant of close() for non-async shutdown paths."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading ------------------------------------------------------------

    def load(self) -> list[StoredScope]:
        """Every persisted scope, read in one snapshot; called at startup."""
        try:
            return self._load()
        except sqlite3.DatabaseError as exc:
            with self._db_lock:
                self._move_aside(exc)
                self._conn = self._connect()
            self._refresh_counts()
            return []

    def _load(self) -> list[StoredScope]:
        with self._db_lock:
            conn = self._require_conn()
            conn.execute("BEGIN")  # one read snapshot for both queries
            try:
                rows = conn.execute("SELECT id, key, rv, meta, last_used FROM scopes").fetchall()
                objects: dict[int, dict[str, bytes]] = {row[0]: {} for row in rows}
                for sid, okey, data in conn.execute("SELECT scope_id, okey, data FROM objects"):
                    objects[sid][okey] = data
            finally:
                conn.execute("COMMIT")
        return [StoredScope(k, rv, meta, objects[sid], lu) for sid, k, rv, meta, lu in rows]

    def index(self) -> list[ScopeInfo]:
        """Every persisted scope, without its objects; called at startup like load()."""
        try:
            with self._db_lock:
                rows = self._require_conn().execute(
                    "SELECT key, rv, meta, last_used, objects, bytes FROM scopes"
                )
                return [ScopeInfo(*row) for row in rows.fetchall()]
        except sqlite3.DatabaseError as exc:
            with self._db_lock:
                self._move_aside(exc)
                self._conn = self._connect()
            self._refresh_counts()
            return []

    def read(self, scope: str) -> StoredScope | None:
        """One scope as last committed (flush() first to include what is queued).

        None when it is not on disk, or cannot be read now (logged, counted).
        Blocking: run it in a thread from the event loop.
        """
        try:
            with self._db_lock:
                conn = self._require_conn()
                conn.execute("BEGIN")  # the scope row and its objects from one snapshot
                try:
                    row = conn.execute(
                        "SELECT id, rv, meta, last_used FROM scopes WHERE key = ?", (scope,)
                    ).fetchone()
                    if row is None:
                        return None
                    sid, rv, meta, last_used = row
                    objects = dict(
                        conn.execute("SELECT okey, data FROM objects WHERE scope_id = ?", (sid,))
                    )
                finally:
                    conn.execute("COMMIT")
        except (sqlite3.Error, StorageError) as exc:
            self.errors += 1
            log.error("journal: cannot read scope %s: %s", scope, exc)
            return None
        return StoredScope(scope, rv, meta, objects, last_used)

    def stats(self) -> dict[str, Any]:
        """Figures as of the last commit, for metrics and the debug endpoint."""
        scopes, objects, size = self._counts
        return {
            "scopes": scopes,
            "objects": objects,
            "bytes": size,
            # On disk: the main file, and its pages in use (rows are stored in pages).
            "file_bytes": self._pages[0],
            "used_bytes": self._pages[1],
            "commits": self.commits,
            "last_commit_seconds": self.last_commit_seconds,
            "evictions": self.evictions,
            "errors": self.errors,
        }

    # -- queuing (event loop side; never blocks on I/O) ---------------------

    def put_snapshot(self, scope: str, rv: str, meta: bytes, objects: Mapping[str, bytes]) -> None:
        """Replace the whole scope with `objects`, valid at `rv`."""
        op = _Snapshot(rv, meta, dict(objects))
        self._enqueue(scope, _Entry(op, time.time(), len(op.objects) + 1))

    def put_changes(
        self, scope: str, rv: str, upserts: Mapping[str, bytes], deletes: Iterable[str]
    ) -> None:
        """Apply upserts and deletes and move the scope to `rv`, atomically."""
        updates: dict[str, bytes | None] = dict.fromkeys(deletes)
        updates.update(upserts)
        self._enqueue(scope, _Entry(_Changes(rv, updates), None, len(updates) + 1))

    def touch(self, scope: str) -> None:
        """Mark the scope as used now (LRU order for eviction)."""
        self._enqueue(scope, _Entry(None, time.time(), 1))

    def drop(self, scope: str) -> None:
        """Forget the scope."""
        self._enqueue(scope, _Entry(_Drop(), None, 1))

    def _enqueue(self, scope: str, entry: _Entry) -> None:
        with self._cond:
            if self._closing:
                log.debug("journal closed; dropping an operation on %s", scope)
                return
            if not self._pending:
                self._first_at = time.monotonic()
                self._cond.notify()
            prev = self._pending.get(scope)
            self._pending[scope] = entry if prev is None else _compose(prev, entry)
            self._seq += 1
            self._weight += entry.weight
            if self._weight >= _BATCH_WEIGHT:
                self._cond.notify()

    # -- writer thread ------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while True:
                    if self._closing and not self._pending:
                        self._resolve(self._seq, self._done_seq >= self._seq)
                        return
                    if not self._pending:
                        self._cond.wait()
                        continue
                    big = self._weight >= _BATCH_WEIGHT and not backoff  # no spin when failing
                    wait = self._first_at + max(self.commit_interval, backoff) - time.monotonic()
                    if self._urgent or self._closing or big or wait <= 0:
                        break
                    self._cond.wait(wait)
                batch, seq = self._pending, self._seq
                self._pending, self._weight, self._urgent = {}, 0, False
                closing = self._closing
            ok = self._commit(batch)
            with self._cond:
                self._resolve(seq, ok)
                if ok:
                    backoff = 0.0
                elif closing:
                    log.error("journal: giving up on %d queued scopes at shutdown", len(batch))
                    self._pending.clear()
                else:
                    backoff = min(max(backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
                    for scope, newer in self._pending.items():
                        batch[scope] = _compose(batch[scope], newer) if scope in batch else newer
                    self._pending = batch
                    self._weight = sum(e.weight for e in batch.values())
                    self._first_at = time.monotonic()
            # Not held while the writer waits for the next batch: after a relist
            # it would keep the replaced objects' bytes alive until then.
            del batch

    def _resolve(self, seq: int, ok: bool) -> None:
        """Answer flush() waiters covered by the attempt that ended at `seq` (holds _cond)."""
        if ok:
            self._done_seq = seq
        keep = []
        for target, loop, fut in self._waiters:
            if target > seq:
                keep.append((target, loop, fut))
                continue
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(_set_result, fut, ok)
        self._waiters = keep

    def _commit(self, batch: dict[str, _Entry]) -> bool:
        started = time.monotonic()
        try:
            with self._db_lock, _transaction(self._require_conn()) as conn:
                for scope, entry in batch.items():
                    _apply(conn, scope, entry)
        except (sqlite3.Error, StorageError) as exc:
            self.errors += 1
            log.error("journal commit of %d scopes failed (will retry): %s", len(batch), exc)
            return False
        self.commits += 1
        self.last_commit_seconds = time.monotonic() - started
        try:
            self._refresh_counts()
            if self.max_bytes is not None and self._counts[2] > self.max_bytes:
                self._evict(self.max_bytes)
        except (sqlite3.Error, StorageError) as exc:
            self.errors += 1
            log.error("journal eviction failed: %s", exc)
        return True

    def _evict(self, max_bytes: int) -> None:
        with self._db_lock:
            conn = self._require_conn()
            total = self._counts[2]
            rows = conn.execute("SELECT id, key, bytes FROM scopes ORDER BY last_used, id")
            victims: list[tuple[int, str, int]] = []
            for sid, key, size in rows.fetchall():
                if total <= max_bytes:
                    break
                victims.append((sid, key, size))
                total -= size
            with _transaction(conn):
                for sid, key, size in victims:
                    conn.execute("DELETE FROM objects WHERE scope_id = ?", (sid,))
                    conn.execute("DELETE FROM scopes WHERE id = ?", (sid,))
                    log.info("journal: evicted scope %s (%d bytes, least recently used)", key, size)
        self.evictions += len(victims)
        self._refresh_counts()

    def _refresh_counts(self) -> None:
        with self._db_lock:
            conn = self._require_conn()
            row = conn.execute("SELECT count(*), total(objects), total(bytes) FROM scopes")
            scopes, objects, size = row.fetchone()
            # The file's pages, all and in use (free pages are reused, never returned):
            # the cache's disk budget is about these (cache/manager.py, disk_used).
            pages, free, page_size = conn.execute(
                "SELECT page_count, freelist_count, page_size"
                " FROM pragma_page_count, pragma_freelist_count, pragma_page_size"
            ).fetchone()
        self._counts = (int(scopes), int(objects), int(size))
        self._pages = (pages * page_size, (pages - free) * page_size)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"journal {self.path} is not open")
        return self._conn


def _apply(conn: sqlite3.Connection, scope: str, entry: _Entry) -> None:
    """Write one coalesced entry inside the caller's transaction."""
    op = entry.op
    if isinstance(op, _Drop):
        conn.execute(
            "DELETE FROM objects WHERE scope_id = (SELECT id FROM scopes WHERE key = ?)", (scope,)
        )
        conn.execute("DELETE FROM scopes WHERE key = ?", (scope,))
        return
    if isinstance(op, _Snapshot):
        (sid,) = conn.execute(
            "INSERT INTO scopes (key, rv, meta, last_used) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET rv = excluded.rv, meta = excluded.meta,"
            " last_used = excluded.last_used RETURNING id",
            (scope, op.rv, op.meta, entry.last_used or time.time()),
        ).fetchone()
        conn.execute("DELETE FROM objects WHERE scope_id = ?", (sid,))
        conn.executemany(
            "INSERT INTO objects (scope_id, okey, data) VALUES (?, ?, ?)",
            ((sid, k, v) for k, v in op.objects.items()),
        )
        return
    if isinstance(op, _Changes):
        row = conn.execute("SELECT id FROM scopes WHERE key = ?", (scope,)).fetchone()
        if row is not None:
            sid = row[0]
            conn.execute("UPDATE scopes SET rv = ? WHERE id = ?", (op.rv, sid))
            conn.executemany(
                "DELETE FROM objects WHERE scope_id = ? AND okey = ?",
                ((sid, k) for k, v in op.updates.items() if v is None),
            )
            conn.executemany(
                "INSERT INTO objects (scope_id, okey, data) VALUES (?, ?, ?)"
                " ON CONFLICT (scope_id, okey) DO UPDATE SET data = excluded.data",
                ((sid, k, v) for k, v in op.updates.items() if v is not None),
            )
    if entry.last_used is not None:
        conn.execute("UPDATE scopes SET last_used = ? WHERE key = ?", (entry.last_used, scope))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (take the write lock up front) ... COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _set_result(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)

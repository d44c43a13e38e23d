"""The durable journal: every cached scope on disk, so the proxy can answer offline after a restart.

An edge node often restarts exactly while the cloud is unreachable, and the
in-memory store dies with the process. The journal keeps, per scope, the
objects as raw JSON bytes plus the upstream RV they are valid at
(ARCHITECTURE.md sec. 3, 5).

- **Consistent prefix.** A scope's queued operations and its new RV go into
  one SQLite transaction. WAL with ``synchronous=NORMAL`` keeps that true
  across kill -9 and power loss: a commit is an append of checksummed WAL
  frames, kept whole or lost whole. A commit is in the OS page cache when it
  returns, so it survives kill -9 of the proxy; power loss may lose the last
  commits, which makes the on-disk RV older, never wrong (and takes the
  node's clients down with it). ``FULL`` (an fsync per commit) would only
  save those last commits; the reflector resumes anyway.
- **Durable before served.** Every queued operation gets a ticket (its
  sequence number); `on_commit` tells the cache which tickets are committed,
  and the cache publishes a change to clients only then (cache/store.py).
  `expedite` asks for a commit now when a client is waiting for one.
- **The event loop never waits for the disk.** ``put_*``/``touch``/``drop``
  merge into an in-memory batch under a short lock; one writer thread commits
  the batch in ONE transaction every ``commit_interval``, sooner when large
  or expedited.
- **Bounded queue** (storage/batch.py). Operations are coalesced as they are
  queued (a snapshot supersedes what was queued for its scope; changes merge
  last-write-wins per object; the last RV wins), so however many arrive while the disk is slow,
  the queue holds at most the newest bytes of each pending (scope, object):
  no more than one extra copy of what the in-memory store holds.
- **Write errors never reach the event loop, nor lose anything.** A failed
  batch (disk full, I/O error, a file that became read-only) is logged,
  counted and merged back *under* the newer queued operations, then retried
  with backoff as one transaction, so the next commit is again a consistent
  prefix. Meanwhile `durable` is False and the cache serves from memory.
- **Only corruption discards, and only what is damaged** (storage/database.py,
  storage/access.py): a file that cannot be opened for writing is opened
  read-only (and retried for writing in the background); a damaged file is
  rebuilt from its intact scopes and kept aside as ``<name>.corrupt-<time>``;
  a scope whose rows do not add up to its recorded counts is never served.
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgeproxy.errors import StorageError
from edgeproxy.storage import database
from edgeproxy.storage.access import FileAccess
from edgeproxy.storage.batch import Changes, Drop, Entry, Snapshot, apply, compose, transaction
from edgeproxy.storage.database import SCHEMA_VERSION, Salvage, describe, is_corrupt

log = logging.getLogger(__name__)

_T = TypeVar("_T")

__all__ = ["SCHEMA_VERSION", "Journal", "ScopeInfo", "StoredScope"]

# Wake the writer before the interval once this many object writes are queued:
# bounds one transaction's size (and its stall of readers of the file) to a few MB.
_BATCH_WEIGHT = 5_000
# After a failed commit wait this long (doubling, capped) before retrying so a
# full disk does not spin a core; a flush() retries at once.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
# A client waiting for a change gets it committed at once, but commits follow
# each other at least this far apart: at a few events a second each is
# committed alone (~1 ms), under a flood they group into at most ~200 commits a
# second instead of one per event (CPU; flash wear).
_EXPEDITE_GAP = 0.005
# A read-only journal with nothing queued tries to become writable this often
# (space freed, ownership fixed), so /readyz stops saying read-only by itself.
_REOPEN_SECONDS = 5.0
# Errors met while reading are retried this many times before giving up.
_READ_TRIES = 3


@dataclass(frozen=True, slots=True)
class StoredScope:
    """One scope as persisted: its objects are valid exactly at `rv`.

    `changed_rv`: the RV of their last change ('': unknown); from there up to
    `rv` nothing changed.
    """

    key: str
    rv: str
    meta: bytes
    objects: dict[str, bytes]
    last_used: float
    changed_rv: str = ""


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    """One persisted scope without its objects: enough to decide whether to load it."""

    key: str
    rv: str
    meta: bytes
    last_used: float
    objects: int
    bytes: int
    changed_rv: str = ""


class Journal:
    """SQLite-backed durable store of scopes; see the module docstring for guarantees."""

    def __init__(
        self, path: Path, *, max_bytes: int | None = None, commit_interval: float = 0.05
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.commit_interval = commit_interval
        self._file = FileAccess(path)  # the connection, and the state the file is in
        # Why the last commit failed (None: it did not); cleared by the next success.
        self.failing: str | None = None
        # Told (in the writer thread) of every commit attempt: (ticket, committed).
        self.on_commit: Callable[[int, bool], None] | None = None
        self.evictions = 0
        self.commits = 0
        self.errors = 0
        self.last_commit_seconds = 0.0
        self._counts = (0, 0, 0)  # scopes, objects, bytes after the last commit
        self._pages = (0, 0)  # bytes of the file's pages, and of those in use
        self._db_lock = threading.Lock()  # one user of the connection at a time
        self._cond = threading.Condition()  # guards everything below
        self._pending: dict[str, Entry] = {}
        self._weight = 0
        self._first_at = 0.0  # monotonic time the oldest pending op was queued
        self._seq = 0  # ops queued so far
        self._done_seq = 0  # ops covered by the last successful commit
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._urgent = False  # a flush(): commit now, even while backing off
        self._expedited = False  # a client waits: commit now unless backing off
        self._last_commit = 0.0  # monotonic time the last commit attempt ended
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------

    def open(self) -> Path | None:
        """Open or create the database; returns where a damaged file was moved, if any.

        A file that cannot be written is opened read-only (`readonly` says
        why) and retried for writing in the background; one that cannot be
        created at all leaves the journal empty and retrying. Raises
        StorageError only when an existing file cannot even be read; the
        caller then runs from memory.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.path.parent}: {exc}") from exc
        try:
            os.chmod(self.path.parent, 0o700)  # mkdir honours umask and skips existing dirs
        except PermissionError as exc:  # another user's directory: use it as it is
            log.warning("journal: cannot make %s private: %s", self.path.parent, exc)
        with self._db_lock:
            self._file.open()
        self._refresh_counts()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()
        return self.recovered_from

    @property
    def readonly(self) -> str | None:
        """Why the file cannot be written now (None: it can); reads still work."""
        return self._file.readonly

    @property
    def recovered_from(self) -> Path | None:
        """Where a damaged (or foreign) file was moved, if it was."""
        return self._file.recovered_from

    @property
    def salvage(self) -> Salvage | None:
        """What the rebuild of a damaged file kept and lost, if there was one."""
        return self._file.salvage

    @property
    def _conn(self) -> sqlite3.Connection | None:
        return self._file.conn

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

    def expedite(self) -> None:
        """Commit what is queued now rather than at the next interval: a client waits for it."""
        with self._cond:
            if self._pending and not self._expedited:
                self._expedited = True
                self._cond.notify()

    @property
    def durable(self) -> bool:
        """Whether what is queued now is expected to be committed soon (writes work)."""
        return self._thread is not None and self.readonly is None and self.failing is None

    def state(self) -> tuple[str, str]:
        """("ok" | "read-only" | "writes failing", why), for /readyz and the log."""
        if self.readonly is not None:
            return "read-only", self.readonly
        if self.failing is not None:
            return "writes failing", self.failing
        return "ok", ""

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
            self._file.close()

    # -- reading ------------------------------------------------------------

    def load(self) -> list[StoredScope]:
        """Every persisted scope, read in one snapshot; called at startup.

        A scope whose objects do not all read back is left out (logged).
        """
        return self._reading("load", self._load, [])

    def _load(self) -> list[StoredScope]:
        with self._db_lock:
            conn = self._require_conn()
            conn.execute("BEGIN")  # one read snapshot for both queries
            try:
                rows = conn.execute(
                    "SELECT id, key, rv, meta, last_used, objects, bytes, changed_rv FROM scopes"
                ).fetchall()
                objects: dict[int, dict[str, bytes]] = {row[0]: {} for row in rows}
                for sid, okey, data in conn.execute("SELECT scope_id, okey, data FROM objects"):
                    if sid in objects:
                        objects[sid][okey] = data
            finally:
                conn.execute("COMMIT")
        out = []
        for sid, key, rv, meta, last_used, count, size, changed_rv in rows:
            if self._whole(key, objects[sid], count, size):
                out.append(StoredScope(key, rv, meta, objects[sid], last_used, changed_rv))
        return out

    def index(self) -> list[ScopeInfo]:
        """Every persisted scope, without its objects; called at startup like load()."""
        return self._reading("index", self._index, [])

    def _index(self) -> list[ScopeInfo]:
        with self._db_lock:
            conn = self._require_conn()
            try:
                rows = conn.execute(
                    "SELECT key, rv, meta, last_used, objects, bytes, changed_rv FROM scopes"
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc) or self.readonly is None:
                    raise
                # Damaged and read-only: whatever scope rows can be read, one by one.
                return [
                    ScopeInfo(r.key, r.rv, r.meta, r.last_used, r.objects, r.bytes, r.changed_rv)
                    for r in database.scope_rows(conn)
                ]
        return [ScopeInfo(*row) for row in rows]

    def read(self, scope: str) -> StoredScope | None:
        """One scope as last committed (flush() first to include what is queued).

        None when it is not on disk, or cannot be read whole now (logged,
        counted). Blocking: run it in a thread from the event loop.
        """
        try:
            with self._db_lock:
                conn = self._require_conn()
                conn.execute("BEGIN")  # the scope row and its objects from one snapshot
                try:
                    row = conn.execute(
                        "SELECT id, rv, meta, last_used, objects, bytes, changed_rv"
                        " FROM scopes WHERE key = ?",
                        (scope,),
                    ).fetchone()
                    if row is None:
                        return None
                    sid, rv, meta, last_used, count, size, changed_rv = row
                    objects = dict(
                        conn.execute("SELECT okey, data FROM objects WHERE scope_id = ?", (sid,))
                    )
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("COMMIT")
        except (sqlite3.Error, StorageError) as exc:
            self.errors += 1
            log.error("journal: cannot read scope %s: %s", scope, describe(exc))
            return None
        if not self._whole(scope, objects, count, size):
            return None
        return StoredScope(scope, rv, meta, objects, last_used, changed_rv)

    def _whole(self, key: str, objects: Mapping[str, bytes], count: int, size: int) -> bool:
        """Whether a scope's objects add up to the counters the database keeps with them.

        A missing object would look deleted to clients: a scope is served
        whole or not at all.
        """
        if len(objects) == count and sum(len(d) for d in objects.values()) == size:
            return True
        self.errors += 1
        log.error(
            "journal: scope %s is damaged (%d objects, %d bytes read; %d, %d recorded); "
            "leaving it out",
            key,
            len(objects),
            sum(len(d) for d in objects.values()),
            count,
            size,
        )
        return False

    def _reading(self, what: str, read: Callable[[], _T], empty: _T) -> _T:
        """Run a startup read; damage is salvaged, other errors retried, then given up."""
        for attempt in range(_READ_TRIES):
            try:
                return read()
            except StorageError:
                return empty  # no file to read (read-only, not created)
            except sqlite3.Error as exc:
                self.errors += 1
                if is_corrupt(exc):
                    with self._db_lock:
                        try:
                            self._file.recover(exc)
                        except (sqlite3.Error, OSError) as err:
                            log.error("journal: cannot recover %s: %s", self.path, describe(err))
                            return empty
                    self._refresh_counts()
                    continue
                log.warning(
                    "journal: %s failed (%s), attempt %d of %d",
                    what,
                    describe(exc),
                    attempt + 1,
                    _READ_TRIES,
                )
                time.sleep(0.1 * (attempt + 1))
        log.error("journal: giving up on %s of %s; starting without it", what, self.path)
        return empty

    def stats(self) -> dict[str, Any]:
        """Figures as of the last commit, for metrics and the debug endpoint."""
        scopes, objects, size = self._counts
        state, reason = self.state()
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
            "state": state,
            "reason": reason,
            "recoveredFrom": str(self.recovered_from) if self.recovered_from else None,
            "lostScopes": list(self.salvage.lost) if self.salvage is not None else [],
        }

    # -- queuing (event loop side; never blocks on I/O) ---------------------

    def put_snapshot(self, scope: str, rv: str, meta: bytes, objects: Mapping[str, bytes]) -> int:
        """Replace the whole scope with `objects`, valid at `rv`; returns its ticket."""
        op = Snapshot(rv, meta, dict(objects), rv)
        return self._enqueue(scope, Entry(op, time.time(), len(op.objects) + 1))

    def put_changes(
        self, scope: str, rv: str, upserts: Mapping[str, bytes], deletes: Iterable[str]
    ) -> int:
        """Apply upserts and deletes and move the scope to `rv`, atomically; returns its ticket.

        Without upserts or deletes (a bookmark) the scope's objects did not
        change: its changed_rv stays.
        """
        updates: dict[str, bytes | None] = dict.fromkeys(deletes)
        updates.update(upserts)
        op = Changes(rv, updates, rv if updates else None)
        return self._enqueue(scope, Entry(op, None, len(updates) + 1))

    def touch(self, scope: str) -> None:
        """Mark the scope as used now (LRU order for eviction)."""
        self._enqueue(scope, Entry(None, time.time(), 1))

    def drop(self, scope: str) -> None:
        """Forget the scope."""
        self._enqueue(scope, Entry(Drop(), None, 1))

    def _enqueue(self, scope: str, entry: Entry) -> int:
        with self._cond:
            if self._closing:
                log.debug("journal closed; dropping an operation on %s", scope)
                return self._seq
            if not self._pending:
                self._first_at = time.monotonic()
                self._cond.notify()
            prev = self._pending.get(scope)
            self._pending[scope] = entry if prev is None else compose(prev, entry)
            self._seq += 1
            self._weight += entry.weight
            if self._weight >= _BATCH_WEIGHT:
                self._cond.notify()
            return self._seq

    # -- writer thread ------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                reopen = False
                while True:
                    if self._closing and not self._pending:
                        self._resolve(self._seq, self._done_seq >= self._seq)
                        return
                    if not self._pending:
                        if self.readonly is None or self._closing:
                            self._cond.wait()
                            continue
                        self._cond.wait(_REOPEN_SECONDS)
                        reopen = not self._pending and not self._closing
                        if reopen:
                            break
                        continue
                    big = self._weight >= _BATCH_WEIGHT and not backoff  # no spin when failing
                    now = time.monotonic()
                    wait = self._first_at + max(self.commit_interval, backoff) - now
                    if self._expedited and not backoff:
                        wait = min(wait, self._last_commit + _EXPEDITE_GAP - now)
                    if self._urgent or self._closing or big or wait <= 0:
                        break
                    self._cond.wait(wait)
                if reopen:
                    batch, seq = {}, self._seq
                else:
                    batch, seq = self._pending, self._seq
                    self._pending, self._weight = {}, 0
                    self._urgent = self._expedited = False
                closing = self._closing
            if reopen:
                with self._db_lock:
                    if self.readonly is not None and self._file.try_writable():
                        self._refresh_counts_locked()
                continue
            ok = self._commit(batch)
            if self.on_commit is not None:  # before flush() returns: it implies the report
                self.on_commit(seq, ok)
            with self._cond:
                self._last_commit = time.monotonic()
                self._resolve(seq, ok)
                if ok:
                    backoff = 0.0
                elif closing:
                    log.error("journal: giving up on %d queued scopes at shutdown", len(batch))
                    self._pending.clear()
                else:
                    backoff = min(max(backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
                    for scope, newer in self._pending.items():
                        batch[scope] = compose(batch[scope], newer) if scope in batch else newer
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

    def _commit(self, batch: dict[str, Entry]) -> bool:
        started = time.monotonic()
        with self._db_lock:
            if self.readonly is not None and not self._file.try_writable():
                self.errors += 1
                self._failed(self.readonly, len(batch))
                return False
            try:
                with transaction(self._require_conn()) as conn:
                    for scope, entry in batch.items():
                        apply(conn, scope, entry)
            except (sqlite3.Error, StorageError) as exc:
                self.errors += 1
                self._failed(describe(exc), len(batch))
                if is_corrupt(exc):
                    try:
                        self._file.recover(exc)
                    except (sqlite3.Error, OSError) as err:
                        self._file.set_readonly(
                            f"cannot recover from {describe(exc)}: {describe(err)}"
                        )
                elif database.is_readonly(exc):
                    self._file.set_readonly(describe(exc))
                return False
        if self.failing is not None:
            log.warning(
                "journal %s: commits work again (were failing: %s)", self.path, self.failing
            )
            self.failing = None
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

    def _failed(self, reason: str, scopes: int) -> None:
        """A commit failed: logged when the reason is new (retries are counted, not logged)."""
        if self.failing != reason:
            log.error(
                "journal commit of %d scopes failed (kept in memory, will retry): %s",
                scopes,
                reason,
            )
        self.failing = reason

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
            with transaction(conn):
                for sid, key, size in victims:
                    conn.execute("DELETE FROM objects WHERE scope_id = ?", (sid,))
                    conn.execute("DELETE FROM scopes WHERE id = ?", (sid,))
                    log.info("journal: evicted scope %s (%d bytes, least recently used)", key, size)
        self.evictions += len(victims)
        self._refresh_counts()

    def _refresh_counts(self) -> None:
        with self._db_lock:
            self._refresh_counts_locked()

    def _refresh_counts_locked(self) -> None:
        if self._conn is None:
            self._counts = (0, 0, 0)
            return
        try:
            row = self._conn.execute("SELECT count(*), total(objects), total(bytes) FROM scopes")
            scopes, objects, size = row.fetchone()
            # The file's pages, all and in use (free pages are reused, never returned):
            # the cache's disk budget is about these (cache/manager.py, disk_used).
            pages, free, page_size = self._conn.execute(
                "SELECT page_count, freelist_count, page_size"
                " FROM pragma_page_count, pragma_freelist_count, pragma_page_size"
            ).fetchone()
        except sqlite3.Error as exc:  # damaged, read-only: the figures are only figures
            log.warning("journal: cannot count what it holds: %s", describe(exc))
            return
        self._counts = (int(scopes), int(objects), int(size))
        self._pages = (pages * page_size, (pages - free) * page_size)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"journal {self.path} is not open")
        return self._conn


def _set_result(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)

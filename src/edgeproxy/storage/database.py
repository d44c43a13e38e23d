"""The journal's SQLite file: opening it in the best mode it allows, and salvaging it.

A cache must never be thrown away for a reason that is not in the file
(ARCHITECTURE.md sec. 5). A full disk, an I/O error, a file or a WAL owned by
another user, a lock held by another process: none of these says anything
about the content, so the file is kept and opened as well as it can be:

1. read-write, in ``locking_mode=EXCLUSIVE``: the WAL index is then kept in
   heap memory, not in the ``-shm`` file, so a full disk (no room to create
   or grow ``-shm``) still lets the WAL be read, and every commit in it is
   seen. It also keeps a second proxy on the same cache dir out. Writes may
   still fail (disk full, a read-only WAL): the journal retries them.
2. read-only (``mode=ro``), when read-write cannot open it (e.g. the WAL is
   readable but not ours to write);
3. ``immutable=1``, the last resort: the main file alone, as of its last
   checkpoint (commits still only in an unreadable WAL are not seen).

Only corruption (SQLITE_CORRUPT, SQLITE_NOTADB, a failed ``quick_check``, a
file that is not our schema) moves a file aside. Before that, `rebuild`
copies every scope it can read whole -- scope by scope, the intact ones
checked against the row and byte counts the database keeps per scope -- into
a fresh file, so one damaged page costs the scopes on it, not the cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# 2: scopes.changed_rv. A version 1 file is upgraded in place when opened
# read-write, and read as if every changed_rv were unknown when read-only.
SCHEMA_VERSION = 2
# SQLite's page cache, in KiB (`PRAGMA cache_size` = -KiB). Its 2 MiB default
# stays resident after the first big commit (+2 MB RSS with 10,000 Pods cached).
# Reads are full scans at startup and writes append to the WAL, so a small cache
# costs nothing measurable (10,000-row commit: 62 vs 66 ms).
_PAGE_CACHE_KIB = 256
# The WAL grows to hold the biggest transaction (a relist of 10,000 Pods:
# ~30 MB) and SQLite keeps the file at that size for reuse. After each
# checkpoint that empties it, it is cut back to this, so the file on disk
# stays near the disk budget's figure (the main file) plus this.
WAL_SIZE_LIMIT = 4 * 1024 * 1024
# Another process holding the lock (a proxy still shutting down) is waited for
# this long before the file is opened read-only instead.
_BUSY_SECONDS = 5.0

SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES ({SCHEMA_VERSION});
-- changed_rv: the RV of the scope's last change to its objects ('': unknown);
-- up to rv, later RVs changed nothing (bookmarks), so a watch resumes from them.
CREATE TABLE scopes (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, rv TEXT NOT NULL, meta BLOB NOT NULL,
    last_used REAL NOT NULL, objects INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    changed_rv TEXT NOT NULL DEFAULT ''
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


class Corrupt(sqlite3.DatabaseError):
    """The file is damaged or is not our database: nothing else makes it unusable.

    `salvage`: whether its scopes are worth reading back (damaged, but ours).
    """

    def __init__(self, message: str, *, salvage: bool = True) -> None:
        super().__init__(message)
        self.salvage = salvage


def is_corrupt(exc: BaseException) -> bool:
    """Whether `exc` says something about the file's content (not disk, lock or permission)."""
    if isinstance(exc, Corrupt):
        return True
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


def is_readonly(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_READONLY") or name in ("SQLITE_PERM", "SQLITE_CANTOPEN")


def describe(exc: BaseException) -> str:
    """An error as the log and /readyz show it: SQLite's error name, then its message."""
    name = getattr(exc, "sqlite_errorname", "")
    return f"{name}: {exc}" if name else str(exc)


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{urllib.parse.quote(str(path))}" + (f"?{query}" if query else "")


def _chmod_private(path: str | Path) -> None:
    """0600, when it is ours to change (a file another user left is used as it is)."""
    with contextlib.suppress(FileNotFoundError):
        try:
            os.chmod(path, 0o600)
        except PermissionError as exc:
            log.warning("journal: cannot make %s private: %s", path, exc)


def check(conn: sqlite3.Connection, *, create: bool, verify: bool = True) -> None:
    """Raise Corrupt unless `conn` is a database of our schema (created if empty).

    `verify`: also read every page (`quick_check`, O(file)): when first opened.
    """
    if verify:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise Corrupt(f"quick_check: {result}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    if "schema_version" not in tables:
        if tables:
            raise Corrupt(f"not an edge-proxy journal: tables {sorted(tables)}", salvage=False)
        if not create:
            raise sqlite3.OperationalError("the file is empty and cannot be written")
        conn.executescript(SCHEMA)
    (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    if version == 1:
        _from_version_1(conn, writable=create)
    elif version != SCHEMA_VERSION:
        raise Corrupt(f"schema version {version}, expected {SCHEMA_VERSION}", salvage=False)


def _from_version_1(conn: sqlite3.Connection, *, writable: bool) -> None:
    """Read a version 1 file as version 2: upgraded in place, or through a view."""
    if not writable:
        # Read-only: a temporary view (this connection's alone, in memory)
        # shadows the table, with every changed_rv unknown.
        conn.execute("CREATE TEMP VIEW scopes AS SELECT *, '' AS changed_rv FROM main.scopes")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE scopes ADD COLUMN changed_rv TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    log.info("journal upgraded from schema version 1 to %d", SCHEMA_VERSION)


def connect_rw(path: Path, *, verify: bool = True) -> sqlite3.Connection:
    """The journal's read-write connection (see the module docstring for the mode)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    _chmod_private(path)
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=_BUSY_SECONDS
    )
    try:
        # Before the first access to the WAL: its index then lives in heap memory.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode is {mode!r})")
        conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode: see journal.py
        conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        check(conn, create=True, verify=verify)
        # Take the write lock now: a WAL we may read but not write shows here,
        # not at the first commit (SQLite opens such a file read-only silently).
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    for suffix in ("-wal", "-shm"):
        _chmod_private(f"{path}{suffix}")
    return conn


def connect_readonly(path: Path, *, verify: bool = True) -> tuple[sqlite3.Connection, str]:
    """A connection that can only read, and what it cannot see; raises if none opens.

    Raises Corrupt when the content is the problem (the caller salvages).
    """
    if not path.exists():
        raise sqlite3.OperationalError(f"{path} does not exist")
    last: sqlite3.Error | None = None
    wal = Path(f"{path}-wal")
    for params, caveat in (
        ({"mode": "ro"}, ""),
        (
            {"mode": "ro", "immutable": "1"},
            "commits still in the unreadable WAL are not seen"
            if wal.is_file() and wal.stat().st_size > 32  # more than its header: commits
            else "",
        ),
    ):
        conn = sqlite3.connect(
            _uri(path, **params),
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_SECONDS,
        )
        try:
            conn.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
            check(conn, create=False, verify=verify)
        except sqlite3.Error as exc:
            conn.close()
            if is_corrupt(exc):
                raise
            last = exc
            continue
        return conn, caveat
    assert last is not None
    raise last


# -- salvage -----------------------------------------------------------------


@dataclass(slots=True)
class Salvage:
    """What `rebuild` kept of a damaged file and what it could not read whole."""

    kept: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    moved_to: Path | None = None


def move_aside(path: Path, reason: str) -> Path:
    """Rename the file and its WAL (which must not meet a fresh file) out of the way."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('~')[0]}~{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
    log.warning("journal %s is unusable (%s); moved it to %s", path, reason, target)
    return target


def rebuild(path: Path, reason: str) -> Salvage:
    """Copy every intact scope of the damaged `path` into a fresh file that takes its place.

    The damaged file is kept beside it (`<name>.corrupt-<time>`). Raises (and
    leaves `path` as it was) when the fresh file cannot be written (disk
    full, permissions): then the damaged file is all there is.
    """
    fresh = path.with_name(f"{path.name}.rebuild")
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{fresh}{suffix}")
    salvage = Salvage()
    src = open_damaged(path)
    try:
        dst = sqlite3.connect(fresh, isolation_level=None)
        try:
            _chmod_private(fresh)
            dst.executescript(SCHEMA)
            for row in scope_rows(src):
                objects = scope_objects(src, row)
                if objects is None:
                    salvage.lost.append(row.key)
                    continue
                dst.execute("BEGIN IMMEDIATE")
                try:
                    dst.execute(
                        "INSERT INTO scopes (id, key, rv, meta, last_used, changed_rv)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (row.id, row.key, row.rv, row.meta, row.last_used, row.changed_rv),
                    )
                    dst.executemany(
                        "INSERT INTO objects (scope_id, okey, data) VALUES (?, ?, ?)",
                        ((row.id, k, v) for k, v in objects),
                    )
                except BaseException:
                    dst.execute("ROLLBACK")
                    raise
                dst.execute("COMMIT")
                salvage.kept.append(row.key)
        finally:
            dst.close()
    except BaseException:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{fresh}{suffix}")
        raise
    finally:
        src.close()
    salvage.moved_to = move_aside(path, reason)
    os.replace(fresh, path)
    log.warning(
        "journal %s rebuilt from the damaged file: kept %d scopes, lost %d (%s)",
        path,
        len(salvage.kept),
        len(salvage.lost),
        ", ".join(salvage.lost) or "none",
    )
    return salvage


def open_damaged(path: Path) -> sqlite3.Connection:
    """Read-only; the WAL too when it can be read (its commits are part of the content)."""
    for params in ({"mode": "ro"}, {"mode": "ro", "immutable": "1"}):
        conn = sqlite3.connect(
            _uri(path, **params), uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            if is_corrupt(exc) and params.get("immutable"):
                raise
            continue
        return conn
    raise sqlite3.OperationalError(f"cannot read {path} at all")


@dataclass(frozen=True, slots=True)
class ScopeRow:
    id: int
    key: str
    rv: str
    meta: bytes
    last_used: float
    objects: int
    bytes: int
    changed_rv: str


def _scope_columns(conn: sqlite3.Connection) -> str:
    """The columns of a ScopeRow, in a file of either schema version."""
    try:
        names = {d[0] for d in conn.execute("SELECT * FROM scopes LIMIT 0").description}
    except sqlite3.DatabaseError:
        names = set()
    changed = "changed_rv" if "changed_rv" in names else "''"
    return f"id, key, rv, meta, last_used, objects, bytes, {changed}"


def scope_rows(conn: sqlite3.Connection) -> Iterator[ScopeRow]:
    """Every scope row that can be read: all at once, else one by one by id."""
    columns = _scope_columns(conn)
    try:
        rows = conn.execute(f"SELECT {columns} FROM scopes").fetchall()
    except sqlite3.DatabaseError as exc:
        log.warning("journal salvage: the scopes table is damaged (%s); reading by id", exc)
    else:
        yield from (ScopeRow(*r) for r in rows)
        return
    ids: set[int] = set()
    for query in (
        "SELECT DISTINCT scope_id FROM objects",  # from the primary key index alone
        "SELECT id FROM scopes INDEXED BY sqlite_autoindex_scopes_1",
    ):
        with contextlib.suppress(sqlite3.DatabaseError):
            ids.update(r[0] for r in conn.execute(query))
    for sid in sorted(ids):
        try:
            row = conn.execute(f"SELECT {columns} FROM scopes WHERE id = ?", (sid,))
            found = row.fetchone()
        except sqlite3.DatabaseError:
            continue
        if found is not None:
            yield ScopeRow(*found)


def scope_objects(conn: sqlite3.Connection, row: ScopeRow) -> list[tuple[str, bytes]] | None:
    """A scope's objects if every one reads back and they add up to the scope's counters.

    A missing object would look deleted to clients: a scope is kept whole or
    not at all. Read through the primary key index, else by scanning the
    table (one of the two may be the damaged one).
    """
    for query in (
        "SELECT okey, data FROM objects WHERE scope_id = ?",
        "SELECT okey, data FROM objects NOT INDEXED WHERE scope_id = ?",
    ):
        try:
            objects = conn.execute(query, (row.id,)).fetchall()
        except sqlite3.DatabaseError:
            continue
        whole = len(objects) == row.objects and sum(len(d) for _, d in objects) == row.bytes
        if whole and all(isinstance(k, str) and isinstance(d, bytes) for k, d in objects):
            return objects
    return None

"""The journal's file and the state it is in: read-write, read-only, damaged.

Which connection the journal has and why (storage/database.py says which
modes there are): open() picks the best one the file allows, recover()
rebuilds a damaged file from its intact scopes, try_writable() retries
read-write while the journal is read-only. The journal calls these holding
its connection lock; this class holds no lock of its own.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from edgeproxy.errors import StorageError
from edgeproxy.storage import database
from edgeproxy.storage.database import Salvage, describe, is_corrupt

log = logging.getLogger("edgeproxy.storage.journal")


class FileAccess:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        # Why the file cannot be written now (None: it can); reads still work.
        self.readonly: str | None = None
        self.recovered_from: Path | None = None  # where a damaged file was moved
        self.salvage: Salvage | None = None  # what a rebuild of a damaged file kept
        # Opened without the commits of an unreadable WAL: never written to.
        self.stale_view = False
        # Read as it is, damaged: no room to rebuild it yet.
        self.damaged = False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def open(self) -> None:
        """Open the file in the best mode it allows (module docstring); the caller locks."""
        try:
            self.conn = database.connect_rw(self.path)
            return
        except (sqlite3.Error, OSError) as exc:
            if is_corrupt(exc):
                self.recover(exc)
                return
            problem = exc
        if not _has_content(self.path):  # nothing to read: retried for writing later
            self.set_readonly(f"cannot create {self.path.name}: {describe(problem)}")
            return
        try:
            self.conn, caveat = database.connect_readonly(self.path)
        except sqlite3.Error as exc:
            if is_corrupt(exc):
                self.recover(exc)
                return
            raise StorageError(
                f"cannot open journal {self.path}: {describe(problem)}; "
                f"nor read-only: {describe(exc)}"
            ) from exc
        if caveat:
            # What was loaded is older than the file: writing the changes made
            # to it over the newer commits would mix two states. Until a restart.
            self.stale_view = True
            caveat += "; restart the proxy once it can be read"
        self.set_readonly(describe(problem) + (f"; {caveat}" if caveat else ""))

    def set_readonly(self, reason: str) -> None:
        if self.readonly != reason:
            log.error(
                "journal %s is read-only: %s. Serving what it holds; changes are kept in "
                "memory and written when it can be written again",
                self.path,
                reason,
            )
        self.readonly = reason

    def recover(self, exc: BaseException) -> None:
        """The file is damaged (the caller locks): rebuild it from what is intact.

        Not our file at all (another schema, not a database): moved aside,
        started empty. Damaged: its intact scopes are copied into a fresh file
        (database.rebuild). When that cannot be written, the damaged file is
        read as it is, read-only, and the rebuild retried later.
        """
        reason = describe(exc)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if getattr(exc, "salvage", True):
            try:
                self.salvage = database.rebuild(self.path, reason)
            except (sqlite3.Error, OSError) as err:
                if not is_corrupt(err):
                    self.conn = database.open_damaged(self.path)
                    self.damaged = True
                    self.set_readonly(
                        f"the cache file is damaged ({reason}) and cannot be rebuilt now: "
                        f"{describe(err)}"
                    )
                    return
            else:
                self.recovered_from = self.salvage.moved_to
                self.damaged = False
                self.conn = database.connect_rw(self.path)
                self.readonly = None
                return
        self.recovered_from = database.move_aside(self.path, reason)
        self.salvage = None
        self.damaged = False
        try:
            self.conn = database.connect_rw(self.path)
            self.readonly = None
        except (sqlite3.Error, OSError) as err:
            self.set_readonly(f"cannot create {self.path.name}: {describe(err)}")

    def try_writable(self) -> bool:
        """Read-only: try read-write again (the caller locks); True when it worked."""
        if self.stale_view:
            return False
        if self.conn is not None:
            self.conn.close()  # a reader's lock would keep the exclusive writer out
            self.conn = None
        try:
            # Checked when first opened, read since: no quick_check on every retry.
            self.conn = database.connect_rw(self.path, verify=False)
        except (sqlite3.Error, OSError) as exc:
            if is_corrupt(exc):
                try:
                    self.recover(exc)
                except (sqlite3.Error, OSError) as err:
                    log.error("journal: cannot recover %s: %s", self.path, describe(err))
            if self.conn is None:
                self.reread()
            return self.conn is not None and self.readonly is None
        log.warning("journal %s is writable again (was: %s)", self.path, self.readonly)
        self.readonly = None
        return True

    def reread(self) -> None:
        """Back to reading after an attempt to write failed (the caller locks)."""
        try:
            if self.damaged:
                self.conn = database.open_damaged(self.path)
            elif _has_content(self.path):
                self.conn, _ = database.connect_readonly(self.path, verify=False)
        except sqlite3.Error as exc:
            log.error("journal: cannot read %s any more: %s", self.path, describe(exc))


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False

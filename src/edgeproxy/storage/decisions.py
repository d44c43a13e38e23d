"""Authorization decisions on disk, so they hold after a restart while offline.

The proxy answers a client that brings its own token from the cache only
when upstream has said that client may make that request
(proxy/authorization.py). Offline, upstream cannot be asked, so the last
answers it gave are kept here: a restart during an outage must not turn
every pod away, nor let any of them in.

Tokens are never stored: a row is keyed by the SHA-256 of the token, which
identifies it without letting anyone who reads the file present it. The
file is the proxy's own SQLite database next to the cache journal (0600),
separate from it so its small, rare writes never wait on a journal commit.
Rows no one asked about for `RETENTION_SECONDS` are dropped at start:
projected service-account tokens are replaced hourly, so old hashes only
accumulate.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgeproxy.errors import StorageError

log = logging.getLogger(__name__)

# A week: longer than any outage the cache is sized for, and a rotated
# token's rows are useless after its replacement has been seen.
RETENTION_SECONDS = 7 * 24 * 3600.0

# token hash, verb, group, resource, subresource, namespace, name
DecisionKey = tuple[str, str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Decision:
    """Upstream's answer: allowed or not, why, and when (wall-clock seconds)."""

    allowed: bool
    # 200 once reviewed; 401 when upstream did not accept the token itself.
    code: int
    reason: str
    decided_at: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    token_hash TEXT NOT NULL,
    verb TEXT NOT NULL,
    api_group TEXT NOT NULL,
    resource TEXT NOT NULL,
    subresource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    allowed INTEGER NOT NULL,
    code INTEGER NOT NULL,
    reason TEXT NOT NULL,
    decided_at REAL NOT NULL,
    PRIMARY KEY (token_hash, verb, api_group, resource, subresource, namespace, name)
)
"""


class DecisionStore:
    """`decisions.db`: load all at start, upsert each new decision."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> dict[DecisionKey, Decision]:
        """Open (creating if needed) and return the decisions younger than the retention."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute(
                "DELETE FROM decisions WHERE decided_at < ?", (time.time() - RETENTION_SECONDS,)
            )
            rows = db.execute(
                "SELECT token_hash, verb, api_group, resource, subresource, namespace, name, "
                "allowed, code, reason, decided_at FROM decisions"
            ).fetchall()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"authorization decisions {self.path}: {exc}") from exc
        self._db = db
        return {
            tuple(row[:7]): Decision(bool(row[7]), int(row[8]), str(row[9]), float(row[10]))
            for row in rows
        }

    def save(self, key: DecisionKey, decision: Decision) -> None:
        """Upsert one decision (called from a worker thread; failures are logged, not raised)."""
        if self._db is None:
            return
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        *key,
                        int(decision.allowed),
                        decision.code,
                        decision.reason,
                        decision.decided_at,
                    ),
                )
        except sqlite3.Error as exc:
            # The decision still holds in memory; only a restart offline loses it.
            log.warning("cannot save an authorization decision to %s: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

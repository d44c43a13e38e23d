"""The journal's queue: operations coalesced per scope, and how one is written.

What the event loop queues between two commits (journal.py): per scope at
most one entry, already composed -- a snapshot swallows earlier changes,
changes merge last-write-wins per object, a drop ends it -- so the queue never
holds more than the newest bytes of each pending object. `apply` writes one
entry inside the writer's transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class Snapshot:
    rv: str
    meta: bytes
    objects: dict[str, bytes]
    # The RV of the objects' last change: unknown in a snapshot (a list), so
    # its own RV, until changes composed onto it change objects.
    changed_rv: str


@dataclass(slots=True)
class Changes:
    rv: str
    updates: dict[str, bytes | None]  # None = delete
    changed_rv: str | None = None  # None: no object changed (a bookmark)


class Drop:
    __slots__ = ()


Op = Snapshot | Changes | Drop


@dataclass(slots=True)
class Entry:
    """Everything queued for one scope, already coalesced."""

    op: Op | None = None
    last_used: float | None = None
    weight: int = 0  # object writes queued, to start a commit early


def compose(first: Entry, then: Entry) -> Entry:
    """`first` followed by `then`, as one entry; may reuse `first`'s dicts."""
    a, b = first.op, then.op
    op: Op | None
    if b is None:
        op = a
    elif isinstance(b, Snapshot | Drop) or a is None:
        op = b
    elif isinstance(a, Drop):
        op = a  # changes to a dropped scope have no base: ignored
    elif isinstance(a, Snapshot):
        for key, data in b.updates.items():
            if data is None:
                a.objects.pop(key, None)
            else:
                a.objects[key] = data
        a.rv = b.rv
        a.changed_rv = b.changed_rv or a.changed_rv
        op = a
    else:
        a.updates.update(b.updates)
        a.rv = b.rv
        a.changed_rv = b.changed_rv or a.changed_rv
        op = a
    last_used = then.last_used if then.last_used is not None else first.last_used
    return Entry(op, last_used, first.weight + then.weight)


def apply(conn: sqlite3.Connection, scope: str, entry: Entry) -> None:
    """Write one coalesced entry inside the caller's transaction."""
    op = entry.op
    if isinstance(op, Drop):
        conn.execute(
            "DELETE FROM objects WHERE scope_id = (SELECT id FROM scopes WHERE key = ?)", (scope,)
        )
        conn.execute("DELETE FROM scopes WHERE key = ?", (scope,))
        return
    if isinstance(op, Snapshot):
        (sid,) = conn.execute(
            "INSERT INTO scopes (key, rv, meta, last_used, changed_rv) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET rv = excluded.rv, meta = excluded.meta,"
            " last_used = excluded.last_used, changed_rv = excluded.changed_rv RETURNING id",
            (scope, op.rv, op.meta, entry.last_used or time.time(), op.changed_rv),
        ).fetchone()
        conn.execute("DELETE FROM objects WHERE scope_id = ?", (sid,))
        conn.executemany(
            "INSERT INTO objects (scope_id, okey, data) VALUES (?, ?, ?)",
            ((sid, k, v) for k, v in op.objects.items()),
        )
        return
    if isinstance(op, Changes):
        row = conn.execute("SELECT id FROM scopes WHERE key = ?", (scope,)).fetchone()
        if row is not None:
            sid = row[0]
            conn.execute(
                "UPDATE scopes SET rv = ?, changed_rv = coalesce(?, changed_rv) WHERE id = ?",
                (op.rv, op.changed_rv, sid),
            )
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
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (take the write lock up front) ... COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

"""Changes reach clients after the journal has them: tickets, commits and a stalled disk.

A store applies a change at once but publishes it (to lists and watchers)
only when the journal's writer reports the batch holding it committed, so a
`kill -9` never leaves a client with a state newer than what a restart
serves (consistency contract, "monotonic across crashes"). This module is
that bookkeeping between the stores and the journal: which stores hold
unpublished changes, what a commit (or a failed one) releases, what a
stalled disk has held back too long, and how much is queued for the disk
so that clients faster than it wait instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from edgeproxy.cache.store import ScopeStore
from edgeproxy.storage.journal import Journal

log = logging.getLogger(__name__)


class DurableWrites:
    """The journal's side of every store: what is queued, held, committed."""

    def __init__(self, journal: Journal, durable_wait_seconds: float, backlog_bytes: int) -> None:
        self.journal = journal
        self.durable_wait_seconds = durable_wait_seconds
        self.backlog_bytes = backlog_bytes
        # Changes served before the journal had them (it failed or stalled).
        self.published_not_durable = 0
        # Bytes handed to the journal since it last caught up (settle()).
        self._unflushed = 0
        self._settling = asyncio.Lock()
        # Stores with changes waiting for the journal before clients see them.
        self._holding: set[ScopeStore] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Be told of commits in `loop` (the writer reports them from its thread)."""
        self._loop = loop

        def on_commit(ticket: int, ok: bool) -> None:  # in the journal's writer thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self.committed, ticket, ok)

        self.journal.on_commit = on_commit

    def snapshot(
        self, store: ScopeStore, rv: int, meta: bytes, upserts: Mapping[str, bytes]
    ) -> int | None:
        """Queue a store's whole state; the ticket to publish it at (store.py)."""
        self._unflushed += sum(map(len, upserts.values()))
        ticket = self.journal.put_snapshot(store.scope.key, str(rv), meta, upserts)
        return self._hold(store, ticket)

    def changes(
        self, store: ScopeStore, rv: int, upserts: Mapping[str, bytes], deletes: list[str]
    ) -> int | None:
        """Queue a store's changes; the ticket to publish them at (store.py)."""
        self._unflushed += sum(map(len, upserts.values()))
        ticket = self.journal.put_changes(store.scope.key, str(rv), upserts, deletes)
        return self._hold(store, ticket)

    def _hold(self, store: ScopeStore, ticket: int) -> int | None:
        if self._loop is None or not self.journal.durable:
            return None  # nobody will be told it is committed, or it will not be: serve it now
        self._holding.add(store)
        return ticket

    def hurry(self) -> None:
        self.journal.expedite()

    def committed(self, ticket: int, ok: bool) -> None:
        """The journal's writer finished a commit up to `ticket` (in the event loop)."""
        for store in list(self._holding):
            if ok:
                store.publish_through(ticket)
            else:  # not durable, and it may take a while: what is in memory is served
                self.published_not_durable += store.publish_all()
            if not store.staged:
                self._holding.discard(store)

    def publish_overdue(self) -> None:
        """Publish what a stalled disk has held back longer than `durable_wait_seconds`."""
        limit = time.monotonic() - self.durable_wait_seconds
        for store in list(self._holding):
            since = store.staged_since
            if since is not None and since < limit:
                count = store.publish_all()
                self.published_not_durable += count
                log.warning(
                    "journal has not committed %d changes of %s for %.1fs; serving them anyway",
                    count,
                    store.scope.key,
                    time.monotonic() - since,
                )
            if not store.staged:
                self._holding.discard(store)

    async def settle(self) -> None:
        """Wait for the journal when clients hand it data faster than the disk takes it.

        What is queued for the journal is held in memory until committed, the
        objects of scopes already evicted from memory too: lists of ever new
        scopes, faster than the disk, would otherwise grow it without bound.
        Past `backlog_bytes` the request that added to it waits.
        """
        if self._unflushed <= self.backlog_bytes:
            return
        async with self._settling:
            queued = self._unflushed
            if queued <= self.backlog_bytes:
                return  # another request waited while this one queued for the lock
            await self.journal.flush()
            self._unflushed -= queued

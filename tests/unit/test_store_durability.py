"""Clients only ever see what the journal has committed (cache/store.py).

A store applies upstream's changes at once (the reflector diffs against them
and resumes after them) but publishes them -- objects, RV, history, watchers,
filtered views, RV waiters -- only when the journal reports their ticket
committed. Otherwise a kill -9 between serving RV X and committing it brings
the proxy back older than X (tests/fault/test_crash_monotonic.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.cache.broadcast import Watcher
from edgeproxy.cache.manager import CacheManager
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore, TooOld
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.storage.journal import Journal

REGISTRY = ResourceRegistry()
_cm = REGISTRY.get("", "v1", "configmaps")
assert _cm is not None
CONFIGMAPS: ResourceType = _cm
SCOPE = Scope("", "v1", "configmaps")


def record(name: str, rv: int, data: str = "") -> ObjectRecord:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)},
        "data": {"v": data},
    }
    return record_from_bytes(CONFIGMAPS, json.dumps(obj, separators=(",", ":")).encode())


class Tickets:
    """A journal stand-in: hands out tickets, commits when told."""

    def __init__(self) -> None:
        self.issued: list[tuple[int, int, list[str] | None]] = []  # (ticket, rv, deletes)
        self.hurried = 0
        self.durable = True

    def persist(
        self, _store: ScopeStore, rv: int, _ups: Mapping[str, bytes], deletes: list[str] | None
    ) -> int | None:
        if not self.durable:
            return None
        self.issued.append((len(self.issued) + 1, rv, deletes))
        return len(self.issued)

    def hurry(self) -> None:
        self.hurried += 1


def held_store(*records: ObjectRecord, rv: int = 10) -> tuple[ScopeStore, Tickets]:
    store = ScopeStore(SCOPE, CONFIGMAPS, 100)
    store.load({r.key: r for r in records}, rv)
    tickets = Tickets()
    store.persist = tickets.persist
    store.hurry = tickets.hurry
    return store, tickets


def watcher(min_rv: int = 0) -> Watcher:
    return Watcher(
        CONFIGMAPS, "", LabelSelector.parse(""), FieldSelector.parse(""), 1 << 20, min_rv=min_rv
    )


def names(w: Watcher) -> list[tuple[str, str]]:
    return [
        (doc["type"], doc["object"]["metadata"]["resourceVersion"])
        for doc in (json.loads(f.data) for f in w.pending)
    ]


def test_a_change_is_applied_at_once_and_published_when_committed() -> None:
    store, tickets = held_store(record("a", 5), rv=10)
    w = watcher(min_rv=10)
    store.watchers.add(w)
    store.apply_event("MODIFIED", record("a", 11, "x"))
    store.apply_event("ADDED", record("b", 12))
    store.bookmark(13)
    # Applied: the reflector resumes after it and diffs against it.
    assert store.applied_rv == 13
    assert store.apply_event("MODIFIED", record("a", 11, "x")) is None  # already applied
    # Not published: nothing a client can see has moved.
    assert store.rv == 10 and sorted(store.objects) == ["ns/a"]
    assert store.get("ns/a") == record("a", 5)
    assert list(store.history) == [] and names(w) == []
    assert tickets.hurried >= 1  # a watcher waits: the journal is asked to commit now
    assert store.publish_through(1) == 1  # the first change is durable
    assert store.rv == 11 and names(w) == [("MODIFIED", "11")]
    assert store.publish_through(3) == 2
    assert store.rv == 13 and sorted(store.objects) == ["ns/a", "ns/b"]
    assert names(w) == [("MODIFIED", "11"), ("ADDED", "12")]
    assert [e.rv for e in store.events_after(10)] == [11, 12]
    assert store.staged == 0


def test_a_relist_diffs_against_what_is_applied_not_yet_published() -> None:
    store, tickets = held_store(record("a", 5), record("b", 6), rv=10)
    store.apply_event("DELETED", record("a", 11))
    # The relist agrees with what is applied: nothing more to say.
    assert store.replace({"ns/b": record("b", 6)}, 11) == []
    events = store.replace({"ns/b": record("b", 6), "ns/c": record("c", 12)}, 12)
    assert [(e.type, e.obj.name) for e in events] == [("ADDED", "c")]
    assert store.rv == 10 and sorted(store.objects) == ["ns/a", "ns/b"]
    store.publish_through(tickets.issued[-1][0])
    assert store.rv == 12 and sorted(store.objects) == ["ns/b", "ns/c"]
    assert [(e.type, e.rv) for e in store.history] == [("DELETED", 11), ("ADDED", 12)]


async def test_a_first_list_is_synced_only_once_durable() -> None:
    store = ScopeStore(SCOPE, CONFIGMAPS, 100)
    tickets = Tickets()
    store.persist, store.hurry = tickets.persist, tickets.hurry
    store.replace({"ns/a": record("a", 5)}, 7)
    assert tickets.issued == [(1, 7, None)]  # a snapshot
    assert store.complete and not store.synced
    assert tickets.hurried == 1  # whoever listed it waits for it
    waiting = asyncio.create_task(store.published())
    await asyncio.sleep(0)
    assert not waiting.done()
    store.publish_through(1)
    await asyncio.wait_for(waiting, 1)
    assert store.synced and store.rv == 7 and sorted(store.objects) == ["ns/a"]


async def test_rv_waiters_wake_on_publication() -> None:
    store, tickets = held_store(rv=10)
    store.bookmark(20)
    waiting = asyncio.create_task(store.wait_for_rv(20, 5))
    await asyncio.sleep(0)
    assert not waiting.done() and tickets.hurried >= 1
    store.publish_through(1)
    assert await waiting


def test_not_durable_publishes_at_once_but_in_order() -> None:
    store, tickets = held_store(record("a", 5), rv=10)
    store.apply_event("MODIFIED", record("a", 11, "x"))
    tickets.durable = False  # the journal cannot write: memory is all there is
    store.apply_event("MODIFIED", record("a", 12, "y"))
    assert store.rv == 10  # still behind the first change
    assert store.publish_all() == 2
    assert store.rv == 12 and store.get("ns/a") == record("a", 12, "y")
    store.apply_event("MODIFIED", record("a", 13, "z"))
    assert store.rv == 13  # nothing staged ahead of it: published at once


def test_a_watcher_added_while_changes_wait_gets_each_once() -> None:
    store, _ = held_store(record("a", 5), rv=10)
    store.apply_event("MODIFIED", record("a", 11, "x"))
    w = watcher(min_rv=store.rv)  # registered as serve_watch does: from what is published
    store.watchers.add(w)
    assert store.events_after(10) == []
    store.publish_all()
    assert names(w) == [("MODIFIED", "11")]


class _Upstream:
    """Enough of Upstream for a CacheManager that never reaches it."""

    def on_state_change(self, listener: Any) -> None:
        pass


@pytest.fixture
async def manager(tmp_path: Path) -> Any:
    journal = Journal(tmp_path / "cache.db", commit_interval=60)  # only expedited commits
    journal.open()
    cache = CacheManager(REGISTRY, _Upstream(), journal)  # type: ignore[arg-type]
    cache.start()
    yield cache
    await cache.close()


async def test_manager_publishes_what_the_journal_committed(manager: CacheManager) -> None:
    store = manager.store_for(SCOPE, CONFIGMAPS)
    store.replace({"ns/a": record("a", 5)}, 7)
    await asyncio.wait_for(store.published(), 5)  # expedited: not the 60 s interval
    assert store.synced and store.rv == 7
    journal = manager.journal
    assert journal is not None
    stored = journal.read(SCOPE.key)
    assert stored is not None and stored.rv == "7"  # on disk before anyone saw it
    w = watcher(min_rv=7)
    store.watchers.add(w)
    store.apply_event("MODIFIED", record("a", 8, "x"))
    assert names(w) == []
    assert await asyncio.wait_for(store.wait_for_rv(8, None), 5)
    assert names(w) == [("MODIFIED", "8")]
    stored = journal.read(SCOPE.key)
    assert stored is not None and stored.rv == "8"
    assert manager.published_not_durable == 0


async def test_after_a_restart_a_watch_resumes_from_any_rv_since_the_last_change(
    tmp_path: Path,
) -> None:
    """A client's RV is often a bookmark's, newer than the scope's last change.

    The journal keeps that change's RV beside the scope's: after a restart,
    watches from any RV since then miss nothing and are not sent 410 Gone;
    older ones are (the events in between are not kept).
    """
    path = tmp_path / "cache.db"
    journal = Journal(path, commit_interval=60)
    journal.open()
    cache = CacheManager(REGISTRY, _Upstream(), journal)  # type: ignore[arg-type]
    cache.start()
    store = cache.store_for(SCOPE, CONFIGMAPS)
    store.replace({"ns/a": record("a", 5)}, 7)
    store.apply_event("MODIFIED", record("a", 8, "x"))
    store.bookmark(12)
    assert await asyncio.wait_for(store.wait_for_rv(12, None), 5)
    await cache.close()

    journal = Journal(path, commit_interval=60)
    journal.open()
    cache = CacheManager(REGISTRY, _Upstream(), journal)  # type: ignore[arg-type]
    cache.load()
    try:
        store = cache.stores[SCOPE]
        assert store.rv == 12 and store.objects["ns/a"].rv == 8
        assert store.events_after(12) == []
        assert store.events_after(8) == []
        with pytest.raises(TooOld):
            store.events_after(7)
    finally:
        await cache.close()

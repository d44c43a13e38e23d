"""The simulator's store without HTTP: watch transitions, history, snapshots.

The store is the simulator's MVCC window: what a resumed watch replays, what
a paginated or Exact list sees, and when a client gets 410. These tests
build `ResourceStore`/`Watcher` directly from `record_from_bytes` records
(k8s-api-semantics.md sec. 2.1, 2.2, 3.5, 3.6).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edgeproxy.cache.broadcast import fan_out
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.kube.wire import EventType
from edgeproxy.sim.store import Event, ResourceStore, Store, TooOld, Watcher

REGISTRY = ResourceRegistry()


def _resource(name: str) -> ResourceType:
    rt = REGISTRY.get("", "v1", name)
    assert rt is not None
    return rt


CONFIGMAPS = _resource("configmaps")
PODS = _resource("pods")


def record(
    name: str,
    rv: int,
    labels: dict[str, str] | None = None,
    *,
    namespace: str = "ns",
    data: str = "",
    rt: ResourceType = CONFIGMAPS,
) -> ObjectRecord:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": str(rv)}
    if labels is not None:
        meta["labels"] = labels
    obj: dict[str, Any] = {"metadata": meta}
    if data:
        obj["data"] = {"v": data}
    return record_from_bytes(rt, json.dumps(obj, separators=(",", ":")).encode())


def watcher(
    labels: str = "", fields: str = "", namespace: str = "", max_bytes: int = 1 << 20
) -> Watcher:
    return Watcher(
        CONFIGMAPS,
        namespace,
        LabelSelector.parse(labels),
        FieldSelector.parse(fields),
        max_bytes,
    )


def decode(frame: bytes | None) -> dict[str, Any]:
    assert frame is not None
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    result: dict[str, Any] = json.loads(frame)
    return result


def modified(prev: ObjectRecord, new: ObjectRecord) -> Event:
    return Event("MODIFIED", new.rv, new, prev)


# -- sec. 3.6: the selector transition table, row by row ----------------------


def test_transition_no_no_emits_nothing() -> None:
    w = watcher("app=web")
    ev = modified(record("a", 5, {"app": "db"}), record("a", 6, {"app": "cache"}))
    assert w.frame_for(ev) is None


def test_transition_no_yes_emits_added_with_new_object() -> None:
    w = watcher("app=web")
    ev = modified(record("a", 5, {"app": "db"}), record("a", 6, {"app": "web"}))
    got = decode(w.frame_for(ev))
    assert got["type"] == "ADDED"
    assert got["object"]["kind"] == "ConfigMap"
    assert got["object"]["apiVersion"] == "v1"
    assert got["object"]["metadata"]["labels"] == {"app": "web"}
    assert got["object"]["metadata"]["resourceVersion"] == "6"


def test_transition_yes_yes_emits_modified_with_new_object() -> None:
    w = watcher("app=web")
    ev = modified(
        record("a", 5, {"app": "web"}, data="old"), record("a", 6, {"app": "web"}, data="new")
    )
    got = decode(w.frame_for(ev))
    assert got["type"] == "MODIFIED"
    assert got["object"]["data"] == {"v": "new"}
    assert got["object"]["metadata"]["resourceVersion"] == "6"


def test_transition_yes_no_emits_deleted_with_previous_content_and_new_rv() -> None:
    w = watcher("app=web")
    ev = modified(
        record("a", 5, {"app": "web"}, data="old"), record("a", 9, {"app": "db"}, data="new")
    )
    got = decode(w.frame_for(ev))
    assert got["type"] == "DELETED"
    obj = got["object"]
    assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
    # Previous content ...
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert obj["data"] == {"v": "old"}
    # ... stamped with the RV of the event that moved it out.
    assert obj["metadata"]["resourceVersion"] == "9"


def test_transitions_apply_to_field_selectors_too() -> None:
    w = watcher(fields="metadata.name=a")
    ev = modified(record("a", 5), record("a", 6))
    assert decode(w.frame_for(ev))["type"] == "MODIFIED"
    other = modified(record("b", 5), record("b", 6))
    assert w.frame_for(other) is None


@pytest.mark.parametrize(
    ("event_type", "labels", "expected"),
    [
        ("ADDED", {"app": "web"}, "ADDED"),
        ("ADDED", {"app": "db"}, None),
        ("DELETED", {"app": "web"}, "DELETED"),
        ("DELETED", {"app": "db"}, None),
    ],
)
def test_added_and_deleted_follow_the_object(
    event_type: EventType, labels: dict[str, str], expected: str | None
) -> None:
    w = watcher("app=web")
    obj = record("a", 7, labels)
    prev = None if event_type == "ADDED" else record("a", 6, labels)
    frame = w.frame_for(Event(event_type, 7, obj, prev))
    if expected is None:
        assert frame is None
    else:
        got = decode(frame)
        assert got["type"] == expected
        assert got["object"]["metadata"]["resourceVersion"] == "7"


def test_namespace_scoped_watcher_ignores_other_namespaces() -> None:
    w = watcher(namespace="ns")
    assert w.frame_for(Event("ADDED", 3, record("a", 3, namespace="other"), None)) is None
    assert decode(w.frame_for(Event("ADDED", 4, record("a", 4), None)))["type"] == "ADDED"


def test_frames_are_shared_between_watchers() -> None:
    ev = Event("ADDED", 3, record("a", 3), None)
    assert watcher().frame_for(ev) is watcher().frame_for(ev)


def test_fan_out_closes_a_watcher_whose_buffer_is_full() -> None:
    w = watcher(
        max_bytes=2 * Event("ADDED", 2, record("o2", 2), None).frame(CONFIGMAPS, "ADDED").size
    )
    watchers = {w}
    for rv in (2, 3):
        fan_out(watchers, Event("ADDED", rv, record(f"o{rv}", rv), None))
    assert len(w.pending) == 2 and w.close_reason == ""
    fan_out(watchers, Event("ADDED", 4, record("o4", 4), None))
    assert w.closed
    assert w.close_reason == "watcher fell behind"
    # What it had queued is dropped at once: a client that stopped reading would
    # never take it, and it re-watches from its last RV.
    assert not w.pending and w.held_bytes() == 0
    assert not watchers  # dropped from the set
    # Closed watchers take nothing more.
    fan_out({w}, Event("ADDED", 5, record("o5", 5), None))
    assert not w.pending


def test_fan_out_skips_non_matching_events_without_filling_the_buffer() -> None:
    w = watcher("app=web", max_bytes=1)
    for rv in range(2, 10):
        fan_out({w}, Event("ADDED", rv, record(f"o{rv}", rv, {"app": "db"}), None))
    assert not w.closed and not w.pending


def test_fan_out_gives_each_watcher_its_own_answer() -> None:
    """Selector decisions are shared between equal selectors, never across different ones."""
    web = [watcher("app=web") for _ in range(3)]
    db, other_ns, everything = watcher("app=db"), watcher(namespace="other"), watcher()
    late = watcher("app=web")
    late.min_rv = 5  # already knows RV 5
    watchers = {*web, db, other_ns, everything, late}
    prev = record("a", 4, {"app": "db"})
    fan_out(watchers, Event("MODIFIED", 5, record("a", 5, {"app": "web"}), prev))
    types = {id(w): [decode(f.data)["type"] for f in w.pending] for w in watchers}
    assert all(types[id(w)] == ["ADDED"] for w in web)  # moved into app=web
    assert types[id(db)] == ["DELETED"]  # moved out of app=db
    assert types[id(everything)] == ["MODIFIED"]
    assert types[id(other_ns)] == [] and types[id(late)] == []
    assert web[0].pending[0] is web[1].pending[0]  # one frame, shared


# -- history, compaction, snapshots --------------------------------------------


class History:
    """A ResourceStore driven like operations.py drives it: one RV per change."""

    def __init__(self, limit: int = 100) -> None:
        self.res = ResourceStore(CONFIGMAPS, limit)
        self.rv = 1

    def put(self, name: str, data: str = "", labels: dict[str, str] | None = None) -> Event:
        self.rv += 1
        rec = record(name, self.rv, labels, data=data)
        prev = self.res.get(rec.key)
        ev = Event("MODIFIED" if prev else "ADDED", self.rv, rec, prev)
        self.res.apply(ev)
        return ev

    def delete(self, name: str) -> Event:
        self.rv += 1
        prev = self.res.get(f"ns/{name}")
        assert prev is not None
        labels = dict(prev.labels) if prev.labels else None
        rec = record(name, self.rv, labels, data=json.loads(prev.raw).get("data", {}).get("v", ""))
        ev = Event("DELETED", self.rv, rec, prev)
        self.res.apply(ev)
        return ev


def test_apply_keeps_keys_ordered_and_removes_deleted() -> None:
    h = History()
    for name in ("c", "a", "b"):
        h.put(name)
    h.delete("b")
    assert list(h.res.keys_from()) == ["ns/a", "ns/c"]
    assert list(h.res.keys_from(start="ns/b")) == ["ns/c"]
    assert len(h.res) == 2


def test_keys_from_respects_prefix() -> None:
    res = ResourceStore(CONFIGMAPS, 10)
    for i, (ns, name) in enumerate([("a", "x"), ("ab", "y"), ("b", "z")], start=2):
        res.apply(Event("ADDED", i, record(name, i, namespace=ns), None))
    assert list(res.keys_from(prefix="a/")) == ["a/x"]
    assert list(res.keys_from(prefix="ab/")) == ["ab/y"]
    assert list(res.keys_from()) == ["a/x", "ab/y", "b/z"]


def test_history_trimming_sets_compacted_rv() -> None:
    h = History(limit=3)
    events = [h.put(f"o{i}") for i in range(5)]  # RVs 2..6
    assert [e.rv for e in h.res.history] == [4, 5, 6]
    assert h.res.compacted_rv == 3  # the last RV dropped
    # Everything after the compacted RV is still available ...
    assert [e.rv for e in h.res.events_after(3)] == [4, 5, 6]
    assert [e.rv for e in h.res.events_after(5)] == [6]
    assert h.res.events_after(6) == []
    # ... anything older is not.
    with pytest.raises(TooOld) as info:
        h.res.events_after(2)
    assert info.value.requested == 2 and info.value.oldest == 3
    assert str(info.value) == "too old resource version: 2 (3)"
    assert events[-1].rv == 6


def test_events_after_is_in_rv_order() -> None:
    h = History()
    h.put("b")
    h.put("a")
    h.put("b", data="x")
    h.delete("a")
    got = h.res.events_after(2)
    assert [(e.type, e.rv) for e in got] == [("ADDED", 3), ("MODIFIED", 4), ("DELETED", 5)]


def test_compact_clears_history_and_rejects_older_rvs() -> None:
    h = History()
    h.put("a")
    h.put("b")
    h.res.compact(h.rv)
    assert not h.res.history
    assert h.res.events_after(h.rv) == []
    with pytest.raises(TooOld):
        h.res.events_after(h.rv - 1)
    with pytest.raises(TooOld):
        h.res.snapshot(h.rv - 1)


def data_at(objects: dict[str, ObjectRecord]) -> dict[str, str]:
    return {k: json.loads(r.raw).get("data", {}).get("v", "") for k, r in objects.items()}


def test_snapshot_undoes_later_events() -> None:
    h = History()
    h.put("a", "a1")  # 2
    h.put("b", "b1")  # 3
    at3 = h.rv
    h.put("a", "a2")  # 4 modify
    h.delete("b")  # 5 delete
    h.put("c", "c1")  # 6 add
    assert data_at(h.res.objects) == {"ns/a": "a2", "ns/c": "c1"}
    assert data_at(h.res.snapshot(at3)) == {"ns/a": "a1", "ns/b": "b1"}
    assert data_at(h.res.snapshot(4)) == {"ns/a": "a2", "ns/b": "b1"}
    assert data_at(h.res.snapshot(5)) == {"ns/a": "a2"}
    assert data_at(h.res.snapshot(1)) == {}
    # The snapshot's records carry their own RVs, never later ones.
    assert all(r.rv <= at3 for r in h.res.snapshot(at3).values())
    # Taking a snapshot does not change the live state.
    assert data_at(h.res.objects) == {"ns/a": "a2", "ns/c": "c1"}


def test_snapshot_at_current_rv_is_the_live_state() -> None:
    h = History()
    h.put("a")
    assert h.res.snapshot(h.rv) is h.res.objects


def test_snapshot_of_compacted_rv_raises_too_old() -> None:
    h = History(limit=2)
    for i in range(4):
        h.put("a", str(i))  # 2..5; history keeps 4, 5
    assert data_at(h.res.snapshot(3)) == {"ns/a": "1"}
    with pytest.raises(TooOld):
        h.res.snapshot(2)


def test_apply_fans_out_to_watchers_and_drops_closed_ones() -> None:
    res = ResourceStore(CONFIGMAPS, 10)
    slow = watcher(
        max_bytes=Event("ADDED", 2, record("a", 2), None).frame(CONFIGMAPS, "ADDED").size
    )
    fine = watcher()
    res.watchers.update({slow, fine})
    res.apply(Event("ADDED", 2, record("a", 2), None))
    res.apply(Event("ADDED", 3, record("b", 3), None))
    assert slow.closed and slow not in res.watchers
    assert fine in res.watchers
    assert [json.loads(f.data)["object"]["metadata"]["name"] for f in fine.pending] == ["a", "b"]
    assert fine.wake.is_set()


# -- Store: one RV counter across resources, waiting for an RV -----------------


def test_store_commit_uses_one_counter_across_resources() -> None:
    store = Store(REGISTRY, history_limit=10)
    rv1 = store.next_rv()
    store.commit(CONFIGMAPS, "ADDED", b'{"metadata":{"name":"a","namespace":"ns"}}', None, rv1)
    rv2 = store.next_rv()
    store.commit(PODS, "ADDED", b'{"metadata":{"name":"p","namespace":"ns"}}', None, rv2)
    assert rv2 == rv1 + 1 == store.rv
    assert [e.rv for e in store.resource(CONFIGMAPS).history] == [rv1]
    assert [e.rv for e in store.resource(PODS).history] == [rv2]
    store.compact()
    assert all(r.compacted_rv == rv2 for r in store.resources())


async def test_wait_for_rv_wakes_on_commit_and_times_out() -> None:
    store = Store(REGISTRY, history_limit=10)
    assert await store.wait_for_rv(store.rv, 0.01)
    assert not await store.wait_for_rv(store.rv + 5, 0.05)
    target = store.rv + 1
    waiter = asyncio.ensure_future(store.wait_for_rv(target, 5))
    await asyncio.sleep(0)
    assert not waiter.done()
    rv = store.next_rv()
    store.commit(CONFIGMAPS, "ADDED", b'{"metadata":{"name":"a","namespace":"ns"}}', None, rv)
    assert await asyncio.wait_for(waiter, 1)


def test_close_watchers_closes_every_watcher() -> None:
    store = Store(REGISTRY, history_limit=10)
    ws = [watcher() for _ in range(3)]
    store.resource(CONFIGMAPS).watchers.update(ws)
    assert store.close_watchers("bye") == 3
    assert all(w.closed and w.close_reason == "bye" for w in ws)
    assert not store.resource(CONFIGMAPS).watchers

"""The proxy's per-scope store, watch fan-out, list parsing, paging and filters.

`ScopeStore` only moves forward along upstream's event stream and never
invents RVs (ARCHITECTURE.md sec. 3); a relist becomes the difference as
events a resumed watch can replay without gaps (sec. 3, "Offline"). Watchers
apply the selector transition table (k8s-api-semantics.md sec. 3.6).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.cache.broadcast import Event, Watcher, fan_out
from edgeproxy.cache.listing import BadUpstreamBody, parse_list, parse_rv, records_of
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore, TooOld
from edgeproxy.filters.base import FilterInputs
from edgeproxy.filters.dropprefix import DropNamePrefix
from edgeproxy.kube.continuetoken import decode_continue
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.paging import select_page
from edgeproxy.kube.resources import ResourceRegistry, ResourceType

REGISTRY = ResourceRegistry()
_cm = REGISTRY.get("", "v1", "configmaps")
assert _cm is not None
CONFIGMAPS: ResourceType = _cm
SCOPE = Scope("", "v1", "configmaps")


def record(
    name: str, rv: int, labels: dict[str, str] | None = None, *, data: str = "", ns: str = "ns"
) -> ObjectRecord:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": str(rv)}
    if labels is not None:
        meta["labels"] = labels
    obj: dict[str, Any] = {"metadata": meta}
    if data:
        obj["data"] = {"v": data}
    return record_from_bytes(CONFIGMAPS, json.dumps(obj, separators=(",", ":")).encode())


def by_key(*records: ObjectRecord) -> dict[str, ObjectRecord]:
    return {r.key: r for r in records}


PersistCall = tuple[int, dict[str, bytes], list[str] | None]


def make_store(
    *records: ObjectRecord, rv: int = 10, history_limit: int = 100
) -> tuple[ScopeStore, list[PersistCall]]:
    store = ScopeStore(SCOPE, CONFIGMAPS, history_limit)
    store.load(by_key(*records), rv)
    calls: list[PersistCall] = []

    def persist(
        _store: ScopeStore, at: int, upserts: Mapping[str, bytes], deletes: list[str] | None
    ) -> None:
        calls.append((at, dict(upserts), deletes))

    store.persist = persist
    return store, calls


def watcher(
    labels: str = "", namespace: str = "", max_bytes: int = 1 << 20, min_rv: int = 0
) -> Watcher:
    return Watcher(
        CONFIGMAPS,
        namespace,
        LabelSelector.parse(labels),
        FieldSelector.parse(""),
        max_bytes,
        min_rv=min_rv,
    )


def frames(w: Watcher) -> list[tuple[str, str, str]]:
    """(type, name, metadata.resourceVersion) of each pending frame."""
    out = []
    for frame in w.pending:
        assert frame.data.endswith(b"\n")
        doc = json.loads(frame.data)
        meta = doc["object"]["metadata"]
        assert doc["object"]["kind"] == "ConfigMap"
        assert doc["object"]["apiVersion"] == "v1"
        out.append((doc["type"], meta["name"], meta["resourceVersion"]))
    return out


def summary(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type, e.obj.name, e.rv) for e in events]


# -- load / reads -------------------------------------------------------------


def test_load_sets_state_without_history() -> None:
    store, _ = make_store(record("b", 3), record("a", 5), rv=7)
    assert store.synced
    assert (store.rv, store.compacted_rv) == (7, 7)
    assert list(store.keys_from()) == ["ns/a", "ns/b"]
    assert len(store) == 2
    assert store.bytes == sum(len(r.raw) for r in store.objects.values())
    assert store.events_after(7) == []
    assert store.get("ns/a") == record("a", 5)
    assert store.get("ns/zz") is None


def test_keys_from_start_and_prefix() -> None:
    store, _ = make_store(
        record("a", 1, ns="x"),
        record("b", 2, ns="x"),
        record("a", 3, ns="y"),
        record("c", 4, ns="x"),
    )
    assert list(store.keys_from(prefix="x/")) == ["x/a", "x/b", "x/c"]
    assert list(store.keys_from("x/b\x00", "x/")) == ["x/c"]
    assert list(store.keys_from("x/b")) == ["x/b", "x/c", "y/a"]


# -- replace --------------------------------------------------------------------


def test_first_replace_loads_and_persists_a_snapshot() -> None:
    store = ScopeStore(SCOPE, CONFIGMAPS, 10)
    calls: list[PersistCall] = []
    store.persist = lambda _s, rv, ups, dels: calls.append((rv, dict(ups), dels))
    events = store.replace(by_key(record("a", 3)), 5)
    assert events == []
    assert store.synced and store.rv == 5 and store.compacted_rv == 5
    assert calls == [(5, {"ns/a": record("a", 3).raw}, None)]


def test_replace_emits_the_difference() -> None:
    store, calls = make_store(record("same", 2), record("changed", 3), record("gone", 4), rv=10)
    after = by_key(record("same", 2), record("changed", 12, data="x"), record("new", 11))
    events = store.replace(after, 20)
    assert [(e.type, e.obj.name) for e in events] == [
        ("ADDED", "new"),
        ("MODIFIED", "changed"),
        ("DELETED", "gone"),
    ]
    assert [e.rv for e in events[:2]] == [11, 12]
    assert 12 < events[2].rv <= 20
    assert events[1].prev == record("changed", 3)
    assert store.rv == 20
    assert store.objects == after
    assert list(store.keys_from()) == sorted(after)
    # Only the difference is journaled: the changed/added objects and the deletion.
    rv, upserts, deletes = calls[-1]
    assert rv == 20
    assert set(upserts) == {"ns/new", "ns/changed"} and deletes == ["ns/gone"]


def test_replace_with_an_older_list_is_ignored() -> None:
    store, calls = make_store(record("a", 3), rv=10)
    assert store.replace({}, 9) == []
    assert store.rv == 10 and "ns/a" in store.objects
    assert calls == []


def test_replace_deleted_object_carries_the_deletion_rv() -> None:
    """sec. 3.6: a DELETED object shows the RV of the deletion, not its last RV.

    A client records the RV of every event it gets; an older one would make
    its next watch start in the past.
    """
    store, _ = make_store(record("gone", 4), rv=10)
    w = watcher()
    store.watchers.add(w)
    [event] = store.replace({}, 15)
    assert event.type == "DELETED" and event.rv == 15
    assert frames(w) == [("DELETED", "gone", "15")]


def test_replace_events_have_distinct_rvs_when_a_change_is_at_the_list_rv() -> None:
    """A watcher resuming from the RV of any emitted event must miss nothing."""
    store, _ = make_store(record("keep", 4), record("gone", 5), rv=10)
    events = store.replace(by_key(record("keep", 15, data="new")), 15)
    rvs = [e.rv for e in events]
    assert rvs == sorted(set(rvs)), rvs
    for event in events:
        later = store.events_after(event.rv)
        assert later == events[events.index(event) + 1 :]


# Objects a hypothesis state is built from: a few names, each with a version.
_names = st.sampled_from(["a", "b", "c", "d", "e", "f"])


@st.composite
def transitions(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], int, int]:
    """(before, after) as name -> data, the before RV and the number of writes in between."""
    before = draw(st.dictionaries(_names, st.sampled_from(["1", "2"]), max_size=6))
    after = draw(st.dictionaries(_names, st.sampled_from(["1", "2", "3"]), max_size=6))
    base = draw(st.integers(min_value=len(before), max_value=50))
    extra = draw(st.integers(min_value=0, max_value=5))
    return before, after, base, extra


@given(transitions())
@settings(max_examples=300, deadline=None)
def test_replace_property_events_rebuild_the_after_state(
    case: tuple[dict[str, str], dict[str, str], int, int],
) -> None:
    """Replaying the events on the before-state gives the after-state; RVs are
    strictly increasing, after the old RV and at most the list RV."""
    before_data, after_data, base, extra = case
    before = {}
    for i, (name, data) in enumerate(sorted(before_data.items())):
        before[f"ns/{name}"] = record(name, base - i, data=data)
    # Like etcd: every create/update/delete between the two states takes its own revision.
    rv = base
    after = {}
    for name, data in sorted(after_data.items()):
        old = before.get(f"ns/{name}")
        if old is not None and json.loads(old.raw).get("data", {}).get("v") == data:
            after[old.key] = old
            continue
        rv += 1
        after[f"ns/{name}"] = record(name, rv, data=data)
    rv += sum(1 for k in before if k not in after) + extra
    store, _ = make_store(*before.values(), rv=base)
    events = store.replace(after, rv)

    state = dict(before)
    for event in events:
        if event.type == "DELETED":
            assert event.obj.key in state
            assert event.obj.rv == event.rv
            del state[event.obj.key]
        else:
            assert (event.type == "ADDED") == (event.obj.key not in state)
            state[event.obj.key] = event.obj
    assert state == after
    assert store.objects == after
    rvs = [e.rv for e in events]
    assert rvs == sorted(set(rvs))
    assert all(base < r <= rv for r in rvs)
    assert store.rv == rv


# -- apply_event / bookmark ------------------------------------------------------


def test_apply_event_sequence() -> None:
    store, calls = make_store(record("a", 3), rv=10)
    assert store.apply_event("MODIFIED", record("a", 9, data="old")) is None  # already applied
    assert store.apply_event("ADDED", record("a", 10)) is None
    added_again = store.apply_event("ADDED", record("a", 11, data="x"))
    assert added_again is not None and added_again.type == "MODIFIED"
    assert added_again.prev == record("a", 3)
    new = store.apply_event("ADDED", record("b", 12))
    assert new is not None and new.type == "ADDED" and new.prev is None
    deleted = store.apply_event("DELETED", record("a", 13, data="x"))
    assert deleted is not None and deleted.type == "DELETED" and deleted.rv == 13
    assert list(store.objects) == ["ns/b"]
    assert store.apply_event("DELETED", record("unknown", 14)) is None
    assert store.rv == 14
    assert calls == [
        (11, {"ns/a": record("a", 11, data="x").raw}, []),
        (12, {"ns/b": record("b", 12).raw}, []),
        (13, {}, ["ns/a"]),
        (14, {}, []),
    ]
    assert summary(store.events_after(10)) == [
        ("MODIFIED", "a", 11),
        ("ADDED", "b", 12),
        ("DELETED", "a", 13),
    ]


def test_bookmark_moves_forward_only() -> None:
    store, calls = make_store(rv=10)
    assert not store.bookmark(10)
    assert not store.bookmark(5)
    assert store.bookmark(12)
    assert store.rv == 12
    assert calls == [(12, {}, [])]
    assert store.events_after(10) == []


def test_bytes_track_object_sizes() -> None:
    store, _ = make_store(record("a", 1), rv=10)
    store.apply_event("MODIFIED", record("a", 11, data="x" * 100))
    store.apply_event("ADDED", record("b", 12))
    store.apply_event("DELETED", record("a", 13))
    assert store.bytes == len(record("b", 12).raw)


# -- history ---------------------------------------------------------------------


def test_events_after_and_too_old() -> None:
    store, _ = make_store(rv=10, history_limit=3)
    for i in range(1, 6):
        store.apply_event("ADDED", record(f"o{i}", 10 + i))
    # Kept: 13, 14, 15; every event after 12 is still known.
    assert store.compacted_rv == 12
    assert [e.rv for e in store.events_after(12)] == [13, 14, 15]
    assert [e.rv for e in store.events_after(14)] == [15]
    assert store.events_after(15) == []
    assert store.events_after(99) == []
    with pytest.raises(TooOld) as err:
        store.events_after(11)
    assert (err.value.requested, err.value.oldest) == (11, 12)
    assert "too old resource version: 11 (12)" in str(err.value)


def test_zero_history_keeps_nothing() -> None:
    store, _ = make_store(rv=10, history_limit=0)
    store.apply_event("ADDED", record("a", 11))
    assert store.compacted_rv == 11
    assert store.events_after(11) == []
    with pytest.raises(TooOld):
        store.events_after(10)


def test_load_resets_history() -> None:
    store, _ = make_store(rv=10)
    store.apply_event("ADDED", record("a", 11))
    store.load({}, 20)
    assert store.events_after(20) == []
    with pytest.raises(TooOld):
        store.events_after(11)


# -- watchers --------------------------------------------------------------------


def test_watchers_get_events_through_their_selectors() -> None:
    store, _ = make_store(record("a", 3, {"app": "web"}), rv=10)
    web, everything, other_ns = watcher("app=web"), watcher(), watcher(namespace="other")
    store.watchers.update({web, everything, other_ns})
    store.apply_event("MODIFIED", record("a", 11, {"app": "db"}))  # leaves web's selection
    store.apply_event("MODIFIED", record("a", 12, {"app": "web"}))  # comes back
    store.apply_event("ADDED", record("b", 13, {"app": "web"}))
    store.apply_event("DELETED", record("b", 14, {"app": "web"}))
    assert frames(web) == [
        ("DELETED", "a", "11"),
        ("ADDED", "a", "12"),
        ("ADDED", "b", "13"),
        ("DELETED", "b", "14"),
    ]
    assert [t for t, _, _ in frames(everything)] == ["MODIFIED", "MODIFIED", "ADDED", "DELETED"]
    assert frames(other_ns) == []
    assert web.wake.is_set() and not other_ns.wake.is_set()


# (old labels or None, new labels, watcher selector, expected frame type or None)
TRANSITIONS = [
    ({"a": "1"}, {"a": "1"}, "a=1", "MODIFIED"),
    (None, {"a": "1"}, "a=1", "ADDED"),  # MODIFIED without a previous state
    ({"a": "2"}, {"a": "1"}, "a=1", "ADDED"),
    ({"a": "1"}, {"a": "2"}, "a=1", "DELETED"),
    ({"a": "2"}, {"a": "3"}, "a=1", None),
]


@pytest.mark.parametrize(("old", "new", "selector", "expected"), TRANSITIONS)
def test_selector_transition_table(
    old: dict[str, str] | None, new: dict[str, str], selector: str, expected: str | None
) -> None:
    prev = None if old is None else record("x", 5, old)
    event = Event("MODIFIED", 7, record("x", 7, new), prev)
    w = watcher(selector)
    frame = w.frame_for(event)
    if expected is None:
        assert frame is None
        return
    assert frame is not None
    doc = json.loads(frame)
    assert doc["type"] == expected
    # A DELETED for leaving the selection shows the previous content at the event's RV.
    assert doc["object"]["metadata"]["resourceVersion"] == "7"
    assert doc["object"]["metadata"].get("labels") == (old if expected == "DELETED" else new)


def test_frames_are_encoded_once_per_event() -> None:
    event = Event("ADDED", 7, record("x", 7), None)
    assert watcher().frame_for(event) is watcher().frame_for(event)


@pytest.mark.parametrize(("min_rv", "sent"), [(0, [11, 12, 13]), (11, [12, 13]), (13, [])])
def test_watcher_min_rv(min_rv: int, sent: list[int]) -> None:
    store, _ = make_store(rv=10)
    w = watcher(min_rv=min_rv)
    store.watchers.add(w)
    for i in range(1, 4):
        store.apply_event("ADDED", record(f"o{i}", 10 + i))
    assert [int(rv) for _, _, rv in frames(w)] == sent


def test_overflowing_watcher_is_closed_and_dropped() -> None:
    store, _ = make_store(rv=10)
    size = Event("ADDED", 11, record("o1", 11), None).frame(CONFIGMAPS, "ADDED").size
    slow, fast = watcher(max_bytes=2 * size), watcher(max_bytes=10 * size)
    store.watchers.update({slow, fast})
    for i in range(1, 4):
        store.apply_event("ADDED", record(f"o{i}", 10 + i))
    assert slow.closed and slow.close_reason == "watcher fell behind"
    assert len(slow.pending) <= 2
    assert store.watchers == {fast}
    fan_out({slow}, Event("ADDED", 20, record("late", 20), None))
    assert len(slow.pending) <= 2
    store.close_watchers("shutting down")
    assert fast.closed and fast.close_reason == "shutting down" and not store.watchers
    slow.close("again")
    assert slow.close_reason == "watcher fell behind"


# -- wait_for_rv -------------------------------------------------------------------


async def test_wait_for_rv() -> None:
    store, _ = make_store(rv=10)
    assert await store.wait_for_rv(10, 0)
    assert not await store.wait_for_rv(11, 0.01)
    waiter = asyncio.ensure_future(store.wait_for_rv(12, 5))
    await asyncio.sleep(0)
    store.apply_event("ADDED", record("a", 11))
    await asyncio.sleep(0)
    assert not waiter.done()
    store.bookmark(12)
    assert await asyncio.wait_for(waiter, 1)


async def test_wait_for_rv_woken_by_replace() -> None:
    store, _ = make_store(rv=10)
    waiter = asyncio.ensure_future(store.wait_for_rv(15, 5))
    await asyncio.sleep(0)
    store.replace({}, 20)
    assert await asyncio.wait_for(waiter, 1)


# -- listing -----------------------------------------------------------------------


def list_body(*items: ObjectRecord, rv: str = "42", kind: str = "ConfigMapList") -> bytes:
    return (
        b'{"kind":"'
        + kind.encode()
        + b'","apiVersion":"v1","metadata":{"resourceVersion":"'
        + rv.encode()
        + b'","continue":"tok","remainingItemCount":3},"items":['
        + b",".join(r.raw for r in items)
        + b"]}"
    )


def test_parse_list_and_records_of() -> None:
    body = list_body(record("keep", 1), record("drop-me", 2), record("other", 3))
    view = parse_list(body)
    assert view.metadata.resourceVersion == "42"
    assert view.metadata.continue_ == "tok"
    assert view.metadata.remainingItemCount == 3
    records = records_of(CONFIGMAPS, view)
    assert list(records) == ["ns/keep", "ns/drop-me", "ns/other"]
    assert records["ns/other"].raw == record("other", 3).raw


def test_parse_list_without_items() -> None:
    view = parse_list(b'{"kind":"ConfigMapList","metadata":{"resourceVersion":"5"},"items":null}')
    assert records_of(CONFIGMAPS, view) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "malformed list body"),
        (b'{"kind":"ConfigMapList","items":{}}', "malformed list body"),
        (b'{"kind":"ConfigMap","metadata":{}}', "expected a list, got kind 'ConfigMap'"),
        (b"[]", "malformed list body"),
    ],
)
def test_parse_list_errors(body: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamBody, match=message):
        parse_list(body)


def test_records_of_malformed_item() -> None:
    view = parse_list(b'{"kind":"ConfigMapList","items":[{"metadata":{"name":5}}]}')
    with pytest.raises(BadUpstreamBody, match="malformed list item"):
        records_of(CONFIGMAPS, view)


@pytest.mark.parametrize(("text", "rv"), [("0", 0), ("17", 17), ("123456789012", 123456789012)])
def test_parse_rv(text: str, rv: int) -> None:
    assert parse_rv(text) == rv


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not an integer"),
        ("abc", "is not an integer"),
        ("-1", "is negative"),
        ("1.5", "is not an integer"),
    ],
)
def test_parse_rv_errors(text: str, message: str) -> None:
    with pytest.raises(BadUpstreamBody, match=message):
        parse_rv(text)


def test_bad_upstream_body_is_a_value_error() -> None:
    assert issubclass(BadUpstreamBody, ValueError)
    with pytest.raises(BadUpstreamBody) as err:
        parse_list(b"{")
    assert isinstance(err.value.__cause__, msgspec.DecodeError)


# -- paging --------------------------------------------------------------------------


def _page_store() -> ScopeStore:
    store, _ = make_store(
        *(record(f"o{i}", i, {"even": str(i % 2 == 0).lower()}) for i in range(6))
    )
    return store


@pytest.mark.parametrize(
    ("limit", "selector", "count", "names", "remaining"),
    [
        (0, "", True, ["o0", "o1", "o2", "o3", "o4", "o5"], None),
        (2, "", True, ["o0", "o1"], 4),
        (2, "", False, ["o0", "o1"], None),
        (6, "", True, ["o0", "o1", "o2", "o3", "o4", "o5"], None),
        (2, "even=true", False, ["o0", "o2"], None),
        (3, "even=true", False, ["o0", "o2", "o4"], None),
    ],
)
def test_select_page(
    limit: int, selector: str, count: bool, names: list[str], remaining: int | None
) -> None:
    store = _page_store()
    labels = LabelSelector.parse(selector)
    page = select_page(
        store.keys_from(prefix="ns/"),
        store.objects,
        lambda r: labels.matches(r.labels),
        limit=limit,
        snapshot_rv=10,
        prefix="ns/",
        count_remaining=count,
    )
    assert [r.name for r in page.items] == names
    assert page.remaining == remaining
    if len(names) == limit and names[-1] != "o5" and not (selector and names[-1] == "o4"):
        rv, start = decode_continue(page.continue_token)
        assert rv == 10 and start > names[-1]
        # The next page starts right after the last item.
        rest = list(store.keys_from("ns/" + start, "ns/"))
        assert rest[0] == f"ns/o{int(names[-1][1:]) + 1}"
    else:
        assert page.continue_token == ""


# -- filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefixes", "name", "kept"),
    [
        (["drop-"], "drop-me", False),
        (["drop-"], "keep-me", True),
        (["drop-"], "dro", True),
        (["a", "b"], "bee", False),
        ([], "anything", True),
    ],
)
def test_drop_name_prefix(prefixes: list[str], name: str, kept: bool) -> None:
    rec = record(name, 1)
    no_inputs = cast(FilterInputs, None)  # the rule reads nothing but the name
    assert (DropNamePrefix(prefixes).apply(rec, no_inputs) is rec) is kept

"""Filtered views follow their store through a chain and re-filter when inputs change.

The view is a ScopeStore of its own: these tests drive a base store with
upstream-like events and check what a watcher of the view receives, the RVs
it carries, and what a client resuming from any of them gets.
"""

from __future__ import annotations

import json
from typing import Any

from edgeproxy.cache.broadcast import Watcher
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.cache.views import FilteredView
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import BUILTIN

CONFIGMAPS = next(rt for rt in BUILTIN if rt.resource == "configmaps")


def cm(name: str, rv: int, **labels: str) -> ObjectRecord:
    raw = json.dumps(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "resourceVersion": str(rv),
                "labels": labels,
            },
            "data": {"v": str(rv)},
        },
        separators=(",", ":"),
    ).encode()
    return record_from_bytes(CONFIGMAPS, raw)


class Hide:
    """A chain whose input is a set of hidden names (stands for node labels etc.)."""

    def __init__(self) -> None:
        self.hidden: set[str] = set()

    def __call__(self, record: ObjectRecord) -> ObjectRecord | None:
        return None if record.name in self.hidden else record


def setup(*records: ObjectRecord, rv: int = 10) -> tuple[ScopeStore, FilteredView, Hide, Watcher]:
    base = ScopeStore(Scope("", "v1", "configmaps", "ns"), CONFIGMAPS, history_limit=100)
    base.load({r.key: r for r in records}, rv)
    hide = Hide()
    view = FilteredView(base, "hide", hide)
    watcher = Watcher(view.types, "", LabelSelector.parse(""), FieldSelector.parse(""), 1 << 20)
    watcher.min_rv = view.rv
    view.watchers.add(watcher)
    return base, view, hide, watcher


def frames(watcher: Watcher) -> list[tuple[str, str, str]]:
    out = []
    while watcher.pending:
        event: dict[str, Any] = json.loads(watcher.pending.popleft().data)
        meta = event["object"]["metadata"]
        out.append((event["type"], meta["name"], meta["resourceVersion"]))
    return out


def test_view_follows_base_events_through_the_chain() -> None:
    base, view, hide, watcher = setup(cm("a", 5), cm("b", 6))
    hide.hidden = {"secret"}
    base.apply_event("ADDED", cm("secret", 11))
    base.apply_event("ADDED", cm("c", 12))
    base.apply_event("MODIFIED", cm("a", 13))
    base.apply_event("DELETED", cm("b", 14))
    assert frames(watcher) == [
        ("ADDED", "c", "12"),
        ("MODIFIED", "a", "13"),
        ("DELETED", "b", "14"),
    ]
    # A hidden object's events count as sent: the view's RV moves on.
    base.apply_event("MODIFIED", cm("secret", 15))
    assert frames(watcher) == []
    assert view.rv == base.rv == 15
    assert sorted(view.objects) == ["ns/a", "ns/c"]


def test_an_object_that_becomes_hidden_is_deleted_for_the_client() -> None:
    base, view, hide, watcher = setup(cm("a", 5))
    hide.hidden = {"a"}
    base.apply_event("MODIFIED", cm("a", 11))
    assert frames(watcher) == [("DELETED", "a", "11")]
    assert "ns/a" not in view.objects


def test_refilter_emits_the_difference_at_the_inputs_rv() -> None:
    base, view, hide, watcher = setup(cm("a", 5), cm("b", 6), cm("c", 7))
    hide.hidden = {"a"}
    assert view.refilter(input_rv=20) == 1
    assert frames(watcher) == [("DELETED", "a", "20")]
    assert view.rv == 20 and base.rv == 10
    # Nothing changed: no event, no RV.
    assert view.refilter(input_rv=21) == 0
    assert view.rv == 20
    # The input's RV is older than the view: the next RV after the view's.
    hide.hidden = {"b"}
    assert view.refilter(input_rv=3) == 2
    assert frames(watcher) == [("ADDED", "a", "21"), ("DELETED", "b", "21")]
    assert view.objects["ns/a"].rv == 21
    # A batch of two is sealed: the view's state after it is at RV 22.
    assert view.rv == 22


def test_base_events_behind_the_view_are_stamped_after_it() -> None:
    base, view, hide, watcher = setup(cm("a", 5), cm("b", 6))
    hide.hidden = {"b"}
    view.refilter(input_rv=50)
    frames(watcher)
    # Upstream's own event at 12 arrives after the re-filter at 50.
    base.apply_event("MODIFIED", cm("a", 12))
    assert frames(watcher) == [("MODIFIED", "a", "51")]
    base.apply_event("MODIFIED", cm("a", 60))
    assert frames(watcher) == [("MODIFIED", "a", "60")]
    # The stamped copy compares by its unstamped bytes: no spurious re-filter event.
    base.apply_event("MODIFIED", cm("b", 61))
    hide.hidden = set()
    assert view.refilter(input_rv=62) == 1
    assert frames(watcher) == [("ADDED", "b", "62")]
    assert view.refilter(input_rv=63) == 0


def test_resume_from_a_batch_rv_replays_the_whole_batch() -> None:
    base, view, hide, _ = setup(cm("a", 5), cm("b", 6), cm("c", 7))
    hide.hidden = {"a", "b"}
    view.refilter(input_rv=20)
    base.apply_event("MODIFIED", cm("c", 22))
    # A client that saw RV 20 may have missed part of the batch: it gets all of it.
    assert [(e.type, e.obj.name, e.rv) for e in view.events_after(20)] == [
        ("DELETED", "a", 20),
        ("DELETED", "b", 20),
        ("MODIFIED", "c", 22),
    ]
    resumed = Watcher(view.types, "", LabelSelector.parse(""), FieldSelector.parse(""), 1 << 20)
    resumed.min_rv = 20
    assert [f for e in view.events_after(20) if (f := resumed.frame_for(e))].__len__() == 3
    # The seal (21) has seen the whole batch; an ordinary event is not replayed.
    assert [e.rv for e in view.events_after(21)] == [22]
    assert [e.rv for e in view.events_after(22)] == []


def test_a_list_after_a_batch_is_past_it_so_its_watch_gets_no_replay() -> None:
    base, view, hide, _ = setup(cm("a", 5), cm("b", 6), cm("c", 7))
    hide.hidden = {"a", "b"}
    view.refilter(input_rv=20)
    # The list a client takes now says RV 21; watching from there sends nothing.
    assert view.rv == 21 and sorted(view.objects) == ["ns/c"]
    assert view.events_after(view.rv) == []
    # An upstream event at the seal's RV is stamped after it, never at or below.
    base.apply_event("MODIFIED", cm("c", 21))
    assert [(e.obj.name, e.rv) for e in view.events_after(21)] == [("c", 22)]
    # A lone re-filter change is not sealed: its own RV is the state after it.
    hide.hidden = {"a"}
    assert view.refilter(input_rv=30) == 1
    assert view.rv == 30


def test_rebuild_on_base_load_and_a_failing_chain_hides_the_object() -> None:
    base, view, _, _ = setup(cm("a", 5))

    def broken(record: ObjectRecord) -> ObjectRecord | None:
        raise ValueError("bug")

    other = FilteredView(base, "broken", broken)
    assert len(other) == 0 and other.synced
    base.load({r.key: r for r in (cm("x", 30), cm("y", 31))}, 31)
    assert sorted(view.objects) == ["ns/x", "ns/y"] and view.rv == 31

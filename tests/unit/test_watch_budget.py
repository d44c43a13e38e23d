"""Watch queues bounded by bytes: per watcher, and over all watchers (cache/broadcast.py)."""

from __future__ import annotations

import json

from edgeproxy.cache.broadcast import Event, WatchBudget, Watcher, fan_out
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry

CONFIGMAPS = ResourceRegistry().get("", "v1", "configmaps")
assert CONFIGMAPS is not None


def record(name: str, rv: int, pad: int = 100) -> ObjectRecord:
    obj = {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)}}
    obj["data"] = {"pad": "x" * pad}  # type: ignore[dict-item]
    return record_from_bytes(CONFIGMAPS, json.dumps(obj).encode())


def watcher(budget: WatchBudget, labels: str = "") -> Watcher:
    return Watcher(
        CONFIGMAPS,
        "ns",
        LabelSelector.parse(labels),
        FieldSelector.parse(""),
        budget.per_watcher,
        budget=budget,
    )


def added(rv: int, pad: int = 100) -> Event:
    return Event("ADDED", rv, record(f"o{rv}", rv, pad), None)


def test_a_frame_queued_for_many_watchers_counts_once() -> None:
    budget = WatchBudget(max_bytes=10**9, per_watcher=10**9)
    watchers = {watcher(budget) for _ in range(100)}
    event = added(2)
    fan_out(watchers, event)
    size = event.frame(CONFIGMAPS, "ADDED").size
    assert budget.bytes == size
    assert all(w.held_bytes() == size for w in watchers)
    for w in watchers:
        w.release()
    assert budget.bytes == 0 and all(w.held_bytes() == 0 for w in watchers)


def test_taking_a_batch_counts_it_until_sent() -> None:
    budget = WatchBudget(max_bytes=10**9, per_watcher=10**9)
    a, b = watcher(budget), watcher(budget)
    for rv in range(2, 7):
        fan_out({a, b}, added(rv))
    queued = budget.bytes
    batch = a.take(limit=1)  # at least one frame, however small the limit
    assert len(batch) == 1 and len(a.pending) == 4
    # b still queues that frame; a's copy in flight counts on its own.
    assert budget.bytes == queued + len(batch[0])
    assert a.held_bytes() == queued
    a.sent()
    assert budget.bytes == queued and a.held_bytes() == queued - len(batch[0])
    everything = b.take(limit=10**9)
    assert len(everything) == 5 and not b.pending
    b.sent()
    assert budget.bytes == a.held_bytes()  # only what a still queues
    a.finish()
    b.finish()
    assert budget.bytes == 0 and not budget.watchers


def test_a_watcher_past_its_own_bound_is_cut_off_and_holds_nothing() -> None:
    size = added(2).frame(CONFIGMAPS, "ADDED").size
    budget = WatchBudget(max_bytes=10**9, per_watcher=3 * size)
    slow, fast = watcher(budget), watcher(budget)
    cut: list[str] = []
    slow.on_overflow = lambda: cut.append("slow")
    watchers = {slow, fast}
    for rv in range(2, 5):
        fan_out(watchers, added(rv))
        fast.take(limit=10**9)
        fast.sent()
    assert not slow.closed
    fan_out(watchers, added(5))
    assert slow.closed and slow.close_reason == "watcher fell behind" and cut == ["slow"]
    assert not slow.pending and slow.held_bytes() == 0
    assert watchers == {fast} and budget.disconnected_slow == 1
    assert budget.bytes == fast.held_bytes() == size


def test_past_the_shared_budget_the_watchers_holding_most_go_first() -> None:
    size = added(2).frame(CONFIGMAPS, "ADDED").size
    budget = WatchBudget(max_bytes=int(5.5 * size), per_watcher=10**9)
    stuck = [watcher(budget) for _ in range(3)]
    healthy = watcher(budget)
    watchers = {*stuck, healthy}
    for rv in range(2, 6):  # four frames, each counted once however many queue it
        fan_out(watchers, added(rv))
        healthy.take(limit=10**9)
        healthy.sent()
    assert budget.bytes == 4 * size and not any(w.closed for w in watchers)
    # A stuck writer took a batch it cannot send: a copy of its own.
    stuck[0].take(limit=1)
    assert budget.bytes == 5 * size and not stuck[0].closed
    fan_out(watchers, added(6))  # six: over budget
    # The stuck hold five frames each (ties), healthy one: stuck ones go until
    # the budget holds again. Which of the tied go first is the set's order;
    # two suffice when stuck[0] is the one left (its queue shares frames 3-6
    # with nobody then, and frame 2 is its batch in flight).
    gone = [w for w in stuck if w.closed]
    assert not healthy.closed and len(gone) >= 2
    assert watchers == {*stuck, healthy} - set(gone)  # no longer offered events
    assert budget.disconnected_over_budget == len(gone)
    assert budget.bytes <= budget.max_bytes
    for w in stuck:
        w.finish()  # its writer found the connection gone, or the test ends it
    assert budget.bytes == healthy.held_bytes() == size

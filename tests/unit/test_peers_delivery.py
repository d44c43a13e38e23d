"""The peers bench's delivery figures, computed from informer records as the program writes them.

Missed and duplicated events and wrong caches are the issue's offline
figures: a count that cannot see a duplicate, a missed change or a stale
object would make every target look perfect. These check the arithmetic on
records shaped as k8s/clients/cmd/informer writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeproxy.bench.peers_delivery import (
    Write,
    audit_lists,
    cache_mismatches,
    gone,
    missed,
    twice,
)

SLICES = "discovery.k8s.io/v1/endpointslices"
KP_SLICES = f"{SLICES},label=!service.kubernetes.io/headless"


def event(key: str, rv: str, at: float, watch: str = KP_SLICES) -> dict[str, object]:
    return {"type": "event", "watch": watch, "event": "MODIFIED", "key": key,
            "resourceVersion": rv, "time": at}  # fmt: skip


def test_twice_counts_redeliveries_after_the_cut_of_versions_already_handled() -> None:
    events = [event("ns/a", "1", 1.0), event("ns/a", "1", 2.0), event("ns/b", "2", 5.0),
              event("ns/a", "1", 6.0), event("ns/b", "2", 7.0), event("ns/b", "3", 8.0)]  # fmt: skip
    # The copy at 2.0 is before the cut (4.0): only the two after it count.
    assert twice(events, since=4.0) == 2
    assert twice(events[:1] + events[2:3], since=0.0) == 0


def test_missed_counts_writes_of_watched_resources_never_delivered() -> None:
    events = [event("ns/a", "10", 1.0), event("ns/a", "12", 2.0)]
    writes = [Write(SLICES, "ns/a", "10"), Write(SLICES, "ns/a", "11"),
              Write(SLICES, "ns/a", "12"), Write("v1/services", "ns/s", "13")]  # fmt: skip
    # rv 11 was collapsed away; the Service is not watched by this informer.
    assert missed(events, [KP_SLICES], writes) == 1
    assert missed(events, [KP_SLICES, "v1/services"], writes) == 2


def test_cache_mismatches_counts_missing_extra_and_stale_objects() -> None:
    cloud = {KP_SLICES: {"ns/a": "5", "ns/b": "6", "ns/c": "7"}}
    assert cache_mismatches({KP_SLICES: dict(cloud[KP_SLICES])}, cloud) == 0
    cache = {KP_SLICES: {"ns/a": "5", "ns/b": "4", "ns/x": "1"}}
    assert cache_mismatches(cache, cloud) == 3  # b stale, c missing, x extra
    assert cache_mismatches({}, cloud) == 3


def test_gone_counts_410s_after_the_cut_only() -> None:
    records = [
        {"type": "watch_error", "code": 410, "time": 1.0},
        {"type": "watch_error", "code": 410, "time": 5.0},
        {"type": "watch_error", "code": 500, "time": 6.0},
        {"type": "list", "error": "too old resource version: 3 (9)", "time": 7.0},
    ]
    assert gone(records, since=4.0) == 2


def test_audit_lists_counts_lists_and_watch_lists_of_the_targets_users_after_the_offset(
    tmp_path: Path,
) -> None:
    def line(
        user: str, verb: str, uri: str, agent: str = "Python/3.11 aiohttp", stage: str = ""
    ) -> str:
        # Lists are counted complete; watches (watch-lists too) are logged
        # complete only when they end, so they count when started.
        stage = stage or ("ResponseStarted" if verb == "watch" else "ResponseComplete")
        return json.dumps({"stage": stage, "verb": verb, "requestURI": uri,
                           "user": {"username": user}, "userAgent": agent})  # fmt: skip

    nodes = "/api/v1/nodes?sendInitialEvents=true&watch=true"
    before = (
        line("bench:strict", "list", "/api/v1/pods") + "\n" + line("bench:strict", "watch", nodes)
    )
    before += "\n"
    log = tmp_path / "audit.log"
    log.write_text(
        before
        + "\n".join([
            line("bench:strict", "list", "/api/v1/services"),  # edge-proxy: Python, its own user
            line("bench:strict", "watch", "/api/v1/services?watch=true&resourceVersion=5"),
            # A watch-list going on (logged as started only), and one started
            # before the offset that ends after it: one list after the offset.
            line("bench:strict", "watch", "/api/v1/pods?sendInitialEvents=true&watch=true"),
            line("bench:strict", "watch", nodes, stage="ResponseComplete"),
            line("bench:yurthub", "list", "/api/v1/services"),
            line("admin", "list", "/api/v1/services"),  # the bench's own reads
            line("admin", "list", "/api/v1/services", agent="kube-proxy/v1.37.2"),
            "not json",
        ])
        + "\n"
    )  # fmt: skip
    since = len(before)
    assert audit_lists(log, since, {"bench:strict"}) == 2
    assert audit_lists(log, 0, {"bench:strict"}) == 4
    assert audit_lists(log, since, {"bench:direct", "admin"}) == 1

"""What the node's clients got across the outage, checked against the cloud's own record.

The issue's offline figures are about delivery, not speed: after a
black-holed link and a restart of the proxy and the kubelet, did each
informer end with exactly the cloud's state, did it miss changes the cloud
made meanwhile or get some twice, did it relist or see 410 Gone, and did
the target send LISTs to kube-apiserver when the link came back. The truth
is the cloud's: a LIST straight to kube-apiserver (the same selectors as
the informer's), the churn's own log of every (key, resourceVersion) it
wrote, and kube-apiserver's audit log (attributed by user: each target
reaches the cloud as its own, see peers_way).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproxy.controlplane import ControlPlane

# One JSON line of the informer program (edgeproxy.clientgo.Informer.records).
Record = dict[str, Any]

# Informer --watch spec (resource part) -> the API path to list it at.
PATHS = {
    "v1/services": "/api/v1/services",
    "discovery.k8s.io/v1/endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "v1/namespaces": "/api/v1/namespaces",
}


@dataclass(frozen=True, slots=True)
class Write:
    """One change the churn made in the cloud: the informer spec's resource, key, version."""

    resource: str
    key: str
    rv: str


def _split(spec: str) -> tuple[str, str]:
    """`discovery.k8s.io/v1/endpointslices,label=x` -> (resource, label selector)."""
    resource, _, rest = spec.partition(",")
    selector = rest.removeprefix("label=") if rest.startswith("label=") else ""
    return resource, selector


def truth(control: ControlPlane, specs: Iterable[str]) -> dict[str, dict[str, str]]:
    """{spec: {key: resourceVersion}} listed straight from kube-apiserver, as the informer keys them."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        resource, selector = _split(spec)
        path = PATHS[resource]
        if selector:
            path += "?" + urllib.parse.urlencode({"labelSelector": selector})
        status, body = control.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status} {body[:200]!r}")
        items = json.loads(body)["items"]
        out[spec] = {}
        for item in items:
            meta = item["metadata"]
            key = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
            out[spec][key] = meta["resourceVersion"]
    return out


def cache_mismatches(cache: dict[str, dict[str, str]], cloud: dict[str, dict[str, str]]) -> int:
    """Objects the informer's cache has wrong: missing, extra, or at another resourceVersion."""
    wrong = 0
    for spec, want in cloud.items():
        have = cache.get(spec, {})
        wrong += len(want.keys() ^ have.keys())
        wrong += sum(have[k] != rv for k, rv in want.items() if k in have)
    return wrong


def twice(events: Iterable[Record], since: float) -> int:
    """Handler deliveries after `since` of a (watch, key, resourceVersion) the informer already had.

    `events` are an informer's "event" records in the order it wrote them.
    """
    seen: set[tuple[str, str, str]] = set()
    dups = 0
    for r in events:
        one = (r["watch"], r["key"], r.get("resourceVersion", ""))
        if one in seen and r.get("time", 0) >= since:
            dups += 1
        seen.add(one)
    return dups


def missed(events: Iterable[Record], watches: Iterable[str], writes: Iterable[Write]) -> int:
    """The cloud's writes (of resources in `watches`) the informer's handlers never got."""
    delivered: dict[str, set[tuple[str, str]]] = {}
    for r in events:
        resource = _split(r["watch"])[0]
        delivered.setdefault(resource, set()).add((r["key"], r.get("resourceVersion", "")))
    watched = {_split(spec)[0] for spec in watches}
    return sum(
        (w.key, w.rv) not in delivered.get(w.resource, set())
        for w in writes
        if w.resource in watched
    )


def gone(records: Iterable[Record], since: float) -> int:
    """410 Gone (as watch errors, or list/watch errors saying so) after `since`, in all records."""
    n = 0
    for r in records:
        if r.get("time", 0) < since:
            continue
        error = str(r.get("error", ""))
        expired = r["type"] in ("list", "watch") and ("too old" in error or "Expired" in error)
        if expired or (r["type"] == "watch_error" and r.get("code") == 410):
            n += 1
    return n


def audit_lists(
    audit_log: Path, since: int, users: Collection[str], bench_user: str = "admin"
) -> int:
    """LISTs (and watch-lists) kube-apiserver answered `users` after byte `since` of its audit log.

    Requests the bench itself made (Python clients, as `bench_user`) are left out;
    edge-proxy's own are Python too, but as its own user.
    """
    count = 0
    with audit_log.open("rb") as log:
        log.seek(since)
        for line in log:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            verb, uri, stage = event.get("verb"), event.get("requestURI", ""), event.get("stage")
            # client-go's informers list by a watch with initial events
            # (WatchList); a watch is logged complete only when it ends, so
            # it counts when its response started.
            watch_list = verb == "watch" and "sendInitialEvents=true" in uri
            if not (verb == "list" and stage == "ResponseComplete") and not (
                watch_list and stage == "ResponseStarted"
            ):
                continue
            user = event.get("user", {}).get("username")
            if user not in users:
                continue
            if user == bench_user and event.get("userAgent", "").lower().startswith("python"):
                continue
            count += 1
    return count

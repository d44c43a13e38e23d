"""Selecting and paginating a list from objects held in key order.

Shared by the simulator and the proxy's local answers: walk keys from the
continue point, keep what the selectors match, stop at `limit`, and build the
continue token and `remainingItemCount` as kube-apiserver does
(k8s-api-semantics.md sec. 2.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from edgeproxy.kube.continuetoken import continue_after
from edgeproxy.kube.objects import ObjectRecord


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ObjectRecord]
    continue_token: str
    remaining: int | None


def select_page(
    keys: Iterable[str],
    objects: Mapping[str, ObjectRecord],
    matches: Callable[[ObjectRecord], bool],
    *,
    limit: int,
    snapshot_rv: int,
    prefix: str,
    count_remaining: bool,
) -> Page:
    """One page: `keys` must be ordered and start at the continue point.

    Continue keys are relative to `prefix` (the namespace part), like etcd
    keys under /registry/<resource>/[<namespace>/]. `remainingItemCount` is
    only given without selectors (`count_remaining`).
    """
    items: list[ObjectRecord] = []
    it = iter(keys)
    for key in it:
        record = objects[key]
        if not matches(record):
            continue
        if limit and len(items) == limit:
            token = continue_after(snapshot_rv, items[-1].key[len(prefix) :])
            remaining = 1 + sum(1 for _ in it) if count_remaining else None
            return Page(items, token, remaining)
        items.append(record)
    return Page(items, "", None)

"""What the cache holds, for people and monitoring: budgets, usage and every scope.

Read-only views of the CacheManager for the admin port (/debug/cache,
/metrics) and `edge-proxy status`; kept apart from the manager, which
decides what is held.
"""

from __future__ import annotations

import time
from typing import Any

from edgeproxy.cache.budget import footprint
from edgeproxy.cache.follower import Follower
from edgeproxy.cache.manager import CacheManager


def usage(cache: CacheManager) -> dict[str, Any]:
    """Budgets and what is held against them, for /metrics and /debug/cache."""
    s, budget = cache.settings, cache.watch_budget
    return {
        "memory": {
            "budgetBytes": s.max_memory_bytes,
            "usedBytes": cache.memory_used(),
            "scopes": len(cache.stores),
            "evictions": cache.evictions["memory"],
            "loadsFromDisk": cache.loads_from_disk,
        },
        "disk": {
            "budgetBytes": s.max_disk_bytes,
            "usedBytes": cache.disk_used(),
            "scopes": len(cache.on_disk) + sum(1 for st in cache.stores.values() if st.synced),
            "scopesOnlyOnDisk": len(cache.on_disk),
            "evictions": cache.evictions["disk"],
        },
        "nonResource": {
            "entries": len(cache.raw),
            "maxEntries": cache.raw.max_entries,
            "bytes": cache.raw.bytes,
            "maxBytes": cache.raw.max_bytes,
            "evictions": cache.raw.evictions,
        },
        "watchQueues": {
            "budgetBytes": budget.max_bytes,
            "perWatcherBytes": budget.per_watcher,
            "usedBytes": budget.bytes,
            "watchers": len(budget.watchers),
            "disconnectedSlow": budget.disconnected_slow,
            "disconnectedOverBudget": budget.disconnected_over_budget,
        },
    }


def scopes(cache: CacheManager) -> list[dict[str, Any]]:
    """Every scope, resident or only on disk, as /debug/cache and `edge-proxy status` show it."""
    out: list[dict[str, Any]] = []
    now = time.monotonic()
    for scope, store in sorted(cache.stores.items(), key=lambda kv: kv[0].key):
        reflector = cache.reflectors.get(scope)
        out.append(
            {
                "scope": scope.key,
                "resident": True,
                "resourceVersion": str(store.rv),
                "synced": store.synced,
                "objects": len(store),
                "bytes": store.bytes,
                "memoryBytes": footprint(store),
                "unusedSeconds": round(now - store.last_used, 1),
                "secondsSinceSync": _rounded(cache.seconds_since_sync(store, now)),
                "bytesFromUpstream": store.bytes_from_upstream,
                "bytesServed": store.bytes_served,
                "watchers": len(store.watchers),
                "history": len(store.history),
                "reflector": None
                if reflector is None
                else {
                    "bytesFromUpstream": reflector.bytes_in,
                    "relists": reflector.relists,
                    "watchLists": reflector.watch_lists,
                    # The broader scope whose upstream stream feeds this one (follower.py).
                    "follows": reflector.source.store.scope.key
                    if isinstance(reflector, Follower)
                    else "",
                    "watches": reflector.watches,
                    "lastError": reflector.last_error,
                },
            }
        )
    for scope, entry in sorted(cache.on_disk.items(), key=lambda kv: kv[0].key):
        out.append(
            {
                "scope": scope.key,
                "resident": False,
                "resourceVersion": str(entry.rv),
                "synced": True,
                "objects": entry.objects,
                "bytes": entry.bytes,
                "memoryBytes": 0,
                "unusedSeconds": round(now - entry.last_used, 1),
                "secondsSinceSync": None,
                "watchers": 0,
                "reflector": None,
            }
        )
    return out


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)

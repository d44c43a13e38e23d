"""How much the cache may hold, what it holds, and what goes first when it is over.

Clients decide what is cached: every distinct list is a scope, every distinct
discovery path an entry. Left alone, that grows with what clients ask, not
with what the node needs (ARCHITECTURE.md sec. 5: "disk and memory are
bounded by configuration; unused scopes are evicted least-recently-used
first"). Two budgets:

- **memory**: what resident scopes hold (objects, kept history, their
  filtered views, an estimate of the per-object and per-scope structures)
  plus the non-resource answers. Past it, the least recently used scopes
  that nothing is using leave memory; they stay in the journal and are
  loaded again when next needed, so nothing is lost.
- **disk**: the journal's content (the bytes of every stored object and
  answer, as the journal itself counts them). Past it, the least recently
  used idle scopes are dropped from disk (and from memory).

A scope is *in use*, and never evicted, while it has a watcher (on itself or
a filtered view of it), is an input of the filters (pinned), is being loaded
or synced, or a request holds it (`ScopeStore.users`).

The decision is pure (`lru_victims`): the manager applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from edgeproxy.cache.store import ScopeStore

# The defaults size the proxy for a small edge device (1-2 GB of RAM, 8-32 GB
# of flash, shared with the node's own workloads):
# - 256 MiB of memory holds ~180,000 objects of 1 KB (an object costs ~1.4 KB
#   in memory), ten times the Pods, Services and EndpointSlices a node of a
#   few thousand-node cluster lists, while leaving most of a 1 GB node to pods.
DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
# - 1 GiB of disk keeps four times the memory budget for offline use (scopes
#   evicted from memory answer offline from disk) and stays a small share of
#   the smallest flash such a node has.
DEFAULT_DISK_BYTES = 1024 * 1024 * 1024
# - 16 MiB per watcher is 10,000 Pod events (~1.4 KB each): the largest burst one
#   scope sends at once (a relist turned into events after an outage) fits, so a
#   healthy informer is not cut off by it, while a client that stops reading is
#   cut off after 16 MiB, not after its whole backlog. kube-apiserver also closes
#   watchers that fall behind; the client re-watches from its last RV.
DEFAULT_WATCHER_BYTES = 16 * 1024 * 1024
# - 64 MiB over all watchers (each queued frame counted once): four such bursts
#   in flight at once; past it the watchers holding the most are cut off first.
DEFAULT_WATCHERS_BYTES = 64 * 1024 * 1024

# What an object costs in memory beside its JSON bytes: its key, record, RV and
# its rows of labels and fields (10,000 Pods: 1.4 KB each for 1.05 KB of JSON).
OBJECT_OVERHEAD = 320
# A scope's own structures (store, history ring, waiters, indexes): ~1.8 KB measured.
SCOPE_OVERHEAD = 2048


def footprint(store: ScopeStore) -> int:
    """Estimated memory of one resident scope, its filtered views included."""
    total = store.bytes + store.history_bytes + len(store) * OBJECT_OVERHEAD + SCOPE_OVERHEAD
    for view in store.views.values():
        if isinstance(view, ScopeStore):
            total += view.bytes + view.history_bytes + len(view) * OBJECT_OVERHEAD
    return total


def estimate(objects: int, size: int) -> int:
    """Estimated memory of a scope of `objects` objects and `size` bytes once loaded."""
    return size + objects * OBJECT_OVERHEAD + SCOPE_OVERHEAD


T = TypeVar("T")


def lru_victims(
    candidates: Iterable[T],
    last_used: Callable[[T], float],
    size: Callable[[T], int],
    used: int,
    limit: int,
) -> list[T]:
    """The least recently used candidates whose removal brings `used` to `limit`.

    Candidates are the evictable ones (the caller leaves out what is in use);
    when they are not enough, all of them.
    """
    victims: list[T] = []
    for candidate in sorted(candidates, key=last_used):
        if used <= limit:
            break
        victims.append(candidate)
        used -= size(candidate)
    return victims

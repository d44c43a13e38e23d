"""Settings of the proxy's request handling, each default with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Consistency = Literal["strict", "cache-first"]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    # "strict": resourceVersion="" lists go upstream; "cache-first": served from a
    # healthy synced reflector (fewer cloud bytes, may lag by the watch delay).
    consistency: Consistency = "strict"
    # Resources (plural) served cache-first even in strict mode.
    cache_first_resources: frozenset[str] = frozenset()
    # Watch bookmarks every minute, like kube-apiserver.
    bookmark_interval: float = 60.0
    # Kernel send buffer of a watch connection (SO_SNDBUF; Linux doubles it):
    # a burst of 1,000 1 KB events fits, and a client that stops reading pins
    # this much kernel memory, not the 4 MB autotuning would give it.
    watch_send_buffer: int = 128 * 1024
    # How long a watch waits for its scope's first sync before giving up.
    sync_timeout: float = 30.0
    # Read-your-writes: how long a cached read waits for the proxy's own write.
    rv_wait: float = 3.0
    # Retry-After for writes while the cloud is unreachable.
    # Retry-After for writes while the cloud is unreachable: client-go retries a
    # write up to 10 times, so a 1 s hint masks outages shorter than ~10 s.
    offline_retry_after: int = 1
    # --min-request-timeout of kube-apiserver: unset watch timeouts are 1800..3600 s.
    min_request_timeout: float = 1800.0
    # After a (re)start, how long a read with a cached answer waits for the
    # first probe to confirm the link before answering from the cache.
    startup_probe_wait: float = 0.2
    # Answer protobuf to clients that prefer it for built-in kinds, as
    # kube-apiserver does (client-go's typed clients decode it far cheaper).
    serve_protobuf: bool = True
    # Memoized protobuf forms of cached objects and watch frames (bytes).
    protobuf_cache_bytes: int = 32 * 1024 * 1024

"""Process-wide settings that keep `edge-proxy serve`'s resident memory small.

An edge node runs one proxy beside the components it serves, often on a small
machine, so what the process holds before it caches anything counts as much
as what each cached object costs. Three settings, all applied before the
server imports aiohttp or allocates anything large:

- glibc's mmap threshold is pinned at its starting value, 128 KiB. glibc
  raises it each time a large mmapped block is freed, up to 32 MiB, so after
  the first big list every later big buffer lands in the heap, where freed
  pages stay resident behind live small objects. Pinned, a buffer's pages go
  back when it is freed (~1 MB less with 10,000 Pods cached). The price is a
  fresh mapping per big buffer, so the hot paths make none per request: a
  memoized list body is written after its headers, not joined to them
  (`proxy/forward.py`; with a 1.1 MB body joined, pinning halved the cached
  list rate). Only glibc has this knob; elsewhere nothing changes.
- frozenlist's compiled module is C++ and maps libstdc++ into the process
  (0.8 MB resident) for the few lists aiohttp keeps its signal handlers in,
  read a few times per request. Its pure-Python class is the same API and
  iterates the same list. Setting `FROZENLIST_NO_EXTENSIONS` (even to "")
  before starting the proxy keeps the user's choice.
- aiohttp builds two default client TLS contexts when it is imported, and
  both load the system's CA bundle (~140 certificates: 2.5 MB resident).
  The proxy never uses them: every upstream connector gets the context
  built from the kubeconfig (`upstream/credentials.py`), which loads the
  system bundle itself when the kubeconfig names no CA. So aiohttp is
  imported with loading default certificates switched off for the length
  of the import: its default contexts trust nothing, and a connection that
  fell back on them would fail verification rather than pass it.

Modules `serve` does not need to start are imported where they are used:
cryptography (8 MB resident) only when the cluster issues the serving
certificate (server/servingcert.py).

And one action, `trim_heap()`: when the cache evicts scopes from memory
(cache/budget.py), their objects' bytes are freed in the middle of the heap,
where glibc keeps the pages resident. Trimming returns them (300 lists of
distinct selectors over a 256 MiB budget: 626 MB resident before, 369 MB
after, in 10 ms), so the budget bounds what the process holds, not only
what it uses.

Figures: `bench/README.md`, "memory" (the watchcache suite).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

# glibc's mallopt parameter number (malloc.h).
_M_MMAP_THRESHOLD = -3
# glibc's own starting value (DEFAULT_MMAP_THRESHOLD_MIN): objects' bytes
# (~1 KiB each) and socket reads stay in the heap; list bodies get mappings.
# 64 KiB measured the same; 256 KiB to 4 MiB kept 0.4 MB more.
MMAP_THRESHOLD_BYTES = 128 * 1024


def _libc_function(name: str) -> Any:
    """A glibc function, or None where there is none (not Linux, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)
    except (OSError, AttributeError):  # musl and others have no mallopt, malloc_trim
        log.debug("%s unavailable; malloc left as is", name)
        return None


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc `mallopt`."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
        return False
    return True


def trim_heap() -> bool:
    """Give the heap's free pages back to the system; False without glibc.

    Blocking (milliseconds per hundred MB of heap) but without the GIL: call
    it in a thread from the event loop.
    """
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


def prefer_pure_frozenlist() -> bool:
    """Ask frozenlist for its pure-Python class; False if it is already imported."""
    if "frozenlist" in sys.modules:
        return False
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    return True


def import_aiohttp_without_default_certs() -> bool:
    """Import aiohttp with its default client contexts empty; False if already imported."""
    if "aiohttp" in sys.modules:
        return False
    import ssl

    context = ssl.SSLContext
    load_default_certs = context.load_default_certs
    set_default_verify_paths = context.set_default_verify_paths

    def no_certs(self: ssl.SSLContext, *args: Any) -> None:
        return None

    context.load_default_certs = no_certs  # type: ignore[method-assign,assignment]
    context.set_default_verify_paths = no_certs  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401  (builds the contexts, once per process)
    finally:
        context.load_default_certs = load_default_certs  # type: ignore[method-assign]
        context.set_default_verify_paths = set_default_verify_paths  # type: ignore[method-assign]
    return True


def apply() -> None:
    """The three settings; call before importing the server."""
    fix_mmap_threshold()
    prefer_pure_frozenlist()
    import_aiohttp_without_default_certs()

"""The open-file limit: raised at start, and the connection caps that fit inside it.

Every connection is a file descriptor, and most systems start a process
with a soft limit of 1,024 under a much higher hard limit (systemd: 524,288).
Past the soft limit `accept()` fails with EMFILE, and then nothing works:
not lists, not /healthz, not the journal. A process may raise its own soft
limit up to the hard one, as Go programs do at start since Go 1.19, so the
proxy does. The client listener's cap is then kept below what the limit
allows, so descriptors stay for the admin listener, the journal and
upstream: a pass-through request holds two (client and upstream).
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger(__name__)

# The admin listener serves health checks and metrics scrapes: a handful at a
# time. Its own cap keeps them answering when the client listener is flooded.
ADMIN_MAX_CONNECTIONS = 64
# Descriptors kept for everything but client connections: the journal
# (SQLite file, WAL, shared memory), listening sockets, the event loop,
# standard streams, reflector watches upstream and upstream probes.
RESERVED_FDS = 128
# Below this, the proxy could not serve a node's components at all; the
# open-file limit would have to be absurdly low to get here.
MIN_CLIENT_CONNECTIONS = 16
_LINUX_NR_OPEN = Path("/proc/sys/fs/nr_open")


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # An unlimited soft limit is refused; the kernel's ceiling is nr_open.
        target = _nr_open()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open-file limit raised from %d to %d (the hard limit)", soft, target)
        return target
    log.info("open-file limit %s (hard limit %s)", _text(soft), _text(hard))
    return soft if soft != resource.RLIM_INFINITY else target


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE in force (the kernel's ceiling when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else _nr_open()


def client_connection_cap(configured: int, open_files: int) -> int:
    """`--max-connections`, lowered when the open-file limit cannot hold that many."""
    fits = (open_files - RESERVED_FDS - ADMIN_MAX_CONNECTIONS) // 2
    cap = min(configured, max(fits, MIN_CLIENT_CONNECTIONS))
    if cap < configured:
        log.warning(
            "client connections capped at %d, not %d (--max-connections): the open-file "
            "limit of %d holds no more (2 per connection, %d kept for the rest)",
            cap,
            configured,
            open_files,
            RESERVED_FDS + ADMIN_MAX_CONNECTIONS,
        )
    return cap


def _nr_open() -> int:
    try:
        return int(_LINUX_NR_OPEN.read_text())
    except (OSError, ValueError):
        return 1 << 20  # Linux's default nr_open


def _text(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)

"""Which kind of upstream stream a reflector opens next, and what upstream supports.

kube-apiserver (1.37, WatchListCompression) gzips a watch stream only for
a *watch-list* request (sendInitialEvents=true with allowWatchBookmarks)
that accepts gzip, and then for the stream's whole life, one gzip member
per flush; a plain watch from a resourceVersion is never compressed. A
watch-list re-sends every object of the scope first. So:

- a scope's first sync is a watch-list where upstream does watch-list:
  its initial state and every later event cross the link compressed;
- a stream that ends is resumed either with a plain watch from the
  scope's RV (nothing re-sent, every event raw) or with a watch-list
  resync (the whole scope again, compressed, then compressed events):
  `ResumeCost` picks the cheaper by the bytes it measured, as one line
  in the log.

`WatchListSupport` remembers the upstream servers that do not do
watch-list (an old apiserver, the feature off, a proxy in between), so
their reflectors list and plain-watch, as before, asking again only every
ten minutes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Wire bytes per decoded byte of a gzip stream of JSON objects, before any
# was measured: kube-apiserver's level-1 gzip of an EndpointSlice of 50
# endpoints is 1 KB for 10.7 KB.
DEFAULT_GZIP_RATIO = 0.15
# A stream shorter than this says little about the rate of changes.
MIN_MEASURED_SECONDS = 5.0


class WatchListSupport:
    """Upstream servers (by origin) known not to do watch-list, and why.

    A mark lasts `retry_after` seconds, then watch-list is asked for again:
    the apiserver may have been upgraded, and the silence rule may have
    misread a loaded machine (one stream cost the whole process its
    compression until a restart). Asking again costs one refused request or
    one silent stream per server and period.
    """

    def __init__(self, enabled: bool = True, retry_after: float = 600.0) -> None:
        self.enabled = enabled
        self.retry_after = retry_after
        self.unsupported: dict[str, str] = {}
        self._until: dict[str, float] = {}

    def usable(self, servers: list[str]) -> bool:
        """Whether to ask for watch-list: a request may go to any of these servers.

        One server that does not do it is enough to stop asking: a stream
        that fails over to it would otherwise be rejected each time.
        """
        if not self.enabled:
            return False
        now = time.monotonic()
        for origin in [s for s in servers if s in self.unsupported]:
            if self._until[origin] > now:
                return False
            log.info(
                "upstream %s: asking for watch-list again (%.0fs after: %s)",
                origin,
                self.retry_after,
                self.unsupported.pop(origin),
            )
            del self._until[origin]
        return True

    def refuse(self, origin: str, reason: str) -> None:
        if origin in self.unsupported:
            return
        self.unsupported[origin] = reason
        self._until[origin] = time.monotonic() + self.retry_after
        log.warning(
            "upstream %s does not do watch-list (%s): its scopes list and watch "
            "uncompressed for the next %.0fs",
            origin,
            reason,
            self.retry_after,
        )


@dataclass(slots=True)
class StreamStats:
    """What one upstream watch stream carried, after any initial state."""

    seconds: float = 0.0
    decoded_bytes: int = 0  # event bytes as JSON, whatever the encoding
    wire_bytes: int = 0
    compressed: bool = False


@dataclass(slots=True)
class ResumeCost:
    """The measured figures a reflector decides how to resume by."""

    # Decoded event bytes per second the scope's streams carried (None: not measured).
    event_rate: float | None = None
    # Wire bytes per decoded byte of gzip streams, as measured.
    gzip_ratio: float = DEFAULT_GZIP_RATIO

    def measured(self, stats: StreamStats) -> None:
        if stats.compressed and stats.decoded_bytes > 0:
            self.gzip_ratio = min(1.0, stats.wire_bytes / stats.decoded_bytes)
        if stats.seconds >= MIN_MEASURED_SECONDS:
            self.event_rate = stats.decoded_bytes / stats.seconds

    def prefer_watch_list(
        self, scope_bytes: int, stream_seconds: float, *, first: bool = False
    ) -> tuple[bool, str]:
        """Resume with a watch-list resync rather than a plain watch? And why, in words.

        Over the next stream of `stream_seconds`, a plain watch costs the
        events raw; a watch-list costs the scope's objects and the events,
        both compressed. `first`: the reflector has opened no stream yet.
        A stream cut short (a link cut) measures nothing: then a plain watch,
        which also gives clients every event, not their difference.
        """
        if self.event_rate is None:
            if first:
                # A scope synced by a list the proxy forwarded: its events would
                # cross raw for the next 5-10 minutes, while its state again costs
                # a tenth of that list. A busy scope gains most; a quiet one pays little.
                return True, "the reflector's first stream: compressed"
            return False, "no event rate measured yet"
        plain = self.event_rate * stream_seconds
        watch_list = self.gzip_ratio * (scope_bytes + plain)
        why = (
            f"{self.event_rate / 1000:.1f} kB/s of events over {stream_seconds:.0f}s, "
            f"{scope_bytes / 1000:.0f} kB of objects, gzip ratio {self.gzip_ratio:.2f}: "
            f"plain watch ~{plain / 1000:.0f} kB, watch-list ~{watch_list / 1000:.0f} kB"
        )
        return watch_list < plain, why

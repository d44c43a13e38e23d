"""How a reflector picks its next stream: a plain watch or a watch-list (watchlist.py)."""

from __future__ import annotations

import time

from edgeproxy.cache.watchlist import ResumeCost, StreamStats, WatchListSupport


def test_first_stream_is_a_watch_list_then_measured_cost_decides() -> None:
    cost = ResumeCost()
    assert cost.prefer_watch_list(1_000_000, 450, first=True)[0], "first stream: compressed"
    # A stream too short to measure a rate: a plain watch, not the whole scope again.
    cost.measured(StreamStats(seconds=1, decoded_bytes=10_000))
    assert cost.event_rate is None
    assert not cost.prefer_watch_list(1_000_000, 450)[0]
    # Busy: 20 kB/s of raw events for 450 s (9 MB) against a 1 MB scope at ratio 0.1.
    cost.measured(
        StreamStats(seconds=60, decoded_bytes=1_200_000, wire_bytes=120_000, compressed=True)
    )
    assert cost.gzip_ratio == 0.1
    prefer, why = cost.prefer_watch_list(1_000_000, 450)
    assert prefer and "20.0 kB/s" in why
    # Quiet: 10 B/s is 4.5 kB raw, less than a tenth of the scope.
    cost.measured(StreamStats(seconds=600, decoded_bytes=6_000))
    assert not cost.prefer_watch_list(1_000_000, 450)[0]


def test_one_server_without_watch_list_stops_asking(caplog: object) -> None:
    support = WatchListSupport()
    servers = ["https://a:6443", "https://b:6443"]
    assert support.usable(servers)
    support.refuse("https://b:6443", "it answered 422")
    support.refuse("https://b:6443", "again")
    assert not support.usable(servers)
    assert support.unsupported == {"https://b:6443": "it answered 422"}
    assert not WatchListSupport(enabled=False).usable(servers)


def test_a_server_marked_without_watch_list_is_asked_again_later() -> None:
    """A mark expires: the apiserver may have been upgraded, or the silence misread."""
    support = WatchListSupport(retry_after=0.05)
    servers = ["https://a:6443"]
    support.refuse("https://a:6443", "silent for 10s before its initial events ended")
    assert not support.usable(servers)
    time.sleep(0.1)
    assert support.usable(servers)
    assert support.unsupported == {}
    support.refuse("https://a:6443", "it answered 422")  # marked again
    assert not support.usable(servers)

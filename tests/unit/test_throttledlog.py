"""ThrottledLog: one line per key and interval, and the next line counts what was left out."""

from __future__ import annotations

import logging

import pytest

from edgeproxy.throttledlog import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("t"), interval=60, clock=clock)
    with caplog.at_level(logging.INFO, "t"):
        assert throttled.warning("a", "first %s", "a")
        assert not throttled.warning("a", "again %s", "a")
        assert not throttled.warning("a", "again %s", "a")
        assert throttled.warning("b", "first %s", "b")  # another key is not held back
        clock.now += 61
        assert throttled.info("a", "later %s", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "first a",
        "first b",
        "later a (2 more like this in the last 61s not logged)",
    ]


def test_many_keys_stay_bounded() -> None:
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("t"), interval=60, max_keys=10, clock=clock)
    for i in range(1000):
        throttled.warning(f"agent-{i}", "x")
    assert len(throttled._seen) <= 10

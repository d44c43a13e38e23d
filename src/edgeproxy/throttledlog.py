"""Log lines that a client can trigger, at most one per key and interval.

A decision the proxy makes about a client (a stripped identity header, a
connection refused at the cap, a malformed request) deserves one line in the
log: an operator must be able to see it happened. But a client repeating
the same thing thousands of times a second must not turn the log into the
attack's amplifier, so a line is written at most once per `interval` for
each key, and the next line for that key says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Seen:
    logged_at: float
    suppressed: int = 0


class ThrottledLog:
    """One logger's lines, throttled per key."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        # A minute: an operator reading the log sees every ongoing problem at
        # least once a minute, and a flood costs one line a minute per key.
        self._interval = interval
        # Keys can be client-chosen (a User-Agent): their number is bounded too.
        self._max_keys = max_keys
        self._clock = clock
        self._seen: dict[Hashable, _Seen] = {}

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `key` was logged within the interval; True if logged."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.logged_at < self._interval:
            seen.suppressed += 1
            return False
        suppressed = seen.suppressed if seen is not None else 0
        if seen is None and len(self._seen) >= self._max_keys:
            self._forget_old(now)
        self._seen[key] = _Seen(now)
        if suppressed:
            msg += " (%d more like this in the last %.0fs not logged)"
            args = (*args, suppressed, now - seen.logged_at if seen is not None else 0.0)
        self._logger.log(level, msg, *args)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def _forget_old(self, now: float) -> None:
        """Drop keys past their interval; if all are recent, drop them all.

        Dropping a recent key only means its next line is logged early, which
        is the right failure for a table flooded with distinct keys.
        """
        expired = [k for k, s in self._seen.items() if now - s.logged_at >= self._interval]
        for key in expired:
            del self._seen[key]
        if len(self._seen) >= self._max_keys:
            self._seen.clear()

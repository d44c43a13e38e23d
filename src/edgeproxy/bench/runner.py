"""Repeats, aggregation and progress: how one figure becomes "median [min..max]".

Every figure in the report is the median of at least `MIN_RUNS` runs, shown
with its min and max so a reader can judge the noise. A run is a plain
`dict[str, float]` of figures (names carry their unit, e.g. "list p50 (ms)");
`aggregate` turns the runs of one target into one `Spread` per figure. The
aggregation and formatting here are pure, so they are unit-tested; the
`Progress` printer is the only I/O.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TextIO, TypedDict

# The bar: "each figure is the median of at least 3 runs".
MIN_RUNS = 3

Run = dict[str, float]


class Spread(TypedDict):
    median: float
    min: float
    max: float
    n: int


def spread(values: Iterable[float]) -> Spread:
    """Median, min and max of the finite values (NaN marks a figure a run could not take)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        raise ValueError("no values")
    return {
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def aggregate(runs: list[Run]) -> dict[str, Spread]:
    """One Spread per figure, in the order figures first appear; all-NaN figures are dropped."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run))
    out: dict[str, Spread] = {}
    for name in names:
        values = [run[name] for run in runs if name in run]
        if any(not math.isnan(v) for v in values):
            out[name] = spread(values)
    return out


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def fmt(value: float) -> str:
    """Three significant figures without exponents for the usual range."""
    if math.isnan(value):
        return "-"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1 or a == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_spread(s: Mapping[str, float]) -> str:
    """'median (min-max)', or just the median when the runs agreed exactly."""
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}..{fmt(s['max'])}]"


class Progress:
    """One line per step, with the elapsed wall time, flushed at once."""

    def __init__(self, out: TextIO | None = None) -> None:
        # None: sys.stdout as it is when printing (tests capture it after import).
        self.out = out
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", file=self.out or sys.stdout, flush=True)


async def repeat(
    progress: Progress,
    label: str,
    runs: int,
    once: Callable[[int], Awaitable[Run]],
) -> list[Run]:
    """`once(i)` for i in range(runs), each announced and summarised on one line."""
    out: list[Run] = []
    for i in range(runs):
        t0 = time.monotonic()
        run = await once(i)
        out.append(run)
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in list(run.items())[:3])
        progress.say(f"{label}: run {i + 1}/{runs} ({time.monotonic() - t0:.1f}s) {shown}")
    return out

"""The report's PNG charts: one per suite, readable without the tables beside it.

A chart is looked at on its own (in a README, a pull request, a slide), so
each one carries what a reader needs to judge it: every panel's unit on its
y axis and which direction is better in its title, the value of each bar,
and on the figure itself the date, the machine (host name, CPU count and
model) and the upstream of the run. Bars are the median over the runs with
min..max error bars, as the tables' "median [min..max]" cells.

Figure names carry their unit ("list p50 (ms)", "lists/s (1 client)"); the
direction is read from the name by the rules below, which know every figure
the suites report; a name they do not know is drawn as "lower is better"
only if it is a time, a size or a cost, else as a reference value.
matplotlib is the optional `bench` extra (importing this module without it
fails, which `report.write_charts` turns into a message); `figure` builds a
Figure that tests inspect, `draw` saves it.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from edgeproxy.bench.baselines import TARGETS
from edgeproxy.bench.report import figures
from edgeproxy.bench.runner import fmt

COLORS = {
    "direct": "#7f7f7f",
    "nginx": "#2ca02c",
    "strict": "#1f77b4",
    "cache-first": "#ff7f0e",
    # The peers bench's (edgeproxy.bench.peers_report).
    "yurthub": "#d62728",
    "superedge": "#9467bd",
}
# 100 dpi with 11-13 pt text: readable at the size GitHub shows a PNG, small enough to commit.
DPI = 100
CHART_COLUMNS = 3
CHART_COLOURS = 64
PANEL_INCHES = (4.6, 3.3)
LOWER, HIGHER, REFERENCE = "lower is better", "higher is better", "for reference"

# Unit in a figure name's trailing parentheses -> y axis label.
UNITS = {
    "ms": "milliseconds",
    "s": "seconds",
    "µs": "microseconds",
    "MB": "megabytes (MB)",
    "KB/s": "kilobytes per second",
    "objects": "objects",
    "1 = yes": "1 = yes, 0 = no",
    "%": "percent",
    "x": "ratio (x)",
}
# Substrings that make a figure "higher is better": throughput, passes, completeness.
HIGHER_IS_BETTER = (
    "/s",
    "passed",
    "ok (%)",
    "delivered (%)",
    "up to date (%)",
    "in order (%)",
    "list loop: lists",
    "list loop: served",
)
# Sizes of the workload, counts that must match what is due: no better direction.
FOR_REFERENCE = (
    "pods' JSON",
    "served to clients",
    "slices whose endpoints change",
    "MODIFIED events received",
    "objects re-filtered",
    "node move: proxy re-filters",
    "events replayed",
)
_TRAILING = re.compile(r"\s*\(([^()]*)\)\s*$")
_RATE = re.compile(r"(\w+)/s\b")


def unit(figure: str) -> str:
    """The y axis label of a figure: its unit, spelled out."""
    match = _TRAILING.search(figure)
    if match and match.group(1) in UNITS:
        return UNITS[match.group(1)]
    rate = _RATE.search(figure)
    if rate:
        noun = rate.group(1)
        return f"{noun if noun.endswith('s') else noun + 's'} per second"
    return "count"


def label(figure: str) -> str:
    """The panel title: the name without the unit the y axis already shows."""
    match = _TRAILING.search(figure)
    if match and match.group(1) in UNITS:
        return figure[: match.start()]
    return figure


def direction(figure: str) -> str:
    if any(s in figure for s in FOR_REFERENCE):
        return REFERENCE
    if any(s in figure for s in HIGHER_IS_BETTER):
        return HIGHER
    return LOWER


def machine_line(meta: Mapping[str, Any]) -> str:
    """Date, machine and upstream of the run, as printed at the foot of every chart."""
    m = meta.get("machine", {})
    host = m.get("hostname") or "host not recorded"
    cpus = m.get("nproc", "?")
    model = m.get("cpu") or "CPU model unknown"
    load = meta.get("load")
    shared = f"; load {load[0]}..{load[1]}" if load else ""
    return (
        f"{meta.get('date', 'date unknown')} · {host}: {cpus} CPUs ({model}){shared}"
        f" · against {meta.get('against', '?')}"
    )


def figure(
    name: str,
    suite: Mapping[str, Any],
    meta: Mapping[str, Any],
    *,
    targets: Sequence[str] = TARGETS,
    direction_of: Callable[[str], str] = direction,
) -> Figure | None:
    """The suite's chart as a Figure, or None when no target measured anything.

    `targets` are the bars in order; `direction_of` says which way each
    figure is better (LOWER, HIGHER or REFERENCE), for suites whose figure
    names the rules above do not know.
    """
    cols = [t for t in targets if t in suite.get("targets", {})]
    rows = figures(suite)
    if not cols or not rows:
        return None
    ncols = min(CHART_COLUMNS, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = Figure(
        figsize=(PANEL_INCHES[0] * ncols, PANEL_INCHES[1] * nrows + 1.4), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, fig_name in zip(axes.flat, rows, strict=False):
        spreads = [(t, suite["targets"][t].get(fig_name)) for t in cols]
        _panel(ax, fig_name, spreads, direction_of(fig_name))
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    runs = meta.get("runs", "?")
    fig.suptitle(
        f"{name}: {suite.get('title', '')}\n"
        f"bar = median of {runs} runs, whisker = min..max; each panel says which way is better",
        fontsize=14,
    )
    fig.supxlabel(machine_line(meta), fontsize=11, color="#333333")
    return fig


def _panel(
    ax: Any, fig_name: str, spreads: list[tuple[str, Mapping[str, float] | None]], better: str
) -> None:
    xs, meds, lo, hi, colors = [], [], [], [], []
    for target, s in spreads:
        if s is None:
            continue
        xs.append(target)
        meds.append(s["median"])
        lo.append(s["median"] - s["min"])
        hi.append(s["max"] - s["median"])
        colors.append(COLORS.get(target, "#8c564b"))
    ax.bar(xs, meds, yerr=[lo, hi], color=colors, capsize=4)
    for x, med, up in zip(xs, meds, hi, strict=True):
        # Above the whisker, so the line does not run through the digits.
        ax.annotate(
            fmt(med), (x, med + up), xytext=(0, 3), textcoords="offset points",
            ha="center", va="bottom", fontsize=10,
        )  # fmt: skip
    ax.margins(y=0.18)
    if all(m - d >= 0 for m, d in zip(meds, lo, strict=True)):
        ax.set_ylim(bottom=0)  # an all-zero panel would otherwise centre 0 between -0.06 and 0.06
    title = "\n".join(textwrap.wrap(label(fig_name), 38))
    arrow = {LOWER: "↓ ", HIGHER: "↑ "}.get(better, "")
    ax.set_title(f"{title}\n{arrow}{better}", fontsize=12)
    ax.set_ylabel(unit(fig_name), fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(axis="y", alpha=0.3)


def draw(
    name: str,
    suite: Mapping[str, Any],
    meta: Mapping[str, Any],
    path: Path,
    *,
    targets: Sequence[str] = TARGETS,
    direction_of: Callable[[str], str] = direction,
) -> bool:
    """Write the suite's PNG to `path`; False when there was nothing to draw."""
    fig = figure(name, suite, meta, targets=targets, direction_of=direction_of)
    if fig is None:
        return False
    fig.savefig(path, dpi=DPI)
    _shrink(path)
    return True


def _shrink(path: Path) -> None:
    """64 colours are plenty for flat bars and text: a third of the bytes to commit."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=CHART_COLOURS)
    small.save(path, optimize=True)

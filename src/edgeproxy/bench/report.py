"""The report: JSON (every run's figures), Markdown tables, PNG charts.

`markdown` is pure (a results dict in, text out) so the table a reader sees
in the README is unit-tested. Each table has one row per figure and one
column per target; a cell is "median [min..max]" over the runs. Charts draw
the same figures as bars at the median with min-max error bars, one PNG per
suite, through matplotlib (the optional `bench` extra): without it the
charts are skipped with a message saying how to install it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeproxy.bench.baselines import TARGETS
from edgeproxy.bench.runner import fmt_spread
from edgeproxy.bench.session import SuiteResult

INSTALL_MATPLOTLIB = "pip install 'edgeproxy[bench]'"
COLORS = {"direct": "#7f7f7f", "nginx": "#2ca02c", "strict": "#1f77b4", "cache-first": "#ff7f0e"}
# Charts stay small enough to commit.
DPI = 72
CHART_COLUMNS = 3
CHART_COLOURS = 64


def columns(suite: Mapping[str, Any]) -> list[str]:
    """The targets that ran or were skipped, in the canonical order."""
    present = set(suite.get("targets", {})) | set(suite.get("skipped", {}))
    return [t for t in TARGETS if t in present]


def figures(suite: Mapping[str, Any]) -> list[str]:
    """Figure names in the order they first appear across targets."""
    names: dict[str, None] = dict.fromkeys(suite.get("figures", []))
    for per_target in suite.get("targets", {}).values():
        names.update(dict.fromkeys(per_target))
    measured = {f for per_target in suite.get("targets", {}).values() for f in per_target}
    return [n for n in names if n in measured]


def header(meta: Mapping[str, Any]) -> str:
    m = meta["machine"]
    load = meta.get("load")
    shared = f" Load average {load[0]} at the start, {load[1]} at the end." if load else ""
    return (
        f"{meta['date']}, {m['nproc']} x {m['cpu']}, Python {m['python']}, "
        f"against {meta['against']}; each cell is the median [min..max] of {meta['runs']} runs; "
        f"wall time {meta['wall_s'] / 60:.1f} min.{shared}"
    )


def suite_table(name: str, suite: Mapping[str, Any]) -> str:
    lines = [f"### {name}: {suite['title']}", ""]
    cols = columns(suite)
    rows = figures(suite)
    if cols and rows:
        lines.append("| figure | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for figure in rows:
            cells = []
            for target in cols:
                if target in suite.get("skipped", {}):
                    cells.append("skipped")
                    continue
                spread = suite["targets"].get(target, {}).get(figure)
                cells.append("-" if spread is None else fmt_spread(spread))
            lines.append(f"| {figure} | " + " | ".join(cells) + " |")
        lines.append("")
    for target, reason in suite.get("skipped", {}).items():
        lines.append(f"- skipped {target}: {reason}")
    for note in suite.get("notes", []):
        lines.append(f"- {note}")
    for failure in suite.get("failures", []):
        lines.append(f"- **FAILED** {failure}")
    return "\n".join(lines).rstrip() + "\n"


def markdown(meta: Mapping[str, Any], suites: Mapping[str, Mapping[str, Any]]) -> str:
    parts = [header(meta), ""]
    parts += [suite_table(name, suite) for name, suite in suites.items()]
    return "\n".join(parts)


def chart(name: str, suite: Mapping[str, Any], path: Path) -> bool:
    """One PNG: a bar chart per figure, bars per target, min-max error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [t for t in columns(suite) if t in suite.get("targets", {})]
    rows = figures(suite)
    if not cols or not rows:
        return False
    ncols = min(CHART_COLUMNS, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.3 * nrows), squeeze=False)
    for ax, figure in zip(axes.flat, rows, strict=False):
        xs, meds, lo, hi, colors = [], [], [], [], []
        for target in cols:
            s = suite["targets"][target].get(figure)
            if s is None:
                continue
            xs.append(target)
            meds.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
            colors.append(COLORS[target])
        ax.bar(xs, meds, yerr=[lo, hi], color=colors, capsize=3)
        ax.set_title(figure, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle(f"{name}: median, bars = min..max", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    _shrink(path)
    return True


def _shrink(path: Path) -> None:
    """64 colours are plenty for flat bars: a third of the bytes to commit."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=CHART_COLOURS)
    small.save(path, optimize=True)


def write(out: Path, meta: Mapping[str, Any], results: Mapping[str, SuiteResult]) -> list[Path]:
    """results.json, results.md and <suite>.png under `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    suites = {name: r.to_json() for name, r in results.items()}
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps({"meta": meta, "suites": suites}, indent=2) + "\n")
    written[1].write_text(markdown(meta, suites))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed: no charts ({INSTALL_MATPLOTLIB})")
        return written
    for name, suite in suites.items():
        path = out / f"{name}.png"
        if chart(name, suite, path):
            written.append(path)
    return written

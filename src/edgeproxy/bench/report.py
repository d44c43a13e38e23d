"""The report: JSON (every run's figures), Markdown tables, PNG charts.

`markdown` is pure (a results dict in, text out) so the table a reader sees
in the README is unit-tested. Each table has one row per figure and one
column per target; a cell is "median [min..max]" over the runs. Charts
(`charts.py`) draw the same figures as bars, one PNG per suite, through
matplotlib (the optional `bench` extra): without it the charts are skipped
with a message saying how to install it. `render` redraws the charts of an
earlier run from its results.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeproxy.bench.baselines import TARGETS
from edgeproxy.bench.runner import fmt_spread
from edgeproxy.bench.session import SuiteResult

INSTALL_MATPLOTLIB = "pip install 'edgeproxy[bench]'"


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


def write(
    out: Path,
    meta: Mapping[str, Any],
    results: Mapping[str, SuiteResult],
    *,
    charts: bool = True,
) -> list[Path]:
    """results.json, results.md and <suite>.png under `out`; returns the paths written.

    `charts=False`: no PNGs (`--no-charts`; `--render-only` draws them later).
    """
    out.mkdir(parents=True, exist_ok=True)
    suites = {name: r.to_json() for name, r in results.items()}
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps({"meta": meta, "suites": suites}, indent=2) + "\n")
    written[1].write_text(markdown(meta, suites))
    return written + (write_charts(out, meta, suites) if charts else [])


def write_charts(
    out: Path, meta: Mapping[str, Any], suites: Mapping[str, Mapping[str, Any]]
) -> list[Path]:
    """<suite>.png under `out` for every suite with figures; none without matplotlib."""
    try:
        from edgeproxy.bench import charts
    except ImportError:
        print(f"matplotlib is not installed: no charts ({INSTALL_MATPLOTLIB})")
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, suite in suites.items():
        path = out / f"{name}.png"
        if charts.draw(name, suite, meta, path):
            written.append(path)
    return written


def render(results_json: Path, out: Path) -> list[Path]:
    """Redraw the charts of an earlier run from its results.json, without running anything.

    Charts improve after the runs that measured them (the committed ones in
    docs/bench/ come from this): the figures are the run's, only the drawing is new.
    """
    report = json.loads(results_json.read_text())
    return write_charts(out, report["meta"], report["suites"])


def render_only(results_json: Path, out: Path) -> int:
    """`edge-proxy bench --render-only`: exit 0 with the charts written, 2 on a bad file."""
    try:
        written = render(results_json, out)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # ValueError covers bad JSON; KeyError/TypeError a JSON that is no bench report.
        print(f"edge-proxy bench: --render-only {results_json}: not a bench results.json ({exc})")
        return 2
    print(f"wrote {', '.join(str(p) for p in written) or 'no charts'}")
    return 0

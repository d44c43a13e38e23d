"""The peers bench's report: JSON (every run), a Markdown table, a PNG chart.

Laid out as the suites' reports (`bench/report.py`: one row per figure, one
column per target, "median [min..max]") but with its own columns, since the
peers are not the suites' targets, and with the direction of each figure
said in the table and on the chart (drawn by `edgeproxy.bench.charts`, in
the suites' style): most are "lower is better", the yes/no and pods-Running
figures are "higher", the workload's own counts have none. A target that
failed has a column of "failed" and its error lines under the table; a
figure a target has no number for is "n/a" with a note saying why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeproxy.bench.report import INSTALL_MATPLOTLIB, header
from edgeproxy.bench.runner import fmt_spread

# Figures where more is better; every other figure is lower-is-better.
HIGHER_IS_BETTER = frozenset(
    {"offline: fresh client synced (1 = yes)", "pods Running after restore"}
)
# Figures that describe the setup more than the target (no direction).
NEUTRAL = frozenset(
    {
        "kubelet: Ready + pods Running (s)",
        "cloud changes in the churn window",
        "cloud changes while offline",
    }
)


def direction(figure: str) -> str:
    if figure in HIGHER_IS_BETTER:
        return "higher is better"
    if figure in NEUTRAL:
        return ""
    return "lower is better"


def figures(suite: Mapping[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for per_target in suite.get("targets", {}).values():
        names.update(dict.fromkeys(per_target))
    return list(names)


def markdown(meta: Mapping[str, Any], suite: Mapping[str, Any]) -> str:
    s = meta["sizes"]
    lines = [
        header(meta),
        "",
        f"### peers: {suite['title']}",
        "",
        f"Workload: hollow kubelet with {s['pods']} pods mounting ConfigMaps/Secrets; "
        f"kube-proxy-like and coredns-like informers (protobuf) over {s['services']:,} "
        f"Services x {s['endpoints_per_service']} endpoints; {s['churn_per_s']:g} changes/s; "
        f"all targets side by side, each behind its own counting relay: idle {s['idle_s']:g} s, "
        f"churn {s['churn_s']:g} s, then the links black-holed {s['outage_s']:g} s with the "
        "churn going on, each proxy and kubelet restarted at the cut and a fresh coredns-like "
        "client started through each target.",
        "",
    ]
    cols = [t for t in suite.get("order", []) if t in suite["targets"] or _failed(suite, t)]
    lines.append("| figure | better | " + " | ".join(cols) + " |")
    lines.append("|---|---|" + "---:|" * len(cols))
    for figure in figures(suite):
        cells = []
        for target in cols:
            if target not in suite["targets"]:
                cells.append("failed")
                continue
            spread = suite["targets"][target].get(figure)
            cells.append("n/a" if spread is None else fmt_spread(spread))
        better = direction(figure).replace(" is better", "")
        lines.append(f"| {figure} | {better} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "- n/a: the figure does not apply (direct has no proxy process) or was not reached."
    )
    for note in suite.get("notes", []):
        lines.append(f"- {note}")
    for failure in suite.get("failures", []):
        first, *rest = failure.splitlines() or [""]
        lines.append(f"- **FAILED** {first[:300]}")
        if rest:
            lines += ["", "  ```", *(f"  {line[:300]}" for line in rest[:6]), "  ```"]
    return "\n".join(lines).rstrip() + "\n"


def _failed(suite: Mapping[str, Any], target: str) -> bool:
    return any(f.startswith(f"{target}:") for f in suite.get("failures", []))


def chart(meta: Mapping[str, Any], suite: Mapping[str, Any], path: Path) -> bool:
    """peers.png in the suites' chart style (edgeproxy.bench.charts): units on the y axes,
    which way is better in each title, values on the bars, the machine at the foot."""
    from edgeproxy.bench import charts

    better = {"lower is better": charts.LOWER, "higher is better": charts.HIGHER}
    return charts.draw(
        "peers",
        suite,
        meta,
        path,
        targets=list(suite.get("order", [])),
        direction_of=lambda figure: better.get(direction(figure), charts.REFERENCE),
    )


def write(
    out: Path, meta: Mapping[str, Any], suite: Mapping[str, Any], *, charts: bool = True
) -> list[Path]:
    """peers.json, peers.md and peers.png under `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "peers.json", out / "peers.md"]
    written[0].write_text(json.dumps({"meta": meta, "peers": suite}, indent=2, default=str) + "\n")
    written[1].write_text(markdown(meta, suite))
    if not charts:
        return written
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed: no chart ({INSTALL_MATPLOTLIB})")
        return written
    if chart(meta, suite, out / "peers.png"):
        written.append(out / "peers.png")
    return written

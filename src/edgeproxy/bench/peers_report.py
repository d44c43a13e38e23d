"""The peers bench's report: JSON (every run), a Markdown table, a PNG chart.

Laid out as the suites' reports (`bench/report.py`: one row per figure, one
column per target, "median [min..max]") but with its own columns, since the
peers are not the suites' targets, and with the direction of each figure
said in the table and on the chart: most are "lower is better", the one
yes/no figure is not. A target that failed has a column of "failed" and its
error under the table; nothing is left out silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeproxy.bench.report import INSTALL_MATPLOTLIB, header
from edgeproxy.bench.runner import fmt_spread

COLORS = {
    "direct": "#7f7f7f",
    "strict": "#1f77b4",
    "cache-first": "#ff7f0e",
    "yurthub": "#d62728",
    "superedge": "#9467bd",
}
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
DPI = 72


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = figures(suite)
    cols = [t for t in suite.get("order", []) if t in suite["targets"]]
    if not rows or not cols:
        return False
    ncols = 3
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), squeeze=False)
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
            colors.append(COLORS.get(target, "#9467bd"))
        ax.bar(xs, meds, yerr=[lo, hi], color=colors, capsize=3)
        said = direction(figure)
        ax.set_title(figure + (f"\n({said})" if said else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle(f"peers, {meta['date']}: median of {meta['runs']} run(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def write(out: Path, meta: Mapping[str, Any], suite: Mapping[str, Any]) -> list[Path]:
    """peers.json, peers.md and peers.png under `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "peers.json", out / "peers.md"]
    written[0].write_text(json.dumps({"meta": meta, "peers": suite}, indent=2, default=str) + "\n")
    written[1].write_text(markdown(meta, suite))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed: no chart ({INSTALL_MATPLOTLIB})")
        return written
    if chart(meta, suite, out / "peers.png"):
        written.append(out / "peers.png")
    return written

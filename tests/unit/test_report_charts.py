"""The benchmark charts say what they show: units, which way is better, date and machine.

matplotlib is the `bench` extra, which `make test` installs: these tests
import it outright rather than skip, so a missing extra fails loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib  # noqa: F401  (no importorskip: absent must fail, not skip)
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from edgeproxy import cli
from edgeproxy.bench import charts
from edgeproxy.bench.runner import aggregate

META = {
    "date": "2026-01-02 03:04 UTC",
    "against": "sim",
    "runs": 3,
    "wall_s": 300.0,
    "load": [0.5, 1.25],
    "machine": {"hostname": "edge-test-host", "nproc": 2, "cpu": "Test CPU", "python": "3.11.7"},
}


def suite() -> dict[str, object]:
    runs = {
        "direct": [{"list p50 (ms)": v, "lists/s (1 client)": 100.0 * v} for v in (1.0, 2.0, 3.0)],
        "strict": [
            {"list p50 (ms)": 2.0, "lists/s (1 client)": 90.0, "peak RSS (MB)": m}
            for m in (40.0, 50.0, 45.0)
        ],
    }
    return {
        "title": "the challenge",
        "figures": ["list p50 (ms)", "lists/s (1 client)", "peak RSS (MB)"],
        "targets": {t: aggregate(r) for t, r in runs.items()},
        "skipped": {"nginx": "not installed"},
    }


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def panel(fig: Figure, name: str) -> tuple[str, str]:
    """(title, y label) of the panel drawing `name`."""
    for ax in fig.axes:
        if ax.get_title().startswith(name):
            return ax.get_title(), ax.get_ylabel()
    raise AssertionError(f"no panel for {name}: {[a.get_title() for a in fig.axes]}")


def test_every_panel_has_its_unit_and_direction() -> None:
    fig = charts.figure("challenge", suite(), META)
    assert fig is not None
    assert panel(fig, "list p50") == ("list p50\n↓ lower is better", "milliseconds")
    assert panel(fig, "lists/s (1 client)") == (
        "lists/s (1 client)\n↑ higher is better",
        "lists per second",
    )
    assert panel(fig, "peak RSS") == ("peak RSS\n↓ lower is better", "megabytes (MB)")


def test_the_figure_carries_date_machine_and_upstream() -> None:
    fig = charts.figure("challenge", suite(), META)
    assert fig is not None
    text = "\n".join(texts(fig))
    assert "2026-01-02 03:04 UTC" in text
    assert "edge-test-host: 2 CPUs (Test CPU)" in text
    assert "against sim" in text
    assert "median of 3 runs" in text
    # Each bar is labelled with its median, as the tables print it.
    assert {"2.00", "45.0", "200"} <= set(texts(fig))


@pytest.mark.parametrize(
    ("figure", "unit", "better"),
    [
        ("suites passed (of 4)", "count", charts.HIGHER),
        ("cached list/s, identity (wrk)", "lists per second", charts.HIGHER),
        ("writes/s achieved", "writes per second", charts.HIGHER),
        ("events delivered (%)", "percent", charts.HIGHER),
        ("list loop: cloud / served (%)", "percent", charts.LOWER),
        ("filtered client: CPU per event (µs)", "microseconds", charts.LOWER),
        ("detection (s)", "seconds", charts.LOWER),
        ("client relists (410)", "count", charts.LOWER),
        ("10000 pods' JSON (MB)", "megabytes (MB)", charts.REFERENCE),
        ("served to clients (MB)", "megabytes (MB)", charts.REFERENCE),
    ],
)
def test_units_and_directions_of_the_suites_figures(figure: str, unit: str, better: str) -> None:
    assert (charts.unit(figure), charts.direction(figure)) == (unit, better)


def test_an_old_report_without_hostname_says_so() -> None:
    meta = {**META, "machine": {"nproc": 2, "cpu": "Test CPU"}}
    assert "host not recorded: 2 CPUs (Test CPU)" in charts.machine_line(meta)


def test_render_only_redraws_every_suite_from_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.json"
    empty = {"title": "nothing measured", "figures": [], "targets": {}}
    results.write_text(json.dumps({"meta": META, "suites": {"challenge": suite(), "x": empty}}))
    out = tmp_path / "charts"
    assert cli.main(["bench", "--render-only", str(results), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["challenge.png"]
    assert (out / "challenge.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / "challenge.png") in capsys.readouterr().out


@pytest.mark.parametrize("content", ["{not json", '{"suites": {}}', ""])
def test_render_only_of_a_file_that_is_no_report_is_one_line_and_exit_2(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "results.json"
    bad.write_text(content)
    assert cli.main(["bench", "--render-only", str(bad), "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out
    assert "not a bench results.json" in out and len(out.splitlines()) == 1


def test_the_peers_chart_is_drawn_in_the_same_style_with_its_own_targets_and_directions(
    tmp_path: Path,
) -> None:
    from edgeproxy.bench import peers_report

    runs = {
        t: [{"idle cloud bytes (KB/s)": 1.0, "pods Running after restore": 30.0,
             "offline: fresh client synced (1 = yes)": 1.0,
             "client caches wrong vs cloud (objects)": 0.0,
             "cloud changes while offline": 500.0}]
        for t in ("direct", "strict", "yurthub")
    }  # fmt: skip
    peers_suite = {"title": "peers", "order": ["direct", "strict", "yurthub"],
                   "targets": {t: aggregate(r) for t, r in runs.items()}}  # fmt: skip
    path = tmp_path / "peers.png"
    assert peers_report.chart({**META, "runs": 1}, peers_suite, path)
    assert path.stat().st_size > 0
    fig = charts.figure("peers", peers_suite, META, targets=["direct", "strict", "yurthub"],
                        direction_of=lambda f: charts.LOWER)  # fmt: skip
    assert fig is not None
    # YurtHub gets a bar of its own (the suites' charts know only their targets).
    fig.draw_without_rendering()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["direct", "strict", "yurthub"]
    assert panel(fig, "idle cloud bytes") == (
        "idle cloud bytes\n↓ lower is better",
        "kilobytes per second",
    )
    # The peers report's own directions, through the same panels.
    drawn = {
        "pods Running after restore": ("↑ higher is better", "count"),
        "offline: fresh client synced": ("↑ higher is better", "1 = yes, 0 = no"),
        "client caches wrong vs cloud": ("↓ lower is better", "objects"),
        "cloud changes while offline": ("for reference", "count"),
    }
    better = {"lower is better": charts.LOWER, "higher is better": charts.HIGHER}
    fig = charts.figure(
        "peers", peers_suite, META, targets=peers_suite["order"],
        direction_of=lambda f: better.get(peers_report.direction(f), charts.REFERENCE),
    )  # fmt: skip
    assert fig is not None
    for name, (arrow, unit) in drawn.items():
        title, ylabel = panel(fig, name)
        assert title.endswith(arrow) and ylabel == unit, (name, title, ylabel)

"""`edge-proxy bench --against real` end to end at toy sizes: every suite, every target.

The bench starts its own etcd + kube-apiserver (edgeproxy.controlplane, the
binaries of k8s/build.sh), seeds it through the API, cuts the link with a
relay in front of it, and writes the report. This checks correctness only:
each suite has figures for each target it measures (or says why not), the
proxies pass the challenge and ride out the cut, and the filters suite's own
checks hold; never how fast anything is.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.bench import command
from edgeproxy.bench.session import QUICK

# One run, and lists under the 128 KiB past which kube-apiserver gzips.
TINY = dataclasses.replace(
    QUICK,
    runs=1,
    challenge_objects=5,
    resourceusage=20,
    loop_seconds=0.3,
    wrk_seconds=1.0,  # wrk takes whole seconds
    pods=30,
    services=5,
    endpoints_per_service=4,
    watchers=3,
    watch_changes=5,
    outage_objects=3,
    outage_changes=2,
    outage_seconds=0.5,
    bandwidth_seconds=0.6,
    fanout_objects=5,
    fanout_rate=50.0,
    fanout_seconds=0.4,
    filter_updates=10,
)
SUITES = ["challenge", "scale", "outage", "restart", "bandwidth", "watchcache", "filters"]
TARGETS = ("direct", "nginx", "strict", "cache-first")
# Who takes part in what: the rest of each suite's targets are skipped with a reason.
MEASURED = {
    "challenge": set(TARGETS),
    "scale": set(TARGETS),
    "outage": set(TARGETS),
    "restart": {"direct", "strict", "cache-first"},
    "bandwidth": set(TARGETS),
    # static nginx (with wrk), the list loop and memory (proxies), fan-out (direct too)
    "watchcache": {"direct", "strict", "cache-first"}
    | ({"nginx"} if shutil.which("wrk") else set()),
    "filters": {"strict"},
}


@pytest.mark.timeout(600)
def test_bench_against_real_reports_every_target(tmp_path: Path) -> None:
    # Charts are drawn from results.json (tests/unit/test_report_charts.py): not again here.
    code = command.run(SUITES, "real", tmp_path, targets=TARGETS, sizes=TINY, charts=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["against"].startswith("real: kube-apiserver v")
    suites = results["suites"]
    assert list(suites) == SUITES
    problems = []
    for name, suite in suites.items():
        problems += [f"{name}: {f}" for f in suite["failures"]]
        for target in MEASURED[name]:
            if target == "nginx" and shutil.which("nginx") is None:
                assert "nginx is not installed" in suite["skipped"]["nginx"]
                continue
            figures = suite["targets"].get(target)
            if not figures:
                problems.append(f"{name}: no figures for {target}")
                continue
            measured = [f for f, s in figures.items() if s["n"] >= 1]
            if not measured:
                problems.append(f"{name}: {target} has only empty figures")
    assert problems == []
    assert code == 0
    challenge = suites["challenge"]["targets"]
    for proxy in ("strict", "cache-first"):
        assert challenge[proxy]["suites passed (of 4)"]["min"] == 4
        assert suites["outage"]["targets"][proxy]["offline lists ok (%)"]["min"] == 100
    assert challenge["direct"]["suites passed (of 4)"]["max"] == 2  # the cut reaches it
    check_filters(suites["filters"])
    table = (tmp_path / "results.md").read_text()
    assert "against real: kube-apiserver" in table
    assert "through the real kube-apiserver's API" in table
    assert list(tmp_path.glob("*.png")) == []  # charts=False: JSON and Markdown only


def check_filters(suite: dict[str, Any]) -> None:
    """The servicetopology suite's own checks: a node's pool move reaches a
    kube-proxy-like watcher as one MODIFIED event per changed slice, each with
    the right endpoints; the cost-per-event phases deliver every update to both
    client kinds. Only the strict proxy takes part."""
    assert set(suite["targets"]) == {"strict"}
    assert set(suite["skipped"]) == {"direct", "nginx", "cache-first"}
    strict = suite["targets"]["strict"]
    due = strict["node move: slices whose endpoints change"]
    assert due["min"] > 0
    assert strict["node move: MODIFIED events received"]["median"] == due["median"]
    assert strict["node move: wrong endpoint sets (list + events)"]["max"] == 0
    assert strict["unrelated node label: events received"]["max"] == 0
    assert strict["unrelated node label: proxy re-filters"]["max"] == 0
    assert strict["list + watch after a move: events replayed at the list's RV"]["max"] == 0
    for kind in ("filtered", "unfiltered"):
        assert strict[f"{kind} client: events delivered (%)"]["min"] == 100
        assert strict[f"{kind} client: wrong endpoint sets"]["max"] == 0

"""`edge-proxy bench filters` at toy sizes: the suite runs and its checks hold.

The strict proxy with the servicetopology filter: a node's pool move reaches
a kube-proxy-like watcher as one MODIFIED event per changed slice, each with
the right endpoints; the cost-per-event phases deliver every update to both
client kinds. The other targets are skipped with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeproxy.cli import main


@pytest.mark.timeout(90)
def test_bench_filters_quick(tmp_path: Path) -> None:
    code = main(["bench", "filters", "--quick", "--no-charts", "--out", str(tmp_path)])
    assert code == 0
    assert list(tmp_path.glob("*.png")) == []  # --no-charts: JSON and Markdown only
    suite = json.loads((tmp_path / "results.json").read_text())["suites"]["filters"]
    assert set(suite["targets"]) == {"strict"}
    assert set(suite["skipped"]) == {"direct", "nginx", "cache-first"}
    assert suite["failures"] == []
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

"""`edge-proxy bench` end to end at toy sizes: the report is written and the proxy passes.

One fast suite (restart: seed, fill, crash, cold start offline) against the
direct and strict targets, through the CLI as `make bench` runs it; the
other suites share its machinery (sessions, targets, runner, report).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeproxy.cli import main


@pytest.mark.timeout(60)
def test_bench_restart_quick_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["bench", "restart", "--quick", "--targets", "direct,strict", "--out", str(tmp_path)]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    suite = results["suites"]["restart"]
    assert set(suite["targets"]) == {"direct", "strict"}
    strict = suite["targets"]["strict"]
    assert strict["start to /healthz (s)"]["n"] == 3
    assert strict["peak RSS (MB)"]["median"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| figure | direct | strict |" in table
    # The one end-to-end chart: the others' runs pass --no-charts.
    assert (tmp_path / "restart.png").stat().st_size > 0
    assert "run 3/3" in capsys.readouterr().out

"""`edge-proxy bench --peers yurthub` end to end at toy sizes, or its refusal without YurtHub.

The peers bench starts its own etcd + kube-apiserver, runs a hollow kubelet
and two client-go informers through direct, strict, cache-first and YurtHub,
cuts the link and writes the report. YurtHub is built by
k8s/build-peers.sh, not by `make test`: when its binary is cached the toy
bench runs and every target must have a column with cloud bytes; when it is
not, the command must fail at once with a message naming the binary and the
script that builds it. Never how fast anything is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproxy.bench import peers, peers_bench

TARGETS = ("direct", "strict", "cache-first", "yurthub")
TOY = dataclasses.replace(
    peers_bench.TINY, services=10, endpoints_per_service=4, pods=2, idle_s=2, churn_s=2
)


def built() -> bool:
    done = subprocess.run(
        [str(peers.BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0


def bench(out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "edgeproxy", "bench", "--peers", "yurthub", "--against", "real"]
    return subprocess.run(
        [*args, "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
        check=False,
    )


def assert_refused_for_missing_yurthub(done: subprocess.CompletedProcess[str], out: Path) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "yurthub binary is not built" in said, said
    assert "k8s/build-peers.sh" in said, said
    assert "Traceback" not in said, said
    assert not (out / "peers.json").exists()


def test_without_the_yurthub_binary_the_bench_names_it_and_its_build_script(
    tmp_path: Path,
) -> None:
    # An empty cache: whatever this machine has built, here nothing is.
    done = bench(tmp_path / "out", {"EDGEPROXY_K8S_CACHE": str(tmp_path / "empty-cache")})
    assert_refused_for_missing_yurthub(done, tmp_path / "out")


@pytest.mark.timeout(900)
def test_peers_bench_has_a_column_per_target_with_cloud_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    if not built():
        # Nothing to run YurtHub from: the command must say so, not half-run.
        assert_refused_for_missing_yurthub(bench(out), out)
        return
    rc = peers_bench.run(("yurthub",), out, sizes=TOY)
    printed = capsys.readouterr().out
    report = json.loads((out / "peers.json").read_text())
    suite = report["peers"]
    assert suite["failures"] == [], printed[-4000:]
    assert rc == 0
    assert set(suite["targets"]) == set(TARGETS)
    for target in TARGETS:
        figures = suite["targets"][target]
        assert figures["cloud bytes, whole run (MB)"]["median"] > 0, target
        assert figures["churn cloud bytes (MB)"]["median"] > 0, target
        # Every target went through the outage and came back to the cloud's state.
        assert "converged after restore (s)" in figures, (target, suite["notes"])
    for proxy in ("strict", "cache-first", "yurthub"):
        assert suite["targets"][proxy]["proxy peak RSS (MB)"]["median"] > 0
    table = (out / "peers.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| figure |"))
    assert [c.strip() for c in header.strip("|").split("|")][2:] == list(TARGETS)
    assert "lower" in table

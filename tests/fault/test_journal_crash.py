"""kill -9 a process writing to the journal; what is on disk must be a consistent prefix.

The child writes in a tight loop. Every write moves a scope to RV N and
rewrites every object of that scope with N (snapshots also add and remove
objects), so at every committed prefix all objects of a scope carry the
scope's RV. After each SIGKILL the database must open without being moved
aside, load, satisfy that invariant, and no RV may go backwards.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeproxy.storage.journal import Journal

CHILD = r"""
import json, random, sys
from pathlib import Path
from edgeproxy.storage.journal import Journal

j = Journal(Path(sys.argv[1]), commit_interval=0.005)
j.open()
loaded = j.load()
keys = {s.key: set(s.objects) for s in loaded}
n = max((int(s.rv) for s in loaded), default=0)
rng = random.Random()
print("ready", flush=True)
while True:
    n += 1
    scope = f"s{n % 4}"
    value = json.dumps({"n": n, "pad": "x" * rng.randrange(500)}).encode()
    if scope not in keys or rng.random() < 0.05:
        keys[scope] = {"k", "k2"} | {f"e{i}" for i in range(rng.randrange(6))}
        j.put_snapshot(scope, str(n), b"{}", dict.fromkeys(keys[scope], value))
        continue
    deletes = []
    extras = sorted(keys[scope] - {"k", "k2"})
    if extras and rng.random() < 0.3:
        deletes.append(rng.choice(extras))
        keys[scope].discard(deletes[0])
    if rng.random() < 0.3:
        keys[scope].add(f"e{rng.randrange(6)}")
    j.put_changes(scope, str(n), dict.fromkeys(keys[scope], value), deletes)
"""


def check(path: Path, previous: dict[str, int]) -> dict[str, int]:
    j = Journal(path)
    assert j.open() is None, "a killed writer must never leave a corrupt file"
    try:
        scopes = j.load()
    finally:
        j.close_sync()
    rvs: dict[str, int] = {}
    for scope in scopes:
        rv = int(scope.rv)
        assert {"k", "k2"} <= set(scope.objects), scope.key
        for key, data in scope.objects.items():
            assert json.loads(data)["n"] == rv, (scope.key, key, rv)
        assert rv >= previous.get(scope.key, 0), "RV went backwards"
        rvs[scope.key] = rv
    return rvs


def test_sigkill_leaves_consistent_prefix(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    rng = random.Random(os.getpid())
    rvs: dict[str, int] = {}
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.5))
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        rvs = check(path, rvs)
    print(f"\njournal crash test: final RVs {rvs}")
    assert len(rvs) == 4 and max(rvs.values()) > 1000

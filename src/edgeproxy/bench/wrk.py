"""wrk as the load generator for "requests/s under load", when it is installed.

A Python client on a 2-core machine saturates before a fast server does, so
throughput under load is measured with wrk (`-t2 -c8 --latency`, as in
watchcache_bench before it) and parsed from its text output. Without wrk the
figure is skipped with the command that installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TypedDict

from edgeproxy.bench.kubeclient import BenchError

THREADS = 2  # the machine the default set targets has 2 cores
CONNECTIONS = 8

_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


class WrkResult(TypedDict):
    requests: int
    seconds: float
    requests_per_s: float
    bytes_per_response: float
    latency_p50_s: float
    latency_p99_s: float
    errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def parse(out: str) -> WrkResult:
    """Requests/s, bytes read, latency percentiles and errors from `wrk --latency`."""
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(m[1])
    seconds = float(m[2]) * _TIME[m[3]]
    read = float(m[4]) * _UNITS[m[5]]
    lat = {
        p: float(v) * _TIME[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "bytes_per_response": read / max(requests, 1),
        "latency_p50_s": lat.get("50", float("nan")),
        "latency_p99_s": lat.get("99", float("nan")),
        "errors": (int(non2xx[1]) if non2xx else 0)
        + (sum(int(x) for x in sock.groups()) if sock else 0),
    }


def run(url: str, headers: dict[str, str], seconds: float) -> WrkResult:
    # wrk takes whole seconds ("0.5s" is a usage error).
    duration = max(1, round(seconds))
    args = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    done = subprocess.run([*args, url], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        # A failed run is the target's failure, not the whole bench's.
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip()[:300]}")
    return parse(done.stdout)

"""Helpers for running the simulator as a real process, for tests and benchmarks.

Ships with the package (like mitmproxy's test helpers) so the proxy's tests,
the benchmarks and users' own tests start the simulator the same way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` every 0.25 s until true; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait up to `grace` seconds for a graceful exit, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SimProcess:
    """`edge-proxy sim` in a child process, with its fault-control API at hand."""

    def __init__(self, *extra_args: str, tls: bool = False, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-proxy-sim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.control_port = free_port()
        self.tls = tls
        self.kubeconfig = self.workdir / "kubeconfig"
        self.log_path = self.workdir / "sim.log"
        args = [
            sys.executable,
            "-m",
            "edgeproxy",
            "sim",
            f"--listen=127.0.0.1:{self.port}",
            f"--control-listen=127.0.0.1:{self.control_port}",
            f"--kubeconfig-out={self.kubeconfig}",
            *extra_args,
        ]
        if tls:
            args += ["--tls", f"--tls-dir={self.workdir / 'tls'}"]
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited early:\n{self.log()}")
            try:
                self.control("GET", "stats")
                if self.kubeconfig.exists():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"simulator not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.control_url}/_sim/{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def fault(self, **spec: Any) -> Any:
        return self.control("POST", "faults", spec)

    def heal(self) -> Any:
        return self.control("DELETE", "faults")

    def compact(self) -> Any:
        return self.control("POST", "compact")

    def close_watches(self) -> Any:
        return self.control("POST", "watches/close")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyProcess:
    """`edge-proxy serve` in a child process, pointed at a simulator (or any kubeconfig)."""

    def __init__(
        self,
        upstream_kubeconfig: Path,
        *extra_args: str,
        cache_dir: Path | None = None,
        workdir: Path | None = None,
        port: int | None = None,
        admin_port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edge-proxy-serve-"))
        # Runs in the child before exec, e.g. to lower its resource limits.
        self.preexec_fn = preexec_fn
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir or self.workdir / "cache"
        self.upstream_kubeconfig = upstream_kubeconfig
        self.extra_args = extra_args
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.kubeconfig = self.workdir / "proxy.kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: edge-proxy\n  cluster:\n    server: {self.url}\n"
            "users:\n- name: edge-proxy\n  user: {}\n"
            "contexts:\n- name: edge-proxy\n  context: {cluster: edge-proxy, user: edge-proxy}\n"
            "current-context: edge-proxy\n"
        )
        self.log_path = self.workdir / "proxy.log"
        self._log = self.log_path.open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 20.0) -> float:
        """Start the process; returns seconds until it answered /healthz."""
        args = [
            sys.executable, "-m", "edgeproxy", "serve",
            f"--kubeconfig={self.upstream_kubeconfig}",
            f"--listen=127.0.0.1:{self.port}",
            f"--admin-listen=127.0.0.1:{self.admin_port}",
            f"--cache-dir={self.cache_dir}",
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, preexec_fn=self.preexec_fn
        )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge-proxy exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"edge-proxy not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def admin(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if path.startswith("/debug") else body.decode()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as in a crash or power loss."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

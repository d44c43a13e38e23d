"""`make demo` as a person meets it: keys in a terminal, Ctrl-C, the scripted tour.

The demo runs as a real child process. For the interactive mode its stdin,
stdout and stderr are a pseudo-terminal that is its controlling terminal, so
single keys arrive as a person types them (no Enter) and Ctrl-C (a 0x03
byte) is turned into SIGINT by the terminal, for the demo and everything it
started, as at a real terminal. The tour runs without a terminal and gets a
SIGINT of its own, so the demo has to stop its children itself.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from edgeproxy.democonsole import UNKNOWN, link_state
from edgeproxy.testing import free_port

pytestmark = pytest.mark.timeout(180)


class Output:
    """Everything a process writes to `fd`, collected by a thread, waited on by text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.data += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return self.data.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text:
                return self.text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not printed within {timeout} s; output:\n{self.text}")


def _env(tmp_path: Path) -> dict[str, str]:
    # kubectl keeps a discovery cache under $HOME: a fresh one per test.
    return {**os.environ, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _take_terminal() -> None:
    """In the child: a session of its own with the pty (its stdin) as controlling terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def start_in_terminal(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Output, int]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeproxy.demo"],
        stdin=slave, stdout=slave, stderr=slave, env=_env(tmp_path),
        preexec_fn=_take_terminal,
    )  # fmt: skip
    # The slave stays open here, so the terminal's modes can be read after the demo exits.
    return proc, Output(master), slave


def pids_and_workdir(text: str) -> tuple[list[int], str]:
    pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
    workdir = re.search(r"cache (/\S+?)/proxy/cache", text)
    assert len(pids) == 2 and workdir, text
    return pids, workdir.group(1)


def assert_all_stopped(pids: list[int], workdir: str) -> None:
    """The simulator and the proxy are gone, and nothing else runs from the demo's directory."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _mentions(p, workdir)]
        if not alive and not leftovers:
            break
        time.sleep(0.1)
    assert not alive and not leftovers, (alive, leftovers)
    assert not Path(workdir).exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _mentions(cmdline: Path, workdir: str) -> bool:
    try:
        return workdir.encode() in cmdline.read_bytes()
    except OSError:
        return False


def assert_terminal_restored(slave: int) -> None:
    lflag = termios.tcgetattr(slave)[3]
    assert lflag & termios.ICANON and lflag & termios.ECHO, "terminal left in cbreak mode"


def test_single_keys_are_acknowledged_and_q_quits(tmp_path: Path) -> None:
    proc, out, slave = start_in_terminal(tmp_path)
    try:
        text = out.wait_for("[link up]")
        # The prompt says "unknown" until the proxy's probes have answered, never "up" on trust.
        assert -1 < text.find("[link unknown]") < text.find("[link up]")
        pids, workdir = pids_and_workdir(text)
        kubeconfig = re.search(r"kubeconfig for clients of the proxy: (\S+)", text)
        assert kubeconfig

        os.write(out.fd, b"x")
        out.wait_for("'x' does nothing here: press c, r, k or q")

        os.write(out.fd, b"c")
        out.wait_for("c: cutting the link")
        out.wait_for("done: the proxy saw it after")
        hint = f"kubectl --kubeconfig {kubeconfig.group(1)} get pods -A -w"
        out.wait_for(hint)
        # The hint works: pasted while cut off, it lists the pods from the proxy's cache.
        with subprocess.Popen(
            hint.split(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(tmp_path)
        ) as watch:
            try:
                listed = Output(watch.stdout.fileno())  # type: ignore[union-attr]
                listed.wait_for("web-1-0", timeout=60)
            finally:
                watch.kill()

        os.write(out.fd, b"r")
        out.wait_for("r: restoring the link")
        out.wait_for("done: the proxy saw the link return after")

        os.write(out.fd, b"q")
        assert proc.wait(timeout=60) == 0, out.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.wait_for("q: quitting")
    assert "Traceback" not in out.text
    assert_terminal_restored(slave)
    assert_all_stopped(pids, workdir)
    os.close(slave)


def test_ctrl_c_in_the_terminal_stops_everything_without_a_traceback(tmp_path: Path) -> None:
    proc, out, slave = start_in_terminal(tmp_path)
    try:
        pids, workdir = pids_and_workdir(out.wait_for("[link up]"))
        os.write(out.fd, b"\x03")  # the terminal turns it into SIGINT for the foreground group
        assert proc.wait(timeout=60) == 130, out.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.wait_for("interrupted: stopping edge-proxy and the simulator")
    assert "Traceback" not in out.text
    assert_terminal_restored(slave)
    assert_all_stopped(pids, workdir)
    os.close(slave)


def test_sigint_during_the_tour_stops_its_children_without_a_traceback(tmp_path: Path) -> None:
    # Only the demo gets the signal: it must stop the simulator, the proxy and the
    # background kubectl watch itself.
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeproxy.demo"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=_env(tmp_path), start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    out = Output(proc.stdout.fileno())
    try:
        pids, workdir = pids_and_workdir(out.wait_for("=== 6. A client starts watching", 120))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, out.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out.wait_for("interrupted: stopping edge-proxy and the simulator")
    proc.stdout.close()
    assert "Traceback" not in out.text
    assert_all_stopped(pids, workdir)


def test_link_is_unknown_while_the_proxy_does_not_answer() -> None:
    # Nothing listens there yet: no probe result, so neither "up" nor "down".
    assert link_state(f"http://127.0.0.1:{free_port()}") == UNKNOWN

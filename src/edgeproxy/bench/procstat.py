"""CPU and memory of the processes under test, read from the OS.

The figures a reader compares across proxies are what the kernel charged
each process, not what the process says about itself: user + system CPU
seconds from `/proc/<pid>/stat` (proc(5), fields 14 and 15, in clock ticks)
and peak resident memory from `VmHWM` in `/proc/<pid>/status`. The peak is
restarted per measured run by writing "5" to `/proc/<pid>/clear_refs`
(Linux >= 4.0), so each run's peak is its own. nginx is a master and its
workers, so a `ProcGroup` follows a process's children too.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the last ")".
    rest = stat.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def disk_write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (`/proc/<pid>/io`)."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct children of `pid` (`/proc/<pid>/task/<tid>/children`)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def own_cpu_seconds() -> float:
    """The benchmark client's own CPU: it shares the machine with the servers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class ProcGroup:
    """A process and (optionally) its children, measured together."""

    pid: int
    with_children: bool = False
    # Processes measured with it (kube-apiserver's etcd: the real cloud is both).
    others: tuple[int, ...] = ()
    # CPU of children seen earlier that have since exited is not lost.
    _gone_cpu: float = 0.0
    _last: dict[int, float] = field(default_factory=dict)

    def pids(self) -> list[int]:
        own = [self.pid, *children(self.pid)] if self.with_children else [self.pid]
        return [*own, *self.others]

    def cpu_seconds(self) -> float:
        now: dict[int, float] = {}
        for pid in self.pids():
            try:
                now[pid] = cpu_seconds(pid)
            except OSError:
                continue
        self._gone_cpu += sum(v for pid, v in self._last.items() if pid not in now)
        self._last = now
        return self._gone_cpu + sum(now.values())

    def rss_mb(self) -> float:
        return sum(self._each(rss_mb))

    def peak_rss_mb(self) -> float:
        """Sum of each process's peak: an upper bound of the group's joint peak."""
        return sum(self._each(peak_rss_mb))

    def disk_write_bytes(self) -> int:
        return sum(disk_write_bytes(pid) for pid in self.pids())

    def reset_peak(self) -> None:
        """Restart VmHWM from the current RSS; silently a no-op where not allowed."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def _each(self, read: Callable[[int], float]) -> list[float]:
        out: list[float] = []
        for pid in self.pids():
            try:
                out.append(float(read(pid)))
            except OSError:
                continue
        return out


@dataclass(slots=True)
class Usage:
    """CPU and peak memory of a group over one measured run."""

    group: ProcGroup
    cpu0: float = 0.0

    def start(self) -> Usage:
        self.group.reset_peak()
        self.cpu0 = self.group.cpu_seconds()
        return self

    def cpu(self) -> float:
        return self.group.cpu_seconds() - self.cpu0

    def peak_mb(self) -> float:
        return self.group.peak_rss_mb()

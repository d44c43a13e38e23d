"""client-go informers as a child process: what a real Go component sees.

`k8s/clients/cmd/informer` runs client-go shared informers (protobuf or
JSON, WatchList on or off) and writes every LIST and WATCH call, watch
error, handler event and cache dump as JSON lines; `Informer` starts it and
reads those lines back, so tests can compare a client through edge-proxy with
one straight to the apiserver.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeproxy.controlplane import binaries


class Informer:
    """One `informer` process; its output accumulates in `records`."""

    def __init__(
        self,
        server: str,
        watches: Sequence[str],
        *,
        workdir: Path,
        name: str = "informer",
        content_type: str = "protobuf",
        watch_list: str = "default",
        token: str | None = None,
        ca_file: Path | None = None,
        user_agent: str = "informer/v0.0.0",
        objects: bool = False,
    ) -> None:
        args = [
            str(binaries(build=False) / "informer"),
            f"--server={server}",
            f"--content-type={content_type}",
            f"--watch-list={watch_list}",
            f"--user-agent={user_agent}",
        ]
        args += [f"--watch={w}" for w in watches]
        self.watches = tuple(watches)
        if token:
            args.append(f"--token={token}")
        if ca_file is not None:
            args.append(f"--ca-file={ca_file}")
        if objects:
            args.append("--objects")
        self.out_path = workdir / f"{name}.jsonl"
        self.err_path = workdir / f"{name}.log"
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=self._err)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.out_path.read_text().splitlines()
        # The last line may still be being written.
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return [r for r in parsed if kind is None or r["type"] == kind]

    def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 30, what: str = ""
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records()
            if check(recs):
                return recs
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"informer: {what or 'condition'} not met in {timeout}s; "
            f"exit={self.proc.poll()}\n{self.err_path.read_text()[-3000:]}\n"
            + "\n".join(json.dumps(r) for r in self.records()[-30:])
        )

    def wait_synced(self, timeout: float = 30) -> None:
        self.wait_for(lambda recs: any(r["type"] == "synced" for r in recs), timeout, "sync")

    def events(
        self, watch: str | None = None, *, initial: bool | None = None
    ) -> list[tuple[str, str, str]]:
        """(event, key, resourceVersion) in the order the handlers got them.

        `initial=True` keeps only the events of the initial list, `False` only
        the later ones (the initial list's order is the server's to choose).
        """
        return [
            (r["event"], r["key"], r.get("resourceVersion", ""))
            for r in self.records("event")
            if (watch is None or r["watch"] == watch)
            and (initial is None or bool(r.get("initialList")) == initial)
        ]

    def dump(self, timeout: float = 30) -> dict[str, dict[str, str]]:
        """Each informer's cache now: {watch: {key: resourceVersion}}."""
        before = len(self.records("cache"))
        self.proc.send_signal(signal.SIGUSR1)
        want = before + len(self.watches)
        recs = self.wait_for(
            lambda recs: sum(r["type"] == "cache" for r in recs) >= want, timeout, "cache dump"
        )
        dumps = [r for r in recs if r["type"] == "cache"][before:want]
        # An empty cache is written without its "cache" list (Go's omitempty).
        return {
            d["watch"]: {e["key"]: e["resourceVersion"] for e in d.get("cache") or ()}
            for d in dumps
        }

    def relists(self) -> int:
        """Full lists the reflectors made: LISTs, and watch-lists (initial events)."""
        lists = [r for r in self.records("list") if not r.get("continue")]
        watch_lists = [r for r in self.records("watch") if r.get("sendInitialEvents")]
        return len(lists) + len(watch_lists)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()

    def __enter__(self) -> Informer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

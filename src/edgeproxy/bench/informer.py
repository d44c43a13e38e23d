"""An informer as client-go runs one: list, watch from the list, resume, relist on 410.

The suites measure what clients live through, so their clients behave like
the components on an edge node: a list (with `resourceVersion=0`, served from
a watch cache where there is one), then a watch from the list's
resourceVersion; a watch that ends is resumed from the last resourceVersion
seen; a `410 Gone` (as an HTTP status or an ERROR frame) forces a relist —
the storm the proxy is meant to spare the cloud. Every byte read is counted,
every event's arrival time kept, so delivery latency, catch-up time, relists
and bytes served come from the same record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec

from edgeproxy.bench.kubeclient import Api, BenchError, Meta

# A resumed watch after an error waits this long: client-go's backoff starts near 1 s
# but the benchmark wants to see recovery quickly, not to model backoff.
RETRY_DELAY = 0.2


class _Data(msgspec.Struct):
    t: str = ""  # a writer's monotonic ns, embedded in a ConfigMap (watchcache)


class _Obj(msgspec.Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    code: int = 0  # a Status in an ERROR frame
    data: _Data = msgspec.field(default_factory=_Data)


class _Frame(msgspec.Struct):
    type: str
    object: _Obj


_decode_frame = msgspec.json.Decoder(_Frame).decode


@dataclass(slots=True)
class Informer:
    """One list+watch client of `path` (a collection path, maybe with a query)."""

    api: Api
    path: str
    list_first: bool = True
    resource_version: str = ""
    name: str = "informer"
    # What the client holds: name -> labels (the functional suite checks them).
    view: dict[str, dict[str, str]] = field(default_factory=dict)
    # resourceVersion -> monotonic ns it was read (object events only).
    arrivals: dict[int, int] = field(default_factory=dict)
    # resourceVersion -> the monotonic ns embedded in the object's `data.t`, if any.
    stamps: dict[int, int] = field(default_factory=dict)
    # Object events whose resourceVersion was not above the previous one's.
    out_of_order: int = 0
    _last_rv: int = 0
    bytes_read: int = 0
    lists: int = 0
    relists: int = 0
    rewatches: int = 0
    errors: list[str] = field(default_factory=list)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Informer:
        self._task = asyncio.create_task(self._run(), name=self.name)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def restart(self) -> None:
        """As a restarted component: drop everything, list and watch again."""
        await self.stop()
        self.view.clear()
        self.synced.clear()
        self.list_first = True
        self.start()

    async def wait_for(self, rvs: list[int], within: float) -> bool:
        """Until every one of `rvs` arrived; False after `within` seconds."""
        deadline = time.monotonic() + within
        while not all(rv in self.arrivals for rv in rvs):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _relist(self) -> None:
        sep = "&" if "?" in self.path else "?"
        listed = await self.api.list(f"{self.path}{sep}resourceVersion=0", names=True)
        self.lists += 1
        self.bytes_read += listed.nbytes
        self.view = dict(zip(listed.names, listed.labels, strict=True))
        self.resource_version = listed.resource_version

    async def _run(self) -> None:
        need_list = self.list_first
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                self.synced.set()
                gone = await self._watch()
            except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(RETRY_DELAY)
                continue
            if gone:
                self.relists += 1
                need_list = True
            else:
                self.rewatches += 1

    async def _watch(self) -> bool:
        """One watch stream; True when it ended with 410 Gone (relist needed)."""
        sep = "&" if "?" in self.path else "?"
        url = (
            f"{self.api.url}{self.path}{sep}watch=true&allowWatchBookmarks=true"
            f"&resourceVersion={self.resource_version}"
        )
        async with self.api.http.get(url) as resp:
            if resp.status == 410:
                return True
            if resp.status != 200:
                raise BenchError(f"watch {self.path}: HTTP {resp.status}")
            rest = b""
            # Chunks rather than lines: one timestamp per read keeps the
            # client's own cost far below the servers'.
            async for chunk in resp.content.iter_any():
                at = time.monotonic_ns()
                self.bytes_read += len(chunk)
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if line and self._frame(line, at):
                        return True
        return False

    def _frame(self, line: bytes, at: int) -> bool:
        frame = _decode_frame(line)
        meta = frame.object.metadata
        if frame.type == "ERROR":
            return frame.object.code == 410
        if meta.resourceVersion:
            self.resource_version = meta.resourceVersion
        if frame.type == "BOOKMARK":
            return False
        rv = int(meta.resourceVersion)
        self.out_of_order += rv <= self._last_rv
        self._last_rv = max(rv, self._last_rv)
        self.arrivals[rv] = at
        if frame.object.data.t:
            self.stamps[rv] = int(frame.object.data.t)
        if frame.type == "DELETED":
            self.view.pop(meta.name, None)
        else:
            self.view[meta.name] = meta.labels
        return False

"""A reflector keeps one scope in sync with upstream: list, then watch.

It resumes from the scope's RV whenever it can — after a stream ends, after
an outage, after a restart from the journal — so clients never relist
because of the proxy. Only when upstream answers 410 does it relist, and the
list is applied as the difference (ADDED/MODIFIED/DELETED) to what local
watchers already saw (ARCHITECTURE.md sec. 3). When the link goes down the
stream is dropped at once and the reflector waits for the link to return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from edgeproxy.cache.listing import (
    BadUpstreamBody,
    parse_rv,
    read_list,
    records_of,
)
from edgeproxy.cache.store import ScopeStore
from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.kube.objects import record_from_bytes, strip_type_meta
from edgeproxy.kube.watchstream import WatchDecoder, WatchStreamError
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReflectorSettings:
    # client-go's reflector asks for 5-10 min watches; a fresh request now and
    # then lets upstream rebalance and bounds a silently stuck stream.
    watch_timeout_min: int = 300
    watch_timeout_max: int = 600
    # Backoff after an upstream error (not an outage: then we wait for the link).
    backoff_initial: float = 0.5
    backoff_max: float = 10.0


class _Expired(Exception):
    """Upstream said 410: the scope's RV is too old to watch from."""


class Reflector:
    """Runs list+watch for one ScopeStore until stopped."""

    def __init__(
        self,
        store: ScopeStore,
        upstream: Upstream,
        settings: ReflectorSettings | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        # Every byte received from upstream is reported (the cloud-traffic metric).
        self.on_bytes = on_bytes
        # The RV the scope's first list should be taken at (a client's watch RV).
        self.seed_rv: int | None = None
        self.upstream = upstream
        self.settings = settings or ReflectorSettings()
        self.task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        if store.synced:
            self.synced.set()
        self.bytes_in = 0
        self.relists = 0
        self.watches = 0
        self.last_error = ""
        # True while upstream's watch answered and streams: the scope is current.
        self.watching = False
        self._stream: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"reflector {self.store.scope.key}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def cancel(self) -> asyncio.Task[None] | None:
        """Stop without waiting; the caller keeps the returned task until it is done."""
        if self.task is not None:
            self.task.cancel()
        return self.task

    def link_changed(self, healthy: bool) -> None:
        """Told by the cache manager (one upstream listener for all reflectors)."""
        if not healthy and self._stream is not None:
            self._stream.cancel()  # a black-holed stream would otherwise hang

    def _query(self, **params: str) -> str:
        scope = self.store.scope
        query = dict(params)
        if scope.label_selector:
            query["labelSelector"] = scope.label_selector
        if scope.field_selector:
            query["fieldSelector"] = scope.field_selector
        return self.store.rt.collection_path(scope.namespace) + "?" + urllib.parse.urlencode(query)

    async def _run(self) -> None:
        backoff = self.settings.backoff_initial
        while True:
            if not self.upstream.healthy:
                await self.upstream.changed.wait()
                continue
            try:
                if not self.store.synced:
                    await self.relist(consistent=False)
                self._stream = asyncio.create_task(self._watch(), name="reflector-watch")
                try:
                    await self._stream
                finally:
                    self._stream = None
                backoff = self.settings.backoff_initial
            except _Expired:
                log.info(
                    "scope %s: upstream says RV %d is too old; relisting",
                    self.store.scope.key,
                    self.store.applied_rv,
                )
                try:
                    await self.relist(consistent=True)
                except (UpstreamUnreachable, BadUpstreamBody, _UpstreamStatus) as exc:
                    self.last_error = str(exc)
                    await asyncio.sleep(backoff)
            except asyncio.CancelledError:
                if self.task is not None and self.task.cancelling():
                    raise
                # The stream was dropped because the link went down.
            except (
                UpstreamUnreachable,
                BadUpstreamBody,
                WatchStreamError,
                _UpstreamStatus,
                aiohttp.ClientError,
                TimeoutError,
            ) as exc:
                self.last_error = str(exc)
                log.info("scope %s: %s; retrying in %.1fs", self.store.scope.key, exc, backoff)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.settings.backoff_max)

    async def relist(self, *, consistent: bool) -> None:
        """List the scope and apply it; `consistent` asks for the latest state.

        A scope's first list may be asked for exactly at `seed_rv`, the RV a
        client wants to watch from: the store then starts there and every
        later change reaches that client. If upstream has compacted it (410),
        the ordinary list follows and the client gets its 410 from the store.
        """
        seed, self.seed_rv = self.seed_rv, None
        if seed is not None and not self.store.synced:
            path = self._query(resourceVersion=str(seed), resourceVersionMatch="Exact")
            try:
                await self._list(path)
                return
            except _UpstreamStatus as exc:
                if exc.code != 410:
                    raise
                log.info(
                    "scope %s: RV %d is compacted upstream; listing the latest state",
                    self.store.scope.key,
                    seed,
                )
        rv_param = "" if consistent else "0"
        await self._list(self._query(resourceVersion=rv_param) if rv_param else self._query())

    async def _list(self, path: str) -> None:
        resp = await self.upstream.request("GET", path, headers={"Accept": "application/json"})
        async with resp:
            if resp.status != 200:
                body = await resp.read()
                self._count(len(body))
                raise _UpstreamStatus(resp.status, body)
            # Item by item: never the whole body and its items at once.
            listed = await read_list(
                resp.content.iter_any(), resp.headers.get("Content-Encoding", ""), self._count
            )
        records = records_of(self.store.rt, listed)
        first = listed.first_item()
        if first is not None:
            self.store.typed_items = first.startswith(b'{"kind"')
        self.store.replace(records, parse_rv(listed.metadata.resourceVersion))
        self.relists += 1
        # Clients see a list once the journal has it (store.py): not synced before.
        await self.store.published()
        self.synced.set()

    def _count(self, size: int) -> None:
        """Bytes received from upstream for this scope (lists and watches)."""
        self.bytes_in += size
        if self.on_bytes is not None:
            self.on_bytes(size)
        self.store.bytes_from_upstream += size

    async def _watch(self) -> None:
        timeout = random.randint(self.settings.watch_timeout_min, self.settings.watch_timeout_max)
        path = self._query(
            watch="1",
            resourceVersion=str(self.store.applied_rv),  # published or not: it is applied
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout),
        )
        resp = await self.upstream.request(
            "GET", path, headers={"Accept": "application/json"}, read_timeout=None
        )
        self.watches += 1
        decoder = WatchDecoder()
        async with resp:
            if resp.status == 410:
                raise _Expired()
            if resp.status != 200:
                raise _UpstreamStatus(resp.status, await resp.read())
            self.store.synced_at = time.monotonic()
            self.watching = True
            try:
                async for chunk in resp.content.iter_any():
                    self.store.synced_at = time.monotonic()
                    self._count(len(chunk))
                    for event in decoder.feed(chunk):
                        self._apply(event.type, event.object)
                for event in decoder.eof():
                    self._apply(event.type, event.object)
            finally:
                self.watching = False

    def _apply(self, event_type: str, obj: bytes) -> None:
        store = self.store
        if event_type == "ERROR":
            status = msgspec.json.decode(obj)
            code = status.get("code") if isinstance(status, dict) else None
            if code == 410:
                raise _Expired()
            raise _UpstreamStatus(int(code or 500), obj)
        if event_type == "BOOKMARK":
            meta = msgspec.json.decode(obj).get("metadata") or {}
            store.bookmark(parse_rv(str(meta.get("resourceVersion", "0"))))
            return
        raw = obj if store.typed_items else strip_type_meta(obj)
        try:
            record = record_from_bytes(store.rt, raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise WatchStreamError(f"malformed object in watch event: {exc}") from exc
        store.apply_event(event_type, record)  # type: ignore[arg-type]


class _UpstreamStatus(Exception):
    def __init__(self, code: int, body: bytes) -> None:
        super().__init__(f"upstream answered {code}: {body[:200]!r}")
        self.code = code

"""A reflector keeps one scope in sync with upstream: watch-list, or list then watch.

Where upstream does watch-list (watchlist.py), the scope syncs with one
watch-list request: its initial events are gathered, without publishing
anything, until the bookmark that ends them, then replace the store as a
list does; the stream then goes on with the scope's changes. Both cross
the link gzipped, decoded here member by member (kube/gzipstream.py).
Elsewhere it lists, then watches. It resumes from the scope's RV whenever it can — after a stream ends, after
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
from edgeproxy.cache.watchlist import ResumeCost, StreamStats, WatchListSupport
from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.kube.gzipstream import GzipMembers, GzipStreamError
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes, strip_type_meta
from edgeproxy.kube.watchstream import RawEvent, WatchDecoder, WatchStreamError
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


# Reflector requests accept gzip only: what kube-apiserver compresses with,
# and the one encoding read_list and GzipMembers decode.
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}
_INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# Status codes with which an apiserver refuses a watch-list request it does
# not know: 400 (resourceVersionMatch on a watch), 422 (sendInitialEvents
# without the WatchList feature).
_REFUSALS = (400, 422)
# A watch-list stream silent this long before its initial events ended is a
# plain watch (an apiserver that ignored sendInitialEvents).
INITIAL_SILENCE_SECONDS = 10.0


class _Expired(Exception):
    """Upstream said 410: the scope's RV is too old to watch from."""


class _NoWatchList(Exception):
    """This upstream server does not do watch-list."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(reason)
        self.server = server
        self.reason = reason


class Reflector:
    """Runs list+watch for one ScopeStore until stopped."""

    def __init__(
        self,
        store: ScopeStore,
        upstream: Upstream,
        settings: ReflectorSettings | None = None,
        on_bytes: Callable[[int], None] | None = None,
        watch_list: WatchListSupport | None = None,
        on_stream_bytes: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.store = store
        # Every byte received from upstream is reported (the cloud-traffic metric),
        # and by stream kind and encoding: (kind, encoding, bytes).
        self.on_bytes = on_bytes
        self.on_stream_bytes = on_stream_bytes
        # None: never ask for watch-list (list, then watch).
        self.watch_list = watch_list
        self.cost = ResumeCost()
        # The next stream must bring the whole state: upstream said 410.
        self._resync = False
        # Whether a stream was ever asked for (answered or not).
        self._asked = False
        # The last watch-list broke before its initial state: list or plain-watch next.
        self._no_watch_list_next = False
        # The RV the scope's first list should be taken at (a client's watch RV).
        self.seed_rv: int | None = None
        self.upstream = upstream
        self.settings = settings or ReflectorSettings()
        self.task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        if store.synced:
            self.synced.set()
        self.bytes_in = 0
        # Complete states the scope needed (its first, or after a 410), by a
        # list or a watch-list; resyncs chosen for their cost are not relists.
        self.relists = 0
        self.watches = 0
        self.watch_lists = 0  # complete states taken from watch-lists, for any reason
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
                kind = self._next_stream()
                if kind == "list":
                    await self.relist(consistent=self._resync)
                    self._resync = False
                self._stream = asyncio.create_task(
                    self._watch(watch_list=kind == "watch-list"), name="reflector-watch"
                )
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
                self._resync = True  # a list, or a watch-list, of the latest state
            except _NoWatchList as exc:
                if self.watch_list is not None:
                    self.watch_list.refuse(exc.server, exc.reason)
            except asyncio.CancelledError:
                if self.task is not None and self.task.cancelling():
                    raise
                # The stream was dropped because the link went down.
            except (
                UpstreamUnreachable,
                BadUpstreamBody,
                WatchStreamError,
                GzipStreamError,
                _UpstreamStatus,
                aiohttp.ClientError,
                TimeoutError,
            ) as exc:
                self.last_error = str(exc)
                log.info("scope %s: %s; retrying in %.1fs", self.store.scope.key, exc, backoff)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.settings.backoff_max)

    def _next_stream(self) -> str:
        """ "list" (then a watch), "watch-list", or "watch" from the scope's RV."""
        support = self.watch_list
        servers = [server.url for server in self.upstream.servers]
        watch_list = support is not None and support.usable(servers)
        if self._no_watch_list_next:
            self._no_watch_list_next = watch_list = False
        if not self.store.synced:
            # A first list at a client's RV (seed_rv) is an exact list: no watch-list does that.
            return "watch-list" if watch_list and self.seed_rv is None else "list"
        if self._resync:
            return "watch-list" if watch_list else "list"
        if not watch_list:
            return "watch"
        s = self.settings
        prefer, why = self.cost.prefer_watch_list(
            self.store.bytes,
            (s.watch_timeout_min + s.watch_timeout_max) / 2,
            first=not self._asked,
        )
        log.info(
            "scope %s: watching with %s: %s",
            self.store.scope.key,
            "a watch-list" if prefer else f"a plain watch from RV {self.store.applied_rv}",
            why,
        )
        return "watch-list" if prefer else "watch"

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
        resp = await self.upstream.request("GET", path, headers=_HEADERS)
        async with resp:
            encoding = resp.headers.get("Content-Encoding", "")
            if resp.status != 200:
                body = await resp.read()
                self._count(len(body), "list", encoding)
                raise _UpstreamStatus(resp.status, body)
            # Item by item: never the whole body and its items at once.
            listed = await read_list(
                resp.content.iter_any(),
                encoding,
                lambda size: self._count(size, "list", encoding),
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

    def _count(self, size: int, kind: str, encoding: str) -> None:
        """Bytes received from upstream for this scope (lists and watches)."""
        self.bytes_in += size
        if self.on_bytes is not None:
            self.on_bytes(size)
        if self.on_stream_bytes is not None:
            encoding = encoding.strip().lower() or "identity"
            self.on_stream_bytes(kind, encoding, size)
        self.store.bytes_from_upstream += size

    async def _watch(self, *, watch_list: bool) -> None:
        """One upstream stream: a plain watch from the scope's RV, or a watch-list.

        A watch-list's initial events are gathered, not applied: the store is
        replaced by them, as by a list, when the bookmark that ends them
        arrives, and only then are later events applied one by one.
        """
        store = self.store
        timeout = random.randint(self.settings.watch_timeout_min, self.settings.watch_timeout_max)
        params = {
            "watch": "1",
            "resourceVersion": str(store.applied_rv),  # published or not: it is applied
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        if watch_list:
            # Not older than what the scope holds; a new or expired scope: the latest state.
            resume = store.synced and not self._resync and store.applied_rv > 0
            params["resourceVersion"] = str(store.applied_rv) if resume else ""
            params["resourceVersionMatch"] = "NotOlderThan"
            params["sendInitialEvents"] = "true"
        path = self._query(**params)
        self._asked = True
        resp = await self.upstream.request("GET", path, headers=_HEADERS, read_timeout=None)
        self.watches += 1
        decoder = WatchDecoder()
        kind = "watch-list" if watch_list else "watch"
        async with resp:
            server = self._server_of(resp)
            encoding = resp.headers.get("Content-Encoding", "").strip().lower()
            if resp.status == 410:
                raise _Expired()
            if resp.status != 200:
                body = await resp.read()
                self._count(len(body), kind, encoding)
                if watch_list and resp.status in _REFUSALS:
                    raise _NoWatchList(server, f"it answered {resp.status}: {body[:200]!r}")
                raise _UpstreamStatus(resp.status, body)
            if encoding not in ("", "identity", "gzip"):
                raise WatchStreamError(f"unexpected Content-Encoding {encoding!r}")
            gunzip = GzipMembers() if encoding == "gzip" else None
            initial: dict[str, ObjectRecord] | None = None
            if watch_list:
                initial = {}
                if not store.synced:
                    # Watch events always carry kind and apiVersion; list items
                    # of built-in types do not, custom resources' do.
                    store.typed_items = not store.rt.fields_checked
            stats = StreamStats(compressed=gunzip is not None)
            started = time.monotonic()
            decoded = wire = 0
            if initial is None:
                store.synced_at = started
                self.watching = True
            try:
                while chunk := await self._next_chunk(resp, initial is not None, server):
                    self._count(len(chunk), kind, encoding)
                    wire += len(chunk)
                    for piece in gunzip.feed(chunk) if gunzip is not None else (chunk,):
                        decoded += len(piece)
                        for event in decoder.feed(piece):
                            if initial is None:
                                self._apply(event.type, event.object)
                                continue
                            end_rv = self._initial_event(event, initial, server)
                            if end_rv is not None:
                                await self._take_initial(initial, end_rv)
                                initial = None
                                started, decoded, wire = time.monotonic(), 0, 0
                                self.watching = True
                    if initial is None:
                        store.synced_at = time.monotonic()
                if gunzip is not None:
                    gunzip.finish()
                for event in decoder.eof():
                    if initial is None:
                        self._apply(event.type, event.object)
                    elif (end_rv := self._initial_event(event, initial, server)) is not None:
                        await self._take_initial(initial, end_rv)
                        initial = None
                if initial is not None:
                    raise WatchStreamError("the watch-list ended before its initial events did")
            finally:
                self.watching = False
                if initial is not None:
                    # Cut short before its initial state: maybe upstream is not what
                    # it seems. The next stream of this scope is not a watch-list.
                    self._no_watch_list_next = True
                if initial is None:
                    stats.seconds = time.monotonic() - started
                    stats.decoded_bytes, stats.wire_bytes = decoded, wire
                    self.cost.measured(stats)

    async def _next_chunk(self, resp: aiohttp.ClientResponse, initial: bool, server: str) -> bytes:
        """The next chunk of the body, b"" at its end.

        While a watch-list's initial events are coming, upstream streams
        them without a pause and ends them with the bookmark at once; a
        stream that falls silent first is a plain watch from an apiserver
        that ignored sendInitialEvents (a cut link is noticed sooner).
        """
        if not initial:
            return await resp.content.readany()
        try:
            return await asyncio.wait_for(resp.content.readany(), INITIAL_SILENCE_SECONDS)
        except TimeoutError:
            if not self.upstream.healthy:
                raise
            raise _NoWatchList(
                server, f"silent for {INITIAL_SILENCE_SECONDS:.0f}s before the initial events ended"
            ) from None

    def _server_of(self, resp: aiohttp.ClientResponse) -> str:
        url = str(resp.url)
        for server in self.upstream.servers:
            if url.startswith(server.url):
                return server.url
        return str(resp.url.origin())

    def _initial_event(
        self, event: RawEvent, initial: dict[str, ObjectRecord], server: str
    ) -> int | None:
        """Gather one initial event of a watch-list; the RV its end bookmark gives."""
        if event.type == "ADDED":
            record = self._record(event.object)
            initial[record.key] = record
            return None
        if event.type == "ERROR":
            self._apply(event.type, event.object)  # raises
        if event.type == "BOOKMARK":
            meta = msgspec.json.decode(event.object).get("metadata") or {}
            annotations = meta.get("annotations") or {}
            if annotations.get(_INITIAL_EVENTS_END) == "true":
                return parse_rv(str(meta.get("resourceVersion", "0")))
        # An apiserver that ignores sendInitialEvents streams a plain watch:
        # changes and bookmarks come without the end of any initial events.
        raise _NoWatchList(server, f"a {event.type} event came before the initial events ended")

    async def _take_initial(self, records: dict[str, ObjectRecord], rv: int) -> None:
        """A watch-list's initial state: applied as a list is (the difference)."""
        if self._resync or not self.store.synced:
            self.relists += 1
        self.store.replace(records, rv)
        self._resync = False
        self.watch_lists += 1
        # Clients see it once the journal has it (store.py): not synced before.
        await self.store.published()
        self.synced.set()

    def _record(self, obj: bytes) -> ObjectRecord:
        raw = obj if self.store.typed_items else strip_type_meta(obj)
        try:
            return record_from_bytes(self.store.rt, raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise WatchStreamError(f"malformed object in watch event: {exc}") from exc

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
        store.apply_event(event_type, self._record(obj))  # type: ignore[arg-type]


class _UpstreamStatus(Exception):
    def __init__(self, code: int, body: bytes) -> None:
        super().__init__(f"upstream answered {code}: {body[:200]!r}")
        self.code = code

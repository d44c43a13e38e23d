"""Serving one client watch from a scope's store.

The watch starts where the client asked (sec. 3.2): the current state as
synthetic ADDED events (RV unset or 0, or watch-list with its end
bookmark), only what follows (sendInitialEvents=false), or the history after
the client's RV (a 410 ERROR event in a 200 stream when that is older than the
kept history). Then the watcher is registered, with no await in between, and
the stream carries every later event, bookmarks that never move the client's
RV backwards, and ends at the deadline or when the client stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
from collections.abc import Callable, Iterable, Iterator
from functools import partial

from aiohttp import web

from edgeproxy.cache.broadcast import WatchBudget, Watcher
from edgeproxy.cache.protoforms import ProtobufForms
from edgeproxy.cache.store import ScopeStore, TooOld
from edgeproxy.cache.streaming import stream_watch
from edgeproxy.kube import status
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.negotiation import MediaChoice
from edgeproxy.kube.objects import ObjectRecord, with_type_meta
from edgeproxy.kube.render import WatchFrameConverter
from edgeproxy.kube.request import ListOptions, parse_resource_version
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.status import StatusError
from edgeproxy.kube.table import include_object_option
from edgeproxy.kube.wire import bookmark
from edgeproxy.metrics import Metrics
from edgeproxy.proxy.settings import ProxySettings

JSON = "application/json"

log = logging.getLogger(__name__)


async def serve_watch(
    request: web.Request,
    store: ScopeStore,
    opts: ListOptions,
    request_namespace: str,
    labels: LabelSelector,
    fields: FieldSelector,
    choice: MediaChoice,
    *,
    settings: ProxySettings,
    metrics: Metrics,
    link_up: bool,
    budget: WatchBudget,
    protobuf: ProtobufForms | None = None,
) -> web.StreamResponse:
    rt = store.rt
    store.touch()
    namespace = request_namespace if rt.namespaced else ""
    rv_param = opts.resource_version or ""
    min_rv = 0
    if rv_param not in ("", "0"):
        min_rv = parse_resource_version(rv_param)  # list_options checked it
    refused: StatusError | None = None
    if opts.send_initial_events and min_rv > store.rv:
        # Initial events "not older than N" need every change up to N applied:
        # the ones in between would be skipped as already known (sec. 3.8, 2.1).
        if link_up:
            await store.wait_for_rv(min_rv, settings.rv_wait)
        if store.rv < min_rv:
            # As kube-apiserver's cacher: an ERROR event in a 200 stream, not a 504.
            refused = status.too_large_resource_version(min_rv, store.rv)
    watcher = Watcher(
        store.types, namespace, labels, fields, budget.per_watcher, min_rv=min_rv, budget=budget
    )
    if request.transport is not None:
        # A client that stopped reading blocks the writer; cut it off.
        watcher.on_overflow = request.transport.abort
        _bound_send_buffer(request.transport, settings.watch_send_buffer)
    initial: Iterable[bytes] = ()
    expired: StatusError | None = refused
    legacy_initial = opts.send_initial_events is None and rv_param in ("", "0")
    if opts.send_initial_events or legacy_initial:
        # The state now, as references: each frame is encoded as it is written,
        # so a client that does not read pins no copy of the whole state.
        records = [r for r in store.objects.values() if watcher.matches(r)]
        if choice.form == "protobuf" and protobuf is not None:
            forms = protobuf
            initial = (forms.added_frame(rt, r.raw) for r in records)
        else:
            initial = _added_frames(rt, records)
        if opts.send_initial_events and opts.allow_watch_bookmarks:
            end = bookmark(rt.kind, rt.api_version, str(max(store.rv, min_rv)), initial_end=True)
            initial = itertools.chain(initial, (end,))
        watcher.min_rv = max(watcher.min_rv, store.rv)
    elif rv_param in ("", "0"):
        # sendInitialEvents=false: only changes from now on (KEP-3157).
        watcher.min_rv = max(watcher.min_rv, store.rv)
    else:
        try:
            initial = [f for e in store.events_after(min_rv) if (f := watcher.frame_for(e))]
        except TooOld as too_old:
            expired = status.expired(str(too_old))
            # A client that must relist: say why (its RV is before what this
            # store can replay, e.g. from before a restart).
            log.info(
                "watch of %s%s from RV %d: 410 Gone, this store replays changes after RV %d"
                " (now at %d)",
                store.scope.key,
                f" (view {store.view_key})" if store.view_key else "",
                min_rv,
                store.compacted_rv,
                store.rv,
            )
    if expired is None:
        store.watchers.add(watcher)
    metrics.watchers.inc()
    try:
        content_type = choice.content_type if choice.form == "protobuf" else JSON
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        include = (
            include_object_option(request.query.get("includeObject"))
            if choice.form == "table"
            else "Metadata"
        )
        rendered = WatchFrameConverter(rt, choice, include)
        convert: Callable[[bytes], bytes] | None = None if rendered.passthrough else rendered
        if choice.form == "protobuf" and protobuf is not None:
            # One protobuf frame per event, shared by every protobuf watcher.
            convert = partial(protobuf.frame, rt)
        if expired is not None:
            error = expired.watch_event()
            await resp.write(error if convert is None else convert(error))
            await resp.write_eof()
            return resp
        timeout = float(opts.timeout_seconds or 0)
        if timeout <= 0:
            timeout = settings.min_request_timeout * (1 + random.random())

        def make_bookmark() -> bytes | None:
            if store.rv < watcher.min_rv or watcher.pending:
                return None  # never move a client's RV backwards
            return bookmark(rt.kind, rt.api_version, str(store.rv))

        counter = metrics.client_bytes.labels("cache")

        def on_sent(size: int) -> None:
            counter.inc(size)
            store.bytes_served += size

        await stream_watch(
            request,
            resp,
            watcher,
            initial,
            duration=timeout,
            bookmark=make_bookmark if opts.allow_watch_bookmarks else None,
            bookmark_interval=settings.bookmark_interval,
            convert=convert,
            on_sent=on_sent,
        )
        return resp
    finally:
        metrics.watchers.dec()
        watcher.finish()
        store.watchers.discard(watcher)


def _bound_send_buffer(transport: asyncio.BaseTransport, size: int) -> None:
    """Cap what the kernel queues for this client (Linux autotunes it up to 4 MB).

    A client that stops reading otherwise absorbs megabytes before its writer
    blocks: 500 such watches cost the kernel 2 GB and the proxy seconds of
    copying at a burst, while every other client waits.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _added_frames(rt: ResourceType, records: list[ObjectRecord]) -> Iterator[bytes]:
    for record in records:
        obj = with_type_meta(record.raw, rt.kind, rt.api_version)
        yield b'{"type":"ADDED","object":' + obj + b"}\n"

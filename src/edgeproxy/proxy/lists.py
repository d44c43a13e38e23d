"""The list verb: served from a synced scope, forwarded and cached, or offline.

A list is the most expensive read a client makes and the one the cache is
for: `resourceVersion=0` / NotOlderThan lists (what informers send) are
answered from a synced scope that covers them, `resourceVersion=""` lists too
in cache-first mode; the rest are forwarded while the link is up, their
answer applied to the scope's store and journaled; while cut off, the store
answers (ARCHITECTURE.md sec. 3).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from edgeproxy.cache.listing import (
    BadUpstreamBody,
    ListHead,
    ListView,
    UpstreamList,
    parse_list,
    parse_rv,
    read_head,
    read_list,
    records_of,
    replayed,
)
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.filters.base import Chain
from edgeproxy.kube import status
from edgeproxy.kube.fields import parse_selectors
from edgeproxy.kube.negotiation import MediaChoice
from edgeproxy.kube.protobuf import CONTENT_TYPE as PROTOBUF
from edgeproxy.kube.request import ListOptions, RequestInfo, list_semantics
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.wire import list_body
from edgeproxy.proxy import forward
from edgeproxy.proxy.fallback import Fallback, json_headers, offline

if TYPE_CHECKING:
    from edgeproxy.proxy.router import ProxyRouter

log = logging.getLogger(__name__)

JSON = "application/json"


class Lists:
    def __init__(self, router: ProxyRouter) -> None:
        # The router's helpers shared with gets and watches: filter chains,
        # read-your-writes, byte counters, responses.
        self.router = router
        self.upstream = router.upstream
        self.cache = router.cache
        self.filters = router.filters
        self.metrics = router.metrics
        self.settings = router.settings
        self.local = router.local
        self.reads = router.reads

    def _cache_first(self, rt: ResourceType) -> bool:
        return (
            self.settings.consistency == "cache-first"
            or rt.resource in self.settings.cache_first_resources
        )

    async def serve(
        self, request: web.Request, info: RequestInfo, rt: ResourceType, opts: ListOptions
    ) -> tuple[web.StreamResponse, str]:
        labels, fields = parse_selectors(rt, opts.label_selector, opts.field_selector)
        choice = self.router.negotiate(request, "list", rt)
        scope = Scope.of(rt, info.namespace, labels, fields)
        semantics = list_semantics(opts)
        chain = await self.router.chain(request, info)
        store = self.cache.covering(scope, rt)
        if store is None and (
            not self.upstream.healthy or semantics != "most_recent" or self._cache_first(rt)
        ):
            store = await self.cache.covering_or_load(scope, rt)
        view = None if store is None else self.filters.view_for(store, chain)
        if (
            store is not None
            and view is not None
            and self.upstream.healthy
            and self._serve_locally(rt, view, semantics, opts)
        ):
            self.cache.reflector_for(store)
            await self.router.read_your_writes(rt, store)
            return await self.local.serve(
                request, info, view, opts, labels, fields, choice, semantics
            ), "cache"
        if self.upstream.healthy:
            try:
                return await self._forward_list(
                    request, info, rt, scope, opts, choice, chain, cached=store is not None
                ), "upstream"
            except (Fallback, UpstreamUnreachable):
                pass
        if view is None:
            store = await self.cache.covering_or_load(scope, rt)
            view = None if store is None else self.filters.view_for(store, chain)
        if view is None:
            raise offline(f"a list of {rt.resource}")
        return await self.local.serve(
            request, info, view, opts, labels, fields, choice, semantics, "offline"
        ), "offline"

    def _serve_locally(
        self, rt: ResourceType, store: ScopeStore, semantics: str, opts: ListOptions
    ) -> bool:
        if opts.continue_token:
            return False
        if semantics == "any":
            return True
        if semantics == "not_older_than":
            try:
                return store.rv >= int(opts.resource_version or "0")
            except ValueError:
                return False
        if semantics == "most_recent" and self._cache_first(rt):
            reflector = self.cache.reflectors.get(store.scope)
            return reflector is not None and reflector.synced.is_set()
        return False

    async def _forward_list(
        self,
        request: web.Request,
        info: RequestInfo,
        rt: ResourceType,
        scope: Scope,
        opts: ListOptions,
        choice: MediaChoice,
        chain: Chain,
        *,
        cached: bool,
    ) -> web.StreamResponse:
        if not self.router.as_json(choice, chain):
            self.metrics.forwarded_lists.labels("relay").inc()
            resp = await self.reads.forward(
                request, forward.upstream_headers(request.headers), cached=cached
            )
            async with resp:
                return await forward.relay(
                    request, resp, on_bytes=self.router.count_bytes("upstream")
                )
        known = self.cache.stores.get(scope)
        held = known if known is not None and known.synced and not opts.continue_token else None
        # Filtered: the store's view answers if it is current. Protobuf: upstream's
        # is passed on if the store is current (the cache cannot read it).
        probe = (
            not opts.limit and list_semantics(opts) != "exact"
            if chain
            else choice.form == "protobuf"
        )
        if held is not None and probe:
            probed = await self._upstream_rv(request, choice, cached=cached)
            if isinstance(probed, web.StreamResponse):
                return probed
            if not await self._holds(held, probed, opts, chain, whole=False):
                held = None  # behind upstream: the list is read and applied, as a first one
            elif chain:
                return await self._serve_held(
                    request, info, held, opts, choice, chain, read="probe"
                )
        headers = json_headers(request)
        if held is not None and not chain:
            # Likely passed on unread: in the form the client asked upstream for
            # (a protobuf client gets upstream's protobuf).
            headers["Accept"] = request.headers.get("Accept", JSON)
        resp = await self.reads.forward(request, headers, cached=cached)
        upstream_bytes = self.metrics.upstream_bytes.labels("list").inc
        try:
            async with resp:
                encoding = resp.headers.get("Content-Encoding", "")
                if resp.status != 200 and choice.form == "protobuf" and held is None:
                    return await self.router.relay_status(request, resp)
                if resp.status != 200:
                    raw_body = await resp.read()
                    upstream_bytes(len(raw_body))
                    return web.Response(
                        body=raw_body,
                        status=resp.status,
                        headers=forward.client_headers(resp.headers),
                    )
                chunks: AsyncIterator[bytes] = resp.content.iter_any()
                if held is not None:
                    # The list's metadata is in its first bytes: when the store
                    # already holds that state, its items need no reading at all.
                    media = resp.headers.get("Content-Type", "")
                    protobuf = media.startswith(PROTOBUF)
                    head = await read_head(chunks, encoding, protobuf=protobuf)
                    if await self._holds(held, head.view, opts, chain):
                        if chain:
                            out = await self._serve_held(request, info, held, opts, choice, chain)
                            await self._drain(held, head, chunks)
                            return out
                        return await self._pass_held(request, resp, held, head, chunks)
                    if not media.startswith(JSON):
                        # Upstream's protobuf, asked for as the store was current: a
                        # change since, which the reflector brings in milliseconds.
                        await self._catch_up(held, head.view)
                        return await self._pass(request, resp, head, chunks)
                    chunks = replayed(head.chunks, chunks)
                self.metrics.forwarded_lists.labels("items").inc()
                # Item by item: never the whole body and its items at once.
                listed = await read_list(chunks, encoding, upstream_bytes)
            view = listed.view
            rv = parse_rv(view.metadata.resourceVersion)
            complete = not opts.continue_token and not view.metadata.continue_
            known = self.cache.stores.get(scope)
            exact = list_semantics(opts) == "exact"
            if (
                complete
                and known is not None
                and known.synced
                and known.rv == rv
                and not (chain and exact)
            ):
                # The store already holds exactly this state (its reflector keeps
                # it current): no need to look at the items again.
                known.touch()
                if self.cache.note_list(scope):
                    self.cache.reflector_for(known)
                known.bytes_from_upstream += listed.wire_bytes
                if not chain and choice.form == "json":
                    known.bytes_served += listed.wire_bytes
                    return await self._send_listed(request, listed, encoding)
                # Filtered or rendered: the store's memoized answer is this list's.
                labels, fields = known.scope.labels(), known.scope.fields()
                return await self.local.serve(
                    request,
                    info,
                    self.filters.view_for(known, chain),
                    opts,
                    labels,
                    fields,
                    choice,
                    list_semantics(opts),
                    "upstream",
                )
            records = records_of(rt, listed)
        except BadUpstreamBody as exc:
            log.warning("upstream list for %s is malformed: %s", request.path, exc)
            raise status.internal_error(
                f"the cloud apiserver sent a malformed list: {exc}"
            ) from exc
        if complete and not self.cache.covered_by_broader(scope, rt, rv):
            store = self.cache.store_for(scope, rt)
            first = listed.first_item()
            if first is not None:
                store.typed_items = first.startswith(b'{"kind"')
            store.replace(records, rv)
            store.touch()
            store.bytes_from_upstream += listed.wire_bytes
            if self.cache.note_list(scope):
                self.cache.reflector_for(store)
            self.cache.enforce()
            await self.cache.settle()
            if store.rv < rv <= store.applied_rv:
                # The answer is a state the proxy now keeps: sent once the journal
                # has it, so no restart can bring the proxy back older (store.py).
                await store.wait_for_rv(rv, self.settings.rv_wait)
            if (
                (chain or choice.form == "protobuf")
                and store.rv == rv
                and list_semantics(opts) != "exact"
            ):
                # The (filtered) view follows the store: its answer is this list,
                # filtered, and its protobuf form is memoized there.
                return await self.local.serve(
                    request,
                    info,
                    self.filters.view_for(store, chain),
                    opts,
                    store.scope.labels(),
                    store.scope.fields(),
                    choice,
                    list_semantics(opts),
                    "upstream",
                )
        shown = [r for r in map(partial(self.filters.filter_one, chain), records.values()) if r]
        if choice.form != "json":
            return self.local.render(
                request,
                rt,
                view.metadata.resourceVersion,
                view.metadata.continue_,
                shown,
                choice,
                "upstream",
                remaining=view.metadata.remainingItemCount,
            )
        if not chain:
            del records, shown  # the items live on in the store (or go now)
            return await self._send_listed(request, listed, encoding)
        filtered = list_body(
            view.kind,
            view.apiVersion,
            view.metadata.resourceVersion,
            (r.raw for r in shown),
            continue_token=view.metadata.continue_,
            remaining_item_count=view.metadata.remainingItemCount,
        )
        return self.router.send(request, filtered, JSON, "upstream")

    async def _upstream_rv(
        self, request: web.Request, choice: MediaChoice, *, cached: bool
    ) -> ListView | web.StreamResponse | None:
        """Upstream's list without its items, asking for one: its RV is the whole list's.

        The client's list with `limit=1` is still a consistent read: its RV is
        the one the whole list would have (kube-apiserver serves consistent
        lists from its watch cache the same way: the current RV from etcd, then
        the cache once it has caught up), and upstream sends one item instead
        of all of them. A response: upstream refused it (the whole list would
        be refused the same way); None: a malformed answer (the whole list's
        reading reports it).
        """
        headers = json_headers(request)
        headers["Accept-Encoding"] = "identity"
        resp = await self.reads.forward(
            request, headers, cached=cached, target=_first_item(request)
        )
        async with resp:
            if resp.status != 200 and choice.form == "protobuf":
                return await self.router.relay_status(request, resp)
            body = await resp.read()
            self.metrics.upstream_bytes.labels("list").inc(len(body))
            if resp.status != 200:
                return web.Response(
                    body=body, status=resp.status, headers=forward.client_headers(resp.headers)
                )
        try:
            return parse_list(body)
        except BadUpstreamBody:
            return None

    async def _holds(
        self,
        known: ScopeStore,
        view: ListView | None,
        opts: ListOptions,
        chain: Chain,
        *,
        whole: bool = True,
    ) -> bool:
        """Whether the store answers for the list `head` begins: it holds that state or newer.

        A store at an RV it has applied but not yet journaled is waited for
        (milliseconds), so the answer is a state a restart keeps. A store
        behind the list is not: the list is read and applied, as a first one.
        """
        if self.cache.stores.get(known.scope) is not known:
            return False  # evicted meanwhile: no longer kept current
        if view is None or (whole and view.metadata.continue_):
            return False  # not a whole list, or the head did not say
        if chain and list_semantics(opts) == "exact":
            return False  # the store's view is at its own RV, not the one asked for
        try:
            rv = parse_rv(view.metadata.resourceVersion)
        except BadUpstreamBody:
            return False  # the full read reports it
        if known.rv < rv <= known.applied_rv:
            await known.wait_for_rv(rv, self.settings.rv_wait)
        return known.rv >= rv

    async def _catch_up(self, known: ScopeStore, view: ListView | None) -> None:
        try:
            rv = parse_rv(view.metadata.resourceVersion) if view is not None else 0
        except BadUpstreamBody:
            return
        if rv > known.rv:
            await known.wait_for_rv(rv, self.settings.rv_wait)

    async def _pass(
        self,
        request: web.Request,
        resp: aiohttp.ClientResponse,
        head: ListHead,
        rest: AsyncIterator[bytes],
    ) -> web.StreamResponse:
        self.metrics.forwarded_lists.labels("relay").inc()
        on_bytes = self.router.count_bytes("upstream")
        return await forward.relay(request, resp, on_bytes=on_bytes, head=head.chunks, rest=rest)

    async def _pass_held(
        self,
        request: web.Request,
        resp: aiohttp.ClientResponse,
        known: ScopeStore,
        head: ListHead,
        rest: AsyncIterator[bytes],
    ) -> web.StreamResponse:
        """Upstream's list, byte for byte and as encoded, unread: the store already has it."""
        self._note_held(known)
        client_bytes = self.metrics.client_bytes.labels("upstream").inc
        upstream_bytes = self.metrics.upstream_bytes.labels("list").inc
        moved = [0]

        def on_bytes(n: int) -> None:
            moved[0] += n
            client_bytes(n)
            upstream_bytes(n)

        try:
            return await forward.relay(
                request, resp, on_bytes=on_bytes, head=head.chunks, rest=rest
            )
        finally:
            known.bytes_from_upstream += moved[0]
            known.bytes_served += moved[0]

    async def _serve_held(
        self,
        request: web.Request,
        info: RequestInfo,
        known: ScopeStore,
        opts: ListOptions,
        choice: MediaChoice,
        chain: Chain,
        read: str = "head",
    ) -> web.StreamResponse:
        """The store's filtered (memoized) answer, at least as new as upstream's list."""
        self._note_held(known, read)
        return await self.local.serve(
            request,
            info,
            self.filters.view_for(known, chain),
            opts,
            known.scope.labels(),
            known.scope.fields(),
            choice,
            list_semantics(opts),
            "upstream",
        )

    async def _drain(self, known: ScopeStore, head: ListHead, rest: AsyncIterator[bytes]) -> None:
        """Read the rest of upstream's list unparsed, so its connection is reused."""
        received = sum(map(len, head.chunks))
        async for chunk in rest:
            received += len(chunk)
        self.metrics.upstream_bytes.labels("list").inc(received)
        known.bytes_from_upstream += received

    def _note_held(self, known: ScopeStore, read: str = "head") -> None:
        self.metrics.forwarded_lists.labels(read).inc()
        known.touch()
        if self.cache.note_list(known.scope):
            self.cache.reflector_for(known)

    async def _send_listed(
        self, request: web.Request, listed: UpstreamList, encoding: str
    ) -> web.StreamResponse:
        """An upstream list passed on byte for byte, as upstream encoded it."""
        self.metrics.client_bytes.labels("upstream").inc(listed.wire_bytes)
        return await forward.send_parts(
            request, listed.body_parts(), listed.wire_bytes, _list_headers(encoding)
        )


def _list_headers(encoding: str) -> dict[str, str]:
    headers = {"Content-Type": JSON}
    if encoding:
        headers["Content-Encoding"] = encoding
    return headers


def _first_item(request: web.Request) -> str:
    """The client's list as upstream should see it, asking for one item."""
    url = request.rel_url
    query = [p for p in url.raw_query_string.split("&") if p and not p.startswith("limit=")]
    return f"{url.raw_path}?{'&'.join([*query, 'limit=1'])}"

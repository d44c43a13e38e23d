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
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from edgeproxy.cache.listing import (
    BadUpstreamBody,
    UpstreamList,
    parse_rv,
    read_list,
    records_of,
)
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.filters.base import Chain
from edgeproxy.kube import status
from edgeproxy.kube.fields import parse_selectors
from edgeproxy.kube.negotiation import MediaChoice
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
            resp = await self.reads.forward(
                request, forward.upstream_headers(request.headers), cached=cached
            )
            async with resp:
                return await forward.relay(
                    request, resp, on_bytes=self.router.count_bytes("upstream")
                )
        resp = await self.reads.forward(request, json_headers(request), cached=cached)
        upstream_bytes = self.metrics.upstream_bytes.labels("list").inc
        try:
            async with resp:
                encoding = resp.headers.get("Content-Encoding", "")
                if resp.status != 200 and choice.form == "protobuf":
                    return await self.router.relay_status(request, resp)
                if resp.status != 200:
                    raw_body = await resp.read()
                    upstream_bytes(len(raw_body))
                    return web.Response(
                        body=raw_body,
                        status=resp.status,
                        headers=forward.client_headers(resp.headers),
                    )
                # Item by item: never the whole body and its items at once.
                listed = await read_list(resp.content.iter_any(), encoding, upstream_bytes)
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

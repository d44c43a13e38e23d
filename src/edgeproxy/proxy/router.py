"""Every client request ends here: forwarded, answered from the cache, or offline.

The decisions follow ARCHITECTURE.md sec. 3:
- writes and everything that is not a resource read are passed through
  (while the link is down, writes get a 503 that says so, with Retry-After);
- gets and lists are forwarded while the link is up (asking upstream for JSON
  so the answer can be cached), filtered, applied to the scope's store and
  journaled; RV=0 / NotOlderThan lists are served from a synced scope, and
  `resourceVersion=""` too in cache-first mode (lists: lists.py);
- a read that upstream does not answer within `fallback_after` while the link
  is not known to be healthy is answered from the cache (fallback.py);
- watches are always served from a scope store kept in sync by one shared
  upstream reflector, so they survive an outage and resume after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from edgeproxy.cache.listing import decompress
from edgeproxy.cache.manager import CacheManager
from edgeproxy.cache.protoforms import EncodeError, ProtobufForms
from edgeproxy.cache.rawcache import raw_key
from edgeproxy.cache.scope import Scope
from edgeproxy.cache.store import ScopeStore
from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.filters.base import Chain
from edgeproxy.kube import status
from edgeproxy.kube.fields import FieldSelector, parse_selectors
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.negotiation import PROTOBUF, MediaChoice, Target, negotiate
from edgeproxy.kube.objects import (
    ObjectRecord,
    record_from_bytes,
    strip_type_meta,
    with_type_meta,
)
from edgeproxy.kube.protoencoder import negotiated_status, status_body
from edgeproxy.kube.protoschema import is_builtin
from edgeproxy.kube.request import (
    ListOptions,
    RequestInfo,
    check_get_options,
    check_name,
    list_options,
    parse_resource_version,
    request_info,
)
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.status import StatusError
from edgeproxy.kube.table import (
    include_object_option,
    partial_object_metadata,
    table,
)
from edgeproxy.metrics import Metrics
from edgeproxy.proxy import forward, upgrade
from edgeproxy.proxy.authorization import Authorizer
from edgeproxy.proxy.fallback import Fallback, FallbackReads, json_headers, offline
from edgeproxy.proxy.filtering import FilterRuntime
from edgeproxy.proxy.identity import bearer_token
from edgeproxy.proxy.lists import Lists
from edgeproxy.proxy.local import LocalLists, respond
from edgeproxy.proxy.recentwrites import RecentWrites
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.proxy.watching import serve_watch
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

JSON = "application/json"


def error_response(err: StatusError, accept: str | None = None) -> web.Response:
    """The Status of a failed request, in protobuf when the client prefers it."""
    body, content_type = negotiated_status(err.body(), accept)
    return web.Response(
        body=body, status=err.code, headers={"Content-Type": content_type, **err.headers()}
    )


class ProxyRouter:
    def __init__(
        self,
        upstream: Upstream,
        cache: CacheManager,
        filters: FilterRuntime,
        metrics: Metrics,
        settings: ProxySettings | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.upstream = upstream
        # Cached answers go to a client with its own token only as upstream allows.
        self.authorizer = authorizer
        self.cache = cache
        self.filters = filters
        self.metrics = metrics
        self.settings = settings or ProxySettings()
        self.protobuf = ProtobufForms(self.settings.protobuf_cache_bytes)
        self.local = LocalLists(metrics, self.protobuf)
        # Read-your-writes: the newest RV a write through the proxy returned, per
        # (group, version, resource, namespace): a namespaced scope never sees the
        # events of other namespaces, so it must not wait for their writes.
        self._writes = RecentWrites()
        self.reads = FallbackReads(upstream, self.settings)
        self.lists = Lists(self)

    # -- entry ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        verb, resource, served = request.method.lower(), "", "upstream"
        try:
            info = request_info(request.method, request.path, request.query)
            verb, resource = info.verb, info.resource
            resp, served = await self._route(request, info)
        except StatusError as err:
            resp, served = error_response(err, self._error_accept(request)), "proxy"
        except UpstreamUnreachable as exc:
            unreachable = self._unreachable(request, str(exc))
            resp, served = error_response(unreachable, self._error_accept(request)), "proxy"
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # never a traceback to a client
            log.exception("unhandled error serving %s %s", request.method, request.path_qs)
            resp, served = error_response(status.internal_error(type(exc).__name__)), "proxy"
        self.metrics.requests.labels(verb, resource, str(resp.status), served).inc()
        self.metrics.request_seconds.labels(verb, served).observe(time.monotonic() - started)
        return resp

    async def relay_status(
        self, request: web.Request, resp: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        """Upstream's error answer (asked as JSON) in the protobuf its client asked for."""
        wire = await resp.read()
        self.count_bytes("upstream")(len(wire))
        body = decompress(resp.headers.get("Content-Encoding", ""), wire)
        headers = forward.client_headers(resp.headers)
        headers.pop("Content-Encoding", None)
        headers.pop("Content-Length", None)
        with contextlib.suppress(ValueError, EncodeError):  # not a Status: as it came
            body, headers["Content-Type"] = status_body(body), PROTOBUF
        return web.Response(body=body, status=resp.status, headers=headers)

    def _error_accept(self, request: web.Request) -> str | None:
        return request.headers.get("Accept") if self.settings.serve_protobuf else None

    def _unreachable(self, request: web.Request, detail: str) -> StatusError:
        retry = self.settings.offline_retry_after
        if request.method in ("GET", "HEAD"):
            return status.service_unavailable(
                f"the cloud apiserver is unreachable: {detail}", retry_after=retry
            )
        return status.service_unavailable(
            f"the cloud apiserver is unreachable, so edge-proxy cannot {request.method} {request.path}; "
            "nothing was changed, retry when the link is back",
            retry_after=retry,
        )

    async def _route(
        self, request: web.Request, info: RequestInfo
    ) -> tuple[web.StreamResponse, str]:
        if _is_upgrade(request):  # exec, attach, port-forward, watch over WebSocket
            on_bytes = self.count_bytes("upstream")
            resp = await upgrade.passthrough_upgrade(request, self.upstream, on_bytes=on_bytes)
            return resp, "upstream"
        if not info.is_resource_request:
            return await self._non_resource(request, info)
        if "//" in request.path:
            # kube-apiserver's router matches no route for an empty segment; read
            # as a resource request, `/namespaces//pods` would mean "all namespaces".
            raise status.not_found_path()
        if not info.subresource:
            # `configmaps/..` is a 400, as in the registry; with a subresource the
            # path may match no route upstream (a 404), so upstream answers it.
            check_name(info)
        if self.authorizer is not None:
            await self.authorizer.check(request.headers, info)
        # Kind, scope and verbs from upstream's discovery (cache/resourcetypes.py);
        # the namespace only guesses the scope of a type nothing declares.
        rt = await self.cache.types.resolve(
            info.api_group, info.api_version, info.resource, namespaced=bool(info.namespace)
        )
        if info.verb in ("list", "watch"):
            opts = list_options(info, request.query)
            if info.verb == "watch":
                return await self._watch(request, info, rt, opts), "cache"
            return await self.lists.serve(request, info, rt, opts)
        if info.verb == "get" and not info.subresource:
            check_get_options(request.query)  # a get ignores list parameters
            return await self._get(request, info, rt)
        return await self._write(request, info, rt)

    # -- pass-through ----------------------------------------------------------------

    def count_bytes(self, served: str) -> Any:
        counter = self.metrics.client_bytes.labels(served)
        upstream = self.metrics.upstream_bytes.labels("passthrough")

        def on_bytes(n: int) -> None:
            counter.inc(n)
            upstream.inc(n)

        return on_bytes

    async def _non_resource(
        self, request: web.Request, info: RequestInfo
    ) -> tuple[web.StreamResponse, str]:
        if request.method == "GET" and not _is_upgrade(request):
            return await self._cached_get(request)
        if not self.upstream.healthy:
            raise UpstreamUnreachable("link is down")
        return await forward.passthrough(
            request, self.upstream, on_bytes=self.count_bytes("upstream")
        ), "upstream"

    async def _cached_get(self, request: web.Request) -> tuple[web.StreamResponse, str]:
        """Discovery, /version, openapi: forward, remember, replay offline.

        Remembered by path and Accept, not by query (cache/rawcache.py).
        """
        key = raw_key(request.path, request.headers.get("Accept", ""))
        if self.upstream.healthy:
            try:
                resp = await self.reads.forward(
                    request,
                    forward.upstream_headers(request.headers),
                    cached=self.cache.raw_get(key) is not None,
                )
            except (Fallback, UpstreamUnreachable):
                resp = None
            if resp is not None:
                async with resp:
                    body = await resp.read()
                    self.metrics.upstream_bytes.labels("discovery").inc(len(body))
                    headers = forward.client_headers(resp.headers)
                    if resp.status == 200:
                        self.cache.remember_raw(
                            key,
                            resp.headers.get("Content-Type", JSON),
                            resp.headers.get("Content-Encoding", ""),
                            body,
                        )
                    out = web.Response(body=body, status=resp.status, headers=headers)
                    self.metrics.client_bytes.labels("upstream").inc(len(body))
                    return out, "upstream"
        cached = self.cache.raw_get(key)
        if cached is None:
            raise offline(request.path)
        replay = {"Content-Type": cached.content_type}
        if cached.encoding:
            replay["Content-Encoding"] = cached.encoding
        self.metrics.client_bytes.labels("offline").inc(len(cached.body))
        return web.Response(body=cached.body, headers=replay), "offline"

    async def _write(
        self, request: web.Request, info: RequestInfo, rt: ResourceType
    ) -> tuple[web.StreamResponse, str]:
        if not self.upstream.healthy:
            raise self._unreachable(request, "link is down")
        headers = forward.upstream_headers(request.headers)
        body = await forward.stream_body(request)
        resp = await self.upstream.request(
            request.method,
            forward.upstream_target(request),
            headers=headers,
            data=body,
            read_timeout=None,
            client_token=bearer_token(request.headers),
        )
        async with resp:
            if (
                resp.status < 300
                and info.verb in ("create", "update", "patch", "delete")
                and resp.headers.get("Content-Type", "").startswith(JSON)
                and not resp.headers.get("Content-Encoding")
            ):
                data = await resp.read()
                self._note_write(rt, data)
                out = web.Response(
                    body=data, status=resp.status, headers=forward.client_headers(resp.headers)
                )
                return out, "upstream"
            return await forward.relay(
                request, resp, on_bytes=self.count_bytes("upstream")
            ), "upstream"

    def _note_write(self, rt: ResourceType, body: bytes) -> None:
        try:
            record = record_from_bytes(rt, strip_type_meta(body))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # e.g. a delete answered with a Status: nothing to wait for
        if record.rv and record.name:
            self._writes.add(rt, record)

    async def read_your_writes(self, rt: ResourceType, store: ScopeStore) -> None:
        """Wait (briefly) until the store has applied this proxy's own writes it can see."""
        if not self.upstream.healthy or store.scope not in self.cache.reflectors:
            return
        want = self._writes.pending_for(rt, store)
        if want > store.rv:
            await store.wait_for_rv(want, self.settings.rv_wait)

    # -- get ---------------------------------------------------------------------------

    async def _get(
        self, request: web.Request, info: RequestInfo, rt: ResourceType
    ) -> tuple[web.StreamResponse, str]:
        choice = self.negotiate(request, "object", rt)
        chain = await self.chain(request, info)
        cached = self.cache.find_object(rt, info.namespace, info.name)
        if self.upstream.healthy:
            try:
                if not self.as_json(choice, chain):
                    headers = forward.upstream_headers(request.headers)
                    resp = await self.reads.forward(request, headers, cached=cached is not None)
                    async with resp:
                        relayed = await forward.relay(
                            request, resp, on_bytes=self.count_bytes("upstream")
                        )
                        return relayed, "upstream"
                resp = await self.reads.forward(
                    request, json_headers(request), cached=cached is not None
                )
                async with resp:
                    if resp.status != 200:
                        if choice.form == "protobuf":
                            return await self.relay_status(request, resp), "upstream"
                        relayed = await forward.relay(
                            request, resp, on_bytes=self.count_bytes("upstream")
                        )
                        return relayed, "upstream"
                    wire = await resp.read()
                    self.metrics.upstream_bytes.labels("get").inc(len(wire))  # as received
                    body = decompress(resp.headers.get("Content-Encoding", ""), wire)
                record = record_from_bytes(rt, strip_type_meta(body))
                self.cache.remember_object(rt, record)
                shown = self.filters.filter_one(chain, record)
                if shown is None:
                    raise status.not_found(rt.resource, info.name, rt.group)
                if shown is not record:
                    body = with_type_meta(shown.raw, rt.kind, rt.api_version)
                answer = self._object_response(request, rt, body, choice, "upstream", shown)
                return answer, "upstream"
            except (Fallback, UpstreamUnreachable):
                pass
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("upstream sent a malformed object for %s: %s", request.path, exc)
                if cached is None:
                    raise status.internal_error(
                        "the cloud apiserver sent a malformed object"
                    ) from exc
        if cached is None:
            cached = await self.cache.find_object_on_disk(rt, info.namespace, info.name)
        if cached is None:
            raise offline(f'{rt.resource} "{info.name}"')
        self._not_older_than(request, rt, cached)
        shown = self.filters.filter_one(chain, cached)
        if shown is None:
            raise status.not_found(rt.resource, info.name, rt.group)
        raw = with_type_meta(shown.raw, rt.kind, rt.api_version)
        return self._object_response(request, rt, raw, choice, "offline", shown), "offline"

    def _not_older_than(self, request: web.Request, rt: ResourceType, record: ObjectRecord) -> None:
        """A get with an RV asks for a state not older than it (sec. 2.1).

        The cache knows this copy of the object as of the newest resident
        scope holding it (else only its own RV). Offline it cannot catch up:
        an older state is the apiserver's too-large-RV 504 now, not a 200.
        """
        wanted = parse_resource_version(request.query.get("resourceVersion", ""))
        if not wanted or wanted <= record.rv:
            return
        gvr = (rt.group, rt.version, rt.resource)
        known = record.rv
        for store in self.cache.stores.values():
            held = store.objects.get(record.key) if store.scope.gvr == gvr else None
            if held is not None and held.rv == record.rv:
                known = max(known, store.rv)
        if wanted > known:
            raise status.too_large_resource_version(wanted, known)

    async def chain(self, request: web.Request, info: RequestInfo) -> Chain:
        """The request's filter chain, its inputs synced (briefly awaited while online)."""
        chain = self.filters.chain_for(
            request.headers.get("User-Agent", ""), info.resource, info.verb
        )
        if chain:
            wait = self.settings.sync_timeout if self.upstream.healthy else 0.0
            await self.filters.prepare(chain, wait)
        return chain

    def negotiate(self, request: web.Request, target: Target, rt: ResourceType) -> MediaChoice:
        """The client's representation; protobuf for built-in kinds when it prefers it."""
        protobuf = self.settings.serve_protobuf and is_builtin(rt.api_version, rt.kind)
        return negotiate(request.headers.get("Accept"), target=target, rt=rt, protobuf=protobuf)

    def as_json(self, choice: MediaChoice, chain: Chain) -> bool:
        """Whether to ask upstream for JSON (and render the client's form here).

        JSON answers are cached. Table and PartialObjectMetadata are forwarded
        as upstream renders them, unless a filter is active: then the proxy
        must see the objects, so it fetches JSON and renders the form itself.
        A filtered client asking for YAML is refused rather than passed
        upstream's unfiltered bytes.
        """
        if chain and choice.form == "yaml":
            raise status.not_acceptable(
                f"edge-proxy filters ({chain.key}) apply to this client: "
                "ask for JSON, Table or PartialObjectMetadata"
            )
        # Protobuf is encoded here from the JSON the cache keeps (protoforms.py).
        return choice.form in ("json", "protobuf") or (
            bool(chain) and choice.form in ("table", "partial")
        )

    def _object_response(
        self,
        request: web.Request,
        rt: ResourceType,
        raw: bytes,
        choice: MediaChoice,
        served: str,
        record: ObjectRecord,
    ) -> web.StreamResponse:
        if choice.form == "protobuf":
            try:
                body = self.protobuf.object_body(rt, record.raw)
            except EncodeError as exc:
                # A newer upstream's object our tables cannot hold: JSON, which
                # every protobuf-asking client also decodes, rather than nothing.
                log.warning("answering %s as JSON: %s", request.path, exc)
                return self.send(request, raw, JSON, served)
            return self.send(request, body, choice.content_type, served)
        if choice.form == "json":
            return self.send(request, raw, JSON, served)
        obj = msgspec.json.decode(raw)
        if choice.form == "table":
            include = include_object_option(request.query.get("includeObject"))
            doc = table(
                rt,
                [obj],
                list_meta=None,
                api_version=choice.meta_api_version,
                include_object=include,
            )
        elif choice.form == "partial":
            doc = partial_object_metadata(obj, choice.meta_api_version)
        else:
            raise status.not_acceptable(
                "edge-proxy serves cached objects as JSON, Table or PartialObjectMetadata"
            )
        return self.send(request, msgspec.json.encode(doc), JSON, served)

    def send(
        self, request: web.Request, body: bytes, content_type: str, served: str
    ) -> web.StreamResponse:
        return respond(request, body, self.metrics, served, content_type)

    # -- watch -------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, info: RequestInfo, rt: ResourceType, opts: ListOptions
    ) -> web.StreamResponse:
        labels, fields = parse_selectors(rt, opts.label_selector, opts.field_selector)
        choice = self.negotiate(request, "watch", rt)
        scope = Scope.of(rt, info.namespace, labels, fields)
        store = await self.cache.covering_or_load(scope, rt)
        if store is None:
            if not self.upstream.healthy:
                raise offline(f"a watch of {rt.resource}")
            store = self.cache.store_for(scope, rt)
        with self.cache.using(store):  # not evicted while the watch is set up and served
            return await self._watch_store(request, info, rt, opts, store, (labels, fields), choice)

    async def _watch_store(
        self,
        request: web.Request,
        info: RequestInfo,
        rt: ResourceType,
        opts: ListOptions,
        store: ScopeStore,
        selectors: tuple[LabelSelector, FieldSelector],
        choice: MediaChoice,
    ) -> web.StreamResponse:
        labels, fields = selectors
        # Always: a reflector waits for the link by itself, and must be running
        # when the link returns so this watch gets what it missed. A new scope
        # starts at the client's RV, so a client that listed elsewhere misses nothing.
        rv_text = opts.resource_version or ""
        seed = int(rv_text) if rv_text.isdigit() and rv_text != "0" else None
        reflector = self.cache.reflector_for(store, seed_rv=seed)
        chain = await self.chain(request, info)
        if self.upstream.healthy:
            if not store.synced:
                try:
                    await asyncio.wait_for(reflector.synced.wait(), self.settings.sync_timeout)
                except TimeoutError:
                    raise status.timeout(
                        f"edge-proxy could not sync {rt.resource} from the cloud in time",
                        retry_after=1,
                    ) from None
            await self.read_your_writes(rt, store)
        return await serve_watch(
            request,
            self.filters.view_for(store, chain),
            opts,
            info.namespace,
            labels,
            store.scope.residual_fields(fields),  # its own terms were upstream's to apply
            choice,
            settings=self.settings,
            metrics=self.metrics,
            link_up=self.upstream.healthy,
            budget=self.cache.watch_budget,
            protobuf=self.protobuf,
        )


def _is_upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower()

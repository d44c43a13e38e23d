"""HTTP handlers of the simulator: every request becomes a kube-apiserver answer.

One catch-all route classifies the request with `kube.request`, then serves
discovery, reads (get/list/watch) and writes. Every failure is a metav1.Status
(`StatusError`); anything unexpected is logged and answered with a 500 Status,
never a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
import yaml
from aiohttp import web

from edgeproxy.cache.protoforms import ProtobufForms
from edgeproxy.cache.streaming import gzip_member, stream_watch
from edgeproxy.kube import status
from edgeproxy.kube.continuetoken import decode_continue, expired_continue
from edgeproxy.kube.fields import FieldSelector, parse_selectors
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.negotiation import MediaChoice, Target, negotiate
from edgeproxy.kube.objects import ObjectRecord, object_key, with_type_meta
from edgeproxy.kube.paging import select_page
from edgeproxy.kube.protoencoder import negotiated_status
from edgeproxy.kube.protoschema import is_builtin
from edgeproxy.kube.render import WatchFrameConverter, render_list
from edgeproxy.kube.request import (
    ListOptions,
    RequestInfo,
    check_get_options,
    check_name,
    list_options,
    list_semantics,
    parse_resource_version,
    request_info,
)
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.kube.status import StatusError
from edgeproxy.kube.table import (
    include_object_option,
    partial_object_metadata,
    table,
)
from edgeproxy.kube.wire import bookmark, list_body
from edgeproxy.sim import discovery, openapi
from edgeproxy.sim.bodies import decode_body
from edgeproxy.sim.faults import Faults
from edgeproxy.sim.operations import Operations
from edgeproxy.sim.patch import APPLY_PATCH, apply_configuration
from edgeproxy.sim.store import Store, TooOld, Watcher

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_sim/"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Tunables of the simulated apiserver; each default mirrors kube-apiserver."""

    # kube-apiserver's default --max-request-bytes-ish limit for object bodies (3 MiB).
    max_body_bytes: int = 3 * 1024 * 1024
    # Bookmarks about every minute, as the watch cache sends them.
    bookmark_interval: float = 60.0
    # A too-new RV is waited for this long before 504 (sec. 2.1).
    rv_wait_seconds: float = 3.0
    # --min-request-timeout: unset watch timeouts are 1800..3600 s.
    min_request_timeout: float = 1800.0
    # Bytes a watcher may have queued before it is closed as too slow: 10,000
    # frames of ~1 KB (the sim's old frame bound), with room for larger objects.
    watcher_buffer_bytes: int = 64 * 1024 * 1024
    # How often an idle watch checks that its client is still connected.
    idle_check_seconds: float = 5.0
    # Watch-list requests: "on" as kube-apiserver 1.37; "ignore" as an apiserver
    # that does not know sendInitialEvents (a plain watch); "refuse": a 422.
    watch_list: str = "on"


# responsewriters/writers.go defaultGzipThresholdBytes.
GZIP_MIN_BYTES = 128 * 1024


def _json_response(body: bytes, code: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(body=body, status=code, headers={"Content-Type": content_type})


def _accepts_gzip(request: web.Request) -> bool:
    """As kube-apiserver reads Accept-Encoding: a `gzip` token, no q-values."""
    tokens = request.headers.get("Accept-Encoding", "").split(",")
    return any(token.strip() == "gzip" for token in tokens)


def _gzipped(request: web.Request, resp: web.Response) -> web.Response:
    """kube-apiserver gzips a response body over 128 KiB when the client accepts it."""
    body = resp.body
    if isinstance(body, bytes) and len(body) > GZIP_MIN_BYTES and _accepts_gzip(request):
        resp.body = gzip.compress(body, compresslevel=1)
        resp.headers["Content-Encoding"] = "gzip"
        resp.headers["Vary"] = "Accept-Encoding"
    return resp


def error_response(err: StatusError, accept: str | None = None) -> web.Response:
    """The Status, in protobuf to a client that prefers it (as kube-apiserver)."""
    body, content_type = negotiated_status(err.body(), accept)
    headers = {"Content-Type": content_type, **err.headers()}
    return web.Response(body=body, status=err.code, headers=headers)


def _encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


class SimApp:
    """The request router and handlers over one `Store`."""

    def __init__(
        self,
        store: Store,
        faults: Faults,
        settings: SimSettings | None = None,
        server_address: str = "127.0.0.1:6443",
    ) -> None:
        self.store = store
        self.registry: ResourceRegistry = store.registry
        self.ops = Operations(store)
        self.faults = faults
        self.settings = settings or SimSettings()
        self.server_address = server_address
        self.watch_tasks: set[asyncio.Task[Any]] = set()
        # Protobuf answers for built-in kinds, each object version encoded once.
        self.protobuf = ProtobufForms()

    # -- entry -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await self._admin(request)
        await self.faults.gate()
        return await self.handle_unfaulted(request)

    async def handle_unfaulted(self, request: web.Request) -> web.StreamResponse:
        """The API without fault injection, as the control listener serves it.

        Lets a test change upstream state (create/update/delete) while the API
        port is black-holed, i.e. "the cloud changed during the outage".
        """
        accept = request.headers.get("Accept")
        try:
            return await self._dispatch(request)
        except StatusError as err:
            return error_response(err, accept)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # never leak a traceback to the client
            log.exception("unhandled error serving %s %s", request.method, request.path_qs)
            return error_response(status.internal_error(type(exc).__name__), accept)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        query: Mapping[str, str] = request.query
        info = request_info(request.method, request.path, query)
        if not info.is_resource_request:
            return self._non_resource(request, info)
        if "//" in request.path:
            # An empty segment (`/namespaces//pods`) would otherwise read as "all namespaces".
            raise status.not_found_path()
        rt = self.registry.get(info.api_group, info.api_version, info.resource)
        if rt is None:
            if not self.registry.in_group_version(info.api_group, info.api_version):
                return _page_not_found()  # no handler for the group version at all
            raise status.not_found_path()
        if info.subresource and info.subresource not in rt.subresources:
            raise status.not_found_path()
        check_name(info)  # after routing: `configmaps/../secrets` is a 404, `configmaps/..` a 400
        if rt.namespaced and info.name and not info.namespace and info.verb not in ("watch",):
            raise status.not_found_path()
        if not rt.namespaced and info.namespace:
            # RequestInfo reads `/api/v1/namespaces/{name}` as namespace={name}, as
            # kube-apiserver does; a cluster-scoped object's key has no namespace,
            # and other cluster-scoped resources have no route under a namespace.
            if rt.resource != "namespaces":
                raise status.not_found_path()
            info = dataclasses.replace(info, namespace="")
        verb = info.verb
        if (
            (verb in ("update", "patch") and not info.name)
            or (verb == "create" and rt.namespaced and not info.namespace)
            or (verb == "deletecollection" and rt.resource in discovery.NO_DELETECOLLECTION)
        ):
            raise status.method_not_allowed()  # no such route
        if verb == "get":
            check_get_options(query)  # a get ignores list parameters
            return self._get(request, rt, info)
        if verb in ("list", "watch"):
            opts = list_options(info, query)
            if verb == "list":
                return await self._list(request, rt, info, opts)
            return await self._watch(request, rt, info, opts)
        dry_run = "dryRun" in query
        if verb == "create":
            if info.name or info.subresource:
                raise status.method_not_allowed()
            body = await self._read_body(request)
            obj = decode_body(body, request.headers.get("Content-Type"), rt.kind)
            raw = self.ops.create(rt, info.namespace, obj, dry_run=dry_run)
            return self._object_response(request, rt, raw, code=201)
        if verb == "update":
            body = await self._read_body(request)
            obj = decode_body(body, request.headers.get("Content-Type"), rt.kind)
            raw = self.ops.update(
                rt, info.namespace, info.name, obj, subresource=info.subresource, dry_run=dry_run
            )
            return self._object_response(request, rt, raw)
        if verb == "patch":
            body = await self._read_body(request)
            content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type == APPLY_PATCH:
                return self._apply(request, rt, info, body, dry_run)
            raw = self.ops.patch(
                rt,
                info.namespace,
                info.name,
                content_type,
                body,
                subresource=info.subresource,
                dry_run=dry_run,
            )
            return self._object_response(request, rt, raw)
        if verb == "delete":
            options = await self._delete_options(request)
            raw = self.ops.delete(rt, info.namespace, info.name, options, dry_run=dry_run)
            if raw.startswith(b'{"kind":"Status"'):
                return _json_response(raw)
            return self._object_response(request, rt, raw)
        if verb == "deletecollection":
            opts = list_options(info, query)
            labels, fields = parse_selectors(rt, opts.label_selector, opts.field_selector)
            options = await self._delete_options(request)
            res = self.store.resource(rt)
            prefix = info.namespace + "/" if info.namespace else ""
            doomed = [
                r
                for k in list(res.keys_from(prefix=prefix))
                if self._matches(r := res.objects[k], labels, fields)
            ]
            return _json_response(self.ops.delete_collection(rt, doomed, options, dry_run=dry_run))
        raise status.method_not_allowed()

    def _apply(
        self, request: web.Request, rt: ResourceType, info: RequestInfo, body: bytes, dry_run: bool
    ) -> web.Response:
        """Server-side apply: needs a field manager; creates a missing object (201)."""
        if not request.query.get("fieldManager"):
            raise status.invalid(
                "PatchOptions",
                "",
                [
                    (
                        "FieldValueRequired",
                        "fieldManager",
                        "Required value: is required for apply patch",
                    )
                ],
                "meta.k8s.io",
            )
        if self.store.resource(rt).get(object_key(info.namespace, info.name)) is None:
            obj = apply_configuration(body, rt.kind)
            obj.setdefault("metadata", {}).setdefault("name", info.name)
            if obj["metadata"]["name"] != info.name:
                raise status.bad_request(
                    f"the name of the object ({obj['metadata']['name']}) does not match "
                    f"the name on the URL ({info.name})"
                )
            raw = self.ops.create(rt, info.namespace, obj, dry_run=dry_run)
            return self._object_response(request, rt, raw, code=201)
        raw = self.ops.patch(
            rt,
            info.namespace,
            info.name,
            APPLY_PATCH,
            body,
            subresource=info.subresource,
            dry_run=dry_run,
        )
        return self._object_response(request, rt, raw)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise status.entity_too_large(f"Request entity too large: limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise status.entity_too_large(f"Request entity too large: limit is {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        body = await self._read_body(request)
        if not body.strip():
            return {}
        obj = decode_body(body, request.headers.get("Content-Type"), "DeleteOptions")
        return obj

    # -- non-resource paths ------------------------------------------------

    def _non_resource(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method not in ("GET", "HEAD"):
            raise status.method_not_allowed(f"the server does not allow this method on {path}")
        if path in ("/healthz", "/livez", "/readyz"):
            text = "ok"
            if "verbose" in request.query:
                text = f"[+]ping ok\n[+]etcd ok\n{path[1:]} check passed"
            return web.Response(text=text, content_type="text/plain")
        if path == "/version":
            return _json_response(_encode(discovery.version_info()))
        if path == "/api":
            return _json_response(_encode(discovery.api_versions(self.server_address)))
        if path == "/apis":
            return _json_response(_encode(discovery.api_group_list(self.registry)))
        parts = path.strip("/").split("/")
        doc: dict[str, Any] | None = None
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.api_resource_list(self.registry, "", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(self.registry, parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.api_resource_list(self.registry, parts[1], parts[2])
        if doc is None and parts[0] in ("api", "apis") and len(parts) > 1:
            return _page_not_found()
        elif parts[0] == "openapi":
            served = openapi.serve(self.registry, parts[1:], request.query)
            if served is not None:
                body, content_type = served
                return _json_response(body, content_type=content_type)
        if doc is None:
            raise status.not_found_path()
        return _json_response(_encode(doc))

    # -- reads -------------------------------------------------------------

    @staticmethod
    def _matches(record: ObjectRecord, labels: LabelSelector, fields: FieldSelector) -> bool:
        return labels.matches(record.labels) and (fields.empty or fields.matches(record.fields))

    def _get(self, request: web.Request, rt: ResourceType, info: RequestInfo) -> web.StreamResponse:
        record = self.store.resource(rt).get(object_key(info.namespace, info.name))
        if record is None:
            raise status.not_found(rt.resource, info.name, rt.group)
        return self._object_response(
            request, rt, with_type_meta(record.raw, rt.kind, rt.api_version)
        )

    def _object_response(
        self, request: web.Request, rt: ResourceType, raw: bytes, code: int = 200
    ) -> web.Response:
        choice = self._negotiate(request, "object", rt)
        if choice.form == "protobuf":
            body = self.protobuf.object_body(rt, raw)
            return _json_response(body, code, choice.content_type)
        if choice.form == "json":
            return _json_response(raw, code)
        obj = msgspec.json.decode(raw)
        if choice.form == "table":
            doc = table(
                rt,
                [obj],
                list_meta=None,
                api_version=choice.meta_api_version,
                include_object=_include_object(request),
            )
        elif choice.form == "partial":
            doc = partial_object_metadata(obj, choice.meta_api_version)
        else:
            return web.Response(
                body=yaml.safe_dump(obj).encode(),
                status=code,
                headers={"Content-Type": choice.content_type},
            )
        return _json_response(_encode(doc), code, choice.content_type)

    @staticmethod
    def _negotiate(request: web.Request, target: Target, rt: ResourceType) -> MediaChoice:
        # kube-apiserver has protobuf for built-in kinds only (not CRDs).
        builtin = is_builtin(rt.api_version, rt.kind)
        return negotiate(request.headers.get("Accept"), target=target, rt=rt, protobuf=builtin)

    async def _await_rv(self, rv: int) -> None:
        """The watch cache's waitUntilFreshAndBlock: up to 3 s, then 504 (sec. 2.1)."""
        if not await self.store.wait_for_rv(rv, self.settings.rv_wait_seconds):
            raise status.too_large_resource_version(rv, self.store.rv)

    def _exact_rv(self, value: str) -> int:
        """An Exact read goes to etcd, which refuses a future revision at once."""
        rv = parse_resource_version(value)
        if rv > self.store.rv:
            # etcd's ErrFutureRev, passed on unconverted: a 500 without a reason
            # (kubernetes issue #132358), not the watch cache's 504.
            raise StatusError(500, "", "etcdserver: mvcc: required revision is a future revision")
        return rv

    async def _list(
        self, request: web.Request, rt: ResourceType, info: RequestInfo, opts: ListOptions
    ) -> web.StreamResponse:
        labels, fields = parse_selectors(rt, opts.label_selector, opts.field_selector)
        choice = self._negotiate(request, "list", rt)
        res = self.store.resource(rt)
        semantics = list_semantics(opts)
        # Continue keys are relative to the list's prefix, like etcd keys under
        # /registry/<resource>/[<namespace>/].
        prefix = info.namespace + "/" if (rt.namespaced and info.namespace) else ""
        start = ""
        limit = opts.limit
        if opts.continue_token:
            snapshot_rv, start_key = decode_continue(opts.continue_token)
            start = prefix + start_key
            if snapshot_rv < 0:  # an inconsistent continuation: the latest state
                snapshot_rv = self.store.rv
            try:
                objects = res.snapshot(snapshot_rv)
            except TooOld:
                raise expired_continue(start_key) from None
        elif semantics == "exact":
            snapshot_rv = self._exact_rv(opts.resource_version or "")
            try:
                objects = res.snapshot(snapshot_rv)
            except TooOld:
                raise status.expired(
                    "The resourceVersion for the provided list is too old."
                ) from None
        else:
            if semantics == "not_older_than":
                await self._await_rv(parse_resource_version(opts.resource_version or ""))
            if semantics == "any":
                limit = 0  # the watch cache ignores limit for RV=0 (sec. 2.1)
            snapshot_rv = self.store.rv
            objects = res.objects
        keys: Iterable[str]
        if objects is res.objects:
            keys = res.keys_from(start, prefix)
        else:
            keys = (k for k in sorted(objects) if k >= start and k.startswith(prefix))
        page = select_page(
            keys,
            objects,
            lambda r: self._matches(r, labels, fields),
            limit=limit,
            snapshot_rv=snapshot_rv,
            prefix=prefix,
            count_remaining=labels.empty and fields.empty,
        )
        return _gzipped(
            request,
            self._list_response(
                request,
                rt,
                choice,
                page.items,
                str(snapshot_rv),
                page.continue_token,
                page.remaining,
            ),
        )

    def _list_response(
        self,
        request: web.Request,
        rt: ResourceType,
        choice: MediaChoice,
        items: list[ObjectRecord],
        rv: str,
        token: str,
        remaining: int | None,
    ) -> web.Response:
        if choice.form == "protobuf":
            body = self.protobuf.list_body(
                rt,
                rv,
                [r.raw for r in items],
                continue_token=token,
                remaining_item_count=remaining,
            )
            return _json_response(body, content_type=choice.content_type)
        if choice.form == "json":
            body = list_body(
                rt.list_kind,
                rt.api_version,
                rv,
                (r.raw for r in items),
                continue_token=token,
                remaining_item_count=remaining,
            )
            return _json_response(body)
        list_meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            list_meta["continue"] = token
            if remaining is not None:
                list_meta["remainingItemCount"] = remaining
        rendered = render_list(
            rt, (r.raw for r in items), list_meta, choice, _include_object(request)
        )
        if rendered is not None:
            doc = rendered
        else:
            # YAML lists, like JSON ones, carry built-in items without kind/apiVersion.
            doc = {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": list_meta,
                "items": [msgspec.json.decode(r.raw) for r in items],
            }
            return web.Response(
                body=yaml.safe_dump(doc).encode(), headers={"Content-Type": choice.content_type}
            )
        return _json_response(_encode(doc), content_type=choice.content_type)

    # -- watch -------------------------------------------------------------

    async def _watch(
        self, request: web.Request, rt: ResourceType, info: RequestInfo, opts: ListOptions
    ) -> web.StreamResponse:
        labels, fields = parse_selectors(rt, opts.label_selector, opts.field_selector)
        choice = self._negotiate(request, "watch", rt)
        if opts.send_initial_events is not None and self.settings.watch_list != "on":
            if self.settings.watch_list == "refuse":
                raise status.invalid(
                    "ListOptions",
                    "",
                    [("FieldValueForbidden", "sendInitialEvents", "Forbidden: not supported")],
                    group="meta.k8s.io",
                )
            opts = dataclasses.replace(opts, send_initial_events=None, resource_version_match="")
        res = self.store.resource(rt)
        namespace = info.namespace if rt.namespaced else ""
        watcher = Watcher(rt, namespace, labels, fields, self.settings.watcher_buffer_bytes)
        rv_param = opts.resource_version or ""
        initial: list[bytes] = []
        expired: StatusError | None = None
        if opts.send_initial_events:
            try:
                # Only a watch-list waits for a too-new RV, and fails inside the
                # 200 stream: the cacher returns an error watcher (cacher.go Watch).
                await self._await_rv(parse_resource_version(rv_param))
            except StatusError as too_new:
                expired = too_new
            initial = self._initial_events(watcher, res.objects)
            if opts.allow_watch_bookmarks:
                initial.append(
                    bookmark(rt.kind, rt.api_version, str(self.store.rv), initial_end=True)
                )
        elif rv_param in ("", "0"):
            # Legacy watch: synthetic ADDED for the current state. An explicit
            # sendInitialEvents=false means only changes from now on (KEP-3157).
            if opts.send_initial_events is None:
                initial = self._initial_events(watcher, res.objects)
        else:
            # A too-new RV is not waited for: the stream opens and stays quiet
            # until events newer than it arrive (api-concepts "Unavailable
            # resource versions"; the cacher starts the watch at the asked RV).
            since = parse_resource_version(rv_param)
            watcher.min_rv = since
            try:
                initial = [f for e in res.events_after(since) if (f := watcher.frame_for(e))]
            except TooOld as too_old:
                expired = status.expired(str(too_old))
        # No await between computing `initial` and registering: no event is lost.
        if expired is None:
            res.watchers.add(watcher)
        try:
            return await self._stream_watch(request, rt, watcher, choice, opts, initial, expired)
        finally:
            watcher.close("stream ended")
            res.watchers.discard(watcher)

    @staticmethod
    def _initial_events(watcher: Watcher, objects: Mapping[str, ObjectRecord]) -> list[bytes]:
        types = watcher.types
        return [
            b'{"type":"ADDED","object":'
            + with_type_meta(r.raw, types.kind, types.api_version)
            + b"}\n"
            for r in objects.values()
            if watcher.matches(r)
        ]

    async def _stream_watch(
        self,
        request: web.Request,
        rt: ResourceType,
        watcher: Watcher,
        choice: MediaChoice,
        opts: ListOptions,
        initial: list[bytes],
        expired: StatusError | None,
    ) -> web.StreamResponse:
        headers = {"Content-Type": choice.content_type}
        # kube-apiserver 1.37 (WatchListCompression) gzips a watch stream per
        # flush, for watch-list requests only (handlers/watch.go); never a plain watch.
        gzip_writes = bool(
            opts.send_initial_events and opts.allow_watch_bookmarks and _accepts_gzip(request)
        )
        if gzip_writes:
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        rendered = WatchFrameConverter(rt, choice, _include_object(request))
        converter: Callable[[bytes], bytes] | None = None if rendered.passthrough else rendered
        if choice.form == "protobuf":
            converter = partial(self.protobuf.frame, rt)  # one frame per event, shared
        if expired is not None:
            error = expired.watch_event()
            frame = error if converter is None else converter(error)
            await resp.write(gzip_member(frame) if gzip_writes else frame)
            await resp.write_eof()
            return resp
        # Unset or 0 means minRequestTimeout * (1 + rand), as kube-apiserver does.
        duration = float(opts.timeout_seconds or 0)
        if duration <= 0:
            duration = self.settings.min_request_timeout * (1 + random.random())

        def make_bookmark() -> bytes | None:
            # Events queued (e.g. while black-holed) go first: a bookmark promises
            # every event up to its RV was sent (sec. 3.4).
            if watcher.pending:
                return None
            return bookmark(rt.kind, rt.api_version, str(self.store.rv))

        await stream_watch(
            request,
            resp,
            watcher,
            initial,
            duration=duration,
            bookmark=make_bookmark if opts.allow_watch_bookmarks else None,
            bookmark_interval=self.settings.bookmark_interval,
            convert=converter,
            gate=self.faults.wait_open,
            idle_check=self.settings.idle_check_seconds,
            gzip_writes=gzip_writes,
        )
        return resp

    # -- admin (fault control) -------------------------------------------------

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        return await handle_admin(self, request)


def _page_not_found() -> web.Response:
    """The Go mux's answer for a path no API group serves: plain text, not a Status."""
    return web.Response(
        text="404 page not found\n", status=404, content_type="text/plain", charset="utf-8"
    )


def _include_object(request: web.Request) -> Any:
    return include_object_option(request.query.get("includeObject", ""))


async def handle_admin(app: SimApp, request: web.Request) -> web.StreamResponse:
    """`/_sim/…`: fault control. Never faulted itself."""
    path = request.path[len(ADMIN_PREFIX) :].strip("/")
    try:
        if path == "faults":
            if request.method == "GET":
                return _json_response(_encode(app.faults.snapshot()))
            if request.method in ("POST", "PUT"):
                body = await request.read()
                spec = msgspec.json.decode(body) if body.strip() else {}
                if not isinstance(spec, dict):
                    raise status.bad_request("fault spec must be a JSON object")
                unknown = set(spec) - {"blackhole", "refuse", "latency", "heal_after"}
                if unknown:
                    raise status.bad_request(f"unknown fault fields: {sorted(unknown)}")
                await app.faults.apply(**spec)
                return _json_response(_encode(app.faults.snapshot()))
            if request.method == "DELETE":
                await app.faults.clear()
                return _json_response(_encode(app.faults.snapshot()))
        elif path == "watches/close" and request.method == "POST":
            closed = app.store.close_watchers("closed by fault control")
            return _json_response(_encode({"closed": closed}))
        elif path == "compact" and request.method == "POST":
            app.store.compact()
            return _json_response(_encode({"compactedAt": str(app.store.rv)}))
        elif path == "stats" and request.method == "GET":
            stats = {
                "resourceVersion": str(app.store.rv),
                "resources": {
                    r.rt.resource: {
                        "objects": len(r),
                        "watchers": len(r.watchers),
                        "history": len(r.history),
                        "compactedRV": r.compacted_rv,
                    }
                    for r in app.store.resources()
                },
            }
            return _json_response(_encode(stats))
        raise status.not_found_path()
    except StatusError as err:
        return error_response(err)
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        return error_response(status.bad_request(f"bad fault request: {exc}"))

"""Lists answered from a scope's store: selection, paging, rendering, memoized bodies.

A local list is a function of the store's state and the request's shape, so
its finished bytes (gzipped when the client accepts gzip and the body is over
128 KiB, as kube-apiserver does) are memoized per store version.
"""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from edgeproxy.cache.memo import BodyMemo
from edgeproxy.cache.protoforms import EncodeError, ProtobufForms
from edgeproxy.cache.store import ScopeStore
from edgeproxy.kube import status
from edgeproxy.kube.continuetoken import decode_continue, expired_continue
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.negotiation import MediaChoice
from edgeproxy.kube.objects import ObjectRecord
from edgeproxy.kube.paging import select_page
from edgeproxy.kube.render import render_list
from edgeproxy.kube.request import ListOptions, RequestInfo
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.table import include_object_option
from edgeproxy.kube.wire import list_body
from edgeproxy.metrics import Metrics
from edgeproxy.proxy.forward import send_body

JSON = "application/json"
_GZIP_MAGIC = b"\x1f\x8b"
GZIP_MIN = 128 * 1024  # kube-apiserver gzips bodies above 128 KiB (sec. 7)


def respond(
    request: web.Request, body: bytes, metrics: Metrics, served: str, content_type: str = JSON
) -> web.Response:
    """A body for the client, gzipped when it accepts gzip and the body is large."""
    headers = {"Content-Type": content_type}
    if len(body) > GZIP_MIN and "gzip" in request.headers.get("Accept-Encoding", ""):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    metrics.client_bytes.labels(served).inc(len(body))
    return web.Response(body=body, headers=headers)


class LocalLists:
    def __init__(self, metrics: Metrics, protobuf: ProtobufForms | None = None) -> None:
        self.metrics = metrics
        self.memo = BodyMemo()
        self.protobuf = protobuf if protobuf is not None else ProtobufForms()

    async def serve(
        self,
        request: web.Request,
        info: RequestInfo,
        store: ScopeStore,
        opts: ListOptions,
        labels: LabelSelector,
        fields: FieldSelector,
        choice: MediaChoice,
        semantics: str,
        served: str = "cache",
    ) -> web.StreamResponse:
        store.touch()
        rt = store.rt
        namespace = info.namespace if rt.namespaced else ""
        prefix = namespace + "/" if namespace else ""
        start = ""
        if opts.continue_token:
            token_rv, start_key = decode_continue(opts.continue_token)
            if token_rv != store.rv and token_rv >= 0:
                raise expired_continue(start_key)
            start = prefix + start_key
        elif semantics == "exact":
            wanted = int(opts.resource_version or "0")
            if wanted < store.rv:
                raise status.expired("The resourceVersion for the provided list is too old.")
            if wanted > store.rv:
                raise status.too_large_resource_version(wanted, store.rv)
        elif semantics == "not_older_than":
            # Online this store was checked or waited for; offline it cannot catch
            # up, and older data is not an answer to "not older than" (sec. 2.1).
            wanted = int(opts.resource_version or "0")
            if wanted > store.rv:
                raise status.too_large_resource_version(wanted, store.rv)
        limit = 0 if semantics == "any" else opts.limit
        # The scope's own field terms were upstream's to apply (cache/scope.py):
        # the store may hold no value of their fields to compare.
        local_fields = store.scope.residual_fields(fields)

        def matches(record: ObjectRecord) -> bool:
            if prefix and not record.key.startswith(prefix):  # cheaper than .namespace
                return False
            return labels.matches(record.labels) and (
                local_fields.empty or local_fields.matches(record.fields)
            )

        gzip_ok = "gzip" in request.headers.get("Accept-Encoding", "")
        include = request.query.get("includeObject", "")
        # A Table's AGE is as of the request, as kube-apiserver renders it: a
        # Table is memoized per second (ages are whole seconds since whole-second
        # timestamps, so the second a request falls in fixes every age).
        second = int(time.time()) if choice.form == "table" else 0
        memo_key = (
            store.scope,
            store.view_key,
            store.rv,
            store.version,
            namespace,
            str(labels),
            str(fields),
            limit,
            start,
            choice.form,
            choice.meta_api_version,
            include,
            gzip_ok,
            second,
        )
        body = self.memo.get(memo_key)
        if body is None:
            page = select_page(
                store.keys_from(start, prefix),
                store.objects,
                matches,
                limit=limit,
                snapshot_rv=store.rv,
                prefix=prefix,
                count_remaining=labels.empty and fields.empty,
            )
            rv = str(store.rv)
            if choice.form == "json":
                body = list_body(
                    rt.list_kind,
                    rt.api_version,
                    rv,
                    (r.raw for r in page.items),
                    continue_token=page.continue_token,
                    remaining_item_count=page.remaining,
                )
            elif choice.form == "protobuf":
                body = self._protobuf_body(rt, rv, page.continue_token, page.items, page.remaining)
            else:
                now = datetime.fromtimestamp(second, UTC) if second else None
                body = self._render_body(
                    rt, rv, page.continue_token, page.items, choice, include, now
                )
            if gzip_ok and len(body) > GZIP_MIN:
                body = gzip.compress(body, compresslevel=1)
            self.memo.put(memo_key, body)
        headers = {"Content-Type": choice.content_type if choice.form == "protobuf" else JSON}
        if body.startswith(_GZIP_MAGIC):
            headers["Content-Encoding"] = "gzip"
        self.metrics.client_bytes.labels(served).inc(len(body))
        store.bytes_served += len(body)
        return await send_body(request, body, headers)

    def render(
        self,
        request: web.Request,
        rt: ResourceType,
        rv: str,
        token: str,
        items: list[ObjectRecord],
        choice: MediaChoice,
        served: str,
        remaining: int | None = None,
    ) -> web.StreamResponse:
        if choice.form == "protobuf":
            body = self._protobuf_body(rt, rv, token, items, remaining)
            return respond(request, body, self.metrics, served, choice.content_type)
        include = request.query.get("includeObject", "")
        body = self._render_body(rt, rv, token, items, choice, include)
        return respond(request, body, self.metrics, served)

    def _protobuf_body(
        self,
        rt: ResourceType,
        rv: str,
        token: str,
        items: list[ObjectRecord],
        remaining: int | None,
    ) -> bytes:
        """A list in protobuf: the items' memoized messages joined (protoforms.py)."""
        try:
            return self.protobuf.list_body(
                rt,
                rv,
                [r.raw for r in items],
                continue_token=token,
                remaining_item_count=remaining,
            )
        except EncodeError as exc:
            raise status.internal_error(
                f"edge-proxy cannot encode this {rt.kind} list as protobuf ({exc}); "
                "ask for application/json"
            ) from exc

    @staticmethod
    def _render_body(
        rt: ResourceType,
        rv: str,
        token: str,
        items: list[ObjectRecord],
        choice: MediaChoice,
        include: str,
        now: datetime | None = None,
    ) -> bytes:
        """A list as a Table or PartialObjectMetadataList, rendered here."""
        list_meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            list_meta["continue"] = token
        doc = render_list(
            rt, (r.raw for r in items), list_meta, choice, include_object_option(include), now
        )
        if doc is None:
            raise status.not_acceptable(
                "edge-proxy serves cached lists as JSON, Table or PartialObjectMetadataList"
            )
        return msgspec.json.encode(doc)

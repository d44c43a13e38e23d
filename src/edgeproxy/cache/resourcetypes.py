"""What the proxy knows of each resource type: learnt from upstream, kept for offline.

A resource outside the built-in table (kube/resources.py) is looked up in
upstream's discovery the first time a request names it: `/api/v1` or
`/apis/<group>/<version>` as JSON, and for a custom resource its CRD, whose
selectable fields the cache can then evaluate itself (kube/discovery.py).
The documents go into the non-resource cache (rawcache.py), so they are
persisted and budgeted with discovery, survive a restart, and answer
offline; an answer a client got there under the same key is used as well.

Online, a document older than `refresh_seconds` is fetched again in the
background: a request never waits for a refresh, only for a type's first
sight. A type nothing knows of (offline, never seen) is guessed, as before
discovery, with field selectors left to upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from edgeproxy.cache.rawcache import RawCache, raw_key
from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.kube.discovery import (
    DiscoveryError,
    GroupVersionTypes,
    crd_name,
    parse_discovery,
    selectable_fields,
    with_selectable_fields,
)
from edgeproxy.kube.resources import ResourceRegistry, ResourceType
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

JSON = "application/json"
# The key under which a CRD's selectable fields are kept: the CRD itself can
# be megabytes of schema, of which the proxy needs a few names.
FIELDS_ACCEPT = "edge-proxy/selectable-fields"

# Groups only kube-apiserver serves: a type in them is never a custom
# resource, so no CRD is looked up for it.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "extensions",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)


class _FieldsDoc(msgspec.Struct):
    # version -> selectable field labels; None: upstream has no such CRD.
    versions: dict[str, list[str]] | None = None


@dataclass(frozen=True, slots=True)
class TypeSettings:
    # Kinds and scopes hardly change, but a CRD can be replaced or gain
    # selectable fields: documents are re-read this often while in use.
    refresh_seconds: float = 300.0
    # A resource its group version does not list (a CRD created since, or a
    # typo) asks upstream again at most this often, not on every request.
    miss_retry_seconds: float = 5.0
    # A type's first request waits for discovery at most this long; past it
    # the request goes on with a guess (upstream still answers it online).
    fetch_timeout: float = 5.0
    # A CRD the proxy's identity may not read is not asked for on every
    # request: its selectable fields stay unknown (upstream evaluates them).
    unreadable_retry_seconds: float = 300.0


def discovery_path(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def crd_path(group: str, resource: str) -> str:
    return f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name(group, resource)}"


class ResourceTypes:
    def __init__(
        self,
        registry: ResourceRegistry,
        upstream: Upstream,
        raw: RawCache,
        settings: TypeSettings | None = None,
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.raw = raw
        self.settings = settings or TypeSettings()
        # Parsed documents, valid while the raw cache holds the same body.
        self._docs: dict[str, tuple[bytes, GroupVersionTypes]] = {}
        self._fields: dict[str, tuple[bytes, dict[str, list[str]] | None]] = {}
        # One object per type and document state: stores and caches keyed by
        # a type see the same one.
        self._types: dict[tuple[str, str, str], tuple[object, object, ResourceType]] = {}
        self._fetched: dict[str, float] = {}  # path -> monotonic time of the last fetch
        self._unreadable: dict[str, float] = {}  # CRD path -> when reading it was refused
        self._flights: dict[str, asyncio.Task[None]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()

    # -- lookups ---------------------------------------------------------------------

    def known(self, group: str, version: str, resource: str) -> ResourceType | None:
        """The type as the table or the cached documents declare it; no I/O."""
        builtin = self.registry.get(group, version, resource)
        if builtin is not None:
            return builtin
        doc = self._doc(group, version)
        base = None if doc is None else doc.get(resource)
        if base is None:
            return None
        per_version = self._crd_fields(group, resource)
        labels = None if per_version is None else per_version.get(version)
        memo = self._types.get((group, version, resource))
        if memo is not None and memo[0] is base and memo[1] is labels:
            return memo[2]
        rt = with_selectable_fields(base, labels)
        self._types[(group, version, resource)] = (base, labels, rt)
        return rt

    @staticmethod
    def guess(
        group: str, version: str, resource: str, kind: str = "", namespaced: bool = True
    ) -> ResourceType:
        """A type nothing declares (offline, never seen): upstream decides its selectors."""
        kind = kind or resource.capitalize()
        return ResourceType(group, version, resource, kind, namespaced, fields_checked=False)

    async def resolve(
        self, group: str, version: str, resource: str, *, namespaced: bool = True
    ) -> ResourceType:
        """The type, asking upstream's discovery first if nothing declares it yet."""
        builtin = self.registry.get(group, version, resource)
        if builtin is not None:
            return builtin  # the table is authoritative
        rt = self.known(group, version, resource)
        if rt is not None and not self._fields_unknown(group, resource):
            self._refresh_if_stale(group, version, resource)
            return rt
        if self.upstream.healthy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._learn(group, version, resource, refresh=False),
                    self.settings.fetch_timeout,
                )
            rt = self.known(group, version, resource)
        return rt or self.guess(group, version, resource, namespaced=namespaced)

    # -- fetching ----------------------------------------------------------------------

    def _refresh_if_stale(self, group: str, version: str, resource: str) -> None:
        path = discovery_path(group, version)
        fetched = self._fetched.get(path)
        now = time.monotonic()
        if not self.upstream.healthy or path in self._flights:
            return
        if fetched is not None and now - fetched < self.settings.refresh_seconds:
            return
        self._fetched[path] = now  # one refresh at a time, even if it fails
        task = asyncio.create_task(
            self._learn(group, version, resource, refresh=True), name=f"refresh {path}"
        )
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _learn(self, group: str, version: str, resource: str, *, refresh: bool) -> None:
        path = discovery_path(group, version)
        fetched = self._fetched.get(path)
        recent = (
            fetched is not None and time.monotonic() - fetched < self.settings.miss_retry_seconds
        )
        # A fetch on the way is joined, never taken for a recent miss: it has
        # set `_fetched` already, and the requests arriving meanwhile (a
        # kubelet's informers of one type start together) would be guessed.
        if refresh or not recent or path in self._flights:
            await self._once(path, lambda: self._fetch_discovery(path))
        doc = self._doc(group, version)
        if doc is None or resource not in doc or group in BUILTIN_GROUPS:
            return
        if refresh or self._fields_unknown(group, resource):
            fields_path = crd_path(group, resource)
            await self._once(fields_path, lambda: self._fetch_crd(fields_path))

    def _fields_unknown(self, group: str, resource: str) -> bool:
        """Whether a type may be a custom resource whose CRD has not been read yet."""
        if group in BUILTIN_GROUPS:
            return False
        path = crd_path(group, resource)
        refused = self._unreadable.get(path)
        if (
            refused is not None
            and time.monotonic() - refused < self.settings.unreadable_retry_seconds
        ):
            return False
        return not self.raw.peek(raw_key(path, FIELDS_ACCEPT))

    async def _once(self, key: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """One fetch of a document at a time; a caller that gives up leaves it running."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(start(), name=f"discovery {key}")
            self._flights[key] = task
            task.add_done_callback(lambda _: self._flights.pop(key, None))
        await asyncio.shield(task)

    async def _get(self, path: str) -> tuple[int, str, bytes] | None:
        # The upstream session does not decompress: ask for none, undo any anyway.
        headers = {"Accept": JSON, "Accept-Encoding": "identity"}
        try:
            resp = await self.upstream.request("GET", path, headers=headers)
            async with resp:
                body = await resp.read()
            if resp.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
        except (UpstreamUnreachable, aiohttp.ClientError, TimeoutError, OSError, EOFError) as exc:
            log.info("could not read %s from upstream: %s", path, exc)
            return None
        return resp.status, resp.headers.get("Content-Type", JSON), body

    async def _fetch_discovery(self, path: str) -> None:
        self._fetched[path] = time.monotonic()
        got = await self._get(path)
        if got is None or got[0] != 200:
            return  # a group version upstream does not serve: requests get its 404
        _, content_type, body = got
        try:
            parse_discovery(body)
        except DiscoveryError as exc:
            log.warning("upstream's discovery at %s is unreadable: %s", path, exc)
            return
        self.raw.put(raw_key(path, JSON), content_type, "", body)

    async def _fetch_crd(self, path: str) -> None:
        got = await self._get(path)
        if got is None:
            return
        status, _, body = got
        if status == 404:  # served, but not by a CRD (an aggregated API)
            doc = _FieldsDoc(None)
        elif status == 200:
            try:
                doc = _FieldsDoc(selectable_fields(body))
            except DiscoveryError as exc:
                log.warning("CRD at %s is unreadable: %s", path, exc)
                return
        else:
            self._unreadable[path] = time.monotonic()
            log.warning(
                "cannot read %s (HTTP %d): field selectors on its custom resources are "
                "evaluated by upstream only, and offline only from a scope listed with them",
                path,
                status,
            )
            return
        self._unreadable.pop(path, None)
        self.raw.put(raw_key(path, FIELDS_ACCEPT), JSON, "", msgspec.json.encode(doc))

    async def close(self) -> None:
        tasks = [*self._flights.values(), *self._refreshing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- cached documents ----------------------------------------------------------------

    def _doc(self, group: str, version: str) -> GroupVersionTypes | None:
        path = discovery_path(group, version)
        entry = self.raw.get(raw_key(path, JSON))
        if entry is None:
            return None
        memo = self._docs.get(path)
        if memo is not None and memo[0] is entry.body:
            return memo[1]
        try:
            body = gzip.decompress(entry.body) if entry.encoding == "gzip" else entry.body
            types = parse_discovery(body).get((group, version), {})
        except (DiscoveryError, OSError, EOFError) as exc:
            log.warning("cached discovery %s is unreadable: %s", path, exc)
            types = {}
        self._docs[path] = (entry.body, types)
        return types

    def _crd_fields(self, group: str, resource: str) -> dict[str, list[str]] | None:
        if group in BUILTIN_GROUPS:
            return None
        path = crd_path(group, resource)
        entry = self.raw.get(raw_key(path, FIELDS_ACCEPT))
        if entry is None:
            return None
        memo = self._fields.get(path)
        if memo is not None and memo[0] is entry.body:
            return memo[1]
        try:
            versions = msgspec.json.decode(entry.body, type=_FieldsDoc).versions
        except (msgspec.DecodeError, msgspec.ValidationError):
            versions = None
        self._fields[path] = (entry.body, versions)
        return versions

"""Cached authorization decisions: the cache answers a client only as upstream would.

A client that brings its own bearer token is forwarded as itself, so
upstream authorizes what goes upstream. But the proxy also answers from
its cache (watches always, some lists, everything offline), and one shared
scope holds what any identity fetched: without a check, a pod allowed only
its own namespace would read another's configmaps from the cache, online
or offline. The invariant (docs/identity.md): no client ever receives from
the cache what upstream would not have given it online.

Design: shared scopes plus cached decisions, rather than a cache
partitioned per credential. Partitions would multiply upstream watches
and memory by the number of pods, and a projected token changes hourly, so
each partition would start empty and be lost offline. Instead, before a
token-bearing read (get, list, watch) is served, upstream's decision for
(token, verb, group, resource, subresource, namespace, name) is looked up:

- online, a decision older than its TTL (allowed 5 min, denied 30 s, as
  kube-apiserver's webhook authorizer caches) is asked again with a
  SelfSubjectAccessReview sent with the client's own token, so the proxy
  needs no RBAC of its own to ask and upstream authenticates the token;
- offline (or when the review cannot be made), the last decision holds,
  however old: they are persisted (storage/decisions.py, by token hash);
- no decision at all and no way to get one: 503, never cached data.

Reads are checked whether or not they are then forwarded: a forwarded
read needs no check, but making the decision online is what lets the same
request be answered offline later. Requests without a token are the
proxy's own and are not checked; the proxy's identity must be able to read
everything it caches, since its reflectors fill the shared scopes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping

import msgspec

from edgeproxy.errors import StorageError, UpstreamUnreachable
from edgeproxy.kube.request import RequestInfo
from edgeproxy.kube.status import StatusError
from edgeproxy.proxy.identity import bearer_token
from edgeproxy.storage.decisions import Decision, DecisionKey, DecisionStore
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

ALLOWED_TTL = 300.0
DENIED_TTL = 30.0
REVIEW_TIMEOUT = 5.0
REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# The reads the proxy may answer from its cache (router: get without a
# subresource, list, watch); everything else is only ever forwarded.
CACHED_VERBS = frozenset({"get", "list", "watch"})


class _Review(msgspec.Struct):
    allowed: bool = False
    denied: bool = False
    reason: str = ""
    evaluationError: str = ""  # the API's field name


class _ReviewResponse(msgspec.Struct):
    status: _Review = msgspec.field(default_factory=_Review)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(token: str, info: RequestInfo) -> DecisionKey:
    return (
        token_hash(token),
        info.verb,
        info.api_group,
        info.resource,
        info.subresource,
        info.namespace,
        info.name,
    )


def _forbidden(info: RequestInfo, reason: str) -> StatusError:
    # As kube-apiserver words it, minus the user name the proxy does not know.
    where = f' in the namespace "{info.namespace}"' if info.namespace else " at the cluster scope"
    res = info.resource + (f"/{info.subresource}" if info.subresource else "")
    subject = f'{res} "{info.name}"' if info.name else res
    message = (
        f"{subject} is forbidden: this client cannot {info.verb} resource "
        f'"{res}" in API group "{info.api_group}"{where}'
    )
    if reason:
        message += f": {reason}"
    details: dict[str, str] = {"kind": info.resource}
    if info.name:
        details["name"] = info.name
    if info.api_group:
        details["group"] = info.api_group
    return StatusError(403, "Forbidden", message, details=details)


class Authorizer:
    """Upstream's decisions for client tokens, cached, persisted, and enforced."""

    def __init__(
        self,
        upstream: Upstream,
        store: DecisionStore | None = None,
        *,
        allowed_ttl: float = ALLOWED_TTL,
        denied_ttl: float = DENIED_TTL,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self.decisions: dict[DecisionKey, Decision] = {}
        self._inflight: dict[DecisionKey, asyncio.Future[Decision | None]] = {}
        self.reviews = 0

    def load(self) -> None:
        if self.store is None:
            return
        try:
            self.decisions = self.store.open()
        except StorageError as exc:
            log.error("authorization decisions are kept in memory only: %s", exc)
            self.store = None
            return
        log.info("%d authorization decisions from %s", len(self.decisions), self.store.path)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    async def check(self, headers: Mapping[str, str], info: RequestInfo) -> None:
        """Raise a 401/403/503 Status unless upstream allows this token this read."""
        token = bearer_token(headers)
        if token is None or info.verb not in CACHED_VERBS or not info.is_resource_request:
            return
        if info.verb == "get" and info.subresource:
            return  # always forwarded; upstream decides
        key = _key(token, info)
        decision = self.decisions.get(key)
        if decision is None or self._stale(decision):
            agent = headers.get("User-Agent", "")
            fresh = (
                await self._review_once(key, token, info, agent) if self.upstream.healthy else None
            )
            decision = fresh or decision
        if decision is None:
            raise StatusError(
                503,
                "ServiceUnavailable",
                f"the cloud apiserver is unreachable and edge-proxy has no authorization "
                f'decision for this client to {info.verb} "{info.resource}" '
                f'in namespace "{info.namespace}": cached data is only served to clients '
                "upstream has authorized",
            )
        if decision.code == 401:
            raise StatusError(401, "Unauthorized", "Unauthorized")
        if not decision.allowed:
            raise _forbidden(info, decision.reason)

    def _stale(self, decision: Decision) -> bool:
        ttl = self.allowed_ttl if decision.allowed else self.denied_ttl
        return time.time() - decision.decided_at >= ttl

    async def _review_once(
        self, key: DecisionKey, token: str, info: RequestInfo, agent: str
    ) -> Decision | None:
        """One review per key at a time: a burst of identical requests waits for it.

        The review runs in its own task, so a client that goes away does not
        cancel it under the others waiting for the same decision.
        """
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._review_and_record(key, token, info, agent))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _review_and_record(
        self, key: DecisionKey, token: str, info: RequestInfo, agent: str
    ) -> Decision | None:
        decision = await self._review(token, info, agent)
        if decision is not None:
            self._record(key, decision)
        return decision

    async def _review(self, token: str, info: RequestInfo, agent: str) -> Decision | None:
        """Ask upstream with a SelfSubjectAccessReview; None when it cannot answer.

        Sent with the client's token and User-Agent (marked as the proxy's
        review), so upstream's audit log shows whom it was for.
        """
        attributes = {
            "namespace": info.namespace,
            "verb": info.verb,
            "group": info.api_group,
            "resource": info.resource,
            "subresource": info.subresource,
            "name": info.name,
        }
        body = msgspec.json.encode(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}},
            }
        )
        self.reviews += 1
        try:
            resp = await asyncio.wait_for(
                self.upstream.request(
                    "POST",
                    REVIEW_PATH,
                    headers={
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                        "User-Agent": f"{agent} (edge-proxy access review)".lstrip(),
                    },
                    data=body,
                    client_token=token,
                    read_timeout=REVIEW_TIMEOUT,
                ),
                REVIEW_TIMEOUT,
            )
            async with resp:
                data = await resp.read()
                code = resp.status
        except (UpstreamUnreachable, TimeoutError, OSError) as exc:
            log.warning("cannot review a client's access to %s: %s", info.resource, exc)
            return None
        now = time.time()
        if code == 401:
            return Decision(False, 401, "the token was not accepted", now)
        if code != 201 and code != 200:
            # The client may not even ask (no SelfSubjectAccessReview rights):
            # what cannot be shown allowed is refused.
            log.info("access review answered %d for a client; refusing cached reads", code)
            return Decision(False, 200, f"access review answered {code}", now)
        try:
            review = msgspec.json.decode(data, type=_ReviewResponse).status
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        reason = review.reason or review.evaluationError
        return Decision(review.allowed, 200, reason, now)

    def _record(self, key: DecisionKey, decision: Decision) -> None:
        previous = self.decisions.get(key)
        self.decisions[key] = decision
        if previous is None or previous.allowed != decision.allowed:
            log.info(
                "client %s… may%s %s %s in namespace %r",
                key[0][:8],
                "" if decision.allowed else " not",
                key[1],
                key[3],
                key[5],
            )
        if self.store is not None:
            store = self.store
            task = asyncio.ensure_future(asyncio.to_thread(store.save, key, decision))
            task.add_done_callback(lambda t: t.exception())

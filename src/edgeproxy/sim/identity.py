"""Who the simulator thinks is asking: authentication, impersonation, SelfSubjectReview.

kube-apiserver decides a request's user in two steps, and a proxy that
forwards with its own credentials must not let a client steer either one.
To test that, the simulator decides the user the same way and says whom it
decided on, as kube-apiserver does with a SelfSubjectReview
(`kubectl auth whoami`, KEP-3325):

1. authentication. Plain HTTP: every request is `system:unsecured` in
   `system:masters`, as kube-apiserver's old insecure port treated them.
   HTTPS: a verified client certificate is the user of its subject (CN the
   name, O the groups), unless it carries `X-Remote-User`: the simulator
   trusts its own CA as a request-header (front-proxy) CA with no allowed
   names (`--requestheader-client-ca-file`, `--requestheader-allowed-names=`),
   so such a request is `X-Remote-User` in `X-Remote-Group` with
   `X-Remote-Extra-*`. The bearer token is `sim-token-admin` in
   `system:masters`; no credentials (public paths only) is `system:anonymous`.
2. impersonation, exactly as k8s.io/apiserver's `WithImpersonation` filter:
   `Impersonate-User` (a `system:serviceaccount:NS:NAME` name gets the
   service-account groups when no group is given), `Impersonate-Group`,
   `Impersonate-Uid`, `Impersonate-Extra-<key>`; anything but a user header
   without `Impersonate-User` is a 500; `system:authenticated` (or
   `system:unauthenticated` for `system:anonymous`) is added. The simulator
   has no RBAC: `system:masters` may impersonate anyone, any other user
   gets kube-apiserver's 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy

from edgeproxy.kube import status
from edgeproxy.kube.status import StatusError

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS_NAME = "system:anonymous"
_SA_PREFIX = "system:serviceaccount:"
_REVIEWS = {
    f"/apis/authentication.k8s.io/{version}/selfsubjectreviews": version
    for version in ("v1", "v1beta1")
}


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """authentication/v1 UserInfo: uid and extra are omitted when empty."""
        out: dict[str, Any] = {"username": self.username}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


UNSECURED = UserInfo("system:unsecured", (MASTERS, AUTHENTICATED))
TOKEN_ADMIN = UserInfo("sim-token-admin", (MASTERS, AUTHENTICATED))
ANONYMOUS = UserInfo(ANONYMOUS_NAME, (UNAUTHENTICATED,))


# -- 1. authentication ------------------------------------------------------------


def authenticate(request: web.Request, tls: bool) -> UserInfo:
    """The user a request authenticated as (the TLS middleware has already checked it)."""
    if not tls:
        return UNSECURED
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if cert:
        return _from_request_headers(request.headers) or _from_cert(cert)
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return TOKEN_ADMIN
    return ANONYMOUS


def _from_cert(cert: Mapping[str, Any]) -> UserInfo:
    name = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    return UserInfo(name, (*groups, AUTHENTICATED))


def _from_request_headers(headers: CIMultiDictProxy[str]) -> UserInfo | None:
    name = headers.get("X-Remote-User", "")
    if not name:
        return None
    groups = tuple(headers.getall("X-Remote-Group", ()))
    return UserInfo(
        name, groups, headers.get("X-Remote-Uid", ""), _extra(headers, "x-remote-extra-")
    )


def _extra(headers: CIMultiDictProxy[str], prefix: str) -> dict[str, tuple[str, ...]]:
    """`<prefix><key>` headers: keys lower-cased, then percent-decoded, as Go does."""
    extra: dict[str, tuple[str, ...]] = {}
    for name, value in headers.items():
        if name.lower().startswith(prefix):
            key = unquote(name[len(prefix) :].lower())
            extra[key] = (*extra.get(key, ()), value)
    return extra


# -- 2. impersonation -------------------------------------------------------------


def impersonate(requester: UserInfo, headers: CIMultiDictProxy[str]) -> UserInfo:
    """The user after the Impersonate-* headers; raises the Status kube-apiserver answers."""
    name = headers.get("Impersonate-User", "")
    groups_given = "Impersonate-Group" in headers
    groups = list(headers.getall("Impersonate-Group", ()))
    extra = _extra(headers, "impersonate-extra-")
    uid = headers.get("Impersonate-Uid", "")
    if not (name or groups_given or extra or uid):
        return requester
    if not name:
        raise status.internal_error(
            "requested impersonation of groups, extra or uid without impersonating a user"
        )
    if MASTERS not in requester.groups:
        kind, target = ("serviceaccounts", name) if name.startswith(_SA_PREFIX) else ("users", name)
        raise StatusError(
            403,
            "Forbidden",
            f'{kind} "{target}" is forbidden: User "{requester.username}" cannot impersonate '
            f'resource "{kind}" in API group "" at the cluster scope',
            details={"name": target, "kind": kind},
        )
    namespace, _, sa_name = name.removeprefix(_SA_PREFIX).partition(":")
    if name.startswith(_SA_PREFIX) and namespace and sa_name and not groups_given:
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if name != ANONYMOUS_NAME:
        if AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
    elif UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return UserInfo(name, tuple(groups), uid, extra)


# -- SelfSubjectReview and the middleware -----------------------------------------


def review(user: UserInfo, version: str) -> web.Response:
    """kube-apiserver's answer to a SelfSubjectReview create: 201 with the user."""
    doc = {
        "kind": "SelfSubjectReview",
        "apiVersion": f"authentication.k8s.io/{version}",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user.to_dict()},
    }
    return web.Response(status=201, body=msgspec.json.encode(doc), content_type="application/json")


def identity_middleware(tls: bool, gate: Callable[[], Awaitable[None]]) -> Middleware:
    """Decide each request's user; answer SelfSubjectReviews (after `gate`, the fault hook)."""

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = impersonate(authenticate(request, tls), request.headers)
        except StatusError as err:
            return web.Response(status=err.code, body=err.body(), content_type="application/json")
        version = _REVIEWS.get(request.path)
        if version is None or request.method != "POST":
            return await handler(request)
        await gate()
        await request.read()
        return review(user, version)

    return identify

"""Client headers that assert an identity: whose they are, and which stop at the proxy.

A request that carries a bearer token is forwarded with that token, as
that client (docs/identity.md); `bearer_token` is the one reading of it.
Every other request authenticates upstream as the proxy (ARCHITECTURE.md
sec. 6). Two families of headers would let such a client change who
upstream thinks is asking:

- `Impersonate-User`, `-Group`, `-Uid`, `-Extra-<key>`: kube-apiserver
  applies them for any requester allowed the `impersonate` verb, and a
  node's proxy credentials often are (or are system:masters);
- `X-Remote-User`, `-Group`, `-Uid`, `-Extra-<key>`: the front-proxy
  (request-header) authenticator believes them from a client certificate
  signed by its CA, which the proxy's may be.

Forwarded with the proxy's credentials, either lets any local process act
as whoever the proxy may impersonate. So they are removed from every
forwarded request, and each removal is logged (throttled) with the
client's User-Agent, so the process that tried can be found.

The decision is `forward.upstream_headers`'s; this module only knows the
names. A request that carries its own token keeps these headers: upstream
then checks the client's own right to impersonate, and its request goes
without the proxy's client certificate, so no front-proxy header is believed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from edgeproxy.throttledlog import ThrottledLog

log = logging.getLogger(__name__)

# kube-apiserver's impersonation headers (k8s.io/api/authentication/v1
# ImpersonateUserHeader and friends) and the request-header authenticator's
# conventional prefix (--requestheader-username-headers=X-Remote-User,
# --requestheader-group-headers=X-Remote-Group, --requestheader-uid-headers=
# X-Remote-Uid, --requestheader-extra-headers-prefix=X-Remote-Extra-).
IDENTITY_PREFIXES = ("impersonate-", "x-remote-")

# One line per User-Agent and set of headers a minute: enough to find the
# culprit, too little to flood the log.
_warnings = ThrottledLog(log)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The client's bearer token, or None (no Authorization, or another scheme).

    Other schemes (Basic; kube-apiserver no longer accepts it) are dropped
    like before: such a request is the proxy's, as one without credentials.
    """
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def is_identity_header(name: str) -> bool:
    """Whether a client header asserts an identity (case-insensitive)."""
    return name.lower().startswith(IDENTITY_PREFIXES)


def report_stripped(names: Iterable[str], user_agent: str) -> None:
    """Log (throttled) that a request's identity headers were removed."""
    unique = sorted({n.title() for n in names})
    if not unique:
        return
    _warnings.warning(
        (tuple(unique), user_agent),
        "removed identity header(s) %s from a request by User-Agent %r: requests go "
        "upstream with the proxy's credentials, so a client may not choose who it is",
        ", ".join(unique),
        user_agent,
    )

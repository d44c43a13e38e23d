"""A read sent upstream that gives way to the cache when the link is in doubt.

Gets, lists and discovery reads are forwarded while the link is up, but a
read that upstream does not answer within `fallback_after` while the link is
not known to be healthy is answered from the cache instead (ARCHITECTURE.md
sec. 3). The request paths share that decision; it lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from edgeproxy.errors import UpstreamUnreachable
from edgeproxy.kube import status
from edgeproxy.kube.status import StatusError
from edgeproxy.proxy import forward
from edgeproxy.proxy.identity import bearer_token
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.upstream.pool import Upstream

JSON = "application/json"


class Fallback(Exception):
    """Upstream did not answer in time and the link is not known to be healthy."""


def offline(what: str) -> StatusError:
    # No Retry-After: client-go would retry for a minute; a cache miss while cut
    # off is not going to resolve in seconds, so fail fast and let the client decide.
    return status.service_unavailable(
        f"the cloud apiserver is unreachable and {what} is not in the edge-proxy cache"
    )


def json_headers(request: web.Request) -> dict[str, str]:
    """The client's headers for upstream, asking for JSON (the form the cache keeps)."""
    headers = dict(forward.upstream_headers(request.headers))
    headers["Accept"] = JSON
    if "gzip" not in request.headers.get("Accept-Encoding", ""):
        headers["Accept-Encoding"] = "identity"  # else aiohttp asks for gzip itself
    return headers


class FallbackReads:
    def __init__(self, upstream: Upstream, settings: ProxySettings) -> None:
        self.upstream = upstream
        self.settings = settings

    async def forward(
        self,
        request: web.Request,
        headers: Mapping[str, str],
        *,
        cached: bool,
        target: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a read upstream; fall back when it hangs and the link is in doubt.

        `target`: the path and query to ask for, when not the client's own.
        """
        # Just started: until a probe answers, the link is in doubt. Online the
        # first probe answers in milliseconds; cut off, the cache answers now.
        if (
            cached
            and not self.upstream.confirmed
            and not await self.upstream.wait_confirmed(self.settings.startup_probe_wait)
        ):
            raise Fallback()
        if target is None:
            target = forward.upstream_target(request)
        token = bearer_token(request.headers)  # the client's own identity (docs/identity.md)
        task = asyncio.ensure_future(
            self.upstream.request("GET", target, headers=headers, client_token=token)
        )
        try:
            return await self._await_read(task, cached=cached)
        except BaseException:
            # Fallback, link down, or the client went away (cancellation): the
            # upstream request must not outlive the client's.
            _discard(task)
            raise

    async def _await_read(
        self, task: asyncio.Future[aiohttp.ClientResponse], *, cached: bool
    ) -> aiohttp.ClientResponse:
        settings = self.upstream.settings
        if not cached:
            # Nothing to fall back to, but a black-holed request never ends by
            # itself: once the probes declare the link down, answer 503 offline.
            while True:
                done, _ = await asyncio.wait({task}, timeout=settings.probe_interval)
                if done:
                    return task.result()
                if not self.upstream.healthy:
                    raise UpstreamUnreachable("the link went down while waiting for an answer")
        done, _ = await asyncio.wait({task}, timeout=settings.fallback_after)
        while not done:
            if not self.upstream.recently_ok():
                raise Fallback()
            done, _ = await asyncio.wait({task}, timeout=settings.probe_interval)
        return task.result()


def _discard(task: asyncio.Future[aiohttp.ClientResponse]) -> None:
    """Cancel an upstream read, or release its response if it already arrived."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        task.result().release()

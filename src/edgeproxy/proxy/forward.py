"""Pass-through: a client request streamed to upstream and the answer streamed back.

Bodies are streamed in both directions in chunks, so a 100 MB log or list
costs a chunk of memory per request, not 100 MB. Hop-by-hop headers are
dropped (RFC 9110 sec. 7.6.1); a client's bearer token goes upstream as its
identity, any other request is the proxy's (docs/identity.md); status codes and
the headers that matter (Content-Type, Content-Encoding, Retry-After,
Warning, Audit-Id, …) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from edgeproxy.proxy import identity
from edgeproxy.upstream.pool import Upstream

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# The proxy authenticates upstream as itself; client credentials stop here.
_CLIENT_AUTH = frozenset({"authorization"})

CHUNK = 64 * 1024


def upstream_target(request: web.Request) -> str:
    """The path and query as the client sent them, still percent-encoded.

    Not `path_qs`: that is decoded (`%2F` becomes a separator, `%26` in a
    selector a new parameter), and a decoded path given to the HTTP client is
    dot-segment normalized (`configmaps/../secrets` becomes `secrets`).
    Upstream must read the very path the proxy routed, as kube-apiserver does.
    """
    return request.rel_url.raw_path_qs


def upstream_headers(headers: Mapping[str, str], **overrides: str) -> CIMultiDict[str]:
    """The headers a client's request carries upstream, for every kind of forwarding.

    The one place that decides whose identity a forwarded request has (pass-
    through, reads, writes, discovery and upgrades all build their headers
    here). Authorization never passes here: `Upstream` adds the client's
    bearer token (when the caller passes it) or the proxy's credentials.
    Without a client token, any identity a client asserts (Impersonate-*,
    X-Remote-*; proxy/identity.py) stops here.
    """
    out: CIMultiDict[str] = CIMultiDict()
    stripped: list[str] = []
    own_token = identity.bearer_token(headers) is not None
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in _CLIENT_AUTH:
            continue
        if not own_token and identity.is_identity_header(lower):
            stripped.append(name)
            continue
        out.add(name, value)
    if stripped:
        identity.report_stripped(stripped, headers.get("User-Agent", ""))
    for name, value in overrides.items():
        out[name.replace("_", "-")] = value
    return out


def client_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    return out


async def stream_body(request: web.Request) -> object:
    """The client's body as an async iterator (None when there is none)."""
    if not request.body_exists:
        return None

    async def chunks() -> object:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk

    return chunks()


# Pieces of a body are joined into writes of about this size: few syscalls, and
# the proxy never holds a second copy of a large body.
WRITE_BATCH = 512 * 1024


async def send_parts(
    request: web.Request,
    parts: Iterable[bytes],
    length: int,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """A body that exists in pieces (a list's items), written with backpressure.

    `web.Response(body=...)` hands the whole body to the transport at once,
    which buffers what the socket does not take, and aiohttp keeps the last
    response of a keep-alive connection (and its body) until the next one.
    """
    resp = web.StreamResponse(headers=headers)
    resp.content_length = length
    await resp.prepare(request)
    batch: list[bytes] = []
    size = 0
    try:
        for part in parts:
            batch.append(part)
            size += len(part)
            if size >= WRITE_BATCH:
                await resp.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            await resp.write(b"".join(batch))
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("client went away during %s", request.path)
    return resp


# A body above this is written after its headers instead of joined to them:
# `web.Response` copies headers + body into one new buffer per response (on
# Python < 3.12.9 aiohttp never uses writelines), a 1 MB allocation and copy
# for every cached list of 1,000 ConfigMaps. Below it the copy costs less than
# a write of its own for the headers (a gzipped list of 1,000 ConfigMaps,
# ~145 KB: +6% lists/s).
SEPARATE_BODY_MIN = 256 * 1024


async def send_body(
    request: web.Request, body: bytes, headers: Mapping[str, str]
) -> web.StreamResponse:
    """One finished body: small ones with their headers, large ones without a copy."""
    if len(body) < SEPARATE_BODY_MIN:
        return web.Response(body=body, headers=headers)
    return await send_parts(request, (body,), len(body), headers)  # joining one part copies nothing


class _HeadersWithBody(web.StreamResponse):
    """Headers sent with the first body bytes, as `web.Response` does: one write
    and one packet fewer per response (aiohttp's own switch, on the class)."""

    _send_headers_immediately = False


async def relay(
    request: web.Request,
    upstream_resp: aiohttp.ClientResponse,
    *,
    on_bytes: Callable[[int], None] | None = None,
    head: Iterable[bytes] = (),
    rest: AsyncIterator[bytes] | None = None,
) -> web.StreamResponse:
    """Stream an upstream response to the client, chunk by chunk, flushing each.

    `head`: body chunks already read from `upstream_resp` (sent first, with
    the headers in one write: a list's answer, never a stream that may be
    silent for a while), `rest` the iterator they were read from.
    """
    headers = client_headers(upstream_resp.headers)
    length = upstream_resp.headers.get("Content-Length")
    kind = _HeadersWithBody if head else web.StreamResponse
    resp = kind(status=upstream_resp.status, reason=upstream_resp.reason, headers=headers)
    if length is not None:
        resp.content_length = int(length)
    else:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        for chunk in head:
            await resp.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        async for chunk in rest if rest is not None else upstream_resp.content.iter_any():
            await resp.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        await resp.write_eof()
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
        # Upstream broke mid-body: all we can do is cut the client off too, so
        # it sees a truncated response rather than a complete-looking one.
        log.warning("upstream body for %s broke off: %s", request.path, exc)
        if request.transport is not None:
            request.transport.close()
    except ConnectionResetError:
        log.debug("client went away during %s", request.path)
    return resp


async def passthrough(
    request: web.Request,
    upstream: Upstream,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> web.StreamResponse:
    headers = upstream_headers(request.headers)
    body = await stream_body(request)
    resp = await upstream.request(
        request.method,
        upstream_target(request),
        headers=headers,
        data=body,
        read_timeout=None,
        client_token=identity.bearer_token(request.headers),
    )
    async with resp:
        return await relay(request, resp, on_bytes=on_bytes)

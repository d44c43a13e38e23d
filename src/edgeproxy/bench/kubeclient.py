"""The benchmark's Kubernetes client: one base URL, one aiohttp session.

The suites talk to every target (the upstream itself, nginx, the proxy) the
same way, so a difference in the figures is the target's, not the client's.
Requests ask for JSON without compression (`Accept-Encoding: identity`) so
every byte counted is a byte of JSON; lists are decoded only as far as a
suite needs (item count as raw bytes, or names and labels). Errors become
`BenchError` with the status and the start of the body.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

IDENTITY = {"Accept": "application/json", "Accept-Encoding": "identity"}
JSON_CT = {"Content-Type": "application/json"}
MERGE_PATCH_CT = {"Content-Type": "application/merge-patch+json"}
# More concurrent POSTs than this only queue inside a single-threaded server.
CREATE_CONCURRENCY = 64


class BenchError(RuntimeError):
    """A request of the benchmark failed: the run's figures would be wrong."""


class Meta(msgspec.Struct):
    name: str = ""
    resourceVersion: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class Item(msgspec.Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)


class ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class RawList(msgspec.Struct):
    """Items left as raw bytes: counting them must not cost the client."""

    items: list[msgspec.Raw] = msgspec.field(default_factory=list)
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)


class NamedList(msgspec.Struct):
    items: list[Item] = msgspec.field(default_factory=list)
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)


_decode_raw = msgspec.json.Decoder(RawList).decode
_decode_named = msgspec.json.Decoder(NamedList).decode
_decode_item = msgspec.json.Decoder(Item).decode


@dataclass(frozen=True, slots=True)
class Listed:
    """One list as the client saw it."""

    seconds: float
    nbytes: int
    items: int
    resource_version: str
    names: tuple[str, ...] = ()
    labels: tuple[dict[str, str], ...] = field(default=())


class Api:
    """A Kubernetes API at `url`, through one aiohttp session of its own."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        connections: int = 0,
    ) -> None:
        self.url = url.rstrip("/")
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._headers = {**IDENTITY, **(headers or {})}
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers=self._headers, auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- writes ----------------------------------------------------------------

    async def create(self, path: str, body: Mapping[str, Any], *, exist_ok: bool = False) -> None:
        data = msgspec.json.encode(body)
        async with self.http.post(self.url + path, data=data, headers=JSON_CT) as r:
            raw = await r.read()
            if r.status == 201 or (exist_ok and r.status == 409):
                return
            raise BenchError(f"POST {path}: HTTP {r.status} {raw[:200]!r}")

    async def create_all(self, path: str, bodies: Sequence[Mapping[str, Any]]) -> float:
        """POST every body, CREATE_CONCURRENCY at a time; returns the seconds it took."""
        sem = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(body: Mapping[str, Any]) -> None:
            async with sem:
                await self.create(path, body)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0

    async def ensure_namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        await self.create("/api/v1/namespaces", body, exist_ok=True)

    async def delete(self, path: str) -> None:
        async with self.http.delete(self.url + path) as r:
            raw = await r.read()
            if r.status not in (200, 202, 404):
                raise BenchError(f"DELETE {path}: HTTP {r.status} {raw[:200]!r}")

    async def patch(self, path: str, body: Mapping[str, Any]) -> tuple[int, int]:
        """Merge-patch; returns (the object's new resourceVersion, monotonic ns of the answer)."""
        data = msgspec.json.encode(body)
        async with self.http.patch(self.url + path, data=data, headers=MERGE_PATCH_CT) as r:
            raw = await r.read()
            at = time.monotonic_ns()
            if r.status != 200:
                raise BenchError(f"PATCH {path}: HTTP {r.status} {raw[:200]!r}")
        return int(_decode_item(raw).metadata.resourceVersion), at

    # -- reads -----------------------------------------------------------------

    async def get_bytes(self, path: str, within: float | None = None) -> tuple[int, bytes]:
        t = aiohttp.ClientTimeout(total=within) if within else None
        async with self.http.get(self.url + path, timeout=t) as r:
            return r.status, await r.read()

    async def list(self, path: str, *, names: bool = False, within: float | None = None) -> Listed:
        """GET a collection; raises BenchError unless it answers 200 with a list."""
        t0 = time.perf_counter()
        try:
            status, body = await self.get_bytes(path, within)
        except TimeoutError:
            raise BenchError(f"GET {path}: no answer within {within} s") from None
        except aiohttp.ClientError as exc:
            raise BenchError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - t0
        if status != 200:
            raise BenchError(f"GET {path}: HTTP {status} {body[:200]!r}")
        try:
            if names:
                named = _decode_named(body)
                return Listed(
                    seconds,
                    len(body),
                    len(named.items),
                    named.metadata.resourceVersion,
                    tuple(i.metadata.name for i in named.items),
                    tuple(i.metadata.labels for i in named.items),
                )
            raw = _decode_raw(body)
        except msgspec.DecodeError as exc:
            raise BenchError(f"GET {path}: not a list: {exc}") from exc
        return Listed(seconds, len(body), len(raw.items), raw.metadata.resourceVersion)

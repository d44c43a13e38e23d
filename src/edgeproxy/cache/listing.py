"""Reading upstream list bodies without decoding their items.

A list body is read chunk by chunk (`read_list`): each complete item is cut
out as its own bytes while the rest is still arriving (kube/liststream.py),
so a 10 MB list costs its items, not its body plus its items. The list's
metadata and the unsplit rest are decoded with `msgspec.Raw` item slices;
each item becomes an `ObjectRecord` from its own bytes. This is the one
place upstream list bytes are turned into records, for the reflector and
for list responses the proxy forwards.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterable, Callable, Iterable, Iterator

import msgspec

from edgeproxy.kube.liststream import ListSplitter
from edgeproxy.kube.objects import ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceType


class ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    # msgspec field name `continue` is a keyword: map it.
    continue_: str = msgspec.field(default="", name="continue")
    remainingItemCount: int | None = None


class ListView(msgspec.Struct):
    kind: str = ""
    apiVersion: str = ""
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[msgspec.Raw] | None = None


_list_decoder = msgspec.json.Decoder(ListView)


class BadUpstreamBody(ValueError):
    """Upstream sent a body that is not what its headers claim."""


def parse_list(body: bytes) -> ListView:
    try:
        view = _list_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadUpstreamBody(f"malformed list body: {exc}") from exc
    if not view.kind.endswith("List"):
        raise BadUpstreamBody(f"expected a list, got kind {view.kind!r}")
    return view


def records_of(rt: ResourceType, items: ListView | UpstreamList) -> dict[str, ObjectRecord]:
    """Records of a list's items, by key, each holding its own bytes."""
    raws: Iterable[bytes | msgspec.Raw] = (
        items.items() if isinstance(items, UpstreamList) else items.items or ()
    )
    records: dict[str, ObjectRecord] = {}
    for raw in raws:
        try:
            record = record_from_bytes(rt, bytes(raw))  # no copy when already bytes
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadUpstreamBody(f"malformed list item: {exc}") from exc
        records[record.key] = record
    return records


class UpstreamList:
    """A list as `read_list` read it: metadata, items, and the body exactly as received."""

    def __init__(
        self,
        view: ListView,
        split: list[bytes],
        splitter: ListSplitter,
        rest: bytes,
        wire: list[bytes] | None,
        wire_bytes: int,
    ) -> None:
        self.view = view  # kind, apiVersion, metadata; `items`: only those not split off
        self.metadata = view.metadata
        self.wire_bytes = wire_bytes  # as received, still compressed if it was
        self.compressed = wire is not None
        self._split = split
        self._splitter = splitter
        self._rest = rest
        self._wire = wire

    def items(self) -> Iterator[bytes]:
        """Every item's bytes, in order."""
        yield from self._split
        for item in self.view.items or ():
            yield bytes(item)

    def first_item(self) -> bytes | None:
        return next(self.items(), None)

    def body_parts(self) -> Iterable[bytes]:
        """The body as received, in pieces that add up to `wire_bytes`."""
        if self._wire is not None:
            return self._wire
        return self._splitter.body_parts(self._split, self._rest)


async def read_list(
    chunks: AsyncIterable[bytes],
    encoding: str,
    on_bytes: Callable[[int], None] | None = None,
) -> UpstreamList:
    """Read an upstream list body chunk by chunk; raises BadUpstreamBody.

    A gzip body is kept as received (a fraction of the items' size) to be
    passed on as is; an identity body is not kept: `body_parts` rebuilds it
    from the items.
    """
    splitter = ListSplitter()
    split: list[bytes] = []
    gz = encoding.strip().lower() == "gzip"
    wire: list[bytes] | None = [] if gz else None
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16) if gz else None
    wire_bytes = 0
    async for chunk in chunks:
        wire_bytes += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
        data = chunk
        if wire is not None and inflate is not None:
            wire.append(chunk)
            try:
                data = inflate.decompress(chunk)
                while inflate.eof and inflate.unused_data:  # concatenated gzip members
                    more, inflate = (
                        inflate.unused_data,
                        zlib.decompressobj(wbits=zlib.MAX_WBITS | 16),
                    )
                    data += inflate.decompress(more)
            except zlib.error as exc:
                raise BadUpstreamBody(f"bad gzip body: {exc}") from exc
        split += splitter.feed(data)
    if inflate is not None and not inflate.eof:
        raise BadUpstreamBody("bad gzip body: truncated")
    rest = splitter.finish()
    return UpstreamList(parse_list(rest), split, splitter, rest, wire, wire_bytes)


def decompress(encoding: str, body: bytes) -> bytes:
    """An upstream body without its Content-Encoding (gzip is all kube-apiserver uses)."""
    if encoding.strip().lower() == "gzip":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise BadUpstreamBody(f"bad gzip body: {exc}") from exc
    return body


def parse_rv(value: str) -> int:
    """Upstream RVs are etcd revisions; anything else is a broken upstream."""
    try:
        rv = int(value)
    except ValueError:
        raise BadUpstreamBody(f"resourceVersion {value!r} is not an integer") from None
    if rv < 0:
        raise BadUpstreamBody(f"resourceVersion {value!r} is negative")
    return rv

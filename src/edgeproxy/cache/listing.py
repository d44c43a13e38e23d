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
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

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


# A list's metadata comes before its items (Go's encoder writes struct fields in
# order: kind, apiVersion, metadata, items); look this far into the body for it.
_HEAD_PEEK = 64 * 1024
_META = b'"metadata":{'


class ListHead:
    """A list's kind and metadata from its first bytes; the chunks kept as received.

    Enough to tell whether the cache already holds the state a list describes
    (its resourceVersion) without reading its items: feed chunks until `feed`
    says done, then `view` is the list without items, or None when the head
    did not say (an unexpected layout, or a broken body: the full reader
    reports those). `chunks` are the body's bytes so far, still encoded.
    JSON (`protobuf=False`) or Kubernetes protobuf, identity or gzip.
    """

    def __init__(self, encoding: str, *, protobuf: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.view: ListView | None = None
        self._text = bytearray()
        self._parse = _protobuf_head if protobuf else _json_head
        gz = encoding.strip().lower() == "gzip"
        self._inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16) if gz else None

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once the head is read or cannot be."""
        self.chunks.append(chunk)
        room = _HEAD_PEEK - len(self._text)
        if self._inflate is None:
            data = chunk[:room]  # the first chunk may be the whole body: copy its head only
        else:
            try:
                data = self._inflate.decompress(chunk, room)
            except zlib.error:
                return True
        self._text += data
        done, self.view = self._parse(bytes(self._text))
        return (
            done
            or len(self._text) >= _HEAD_PEEK
            or (self._inflate is not None and self._inflate.eof)
        )


def _json_head(text: bytes) -> tuple[bool, ListView | None]:
    """`{"kind":..,"apiVersion":..,"metadata":{..}` decoded, once it has arrived.

    Decoding the whole head checks that the `"metadata":{` found is the list's
    own key, not bytes inside a string or an item.
    """
    start = text.find(_META)
    if start < 0:
        return False, None
    end = text.find(b"}", start + len(_META))  # ListMeta holds no objects
    if end < 0:
        return False, None
    try:
        view = _list_decoder.decode(text[: end + 1] + b"}")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return True, None
    if view.items is not None or not view.kind.endswith("List"):
        return True, None
    return True, view


_PROTO_MAGIC = b"k8s\x00"


class _Short(Exception):
    """The protobuf head has not fully arrived."""


def _protobuf_head(text: bytes) -> tuple[bool, ListView | None]:
    """The kind and ListMeta of a protobuf list: `k8s\\0`, then a runtime.Unknown.

    Unknown is typeMeta (1) then raw (2), the list message, whose field 1 is its
    ListMeta (resourceVersion 2, continue 3, remainingItemCount 4), as Go
    writes them; any other layout is not read here.
    """
    if len(text) < len(_PROTO_MAGIC):
        return False, None
    if not text.startswith(_PROTO_MAGIC):
        return True, None
    try:
        pos = len(_PROTO_MAGIC)
        type_meta, pos = _proto_field(text, pos, 0x0A)
        if type_meta is None:
            return True, None
        key, pos = _proto_varint(text, pos)
        if key != 0x12:  # raw: length-delimited field 2
            return True, None
        _, pos = _proto_varint(text, pos)
        list_meta, pos = _proto_field(text, pos, 0x0A)
        if list_meta is None:
            return True, None
        strings = _proto_strings(type_meta)
        meta = ListMeta()
        at = 0
        while at < len(list_meta):
            key, at = _proto_varint(list_meta, at)
            if key == 0x20:
                meta.remainingItemCount, at = _proto_varint(list_meta, at)
                continue
            if key & 7 != 2:
                return True, None
            size, at = _proto_varint(list_meta, at)
            value = list_meta[at : at + size].decode()
            at += size
            if key >> 3 == 2:
                meta.resourceVersion = value
            elif key >> 3 == 3:
                meta.continue_ = value
    except _Short:
        return False, None
    except (UnicodeDecodeError, ValueError):
        return True, None
    kind, api_version = strings.get(2, ""), strings.get(1, "")
    if not kind.endswith("List"):
        return True, None
    return True, ListView(kind=kind, apiVersion=api_version, metadata=meta)


def _proto_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("protobuf varint is longer than 10 bytes")
    raise _Short()


def _proto_field(buf: bytes, pos: int, key: int) -> tuple[bytes | None, int]:
    """The length-delimited field at `pos` if its key is `key`."""
    found, pos = _proto_varint(buf, pos)
    if found != key:
        return None, pos
    size, pos = _proto_varint(buf, pos)
    if pos + size > len(buf):
        raise _Short()
    return buf[pos : pos + size], pos + size


def _proto_strings(message: bytes) -> dict[int, str]:
    """The string fields of a small message (TypeMeta), by number."""
    out: dict[int, str] = {}
    pos = 0
    while pos < len(message):
        key, pos = _proto_varint(message, pos)
        if key & 7 != 2:
            raise ValueError("TypeMeta holds only strings")
        size, pos = _proto_varint(message, pos)
        out[key >> 3] = message[pos : pos + size].decode()
        pos += size
    return out


async def read_head(
    chunks: AsyncIterator[bytes], encoding: str, *, protobuf: bool = False
) -> ListHead:
    """Read a list body until its metadata; the rest stays in `chunks`."""
    head = ListHead(encoding, protobuf=protobuf)
    async for chunk in chunks:
        if head.feed(chunk):
            break
    return head


async def replayed(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks a ListHead kept, then the rest of the body."""
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


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

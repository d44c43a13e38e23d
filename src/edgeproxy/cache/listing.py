"""Reading upstream list bodies without decoding their items.

A list body is decoded into its metadata and a list of `msgspec.Raw` item
slices; each item becomes an `ObjectRecord` from its own bytes. This is the
one place upstream list bytes are turned into records, for the reflector
and for list responses the proxy forwards.
"""

from __future__ import annotations

import gzip

import msgspec

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


def records_of(rt: ResourceType, view: ListView) -> dict[str, ObjectRecord]:
    """Records of a list's items, by key, each holding its own bytes."""
    records: dict[str, ObjectRecord] = {}
    for item in view.items or ():
        try:
            record = record_from_bytes(rt, bytes(item))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadUpstreamBody(f"malformed list item: {exc}") from exc
        records[record.key] = record
    return records


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

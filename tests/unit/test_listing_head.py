"""ListHead: a list's kind and metadata from its first bytes, JSON or protobuf, identity or gzip."""

from __future__ import annotations

import gzip

import pytest

from edgeproxy.cache.listing import ListHead

ITEM = b'{"metadata":{"name":"a","namespace":"d","resourceVersion":"5"},"data":{"k":"v"}}'
JSON_LIST = (
    b'{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"123",'
    b'"continue":"tok","remainingItemCount":7},"items":[' + b",".join([ITEM] * 200) + b"]}"
)


def feed_all(head: ListHead, body: bytes, size: int) -> int:
    """Feed `body` in chunks of `size`; how many chunks were taken until done."""
    for n, at in enumerate(range(0, len(body), size), 1):
        if head.feed(body[at : at + size]):
            return n
    return -1


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_json_head_in_any_chunks(size: int) -> None:
    head = ListHead("")
    taken = feed_all(head, JSON_LIST, size)
    assert head.view is not None
    assert (head.view.kind, head.view.apiVersion) == ("ConfigMapList", "v1")
    meta = head.view.metadata
    assert (meta.resourceVersion, meta.continue_, meta.remainingItemCount) == ("123", "tok", 7)
    assert b"".join(head.chunks) == JSON_LIST[: taken * size]  # kept as received


def test_gzip_head() -> None:
    body = gzip.compress(JSON_LIST)
    head = ListHead("gzip")
    taken = feed_all(head, body, 50)
    assert head.view is not None and head.view.metadata.resourceVersion == "123"
    assert b"".join(head.chunks) == body[: taken * 50]  # still compressed


@pytest.mark.parametrize(
    "body",
    [
        # items first: the first "metadata" is an item's, not the list's
        b'{"items":[' + ITEM + b'],"kind":"ConfigMapList","metadata":{"resourceVersion":"9"}}',
        # the key inside a string
        b'{"kind":"X\\"metadata\\":{\\"resourceVersion\\":\\"1\\"}","metadata":{"resourceVersion":"2"}}',
        b'{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"3"}}',  # no list
        b"not json at all, but long enough to look at" * 10,
    ],
)
def test_json_head_refuses_what_it_cannot_be_sure_of(body: bytes) -> None:
    head = ListHead("")
    feed_all(head, body, 16)
    assert head.view is None


def _field(number: int, value: bytes) -> bytes:
    key = (number << 3) | 2
    return bytes([key]) + _varint(len(value)) + value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def protobuf_list(rv: str, token: str = "", remaining: int | None = None) -> bytes:
    meta = _field(2, rv.encode()) + (_field(3, token.encode()) if token else b"")
    if remaining is not None:
        meta += bytes([4 << 3]) + _varint(remaining)
    items = b"".join(_field(2, b"\x0a\x03\x0a\x01a" + b"x" * 300) for _ in range(50))
    raw = _field(1, meta) + items
    type_meta = _field(1, b"v1") + _field(2, b"ConfigMapList")
    return b"k8s\x00" + _field(1, type_meta) + _field(2, raw) + _field(4, b"application/vnd")


@pytest.mark.parametrize("size", [1, 5, 4096])
def test_protobuf_head(size: int) -> None:
    head = ListHead("", protobuf=True)
    assert feed_all(head, protobuf_list("456", "tok", 3), size) > 0
    assert head.view is not None
    assert (head.view.kind, head.view.apiVersion) == ("ConfigMapList", "v1")
    meta = head.view.metadata
    assert (meta.resourceVersion, meta.continue_, meta.remainingItemCount) == ("456", "tok", 3)


def test_protobuf_gzip_head() -> None:
    head = ListHead("gzip", protobuf=True)
    feed_all(head, gzip.compress(protobuf_list("789")), 100)
    assert head.view is not None and head.view.metadata.resourceVersion == "789"


def test_protobuf_head_refuses_json_and_objects() -> None:
    head = ListHead("", protobuf=True)
    feed_all(head, JSON_LIST, 64)
    assert head.view is None
    obj = b"k8s\x00" + _field(1, _field(1, b"v1") + _field(2, b"ConfigMap")) + _field(2, b"")
    head = ListHead("", protobuf=True)
    feed_all(head, obj, 64)
    assert head.view is None

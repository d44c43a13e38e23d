"""read_list: an upstream list read chunk by chunk, identity or gzip, passed on byte for byte."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest

from edgeproxy.cache.listing import BadUpstreamBody, read_list, records_of
from edgeproxy.kube.resources import ResourceRegistry, ResourceType

_cms = ResourceRegistry().get("", "v1", "configmaps")
assert _cms is not None
CONFIGMAPS: ResourceType = _cms


def list_body(n: int) -> bytes:
    items = [
        {"metadata": {"name": f"cm-{i}", "namespace": "ns", "resourceVersion": str(10 + i)}}
        for i in range(n)
    ]
    obj = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "99"}}
    return json.dumps({**obj, "items": items}, separators=(",", ":")).encode() + b"\n"


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 100, 1 << 20])
async def test_identity(size: int) -> None:
    body = list_body(50)
    seen: list[int] = []
    listed = await read_list(chunks(body, size), "", seen.append)
    assert sum(seen) == listed.wire_bytes == len(body)
    assert not listed.compressed
    assert listed.metadata.resourceVersion == "99"
    records = records_of(CONFIGMAPS, listed)
    assert sorted(records) == sorted(f"ns/cm-{i}" for i in range(50))
    assert b"".join(listed.body_parts()) == body
    assert listed.first_item() == records["ns/cm-0"].raw


@pytest.mark.parametrize("size", [7, 1 << 20])
async def test_gzip_is_passed_on_as_received(size: int) -> None:
    plain = list_body(50)
    wire = gzip.compress(plain)
    listed = await read_list(chunks(wire, size), "gzip")
    assert listed.compressed
    assert listed.wire_bytes == len(wire)
    assert b"".join(listed.body_parts()) == wire
    assert len(records_of(CONFIGMAPS, listed)) == 50


async def test_gzip_members() -> None:
    plain = list_body(20)
    wire = gzip.compress(plain[:500]) + gzip.compress(plain[500:])
    listed = await read_list(chunks(wire, 64), "gzip")
    assert len(records_of(CONFIGMAPS, listed)) == 20


@pytest.mark.parametrize(
    ("wire", "encoding", "message"),
    [
        (b"not gzip", "gzip", "bad gzip body"),
        (gzip.compress(list_body(3))[:-10], "gzip", "bad gzip body"),
        (b"not json", "", "malformed list body"),
        (b'{"kind":"Pod"}', "", "expected a list"),
    ],
)
async def test_bad_bodies(wire: bytes, encoding: str, message: str) -> None:
    with pytest.raises(BadUpstreamBody, match=message):
        await read_list(chunks(wire, 5), encoding)


async def test_bad_item() -> None:
    body = b'{"kind":"ConfigMapList","items":[{"metadata":{"name":"a"}},{"metadata":7}]}'
    listed = await read_list(chunks(body, 5), "")
    with pytest.raises(BadUpstreamBody, match="malformed list item"):
        records_of(CONFIGMAPS, listed)

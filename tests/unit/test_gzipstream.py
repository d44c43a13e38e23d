"""GzipMembers: a body of concatenated gzip members, decoded chunk by chunk."""

from __future__ import annotations

import gzip
import random

import pytest

from edgeproxy.kube.gzipstream import GzipMembers, GzipStreamError


def members(rng: random.Random) -> tuple[bytes, bytes]:
    """A body of gzip members (as kube-apiserver flushes a watch-list) and its content."""
    parts = [
        b'{"type":"ADDED","object":{"x":"%s"}}\n'
        % (b"%d" % rng.randrange(10**6) * rng.randrange(1, 20000))
        for _ in range(40)
    ]
    return b"".join(gzip.compress(p, compresslevel=1) for p in parts), b"".join(parts)


@pytest.mark.parametrize("chunk", [1, 13, 4096, 65536, 10**9])
def test_any_chunking_gives_the_content(chunk: int) -> None:
    wire, content = members(random.Random(chunk))
    decoder = GzipMembers(max_piece=8192)
    out = []
    for i in range(0, len(wire), chunk):
        pieces = list(decoder.feed(wire[i : i + chunk]))
        assert all(len(p) <= 8192 for p in pieces), "output is bounded per piece"
        out += pieces
    decoder.finish()
    assert b"".join(out) == content
    assert (decoder.wire_bytes, decoder.decoded_bytes) == (len(wire), len(content))


def test_a_cut_member_or_garbage_is_an_error() -> None:
    wire, _ = members(random.Random(1))
    decoder = GzipMembers()
    list(decoder.feed(wire[:-5]))
    with pytest.raises(GzipStreamError):
        decoder.finish()
    with pytest.raises(GzipStreamError):
        list(GzipMembers().feed(b"not gzip at all"))

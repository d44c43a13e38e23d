"""The sans-IO watch stream decoder and the TypeMeta splicing of object bytes.

Chunk boundaries fall anywhere in a real HTTP body, so any split of a valid
stream must give the same events; anything that is not a watch event must
stop the stream (k8s-api-semantics.md sec. 3.3).
"""

from __future__ import annotations

import itertools
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.kube.objects import strip_type_meta, with_type_meta
from edgeproxy.kube.watchstream import RawEvent, WatchDecoder, WatchStreamError

POD = b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","resourceVersion":"5"}}'
BOOKMARK = b'{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"9"}}'
STATUS = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":410}'

STREAM = (
    b'{"type":"ADDED","object":' + POD + b"}\n"
    b'{"type":"MODIFIED","object":' + POD + b"}\n"
    b'{"type":"BOOKMARK","object":' + BOOKMARK + b"}\n"
    b'{"type":"DELETED","object":' + POD + b"}\n"
    b'{"type":"ERROR","object":' + STATUS + b"}\n"
)
EXPECTED = [
    RawEvent("ADDED", POD),
    RawEvent("MODIFIED", POD),
    RawEvent("BOOKMARK", BOOKMARK),
    RawEvent("DELETED", POD),
    RawEvent("ERROR", STATUS),
]


def decode_chunks(chunks: list[bytes], max_frame: int = 1 << 20) -> list[RawEvent]:
    decoder = WatchDecoder(max_frame)
    events: list[RawEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.eof()


def test_whole_stream_in_one_chunk() -> None:
    assert decode_chunks([STREAM]) == EXPECTED


def test_byte_by_byte() -> None:
    assert decode_chunks([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_events_come_out_as_soon_as_their_line_ends() -> None:
    decoder = WatchDecoder()
    first, rest = STREAM.split(b"\n", 1)
    assert decoder.feed(first) == []
    assert decoder.feed(b"\n" + rest[:10]) == [EXPECTED[0]]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
@settings(max_examples=200, deadline=None)
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert decode_chunks(chunks) == EXPECTED


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(STREAM.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(b"\n\n" + STREAM.replace(b"\n", b"\n\n"), id="blank-lines"),
        pytest.param(STREAM.replace(b"\n", b"\n  \r\n"), id="whitespace-lines"),
        pytest.param(STREAM.rstrip(b"\n"), id="no-final-newline"),
        pytest.param(STREAM.replace(b"\n", b"  \n"), id="trailing-spaces"),
    ],
)
def test_tolerated_framing(stream: bytes) -> None:
    assert decode_chunks([stream]) == EXPECTED
    assert decode_chunks([stream[i : i + 7] for i in range(0, len(stream), 7)]) == EXPECTED


def test_eof_with_a_trailing_frame_and_reuse() -> None:
    decoder = WatchDecoder()
    assert decoder.feed(b'{"type":"ADDED","object":' + POD + b"}") == []
    assert decoder.eof() == [RawEvent("ADDED", POD)]
    assert decoder.eof() == []  # the buffer was consumed


def test_eof_on_empty_and_blank_streams() -> None:
    assert WatchDecoder().eof() == []
    decoder = WatchDecoder()
    assert decoder.feed(b"\r\n  ") == []
    assert decoder.eof() == []


def test_eof_with_a_truncated_frame_is_an_error() -> None:
    decoder = WatchDecoder()
    decoder.feed(b'{"type":"ADDED","object":{"metadata":')
    with pytest.raises(WatchStreamError, match="malformed watch event"):
        decoder.eof()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"garbage", "malformed watch event"),
        (b"[1,2]", "malformed watch event"),
        (b'{"type":"ADDED"}', "malformed watch event"),  # no object
        (b'{"object":{}}', "malformed watch event"),  # no type
        (b'{"type":5,"object":{}}', "malformed watch event"),
        (b'{"type":"ADDED","object":{}', "malformed watch event"),
        (b'{"type":"SYNC","object":{}}', "unknown watch event type 'SYNC'"),
        (b'{"type":"added","object":{}}', "unknown watch event type 'added'"),
        (b'{"type":"ADDED","object":"x"}', "not a JSON object"),
        (b'{"type":"ADDED","object":[1]}', "not a JSON object"),
        (b'{"type":"ADDED","object":null}', "not a JSON object"),
        (b"<html>502 Bad Gateway</html>", "malformed watch event"),
    ],
)
def test_garbage_raises(line: bytes, message: str) -> None:
    with pytest.raises(WatchStreamError, match=message):
        WatchDecoder().feed(line + b"\n")
    with pytest.raises(WatchStreamError, match=message):
        decoder = WatchDecoder()
        decoder.feed(line)
        decoder.eof()


def test_error_keeps_its_cause_and_is_a_value_error() -> None:
    with pytest.raises(WatchStreamError) as err:
        WatchDecoder().feed(b"nope\n")
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value.__cause__, msgspec.DecodeError)


def test_garbage_after_good_events() -> None:
    decoder = WatchDecoder()
    assert decoder.feed(STREAM.split(b"\n", 1)[0] + b"\n") == [EXPECTED[0]]
    with pytest.raises(WatchStreamError):
        decoder.feed(b"not json\n")


def frame_of(size: int) -> bytes:
    """One ADDED frame line of exactly `size` bytes (without its newline)."""
    head = b'{"type":"ADDED","object":{"data":"'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_oversized_partial_frame() -> None:
    decoder = WatchDecoder(max_frame=100)
    assert decoder.feed(frame_of(100)[:100]) == []
    with pytest.raises(WatchStreamError, match="larger than 100 bytes"):
        decoder.feed(b"x")


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = WatchDecoder(max_frame=100)
    line = frame_of(100)
    assert decoder.feed(line[:60]) == []
    assert len(decoder.feed(line[60:] + b"\n")) == 1


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_oversized_frame_fails_whatever_the_chunking(chunk: int) -> None:
    """The limit is on a frame, so it must not depend on how the body was chunked."""
    stream = frame_of(150) + b"\n"
    decoder = WatchDecoder(max_frame=100)
    with pytest.raises(WatchStreamError, match="larger than 100 bytes"):
        for i in range(0, len(stream), chunk):
            decoder.feed(stream[i : i + chunk])


def test_default_limit_allows_big_objects() -> None:
    big = frame_of(2 * 1024 * 1024)
    events = decode_chunks([big[:1_000_000], big[1_000_000:] + b"\n"], max_frame=16 << 20)
    assert len(events) == 1 and len(events[0].object) > 2_000_000
    assert len(WatchDecoder().feed(big + b"\n")) == 1


# -- TypeMeta splicing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "typed"),
    [
        (b'{"metadata":{"name":"a"}}', b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a"}}'),
        (b"{}", b'{"kind":"Pod","apiVersion":"v1"}'),
        (
            b'{"metadata":{"name":"a"},"spec":{"kind":"x"}}',
            b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a"},"spec":{"kind":"x"}}',
        ),
    ],
)
def test_type_meta_round_trip(item: bytes, typed: bytes) -> None:
    assert with_type_meta(item, "Pod", "v1") == typed
    assert strip_type_meta(typed) == item
    assert with_type_meta(strip_type_meta(typed), "Pod", "v1") == typed


def test_with_type_meta_keeps_typed_objects() -> None:
    typed = b'{"kind":"Widget","apiVersion":"x.io/v1","metadata":{}}'
    assert with_type_meta(typed, "Pod", "v1") == typed


@pytest.mark.parametrize(
    "raw",
    [
        b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}',
        b'{ "kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a"} }',
        b'{"metadata":{"name":"a"},"kind":"Pod","apiVersion":"v1"}',
    ],
)
def test_strip_type_meta_other_layouts(raw: bytes) -> None:
    stripped = strip_type_meta(raw)
    assert json.loads(stripped) == {"metadata": {"name": "a"}}


def test_strip_type_meta_leaves_items_and_non_objects() -> None:
    item = b'{"metadata":{"name":"a"}}'
    assert strip_type_meta(item) == item
    assert strip_type_meta(b"[1]") == b"[1]"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in ("kind", "apiVersion")),
        _json_values,
        max_size=5,
    )
)
@settings(max_examples=200, deadline=None)
def test_type_meta_round_trip_property(obj: dict[str, object]) -> None:
    item = msgspec.json.encode(obj)
    typed = with_type_meta(item, "ConfigMap", "v1")
    decoded = json.loads(typed)
    assert decoded == {"kind": "ConfigMap", "apiVersion": "v1", **obj}
    assert list(decoded)[:2] == ["kind", "apiVersion"]
    assert strip_type_meta(typed) == item

"""ListSplitter: list items cut out while the body arrives, whatever the chunking."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.kube.liststream import ListSplitter

HEAD = '{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"42"},"items":'


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def pod(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{i}", "namespace": "ns", "labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}, {"port": 1}]}]},
    }


# A nested array whose objects start with the items' first key, and a string
# that holds the separator's text: neither ends an item.
TRICKY = {
    "metadata": {"name": "sts", "annotations": {"a": '},{"metadata":'}},
    "spec": {"volumeClaimTemplates": [{"metadata": {"name": "x"}}, {"metadata": {"name": "y"}}]},
}


def body(items: list[Any], head: str = HEAD, tail: str = "}\n") -> bytes:
    return (head + "[" + ",".join(compact(i) for i in items) + "]" + tail).encode()


def split(data: bytes, size: int) -> tuple[ListSplitter, list[bytes], bytes]:
    splitter = ListSplitter()
    items: list[bytes] = []
    for i in range(0, len(data), size):
        items += splitter.feed(data[i : i + size])
    return splitter, items, splitter.finish()


def all_items(items: list[bytes], rest: bytes) -> list[Any]:
    tail = msgspec.json.decode(rest)
    return [msgspec.json.decode(i) for i in items] + list(tail["items"] or [])


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1000, 1 << 20])
def test_items_come_out_in_order_whatever_the_chunks(size: int) -> None:
    objs = [pod(0), TRICKY, *(pod(i) for i in range(1, 50)), TRICKY]
    data = body(objs)
    splitter, items, rest = split(data, size)
    assert len(items) == len(objs) - 1  # the last one is known complete only at the end
    assert all_items(items, rest) == objs
    assert msgspec.json.decode(rest)["metadata"] == {"resourceVersion": "42"}
    assert b"".join(splitter.body_parts(items, rest)) == data


def test_each_item_is_its_exact_bytes() -> None:
    objs = [pod(i) for i in range(5)]
    _, items, _ = split(body(objs), 3)
    assert items == [compact(o).encode() for o in objs[:-1]]
    assert all(type(i) is bytes for i in items)


def test_buffer_stays_small() -> None:
    data = body([pod(i) for i in range(5000)])
    splitter = ListSplitter()
    for i in range(0, len(data), 65536):
        splitter.feed(data[i : i + 65536])
        assert len(splitter._buf) < 65536 + 300 * 1024
    assert splitter.items == 4999


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind":"PodList","items":[]}',
        b'{"kind":"PodList","items":null}',
        b'{"kind":"PodList","metadata":{}}',
        b'{"kind": "PodList", "items": [ {"a": 1}, {"a": 2} ]}',  # not compact: not split
        b'{"items":[{"a":1},{"a":2}],"kind":"PodList","metadata":{"resourceVersion":"3"}}',
        b'{"metadata":{"x":{"items":[{"a":1},{"a":2}]}},"items":[{"a":3},{"a":4}]}',
        b"not json at all",
        b"",
    ],
)
def test_other_layouts_come_back_whole(data: bytes) -> None:
    splitter, items, rest = split(data, 3)
    assert b"".join(splitter.body_parts(items, rest)) == data
    if items:  # split: what is left is still a complete list
        assert all_items(items, rest) == msgspec.json.decode(data)["items"]
    else:
        assert rest == data


def test_a_broken_item_is_left_for_the_final_decode() -> None:
    data = b'{"kind":"PodList","items":[{"a":1},{"a":[},{"a":3},{"a":4}]}'
    _, items, rest = split(data, 4)
    assert items == [b'{"a":1}']
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(rest)


def test_items_with_another_first_key_are_still_items() -> None:
    objs = [{"a": 1}, {"a": 2}, {"b": 3}] + [{"a": i} for i in range(4, 100)]
    splitter, items, rest = split(body(objs), 5)
    assert len(items) == len(objs) - 1  # cut where `},{"a":` is, whatever lies between
    assert all_items(items, rest) == objs
    assert b"".join(splitter.body_parts(items, rest)) == body(objs)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["metadata", "a", "b"]), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["metadata", "x"]), json_values, min_size=1), max_size=8
    ),
    st.integers(min_value=1, max_value=40),
)
def test_any_items_any_chunks(objs: list[dict[str, Any]], size: int) -> None:
    data = body(objs)
    splitter, items, rest = split(data, size)
    assert all_items(items, rest) == objs
    assert b"".join(splitter.body_parts(items, rest)) == data

"""Protobuf forms of cached objects: encoded once per object version, bounded by bytes."""

from __future__ import annotations

import json

from edgeproxy.cache.protoforms import ProtobufForms
from edgeproxy.kube.protobuf import decode_object, decode_watch_frames
from edgeproxy.kube.resources import BUILTIN

CONFIGMAPS = next(rt for rt in BUILTIN if rt.resource == "configmaps")


def _raw(name: str, value: str = "v") -> bytes:
    return json.dumps(
        {"metadata": {"name": name, "resourceVersion": "7"}, "data": {"k": value}}
    ).encode()


def test_an_object_version_is_encoded_once_and_a_new_version_again() -> None:
    forms = ProtobufForms()
    first = _raw("a")
    forms.message(CONFIGMAPS, first)
    forms.message(CONFIGMAPS, first)
    forms.message(CONFIGMAPS, bytes(first))  # a fresh copy of the same bytes (a relist)
    assert (forms.encoded, forms.hits) == (1, 2)
    forms.message(CONFIGMAPS, _raw("a", "changed"))
    assert forms.encoded == 2


def test_list_body_joins_item_messages() -> None:
    forms = ProtobufForms()
    body = forms.list_body(
        CONFIGMAPS, "9", [_raw("a"), _raw("b")], continue_token="t", remaining_item_count=3
    )
    decoded = decode_object(body)
    assert decoded["kind"] == "ConfigMapList"
    assert decoded["metadata"] == {"resourceVersion": "9", "continue": "t", "remainingItemCount": 3}
    assert [i["metadata"]["name"] for i in decoded["items"]] == ["a", "b"]


def test_a_watch_frame_is_converted_once_for_every_watcher() -> None:
    forms = ProtobufForms()
    obj = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "a"}, "data": {"k": "v"}}
    frame = b'{"type":"MODIFIED","object":' + json.dumps(obj).encode() + b"}\n"
    converted = [forms.frame(CONFIGMAPS, frame) for _ in range(50)]
    assert forms.encoded == 1
    assert all(c is converted[0] for c in converted)
    events, tail = decode_watch_frames(converted[0] + converted[0][:5])
    assert events == [("MODIFIED", obj)]
    assert tail == converted[0][:5]
    error = b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"Expired","code":410}}\n'
    [(kind, status)], _ = decode_watch_frames(forms.frame(CONFIGMAPS, error))
    assert (kind, status["kind"], status["code"]) == ("ERROR", "Status", 410)


def test_bounded_by_bytes() -> None:
    forms = ProtobufForms(max_bytes=4096)
    for i in range(200):
        forms.message(CONFIGMAPS, _raw(f"object-{i}"))
    assert forms.bytes <= 4096
    assert 0 < len(forms) < 200

"""The protobuf form of cached objects and watch frames, encoded once per version.

Clients that ask for protobuf (client-go's built-in clients: the kubelet,
kube-proxy, controllers) decode it several times cheaper than JSON. The
cache keeps objects as the JSON bytes upstream sent; this memo turns an
object's JSON into its protobuf message once and serves every later list,
get and watch of that object version from the result. It is keyed by the
JSON bytes themselves: a store's record and its watch frames are single
objects whose hash Python computes once, and a fresh copy of unchanged
bytes (a forwarded get, a relist) still finds its entry. Watch frames are
keyed the same way: the broadcaster builds one frame per event and form and
shares it between watchers, so every protobuf watcher of an event gets the
same converted frame.

Bounded by bytes (the JSON key and the protobuf value both count), least
recently used first out: `--max-protobuf-cache-bytes`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import msgspec

from edgeproxy.kube.protoencoder import (
    EncodeError,
    encode_message,
    envelope,
    list_body,
    watch_frame,
)
from edgeproxy.kube.protoschema import STATUS, message_for
from edgeproxy.kube.resources import ResourceType

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 32 * 1024 * 1024

_decode = msgspec.json.Decoder(dict[str, Any])


class ProtobufForms:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.encoded = 0

    def _get(self, key: tuple[str, bytes]) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return value

    def _put(self, key: tuple[str, bytes], value: bytes) -> None:
        self.encoded += 1
        size = len(key[1]) + len(value)
        if size > self.max_bytes // 4:
            return  # one huge object must not flush everything else
        self._entries[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes and self._entries:
            (_, old_key), old = self._entries.popitem(last=False)
            self.bytes -= len(old_key) + len(old)

    def message(self, rt: ResourceType, raw: bytes) -> bytes:
        """The protobuf message of one object (its JSON with or without kind/apiVersion).

        Raises EncodeError if the kind has no table or the object does not fit it.
        """
        name = message_for(rt.api_version, rt.kind)
        if name is None:
            raise EncodeError(f"no protobuf table for {rt.api_version}/{rt.kind}")
        key = (name, raw)
        found = self._get(key)
        if found is None:
            found = encode_message(name, _decode.decode(raw))
            self._put(key, found)
        return found

    def object_body(self, rt: ResourceType, raw: bytes) -> bytes:
        """A get's whole answer: magic, envelope and the object's message."""
        return envelope(rt.api_version, rt.kind, self.message(rt, raw))

    def list_body(
        self,
        rt: ResourceType,
        resource_version: str,
        raws: list[bytes],
        *,
        continue_token: str = "",
        remaining_item_count: int | None = None,
    ) -> bytes:
        """A list's whole answer, joined from the items' memoized messages."""
        return list_body(
            rt.api_version,
            rt.list_kind,
            resource_version,
            [self.message(rt, raw) for raw in raws],
            continue_token=continue_token,
            remaining_item_count=remaining_item_count,
        )

    def frame(self, rt: ResourceType, json_frame: bytes) -> bytes:
        """The protobuf watch frame for one JSON watch frame (a protobuf one passes)."""
        if not json_frame.startswith(b"{"):
            return json_frame
        key = ("frame", json_frame)
        found = self._get(key)
        if found is None:
            found = self._encode_frame(rt, json_frame)
            self._put(key, found)
        return found

    def _encode_frame(self, rt: ResourceType, json_frame: bytes) -> bytes:
        event = _decode.decode(json_frame)
        obj = event.get("object") or {}
        event_type = str(event.get("type", ""))
        if event_type == "ERROR" or obj.get("kind") == "Status":
            # kube-apiserver's Status is unversioned: v1 in every group.
            inner = envelope("v1", "Status", encode_message(STATUS, obj))
        else:
            name = message_for(rt.api_version, rt.kind)
            if name is None:
                raise EncodeError(f"no protobuf table for {rt.api_version}/{rt.kind}")
            inner = envelope(rt.api_version, rt.kind, encode_message(name, obj))
        return watch_frame(event_type, inner)

    def added_frame(self, rt: ResourceType, raw: bytes) -> bytes:
        """An initial ADDED frame for a stored object, from its memoized message."""
        inner = envelope(rt.api_version, rt.kind, self.message(rt, raw))
        return watch_frame("ADDED", inner)

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["DEFAULT_MAX_BYTES", "EncodeError", "ProtobufForms"]

"""List and watch wire encoding by joining pre-serialized bytes.

A list body is a fixed header, the items' raw bytes joined with commas and a
closing bracket; a watch event is `{"type":…,"object":…}` plus a newline
(k8s-api-semantics.md sec. 2.3 and 3.3). Nothing here decodes an item.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]

_json = msgspec.json.Encoder()

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


def list_body(
    list_kind: str,
    api_version: str,
    resource_version: str,
    items: Iterable[bytes],
    *,
    continue_token: str = "",
    remaining_item_count: int | None = None,
) -> bytes:
    """A `<Kind>List` body around already-encoded items."""
    meta: dict[str, object] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
        if remaining_item_count is not None:
            meta["remainingItemCount"] = remaining_item_count
    head = (
        b'{"kind":"'
        + list_kind.encode()
        + b'","apiVersion":"'
        + api_version.encode()
        + b'","metadata":'
        + _json.encode(meta)
        + b',"items":['
    )
    # One join over every part: a 10k-item list is copied once, not three times.
    parts = [head]
    for item in items:
        parts.append(item)
        parts.append(b",")
    if len(parts) > 1:
        parts.pop()
    parts.append(b"]}")
    return b"".join(parts)


def watch_event(event_type: EventType, obj: bytes) -> bytes:
    """One watch frame; `obj` must already carry kind and apiVersion."""
    return b'{"type":"' + event_type.encode() + b'","object":' + obj + b"}\n"


def bookmark(
    kind: str, api_version: str, resource_version: str, *, initial_end: bool = False
) -> bytes:
    """A BOOKMARK event: an empty object of the watched kind with only the RV.

    `initial_end` adds the watch-list end annotation (KEP-3157, sec. 3.8).
    """
    meta: dict[str, object] = {"resourceVersion": resource_version}
    if initial_end:
        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
    obj = {"kind": kind, "apiVersion": api_version, "metadata": meta}
    return watch_event("BOOKMARK", _json.encode(obj))

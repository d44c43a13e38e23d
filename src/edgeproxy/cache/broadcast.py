"""Watch fan-out: one change, encoded once, delivered to every matching watcher.

Each client watch is a `Watcher` with its own selectors and a bounded queue
of frames. A change is an `Event` holding the new and previous state; the
watcher applies the selector transition table (k8s-api-semantics.md sec.
3.6) and the frame bytes are built once per event and shared. A watcher
whose queue fills is closed: the client re-watches from its last RV, and the
proxy's memory stays bounded whatever clients do.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, with_type_meta
from edgeproxy.kube.wire import EventType, watch_event


class TypedKind(Protocol):
    """What a watch frame needs to name the objects' type (a ResourceType will do)."""

    @property
    def kind(self) -> str: ...

    @property
    def api_version(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TypeInfo:
    kind: str
    api_version: str


@dataclass(slots=True)
class Event:
    """One change. For DELETED, `obj` is the last state stamped with the deletion RV."""

    type: EventType
    rv: int
    obj: ObjectRecord
    prev: ObjectRecord | None
    # Part of a filtered view's re-filter: several events sharing one RV.
    batch: bool = False
    _frames: dict[str, bytes] = field(default_factory=dict)

    def frame(self, types: TypedKind, event_type: EventType, *, from_prev: bool = False) -> bytes:
        """The encoded watch frame, computed once per event and shared by watchers."""
        cache_key = event_type + ("/prev" if from_prev else "")
        frame = self._frames.get(cache_key)
        if frame is None:
            if from_prev:
                assert self.prev is not None
                frame = watch_event(event_type, restamp(types, self.prev, self.rv))
            else:
                frame = watch_event(
                    event_type, with_type_meta(self.obj.raw, types.kind, types.api_version)
                )
            self._frames[cache_key] = frame
        return frame


def restamp(types: TypedKind, record: ObjectRecord, rv: int) -> bytes:
    """An object's bytes with metadata.resourceVersion replaced (sec. 3.6 DELETED)."""
    obj = msgspec.json.decode(record.raw)
    obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return with_type_meta(msgspec.json.encode(obj), types.kind, types.api_version)


class Watcher:
    """A client watch: its selectors and a bounded queue of frames to send."""

    def __init__(
        self,
        types: TypedKind,
        namespace: str,
        labels: LabelSelector,
        fields: FieldSelector,
        max_pending: int,
        min_rv: int = 0,
    ) -> None:
        self.types = types
        self.namespace = namespace
        self._key_prefix = namespace + "/"
        self.labels = labels
        self.fields = fields
        # Watchers with equal selectors get the same frame for an event (`fan_out`).
        self.selector_key = (namespace, str(labels), str(fields))
        self.max_pending = max_pending
        # Events at or below this RV are already known to the client.
        self.min_rv = min_rv
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.close_reason = ""
        # Called when the queue overflows: the front ends the client's stream,
        # which may be stuck writing to a client that stopped reading.
        self.on_overflow: Callable[[], None] | None = None

    def matches(self, record: ObjectRecord) -> bool:
        # Runs per event per watcher: a key prefix and no field view unless asked for.
        if self.namespace and not record.key.startswith(self._key_prefix):
            return False
        if not self.labels.matches(record.labels):
            return False
        return self.fields.empty or self.fields.matches(record.fields)

    def frame_for(self, event: Event) -> bytes | None:
        """This watcher's frame for one event, if any."""
        return self.selected_frame(event) if self.wants(event) else None

    def wants(self, event: Event) -> bool:
        """Whether the event is newer than what the client already knows."""
        return event.rv > self.min_rv or (event.rv == self.min_rv and event.batch)

    def selected_frame(self, event: Event) -> bytes | None:
        """Apply the selector transition table (sec. 3.6) to one event."""
        if event.type == "ADDED":
            return event.frame(self.types, "ADDED") if self.matches(event.obj) else None
        if event.type == "DELETED":
            return event.frame(self.types, "DELETED") if self.matches(event.obj) else None
        new_match = self.matches(event.obj)
        old_match = event.prev is not None and self.matches(event.prev)
        if new_match:
            return event.frame(self.types, "MODIFIED" if old_match else "ADDED")
        if old_match:
            return event.frame(self.types, "DELETED", from_prev=True)
        return None

    def push(self, frame: bytes) -> None:
        if len(self.pending) >= self.max_pending:
            # kube-apiserver terminates watchers that fall too far behind; the
            # client re-watches from its last RV.
            self.close("watcher fell behind")
            if self.on_overflow is not None:
                self.on_overflow()
            return
        self.pending.append(frame)
        self.wake.set()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.wake.set()


def fan_out(watchers: set[Watcher], event: Event) -> None:
    """Offer one event to every watcher; drop the ones that closed.

    The selector decision is made once per distinct selector, not per watcher:
    clients of one scope mostly share theirs (100 informers with no selector
    cost one decision an event, not 100). Only the RV check is per watcher.
    """
    decided: dict[tuple[str, str, str], bytes | None] = {}
    for watcher in list(watchers):
        if not watcher.closed and watcher.wants(event):
            key = watcher.selector_key
            if key in decided:
                frame = decided[key]
            else:
                frame = decided[key] = watcher.selected_frame(event)
            if frame is not None:
                watcher.push(frame)
        if watcher.closed:
            watchers.discard(watcher)

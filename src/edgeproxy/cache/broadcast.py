"""Watch fan-out: one change, encoded once, delivered to every matching watcher.

Each client watch is a `Watcher` with its own selectors and a bounded queue
of frames. A change is an `Event` holding the new and previous state; the
watcher applies the selector transition table (k8s-api-semantics.md sec.
3.6) and the frame bytes are built once per event and shared. A watcher
whose queue fills is closed: the client re-watches from its last RV, and the
proxy's memory stays bounded whatever clients do.

Queues are bounded by bytes, per watcher and over all watchers (`WatchBudget`).
A frame queued for many watchers is one object, so the budget counts its bytes
once, however many queues hold it (`Frame.holders`): a burst shared by 500
healthy watchers costs its size once, while 500 stuck watchers cost what only
they keep alive (the frames nobody else still queues, and the batch each one
is stuck writing). Past the budget the watchers holding the most bytes are
disconnected first. All the accounting is a few integer updates per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.objects import ObjectRecord, with_type_meta
from edgeproxy.kube.wire import EventType, watch_event

log = logging.getLogger(__name__)


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


class Frame:
    """One encoded watch frame, shared by every watcher it is queued for.

    `holders` counts the queues holding it, so a `WatchBudget` counts its bytes
    once however many watchers queue it. Slotted: fan-out reads and bumps these
    fields once per watcher per event.
    """

    __slots__ = ("data", "holders", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.holders = 0


@dataclass(slots=True)
class Event:
    """One change. For DELETED, `obj` is the last state stamped with the deletion RV."""

    type: EventType
    rv: int
    obj: ObjectRecord
    prev: ObjectRecord | None
    # Part of a filtered view's re-filter: several events sharing one RV.
    batch: bool = False
    _frames: dict[str, Frame] = field(default_factory=dict)

    def frame(self, types: TypedKind, event_type: EventType, *, from_prev: bool = False) -> Frame:
        """The encoded watch frame, computed once per event and shared by watchers."""
        cache_key = event_type + ("/prev" if from_prev else "")
        frame = self._frames.get(cache_key)
        if frame is None:
            if from_prev:
                assert self.prev is not None
                data = watch_event(event_type, restamp(types, self.prev, self.rv))
            else:
                data = watch_event(
                    event_type, with_type_meta(self.obj.raw, types.kind, types.api_version)
                )
            frame = self._frames[cache_key] = Frame(data)
        return frame


def restamp(types: TypedKind, record: ObjectRecord, rv: int) -> bytes:
    """An object's bytes with metadata.resourceVersion replaced (sec. 3.6 DELETED)."""
    obj = msgspec.json.decode(record.raw)
    obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return with_type_meta(msgspec.json.encode(obj), types.kind, types.api_version)


class WatchBudget:
    """The bytes held for all watchers, the most they may hold together, and per watcher.

    Held: queued frames, each counted once however many watchers queue it, and
    the batches writers have taken to send and not yet seen sent (a copy per
    watcher once joined). `per_watcher` bounds what one watcher holds, each of
    its frames counted in full. A watcher past it is cut off unless it is back
    within it `grace` seconds later: changes are published in bursts (a
    journal commit, a relist after an outage) that a healthy client drains in
    milliseconds, while a client that stopped reading never does. The shared
    budget has no grace: it is what bounds memory meanwhile.
    """

    def __init__(self, max_bytes: int, per_watcher: int, grace: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self.per_watcher = per_watcher
        self.grace = grace
        self.bytes = 0
        # Watchers that may hold bytes: the candidates when the budget is exceeded.
        self.watchers: set[Watcher] = set()
        # Watchers disconnected past their own bound, and past the shared one.
        self.disconnected_slow = 0
        self.disconnected_over_budget = 0

    def add(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.max_bytes:
            self.shed()

    def enforce(self) -> bool:
        """Shed if over budget: after a fan-out has queued its frame everywhere.

        Whether it had to (some watchers were disconnected).
        """
        if self.bytes > self.max_bytes:
            self.shed()
            return True
        return False

    def shed(self) -> None:
        """Disconnect the watchers holding the most bytes until back under budget.

        A scan of all watchers, but each one disconnects a watcher: rare, and
        never on the fan-out path of a proxy within its budget.
        """
        while self.bytes > self.max_bytes and self.watchers:
            slowest = max(self.watchers, key=Watcher.held_bytes)
            held = slowest.held_bytes()
            if not held:
                return
            self.disconnected_over_budget += 1
            slowest.overflow(
                "watchers over their shared budget",
                f"all hold {self.bytes} bytes, over {self.max_bytes}; this one the most: {held}",
            )


# A selector not decided yet for this event (None means decided: no frame).
_UNDECIDED = Frame(b"")


class Wake:
    """`asyncio.Event` for the one task that writes a watcher's stream.

    Set once per event per watcher by fan-out and waited on once per write:
    without asyncio.Event's per-wait loop lookup and waiter list (5% of the
    proxy's fan-out CPU). Same methods; one waiter at a time.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


class Watcher:
    """A client watch: its selectors and a queue of frames to send, bounded in bytes."""

    def __init__(
        self,
        types: TypedKind,
        namespace: str,
        labels: LabelSelector,
        fields: FieldSelector,
        max_bytes: int,
        min_rv: int = 0,
        *,
        budget: WatchBudget | None = None,
    ) -> None:
        self.types = types
        self.namespace = namespace
        self._key_prefix = namespace + "/"
        self.labels = labels
        self.fields = fields
        # Watchers with equal selectors get the same frame for an event (`fan_out`).
        self.selector_key = (namespace, str(labels), str(fields))
        # Events at or below this RV are already known to the client.
        self.min_rv = min_rv
        self.pending: deque[Frame] = deque()
        self.max_bytes = max_bytes
        # max_bytes minus the bytes queued and being sent: one subtraction per frame.
        self.room = max_bytes
        self.sending = 0  # bytes of the batch taken by the writer, not yet sent
        self.budget = budget
        if budget is not None:
            budget.watchers.add(self)
        self._over: asyncio.TimerHandle | None = None  # past max_bytes: checked once more
        self.wake = Wake()
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
        frame = self.selected_frame(event) if self.wants(event) else None
        return None if frame is None else frame.data

    def wants(self, event: Event) -> bool:
        """Whether the event is newer than what the client already knows."""
        return event.rv > self.min_rv or (event.rv == self.min_rv and event.batch)

    def selected_frame(self, event: Event) -> Frame | None:
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

    def held_bytes(self) -> int:
        """Bytes queued plus the batch being sent."""
        return self.max_bytes - self.room

    def push(self, frame: Frame) -> bool:
        """Queue `frame`; False if that disconnected the watcher instead."""
        # The hot path of fan-out: a few integer updates, no scan. The shared
        # budget is enforced by the caller once the frame is queued for every
        # watcher: shedding half-way would pick whoever happened to be offered
        # the frame first, and free the frame only to count it again.
        room = self.room - frame.size
        if room < 0 and not self._in_grace():
            self._fell_behind(f"{frame.size} more would pass")
            return False
        self.room = room
        self.pending.append(frame)
        holders = frame.holders
        frame.holders = holders + 1
        if not holders and self.budget is not None:
            self.budget.bytes += frame.size
        self.wake.set()
        return True

    def _in_grace(self) -> bool:
        """Past its bound: tolerated until the budget's grace is over (then checked)."""
        budget = self.budget
        if budget is None or budget.grace <= 0:
            return False
        if self._over is None:
            loop = asyncio.get_running_loop()
            self._over = loop.call_later(budget.grace, self._grace_over)
        return True

    def _grace_over(self) -> None:
        self._over = None
        if self.room < 0 and not self.closed:
            self._fell_behind("a grace period after it passed")

    def _fell_behind(self, why: str) -> None:
        # kube-apiserver terminates watchers that fall too far behind; the
        # client re-watches from its last RV.
        if self.budget is not None:
            self.budget.disconnected_slow += 1
        self.overflow(
            "watcher fell behind",
            f"{len(self.pending)} frames, {self.held_bytes()} bytes queued, {why} "
            f"its {self.max_bytes}",
        )

    def take(self, limit: int) -> list[bytes]:
        """Queued frames to write now: at least one, about `limit` bytes.

        Until `sent()` they still count against this watcher's bound, and in
        the budget as a copy of their own (the joined batch the connection holds).
        """
        pending = self.pending
        batch: list[bytes] = []
        size = released = 0
        while pending and size < limit:
            frame = pending.popleft()
            batch.append(frame.data)
            size += frame.size
            frame.holders -= 1
            if not frame.holders:
                released += frame.size
        self.sending += size
        if self.budget is not None:
            self.budget.bytes -= released
            self.budget.add(size)
        return batch

    def sent(self) -> None:
        """The batch from `take()` was written (or failed): it holds nothing now."""
        self.room += self.sending
        if self.budget is not None:
            self.budget.bytes -= self.sending
        self.sending = 0

    def release(self) -> None:
        """Drop whatever is still queued (the stream ended or overflowed)."""
        released = 0
        for frame in self.pending:
            self.room += frame.size
            frame.holders -= 1
            if not frame.holders:
                released += frame.size
        self.pending.clear()
        if self.budget is not None:
            self.budget.bytes -= released

    def finish(self) -> None:
        """The stream is over: nothing is held for it any more (idempotent)."""
        self.close("stream ended")
        self.release()
        self.sent()
        self._unregister()

    def overflow(self, reason: str, detail: str) -> None:
        """Disconnect: queued frames are dropped and the client's stream is cut."""
        log.info("disconnecting a watch of %s: %s (%s)", self.types.kind, reason, detail)
        self.close(reason)
        self.release()
        self._unregister()
        if self.on_overflow is not None:
            self.on_overflow()

    def _unregister(self) -> None:
        if self.budget is not None:
            self.budget.watchers.discard(self)
        if self._over is not None:
            self._over.cancel()
            self._over = None

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
    The common case of `Watcher.push` (room left, frame already counted in the
    budget) is inlined: a method call per watcher per event was 9% of fan-out.
    Nothing in the loop adds to or removes from `watchers` (an overflow only
    closes its watcher), so the set is walked as is, not copied per event.
    """
    decided: dict[tuple[str, str, str], Frame | None] = {}
    budgets: set[WatchBudget] = set()
    closed: list[Watcher] = []
    rv, batch = event.rv, event.batch
    for watcher in watchers:
        if watcher.closed:
            closed.append(watcher)
            continue
        min_rv = watcher.min_rv
        if rv > min_rv or (rv == min_rv and batch):  # Watcher.wants, inlined
            key = watcher.selector_key
            frame = decided.get(key, _UNDECIDED)
            if frame is _UNDECIDED:
                frame = decided[key] = watcher.selected_frame(event)
            if frame is not None:
                room = watcher.room - frame.size
                if room >= 0 and frame.holders:
                    watcher.room = room
                    watcher.pending.append(frame)
                    frame.holders += 1
                    wake = watcher.wake
                    if not wake._set:  # Wake.set, inlined for the common case
                        wake.set()
                else:
                    if not watcher.push(frame):
                        closed.append(watcher)
                    if watcher.budget is not None:
                        budgets.add(watcher.budget)
    # The first watcher offered a frame counts it in the budget (Watcher.push):
    # that is every event, so the watchers are scanned again only after a shedding.
    if any([budget.enforce() for budget in budgets]):
        closed = [w for w in watchers if w.closed]
    for watcher in closed:
        watchers.discard(watcher)

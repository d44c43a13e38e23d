"""A sans-IO decoder for kube-apiserver's JSON watch stream.

`feed(bytes) -> events`: the caller reads the HTTP body however it likes and
hands chunks in; complete newline-terminated frames come out as
(type, raw object bytes) without decoding the object (k8s-api-semantics.md
sec. 3.3). A frame that is not a watch event, or an over-long line, raises
`WatchStreamError` so the caller can drop the stream and resume from its
last RV instead of applying garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

# A single event larger than this is treated as a broken stream (kube's own
# limit for an object is ~1.5 MiB in etcd; leave room for huge CRs).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


class WatchStreamError(ValueError):
    """The upstream watch stream is not a valid sequence of events."""


class _Frame(msgspec.Struct):
    type: str
    object: msgspec.Raw


@dataclass(frozen=True, slots=True)
class RawEvent:
    type: str
    object: bytes


_decoder = msgspec.json.Decoder(_Frame)


class WatchDecoder:
    """Splits a chunked watch body into events."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[RawEvent]:
        self._buffer += data
        events: list[RawEvent] = []
        start = 0
        buf = self._buffer
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end - start > self._max_frame:  # same limit whatever the chunking
                raise WatchStreamError(f"watch event larger than {self._max_frame} bytes")
            line = bytes(buf[start:end]).strip()
            start = end + 1
            if line:
                events.append(self._decode(line))
        if start:
            del buf[:start]
        if len(buf) > self._max_frame:
            raise WatchStreamError(f"watch event larger than {self._max_frame} bytes")
        return events

    def eof(self) -> list[RawEvent]:
        """End of stream: a final frame without a newline is still an event."""
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        if not rest:
            return []
        return [self._decode(rest)]

    @staticmethod
    def _decode(line: bytes) -> RawEvent:
        try:
            frame = _decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise WatchStreamError(f"malformed watch event: {exc}") from exc
        if frame.type not in _EVENT_TYPES:
            raise WatchStreamError(f"unknown watch event type {frame.type!r}")
        obj = bytes(frame.object)
        if not obj.startswith(b"{"):
            raise WatchStreamError("watch event object is not a JSON object")
        return RawEvent(frame.type, obj)

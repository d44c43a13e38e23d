"""Encode JSON-shaped objects as Kubernetes protobuf, as kube-apiserver does.

Why: client-go asks for `application/vnd.kubernetes.protobuf` for built-in
kinds, and decoding protobuf costs those clients several times less CPU than
JSON. The proxy keeps objects as the JSON bytes upstream sent; this module
turns one such object into the bytes kube-apiserver's protobuf serializer
would have written, so a protobuf client decodes exactly the same Go object.
It is pure (no I/O) and driven by the generated tables in `kube.protoschema`;
callers memoize the result per object version.

Wire rules followed (gogo's generated marshallers, apimachinery's protobuf
serializer): the `k8s\\x00` magic, then a `runtime.Unknown` envelope
{typeMeta{apiVersion, kind}, raw, contentEncoding "", contentType ""};
fields in ascending number order; non-pointer scalars and structs always
written (their zero too), pointers only when set; repeated numbers unpacked;
map entries sorted by key; metav1.Time as {seconds, nanos} (zero time: an
empty message), MicroTime with microseconds, Duration as nanoseconds,
Quantity as its string, IntOrString as {type, intVal, strVal}, RawExtension
and FieldsV1 as their raw JSON bytes, []byte as the base64-decoded bytes.
A watch frame is a 4-byte big-endian length and a bare metav1.WatchEvent
(no magic, no envelope) whose object is the object's own enveloped bytes.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from edgeproxy.kube.goduration import parse_duration
from edgeproxy.kube.negotiation import JSON, PROTOBUF, negotiate
from edgeproxy.kube.protoschema import (
    DURATION,
    FIELDS_V1,
    INT_OR_STRING,
    LIST_META,
    MICRO_TIME,
    QUANTITY,
    RAW_EXTENSION,
    SCHEMA,
    STATUS,
    TIME,
    WRAPPERS,
    Field,
    message_for,
)
from edgeproxy.kube.status import StatusError

MAGIC: Final = b"k8s\x00"
_MASK64: Final = (1 << 64) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class EncodeError(ValueError):
    """The object does not fit its kind's table (a wrong type, a bad time)."""


def varint(n: int) -> bytes:
    """A protobuf varint; negative numbers as Go writes them (10 bytes)."""
    n &= _MASK64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    """Field `number` (wire type 2) holding `data`."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    """The magic and the runtime.Unknown envelope around a message."""
    type_meta = length_delimited(1, api_version.encode()) + length_delimited(2, kind.encode())
    return b"".join(
        (
            MAGIC,
            length_delimited(1, type_meta),
            length_delimited(2, raw),
            b"\x1a\x00",  # contentEncoding ""
            b"\x22\x00",  # contentType ""
        )
    )


def can_encode(api_version: str, kind: str) -> bool:
    """Whether there is a table for this kind (built-in kinds; CRDs have none)."""
    return message_for(api_version, kind) is not None


def encode_object(obj: dict[str, Any]) -> bytes:
    """An object's full protobuf answer body (magic + envelope).

    Raises EncodeError if its kind has no table or it does not fit it.
    """
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    message = message_for(str(api_version), str(kind))
    if message is None:
        raise EncodeError(f"no protobuf table for {api_version}/{kind}")
    return envelope(api_version, kind, encode_message(message, obj))


def encode_message(message: str, obj: dict[str, Any]) -> bytes:
    """The fields of one message, from its JSON form (unknown keys ignored)."""
    try:
        return _message(message, obj)
    except (TypeError, ValueError, AttributeError, KeyError) as err:
        if isinstance(err, EncodeError):
            raise
        raise EncodeError(f"{message}: {err}") from err


def status_body(status_json: bytes) -> bytes:
    """A metav1.Status (its JSON form) as kube-apiserver answers it to protobuf clients."""
    return envelope("v1", "Status", encode_message(STATUS, json.loads(status_json)))


def negotiated_status(status_json: bytes, accept: str | None) -> tuple[bytes, str]:
    """A failed request's Status body and Content-Type, as kube-apiserver negotiates it.

    Status is a built-in kind: a client whose first acceptable clause is
    protobuf (client-go's typed clients, a protobuf-only client's 406) gets
    it in protobuf; everyone else, and anything unacceptable, gets JSON.
    """
    if accept and PROTOBUF in accept:
        try:
            if negotiate(accept, target="object", protobuf=True).form == "protobuf":
                return status_body(status_json), PROTOBUF
        except (StatusError, EncodeError, ValueError):
            pass
    return status_json, JSON


def list_body(
    api_version: str,
    list_kind: str,
    resource_version: str,
    items: Iterable[bytes],
    *,
    continue_token: str = "",
    remaining_item_count: int | None = None,
) -> bytes:
    """A `<Kind>List` answer around already-encoded item messages, joined once.

    A list message is {1 metadata ListMeta, 2 items repeated}: each item is a
    tag, a varint length and the item's own message bytes.
    """
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
        if remaining_item_count is not None:
            meta["remainingItemCount"] = remaining_item_count
    parts = [length_delimited(1, _message(LIST_META, meta))]
    size = len(parts[0])
    for item in items:
        head = b"\x12" + varint(len(item))
        parts.append(head)
        parts.append(item)
        size += len(head) + len(item)
    type_meta = length_delimited(1, api_version.encode()) + length_delimited(2, list_kind.encode())
    head = MAGIC + length_delimited(1, type_meta) + b"\x12" + varint(size)
    return b"".join([head, *parts, b"\x1a\x00\x22\x00"])


def watch_frame(event_type: str, enveloped_object: bytes) -> bytes:
    """One protobuf watch frame: a 4-byte big-endian length and a metav1.WatchEvent.

    The stream serializer writes the event raw (no magic, no envelope: it is
    apimachinery's protobuf RawSerializer); the object inside is enveloped.
    """
    event = length_delimited(1, event_type.encode()) + length_delimited(
        2, length_delimited(1, enveloped_object)
    )
    return len(event).to_bytes(4, "big") + event


# -- messages ------------------------------------------------------------------


def _message(message: str, obj: Any) -> bytes:
    if not isinstance(obj, dict):
        raise EncodeError(f"{message} must be a JSON object, not {type(obj).__name__}")
    out: list[bytes] = []
    for field in SCHEMA[message].values():
        if field.label == "inline":
            out.append(length_delimited(field.number, _message(field.type, obj)))
            continue
        value = obj.get(field.name)
        if field.label == "rep":
            for item in value or ():
                out.append(_one(field, field.number, item))
        elif field.label == "map":
            mapping: dict[str, Any] = value or {}
            for key in sorted(mapping):
                entry = length_delimited(1, key.encode())
                item = mapping[key]
                if item is not None or field.type not in ("bytes", RAW_EXTENSION):
                    entry += _one(field, 2, item)
                out.append(length_delimited(field.number, entry))
        elif value is not None:
            out.append(_one(field, field.number, value))
        elif not field.pointer:
            zero = _zero(field)
            if zero is not None:
                out.append(zero)
    return b"".join(out)


def _zero(field: Field) -> bytes | None:
    """What Go writes for a non-pointer field the JSON form left out."""
    typ = field.type
    if typ in ("bytes", "json"):
        return None  # a nil slice is not written
    if typ in _SCALAR_ZERO:
        return varint(field.number << 3 | _SCALAR_ZERO[typ][0]) + _SCALAR_ZERO[typ][1]
    if typ in (RAW_EXTENSION, FIELDS_V1):
        return length_delimited(field.number, b"")
    if typ == QUANTITY:
        return length_delimited(field.number, length_delimited(1, b"0"))
    if typ in WRAPPERS:
        return length_delimited(field.number, b"")
    return _one(field, field.number, {} if typ not in _SPECIAL else None)


_SCALAR_ZERO: Final[dict[str, tuple[int, bytes]]] = {
    "string": (2, b"\x00"),
    "bool": (0, b"\x00"),
    "int32": (0, b"\x00"),
    "int64": (0, b"\x00"),
    "double": (1, b"\x00" * 8),
}


def _one(field: Field, number: int, value: Any) -> bytes:
    typ = field.type
    if typ == "string":
        if not isinstance(value, str):
            raise EncodeError(f"{field.name} must be a string")
        return length_delimited(number, value.encode())
    if typ in ("bool", "int32", "int64"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise EncodeError(f"{field.name} must be a {typ}")
        return varint(number << 3) + varint(int(value))
    if typ == "bytes":
        return length_delimited(number, base64.b64decode(value or ""))
    if typ == "double":
        return varint(number << 3 | 1) + struct.pack("<d", float(value))
    if typ == "json":
        return length_delimited(number, _compact_json(value))
    special = _SPECIAL.get(typ)
    if special is not None:
        return length_delimited(number, special(value))
    if typ in WRAPPERS:
        inner = SCHEMA[typ][1]
        return length_delimited(number, b"".join(_one(inner, 1, item) for item in value or ()))
    return length_delimited(number, _message(typ, value if value is not None else {}))


def _compact_json(value: Any) -> bytes:
    # Go's encoding/json: compact, non-ASCII kept, <>& escaped.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _timestamp(micro: bool) -> Callable[[Any], bytes]:
    def encode(value: Any) -> bytes:
        if value is None or value == "":
            return b""  # the zero time marshals as an empty message
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as err:
            raise EncodeError(f"{value!r} is not an RFC 3339 time") from err
        if moment.tzinfo is None:
            raise EncodeError(f"{value!r} has no time zone")
        seconds = (moment - _EPOCH) // timedelta(seconds=1)
        # metav1.Time has whole seconds in JSON and protobuf alike.
        nanos = moment.microsecond * 1000 if micro else 0
        return b"\x08" + varint(seconds) + b"\x10" + varint(nanos)

    return encode


def _quantity(value: Any) -> bytes:
    if not isinstance(value, str | int | float):
        raise EncodeError(f"quantity {value!r} is not a string or number")
    text = value if isinstance(value, str) else json.dumps(value)
    return length_delimited(1, text.encode())


def _int_or_string(value: Any) -> bytes:
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EncodeError(f"IntOrString {value!r} is neither an int nor a string")
    if isinstance(value, int):
        return b"\x08\x00\x10" + varint(value) + b"\x1a\x00"
    return b"\x08\x01\x10\x00" + length_delimited(3, value.encode())


def _duration(value: Any) -> bytes:
    return b"\x08" + varint(parse_duration(str(value)) if value is not None else 0)


def _raw(value: Any) -> bytes:
    return b"" if value is None else length_delimited(1, _compact_json(value))


_SPECIAL: Final[dict[str, Callable[[Any], bytes]]] = {
    TIME: _timestamp(micro=False),
    MICRO_TIME: _timestamp(micro=True),
    DURATION: _duration,
    QUANTITY: _quantity,
    INT_OR_STRING: _int_or_string,
    RAW_EXTENSION: _raw,
    FIELDS_V1: _raw,
}

__all__ = [
    "MAGIC",
    "EncodeError",
    "can_encode",
    "encode_message",
    "encode_object",
    "envelope",
    "length_delimited",
    "list_body",
    "negotiated_status",
    "status_body",
    "varint",
    "watch_frame",
]

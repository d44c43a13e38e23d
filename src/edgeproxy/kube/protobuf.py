"""Decode Kubernetes protobuf request bodies into their JSON-shaped dicts.

kubectl >= 1.31 sends the bodies of typed create/update calls for built-in
kinds (`kubectl create configmap|secret|namespace|...`) as
`application/vnd.kubernetes.protobuf`, and kube-apiserver accepts them. The
simulator does too: it turns the body into the same dict the JSON body would
have given and processes that as usual.

The wire format is the `k8s\\x00` magic followed by a `runtime.Unknown`
envelope {typeMeta, raw, contentEncoding, contentType}; `raw` is the object's
message, decoded here by a small generic reader driven by the field tables in
`kube.protoschema` (no protobuf runtime). See
https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding

Errors: a kind or field this server has no table for is 415 (never silently
dropped; the client should send JSON instead); truncated or garbled input is
400. Nothing else escapes `decode_object`.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from edgeproxy.kube.goduration import format_duration
from edgeproxy.kube.protoschema import (
    DURATION,
    FIELDS_V1,
    INT_OR_STRING,
    MICRO_TIME,
    QUANTITY,
    RAW_EXTENSION,
    SCALARS,
    SCHEMA,
    TIME,
    TYPE_META,
    WRAPPERS,
    Field,
    message_for,
)
from edgeproxy.kube.status import bad_request, unsupported_media_type

MAGIC: Final = b"k8s\x00"
CONTENT_TYPE: Final = "application/vnd.kubernetes.protobuf"

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_OF: Final[dict[str, int]] = {
    "bool": _VARINT,
    "int32": _VARINT,
    "int64": _VARINT,
    "double": _FIXED64,
}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# A field as read off the wire: (number, wire type, int value or byte span).
_Raw = tuple[int, int, int | bytes]


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a protobuf-encoded object into its JSON form (kind, apiVersion first).

    Raises StatusError: 415 for kinds/fields without a table, 400 for bad bytes.
    """
    if not body.startswith(MAGIC):
        raise bad_request("protobuf body does not start with the k8s\\x00 magic prefix")
    api_version = kind = ""
    raw = b""
    for number, wire, value in _fields(body[len(MAGIC) :], "runtime.Unknown"):
        if number == 1:
            meta = _decode(_span(value, wire, "runtime.Unknown", 1), TYPE_META, "")
            api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
        elif number == 2:
            raw = _span(value, wire, "runtime.Unknown", 2)
        elif number in (3, 4):
            text = _scalar("string", wire, value, "runtime.Unknown", number)
            if number == 3 and text:
                raise unsupported_media_type(
                    f"protobuf contentEncoding {text!r} is not supported; send JSON instead"
                )
            if number == 4 and text not in ("", CONTENT_TYPE):
                raise unsupported_media_type(
                    f"protobuf envelope contentType {text!r} is not supported; send JSON instead"
                )
        else:
            raise bad_request(f"runtime.Unknown has no field {number}")
    if not kind:
        raise bad_request("protobuf envelope has no typeMeta.kind")
    message = message_for(api_version, kind)
    if message is None:
        raise unsupported_media_type(
            f"this server cannot decode {api_version}/{kind} from protobuf; "
            "send it as application/json instead"
        )
    obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    obj.update(_decode(raw, message, kind))
    return obj


def decode_watch_frames(stream: bytes) -> tuple[list[tuple[str, dict[str, Any]]], bytes]:
    """Split a protobuf watch stream into (type, object) events and the unread tail.

    Each frame is a 4-byte big-endian length and a bare metav1.WatchEvent (no
    magic, no envelope) whose object is an enveloped object.
    """
    events: list[tuple[str, dict[str, Any]]] = []
    pos = 0
    while pos + 4 <= len(stream):
        size = int.from_bytes(stream[pos : pos + 4], "big")
        if pos + 4 + size > len(stream):
            break
        raw = stream[pos + 4 : pos + 4 + size]
        pos += 4 + size
        event_type, obj = "", b""
        for number, wire, value in _fields(raw, "WatchEvent"):
            if number == 1:
                event_type = _scalar("string", wire, value, "WatchEvent", 1)
            elif number == 2:
                for inner, inner_wire, inner_value in _fields(
                    _span(value, wire, "WatchEvent", 2), "RawExtension"
                ):
                    if inner == 1:
                        obj = _span(inner_value, inner_wire, "RawExtension", 1)
        events.append((event_type, decode_object(obj)))
    return events, stream[pos:]


# -- the wire format -------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(buf):
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> 64:
                raise bad_request("protobuf varint overflows 64 bits")
            return result, pos
        shift += 7
        if shift > 63:
            raise bad_request("protobuf varint is longer than 10 bytes")
    raise bad_request("protobuf body is truncated (in a varint)")


def _fields(buf: bytes, message: str) -> Iterator[_Raw]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise bad_request(f"protobuf field number 0 in {message}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(buf):
                raise bad_request(f"protobuf body is truncated (in {message})")
            yield number, wire, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise bad_request(f"protobuf body is truncated (in {message})")
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:
            raise bad_request(f"protobuf wire type {wire} is not valid (in {message})")


def _span(value: int | bytes, wire: int, message: str, number: int) -> bytes:
    if wire != _LEN or not isinstance(value, bytes):
        raise bad_request(f"field {number} of {message} must be length-delimited")
    return value


def _scalar(typ: str, wire: int, value: int | bytes, message: str, number: int) -> Any:
    if typ in ("string", "bytes", "json"):
        data = _span(value, wire, message, number)
        if typ == "bytes":
            return base64.b64encode(data).decode("ascii")
        try:
            text = data.decode("utf-8")
            return json.loads(text) if typ == "json" else text
        except ValueError as err:
            raise bad_request(f"field {number} of {message} is not valid {typ}") from err
    if wire != _WIRE_OF[typ] or not isinstance(value, int):
        raise bad_request(f"field {number} of {message} has wire type {wire}, not {typ}")
    if typ == "bool":
        return value != 0
    if typ == "double":
        return struct.unpack("<d", value.to_bytes(8, "little"))[0]
    bits = 32 if typ == "int32" else 64  # Go truncates a varint to the field's width
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# -- messages ----------------------------------------------------------------


def _decode(buf: bytes, message: str, kind: str) -> dict[str, Any]:
    schema = SCHEMA[message]
    out: dict[str, Any] = {}
    for number, wire, value in _fields(buf, message):
        field = schema.get(number)
        if field is None:
            raise unsupported_media_type(
                f"protobuf field {number} of {message}"
                + (f" (in a {kind})" if kind and kind != message else "")
                + " is not supported by this server; send the object as application/json"
            )
        if field.label == "map":
            key, item = _map_entry(_span(value, wire, message, number), field, message, kind)
            out.setdefault(field.name, {})[key] = item
        elif field.label == "rep":
            items = out.setdefault(field.name, [])
            if wire == _LEN and field.type in _WIRE_OF:  # packed repeated numbers
                packed = _span(value, wire, message, number)
                pos = 0
                while pos < len(packed):
                    if field.type == "double":
                        chunk = packed[pos : pos + 8]
                        if len(chunk) < 8:
                            raise bad_request(f"packed doubles truncated in {message}")
                        item, pos = int.from_bytes(chunk, "little"), pos + 8
                        items.append(_scalar("double", _FIXED64, item, message, number))
                    else:
                        item, pos = _varint(packed, pos)
                        items.append(_scalar(field.type, _VARINT, item, message, number))
            else:
                items.append(_value(field, wire, value, message, number, kind))
        elif field.label == "inline":
            out.update(_decode(_span(value, wire, message, number), field.type, kind))
        else:
            item = _value(field, wire, value, message, number, kind)
            previous = out.get(field.name)
            if isinstance(previous, dict) and isinstance(item, dict):
                previous.update(item)  # a repeated sub-message merges, as in Go
            elif field.type in SCALARS and not field.keep_zero and item in ("", 0):
                out.pop(field.name, None)  # Go always writes these; JSON omits them
            elif field.omitzero and item in (None, {}, [], ""):
                out.pop(field.name, None)  # omitzero: JSON leaves the zero struct out
            else:
                out[field.name] = item
    for field in _NULLABLE.get(message, ()):
        if field.name not in out:
            out[field.name] = None  # a nil slice or map without omitempty is JSON null
    return out


_NULLABLE: Final[dict[str, tuple[Field, ...]]] = {
    message: nullable
    for message, fields in SCHEMA.items()
    if (
        nullable := tuple(
            f
            for f in fields.values()
            if f.keep_zero
            and not f.pointer
            and (f.label in ("rep", "map") or (f.label == "one" and f.type in ("bytes", "json")))
        )
    )
}


def _value(
    field: Field, wire: int, value: int | bytes, message: str, number: int, kind: str
) -> Any:
    if field.type in SCALARS:
        return _scalar(field.type, wire, value, message, number)
    decoded = _decode(_span(value, wire, message, number), field.type, kind)
    if field.type in WRAPPERS:
        return decoded.get("items", [])
    convert = _CONVERTERS.get(field.type)
    return convert(decoded) if convert else decoded


def _map_entry(buf: bytes, field: Field, message: str, kind: str) -> tuple[str, Any]:
    key: str = ""
    item: Any = None
    entry = f"{message}.{field.name} entry"
    for number, wire, value in _fields(buf, entry):
        if number == 1:
            key = _scalar("string", wire, value, entry, 1)
        elif number == 2:
            item = _value(field, wire, value, entry, 2, kind)
        else:
            raise bad_request(f"protobuf map entry has field {number} (in {message})")
    if item is None:  # an absent value is the type's zero value
        if field.type in SCALARS:
            item = _ZERO.get(field.type, "")
        elif field.type in WRAPPERS:
            item = []
        else:
            convert = _CONVERTERS.get(field.type)
            item = convert({}) if convert else {}
    return key, item


_ZERO: Final[dict[str, Any]] = {"bool": False, "int32": 0, "int64": 0, "double": 0.0}


# -- well-known messages with a JSON form of their own ---------------------


def _time(micro: bool) -> Callable[[dict[str, Any]], str | None]:
    def convert(ts: dict[str, Any]) -> str | None:
        if not ts:  # metav1.Time marshals its zero value as an empty message: JSON null
            return None
        nanos = ts.get("nanos", 0)
        if not 0 <= nanos < 1_000_000_000:
            raise bad_request(f"timestamp nanos {nanos} out of range")
        try:
            moment = _EPOCH + timedelta(seconds=ts.get("seconds", 0), microseconds=nanos // 1000)
        except OverflowError as err:
            raise bad_request("timestamp out of range") from err
        # Formatted by hand: strftime does not zero-pad years before 1000 on glibc.
        fraction = f".{moment.microsecond:06d}" if micro else ""
        return (
            f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}Z"
        )

    return convert


def _int_or_string(value: dict[str, Any]) -> int | str:
    kind = value.get("type", 0)
    if kind == 0:
        return int(value.get("intVal", 0))
    if kind == 1:
        return str(value.get("strVal", ""))
    raise bad_request(f"IntOrString type {kind} is neither 0 (int) nor 1 (string)")


_CONVERTERS: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {
    # metav1.Time is RFC 3339 in whole seconds, MicroTime keeps microseconds.
    TIME: _time(micro=False),
    MICRO_TIME: _time(micro=True),
    DURATION: lambda d: format_duration(int(d.get("duration", 0))),
    QUANTITY: lambda q: str(q.get("string", "0")),
    INT_OR_STRING: _int_or_string,
    FIELDS_V1: lambda f: f.get("Raw", {}),
    RAW_EXTENSION: lambda r: r.get("raw"),
}

__all__ = ["CONTENT_TYPE", "MAGIC", "decode_object", "decode_watch_frames"]

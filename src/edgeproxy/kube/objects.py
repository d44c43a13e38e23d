"""Object views: the few parsed fields of a Kubernetes object, next to its raw bytes.

Objects are kept as raw JSON bytes; only `metadata` and the fields that
field selectors compare are decoded, with msgspec Structs that skip every
other key (STYLE.md, "msgspec"). `ObjectRecord` is the unit both the
simulator's store and the proxy's cache hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec

from edgeproxy.kube.resources import ResourceType


class OwnerRef(msgspec.Struct, frozen=True):
    uid: str = ""


class MetaView(msgspec.Struct):
    """The metadata fields the project reads; all others are skipped."""

    name: str = ""
    namespace: str = ""
    resourceVersion: str = ""
    uid: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


# Field labels whose Go type is bool: rendered "true"/"false", absent = "false".
_BOOL_PATHS = frozenset({"spec.hostNetwork", "spec.unschedulable"})


def _render(path: str, value: Any) -> str:
    if value is None:
        return "false" if path in _BOOL_PATHS else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # status.podIPs: [{"ip": ...}, ...]
        return ",".join(str(v.get("ip", "")) if isinstance(v, dict) else str(v) for v in value)
    return str(value)


@cache
def _view_type(rt: ResourceType) -> type[msgspec.Struct]:
    """A Struct that decodes metadata plus exactly the selectable fields of `rt`."""
    tree: dict[str, Any] = {}
    for path in rt.extra_fields.values():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None

    def build(name: str, node: dict[str, Any], top: bool) -> type[msgspec.Struct]:
        fields: list[tuple[str, Any, Any]] = []
        if top:
            fields.append(("metadata", MetaView, msgspec.field(default_factory=MetaView)))
        for key, sub in node.items():
            kind = Any if sub is None else build(f"{name}_{key}", sub, False) | None
            fields.append((key, kind, None))
        return msgspec.defstruct(name, fields)

    return build(f"{rt.kind}View", tree, True)


@cache
def _decoder(rt: ResourceType) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(_view_type(rt))


def _lookup(view: Any, path: str) -> Any:
    node = view
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """One object: identity, selector inputs, and its JSON in list-item form.

    `raw` carries no kind/apiVersion (built-in list items omit them, sec. 2.3);
    `with_type_meta` adds them back for gets and watch events.
    """

    key: str
    namespace: str
    name: str
    uid: str
    rv: int
    labels: Mapping[str, str]
    fields: Mapping[str, str]
    raw: bytes


def object_key(namespace: str, name: str) -> str:
    """The etcd-like key inside one resource: lists are ordered by it."""
    return f"{namespace}/{name}" if namespace else name


def record_from_bytes(rt: ResourceType, raw: bytes) -> ObjectRecord:
    """Parse the selectable parts of one object; `raw` must be list-item form.

    Raises msgspec.DecodeError / ValidationError for bodies that are not objects.
    """
    view = _decoder(rt).decode(raw)
    meta: MetaView = view.metadata
    fields = {"metadata.name": meta.name, "metadata.namespace": meta.namespace}
    for label, path in rt.extra_fields.items():
        fields[label] = _render(path, _lookup(view, path))
    try:
        rv = int(meta.resourceVersion) if meta.resourceVersion else 0
    except ValueError:
        rv = 0
    return ObjectRecord(
        key=object_key(meta.namespace, meta.name),
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        rv=rv,
        labels=meta.labels,
        fields=fields,
        raw=raw,
    )


_TYPE_META_RE = re.compile(rb'^\{"kind":"[^"\\]*","apiVersion":"[^"\\]*",?')

_TYPE_META_PREFIX = b'{"kind":'


def with_type_meta(raw: bytes, kind: str, api_version: str) -> bytes:
    """Splice kind/apiVersion in front of a list-item form object."""
    if raw.startswith(_TYPE_META_PREFIX):
        return raw
    head = b'{"kind":"' + kind.encode() + b'","apiVersion":"' + api_version.encode() + b'"'
    if raw == b"{}":
        return head + b"}"
    return head + b"," + raw[1:]


def strip_type_meta(raw: bytes) -> bytes:
    """The list-item form of an object that starts with kind and apiVersion.

    kube-apiserver always encodes TypeMeta first, so a slice suffices; any
    other layout is re-encoded.
    """
    match = _TYPE_META_RE.match(raw)
    if match is not None:
        rest = raw[match.end() :]
        return b"{" + rest if rest != b"}" else b"{}"
    if not raw.startswith(b"{"):
        return raw
    obj = msgspec.json.decode(raw)
    if isinstance(obj, dict):
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        return msgspec.json.encode(obj)
    return raw

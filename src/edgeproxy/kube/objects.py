"""Object views: the few parsed fields of a Kubernetes object, next to its raw bytes.

Objects are kept as raw JSON bytes; only `metadata` and the fields that
field selectors compare are decoded, with msgspec Structs that skip every
other key (STYLE.md, "msgspec"). `ObjectRecord` is the unit both the
simulator's store and the proxy's cache hold.
"""

from __future__ import annotations

import re
import sys
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Any, NoReturn

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


@cache
def _field_index(rt: ResourceType) -> dict[str, int]:
    names = ["metadata.name", "metadata.namespace", *rt.extra_fields]
    return {name: i for i, name in enumerate(names)}


class FieldValues(Mapping[str, str]):
    """An object's field-selector values, read like a read-only dict.

    A pod has a dozen selectable fields; as a dict of fresh strings that was
    more memory than the pod's JSON. Here the key index is its kind's, and the
    values other than name and namespace are one tuple that objects with the
    same values share (`_SharedTuples`).
    """

    __slots__ = ("_extra", "_index", "_name", "_namespace")

    def __init__(
        self, index: Mapping[str, int], name: str, namespace: str, extra: tuple[str, ...]
    ) -> None:
        self._index = index  # field -> 0 (name), 1 (namespace), 2 + position in `extra`
        self._name = name
        self._namespace = namespace
        self._extra = extra

    def _at(self, i: int) -> str:
        if i >= 2:
            return self._extra[i - 2]
        return self._name if i == 0 else self._namespace

    def __getitem__(self, key: str) -> str:
        return self._at(self._index[key])

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else self._at(i)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"FieldValues({dict(self.items())!r})"


class _SharedTuples:
    """One copy of each recent tuple of field values (a bounded `sys.intern` for tuples).

    Across a kind the values besides name and namespace mostly repeat (a
    node's pods share nodeName, phase, schedulerName...): 10,000 pods hold a
    few hundred tuples instead of 10,000. Tuples cannot be weakly referenced,
    so the table is simply emptied when full; sharing then starts over.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[tuple[str, ...], tuple[str, ...]] = {}

    def share(self, values: tuple[str, ...]) -> tuple[str, ...]:
        found = self._seen.get(values)
        if found is not None:
            return found
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen[values] = values
        return values


class Labels(dict[str, str]):
    """A label set that every object carrying exactly it shares, hence read-only.

    Pods of one Deployment carry identical labels; a dict per object was
    ~180 bytes, more than the labels' share of the object's JSON. Mutators
    raise; `_SharedLabels` hands out one instance per distinct set.
    """

    __slots__ = ("__weakref__",)

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("an object's labels are shared and read-only")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only


class _SharedLabels:
    """One `Labels` per distinct label set among live objects (weakly held)."""

    def __init__(self) -> None:
        # Keyed by the flat (k1, v1, k2, v2, ...) tuple: a tuple of pairs costs 3x more.
        self._sets: weakref.WeakValueDictionary[tuple[str, ...], Labels] = (
            weakref.WeakValueDictionary()
        )

    def share(self, labels: dict[str, str]) -> Mapping[str, str]:
        if not labels:
            return NO_LABELS
        # kube-apiserver encodes map keys sorted, so equal sets give equal tuples;
        # another order only costs a second copy.
        key = tuple(chain.from_iterable(labels.items()))
        found = self._sets.get(key)
        if found is None:
            found = Labels({_share(k): _share(v) for k, v in labels.items()})
            self._sets[tuple(chain.from_iterable(found.items()))] = found
        return found


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """One object: identity, selector inputs, and its JSON in list-item form.

    `raw` carries no kind/apiVersion (built-in list items omit them, sec. 2.3);
    `with_type_meta` adds them back for gets and watch events.
    """

    key: str
    namespace: str
    name: str
    rv: int
    labels: Mapping[str, str]
    fields: Mapping[str, str]
    raw: bytes


NO_LABELS: Mapping[str, str] = Labels()


def _share(text: str) -> str:
    return sys.intern(text) if len(text) <= 64 else text


# Sharing tables for record_from_bytes (the proxy and the simulator each run one loop).
_LABEL_SETS = _SharedLabels()
# A few thousand distinct tuples covers a large cluster's nodes x phases x service accounts.
_FIELD_TUPLES = _SharedTuples(limit=4096)


def object_key(namespace: str, name: str) -> str:
    """The etcd-like key inside one resource: lists are ordered by it."""
    return f"{namespace}/{name}" if namespace else name


def record_from_bytes(rt: ResourceType, raw: bytes) -> ObjectRecord:
    """Parse the selectable parts of one object; `raw` must be list-item form.

    Raises msgspec.DecodeError / ValidationError for bodies that are not objects.
    """
    view = _decoder(rt).decode(raw)
    meta: MetaView = view.metadata
    namespace = sys.intern(meta.namespace)
    # Most values repeat across objects ("", "false", "Running", node names).
    extra = tuple(_share(_render(path, _lookup(view, path))) for path in rt.extra_fields.values())
    fields = FieldValues(_field_index(rt), meta.name, namespace, _FIELD_TUPLES.share(extra))
    try:
        rv = int(meta.resourceVersion) if meta.resourceVersion else 0
    except ValueError:
        rv = 0
    return ObjectRecord(
        key=object_key(namespace, meta.name),
        namespace=namespace,
        name=meta.name,
        rv=rv,
        labels=_LABEL_SETS.share(meta.labels),
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

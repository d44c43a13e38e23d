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


class FieldRow:
    """A kind's field-selector values other than name and namespace, shared.

    Across a kind these values mostly repeat (a node's pods share nodeName,
    phase, schedulerName...): 10,000 pods hold a few hundred rows instead of
    10,000. `index` is the kind's: field -> 0 (name), 1 (namespace),
    2 + position in `values`.
    """

    __slots__ = ("index", "values")

    def __init__(self, index: Mapping[str, int], values: tuple[str, ...]) -> None:
        self.index = index
        self.values = values

    @classmethod
    def of(cls, values: Mapping[str, str]) -> FieldRow:
        """A row of exactly `values` (records built by hand, as tests do)."""
        index = {"metadata.name": 0, "metadata.namespace": 1}
        index.update((name, 2 + i) for i, name in enumerate(values))
        return cls(index, tuple(values.values()))

    def __repr__(self) -> str:
        return f"FieldRow({self.values!r})"


# Objects without selectable fields beyond name and namespace (and test records).
NO_FIELDS = FieldRow.of({})


class _SharedRows:
    """One `FieldRow` per recent tuple of values of one kind (a bounded `sys.intern`).

    Tuples cannot be weakly referenced, so the table is simply emptied when
    full; sharing then starts over.
    """

    def __init__(self, index: Mapping[str, int], limit: int) -> None:
        self.index = index
        self.limit = limit
        self._seen: dict[tuple[str, ...], FieldRow] = {}

    def share(self, values: tuple[str, ...]) -> FieldRow:
        found = self._seen.get(values)
        if found is not None:
            return found
        if len(self._seen) >= self.limit:
            self._seen.clear()
        found = self._seen[values] = FieldRow(self.index, values)
        return found


@cache
def _shared_rows(rt: ResourceType) -> _SharedRows:
    # A few thousand distinct rows covers a large cluster's nodes x phases x service accounts.
    return _SharedRows(_field_index(rt), limit=4096)


class FieldValues(Mapping[str, str]):
    """An object's field-selector values, read like a read-only dict.

    A view made on demand: name and namespace come from the record's key,
    the rest from its shared `FieldRow`. A pod has a dozen selectable
    fields; kept per object as strings they were more memory than its JSON.
    """

    __slots__ = ("_record",)

    def __init__(self, record: ObjectRecord) -> None:
        self._record = record

    def _at(self, i: int) -> str:
        if i >= 2:
            return self._record.row.values[i - 2]
        return self._record.name if i == 0 else self._record.namespace

    def __getitem__(self, key: str) -> str:
        return self._at(self._record.row.index[key])

    def get(self, key: str, default: Any = None) -> Any:
        i = self._record.row.index.get(key)
        return default if i is None else self._at(i)

    def __iter__(self) -> Iterator[str]:
        return iter(self._record.row.index)

    def __len__(self) -> int:
        return len(self._record.row.index)

    def __repr__(self) -> str:
        return f"FieldValues({dict(self.items())!r})"


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
    `with_type_meta` adds them back for gets and watch events. Namespace and
    name are read off `key` (neither may contain "/"), and field values are a
    view over `row`: a cache holds one record per object, so every slot
    counts (10,000 pods: 1.5 MB less than keeping them apart).
    """

    key: str
    rv: int
    labels: Mapping[str, str]
    row: FieldRow
    raw: bytes

    @property
    def namespace(self) -> str:
        namespace, slash, _ = self.key.partition("/")
        return namespace if slash else ""

    @property
    def name(self) -> str:
        return self.key[self.key.find("/") + 1 :]

    @property
    def fields(self) -> Mapping[str, str]:
        return FieldValues(self)


NO_LABELS: Mapping[str, str] = Labels()


class _SharedStrings:
    """One copy of each recent short string: a bounded, private `sys.intern`.

    Label keys and values and field values repeat across objects ("Running",
    node names, "app"). `sys.intern` would share them too, but its table lives
    as long as the interpreter and never shrinks: a cluster's worth of values
    doubled it (+1 MB with 10,000 pods cached). This one is emptied when full.
    """

    def __init__(self, limit: int, longest: int) -> None:
        self.limit = limit
        self.longest = longest
        self._seen: dict[str, str] = {}

    def share(self, text: str) -> str:
        if len(text) > self.longest:
            return text  # long values rarely repeat
        found = self._seen.get(text)
        if found is not None:
            return found
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen[text] = text
        return text


# The sharing tables of record_from_bytes (the proxy and the simulator each run one loop).
_STRINGS = _SharedStrings(limit=16_384, longest=64)
_share = _STRINGS.share
_LABEL_SETS = _SharedLabels()


def object_key(namespace: str, name: str) -> str:
    """The etcd-like key inside one resource: lists are ordered by it."""
    return f"{namespace}/{name}" if namespace else name


# kube-apiserver's JSON decoder reads objects up to 10,000 levels deep.
_KUBE_MAX_DEPTH = 10_000


def _decode_deep(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    """Decode an object nested deeper than Python's recursion limit allows msgspec.

    msgspec counts every nesting level (even of skipped fields) against the
    recursion limit, 1,000 by default; a custom resource kube-apiserver
    accepted can be ten times deeper, and must not break its list or watch.
    The limit is lifted for this one decode only (msgspec's C frames are
    small); anything deeper than kube-apiserver itself reads still fails.
    """
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + _KUBE_MAX_DEPTH + 100)
    try:
        return decoder.decode(raw)
    finally:
        sys.setrecursionlimit(old)


def record_from_bytes(rt: ResourceType, raw: bytes) -> ObjectRecord:
    """Parse the selectable parts of one object; `raw` must be list-item form.

    Raises msgspec.DecodeError / ValidationError for bodies that are not objects.
    """
    try:
        view = _decoder(rt).decode(raw)
    except RecursionError:
        view = _decode_deep(_decoder(rt), raw)
    meta: MetaView = view.metadata
    namespace = meta.namespace
    # Most values repeat across objects ("", "false", "Running", node names).
    extra = tuple(_share(_render(path, _lookup(view, path))) for path in rt.extra_fields.values())
    try:
        rv = int(meta.resourceVersion) if meta.resourceVersion else 0
    except ValueError:
        rv = 0
    return ObjectRecord(
        key=object_key(namespace, meta.name),
        rv=rv,
        labels=_LABEL_SETS.share(meta.labels),
        row=_shared_rows(rt).share(extra),
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

"""The protobuf field tables of the built-in kinds, parsed for the codec.

`kube.protobuf` decodes request bodies and `kube.protoencoder` encodes
answers with these tables instead of a protobuf runtime. The tables
themselves are generated (`kube.prototables`, written by k8s/protogen from
the Go types of k8s.io/api and k8s.io/apimachinery v0.37.2): every group
version kube-apiserver serves in protobuf, nothing hand-copied. A field
number missing from a table is rejected, never guessed.

What the JSON form keeps is in each field's flags. Go's generated marshaller
writes non-pointer scalars and structs even when zero and pointer fields only
when set; the JSON form drops a zero scalar unless the field is a pointer
(`?`, an explicit zero is data) or has no omitempty (`!`), and drops a zero
struct only under omitzero (`~`).
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

from edgeproxy.kube.prototables import KINDS, META_KINDS, SPECS, WRAPPERS

Label = Literal["one", "rep", "map", "inline"]

SCALARS: Final = frozenset({"string", "bytes", "bool", "int32", "int64", "double", "json"})

# The well-known messages whose JSON form is not their fields.
TIME: Final = "meta.v1.Time"
MICRO_TIME: Final = "meta.v1.MicroTime"
DURATION: Final = "meta.v1.Duration"
FIELDS_V1: Final = "meta.v1.FieldsV1"
QUANTITY: Final = "resource.Quantity"
INT_OR_STRING: Final = "intstr.IntOrString"
RAW_EXTENSION: Final = "runtime.RawExtension"
TYPE_META: Final = "runtime.TypeMeta"
WATCH_EVENT: Final = "meta.v1.WatchEvent"
LIST_META: Final = "meta.v1.ListMeta"
STATUS: Final = "meta.v1.Status"


class Field(NamedTuple):
    number: int
    name: str
    type: str
    label: Label
    keep_zero: bool
    pointer: bool = False
    omitzero: bool = False


Message = dict[int, Field]


def _parse(spec: str) -> Message:
    fields: list[Field] = []
    for item in spec.split(";") if spec else ():
        number, name, typ = item.split()
        label: Label = "one"
        if typ.startswith("["):
            label, typ = "rep", typ[1:-1]
        elif typ.startswith("{"):
            label, typ = "map", typ[1:-1]
        elif typ.startswith("&"):
            label, typ = "inline", typ[1:]
        flags = name[len(name.rstrip("!?~")) :]
        pointer = "?" in flags
        keep = pointer or "!" in flags
        fields.append(
            Field(int(number), name.rstrip("!?~"), typ, label, keep, pointer, "~" in flags)
        )
    # Go's marshaller writes fields in ascending number order.
    return {f.number: f for f in sorted(fields)}


SCHEMA: Final[dict[str, Message]] = {name: _parse(spec) for name, spec in SPECS.items()}


def message_for(api_version: str, kind: str) -> str | None:
    """The top-level message for a typeMeta, or None if there is no table for it.

    The meta.k8s.io kinds (DeleteOptions, Status, ...) are registered in every
    group version, so their apiVersion is not checked.
    """
    return KINDS.get((api_version, kind)) or META_KINDS.get(kind)


def is_builtin(api_version: str, kind: str) -> bool:
    """Whether kube-apiserver serves this kind in protobuf (CRDs: never)."""
    return (api_version, kind) in KINDS


__all__ = [
    "DURATION",
    "FIELDS_V1",
    "INT_OR_STRING",
    "LIST_META",
    "MICRO_TIME",
    "QUANTITY",
    "RAW_EXTENSION",
    "SCALARS",
    "SCHEMA",
    "STATUS",
    "TIME",
    "TYPE_META",
    "WATCH_EVENT",
    "WRAPPERS",
    "Field",
    "is_builtin",
    "message_for",
]

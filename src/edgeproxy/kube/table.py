"""Server-side printing (meta.k8s.io Table) and PartialObjectMetadata.

Why this exists: `kubectl get` does not format objects itself; it asks the
server for a Table (k8s-api-semantics.md sec. 7) and prints the cells it gets
back, so the simulator -- and the proxy when it answers from its cache -- must
render the columns kube-apiserver's printers render
(kubernetes/pkg/printers/internalversion/printers.go), and the metadata-only
forms the garbage collector and metadata informers ask for. It works on
decoded objects (dicts); tables are for humans, not a hot path.

What the server does, and so what this module does:

- Printers are generated "wide": every column, including priority 1
  (`-o wide`) ones, is sent; kubectl hides priority>0 columns itself.
- kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,
  application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json` and
  no table query parameter, except `includeObject=Object` with `--sort-by`
  (it needs the fields). `includeObject` (None|Metadata|Object, empty =
  Metadata) is the only TableOptions query parameter; anything else is a 400.
  The row `object` is then PartialObjectMetadata in the negotiated meta
  version, the full object with kind/apiVersion, or JSON null (Go's empty
  RawExtension marshals as null; the key is never omitted).
- On a watch each event object is a one-row Table; only the first carries
  column definitions, later ones send `"columnDefinitions": null`
  (TableOptions.NoHeaders, set by the watch encoder after the first event).
- `metadata` is the list's resourceVersion/continue/remainingItemCount, or
  the object's resourceVersion for a single object or watch event.
- Kinds without a printer use the default convertor: Name and Created At
  (RFC 3339), and `rows` is null when there are none (Go nil slice), while
  printers send `[]`. Likewise an empty PartialObjectMetadataList has
  `"items": null`: kube-apiserver builds it by appending to a nil slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from edgeproxy.kube.printers import DEFAULT_COLUMNS, PRINTERS, Column, meta_of, pod_conditions
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.status import bad_request

IncludeObject = Literal["None", "Metadata", "Object"]

META_V1 = "meta.k8s.io/v1"

# -- assembly -------------------------------------------------------------------


def include_object_option(value: str | None) -> IncludeObject:
    """Validate the `includeObject` query parameter (TableOptions) like the apiserver."""
    if value in (None, "", "Metadata"):
        return "Metadata"
    if value in ("None", "Object"):
        return "None" if value == "None" else "Object"
    raise bad_request(
        f'Unable to convert to Table as requested: includeObject: Invalid value: "{value}": '
        "must be 'Metadata', 'Object', 'None', or empty"
    )


def _list_metadata(list_meta: Mapping[str, Any]) -> dict[str, Any]:
    """ListMeta as Go encodes it: empty fields omitted, selfLink never set."""
    return {
        key: list_meta[key]
        for key in ("resourceVersion", "continue", "remainingItemCount")
        if list_meta.get(key) not in (None, "")
    }


def partial_object_metadata(obj: Mapping[str, Any], api_version: str = META_V1) -> dict[str, Any]:
    """The object reduced to its metadata (meta.AsPartialObjectMetadata)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": dict(meta_of(obj)),
    }


def partial_object_metadata_list(
    objects: Sequence[Mapping[str, Any]],
    list_meta: Mapping[str, Any] | None,
    api_version: str = META_V1,
) -> dict[str, Any]:
    """A PartialObjectMetadataList; `items` is null when empty, as kube-apiserver sends it."""
    items = [partial_object_metadata(o, api_version) for o in objects]
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": api_version,
        "metadata": _list_metadata(list_meta or {}),
        "items": items or None,
    }


def columns_for(rt: ResourceType) -> tuple[Column, ...]:
    return PRINTERS.get((rt.group, rt.kind), DEFAULT_COLUMNS)


def table(
    rt: ResourceType,
    objects: Sequence[dict[str, Any]],
    *,
    list_meta: dict[str, Any] | None,
    api_version: str = META_V1,
    include_object: IncludeObject = "Metadata",
    with_columns: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Render objects as a meta.k8s.io Table.

    `list_meta` is the list's metadata; None means a single object (a get or
    one watch event), whose resourceVersion then heads the Table.
    `with_columns=False` is a watch event after the first: no definitions.
    """
    now = now or datetime.now(UTC)
    printer = PRINTERS.get((rt.group, rt.kind))
    columns = printer or DEFAULT_COLUMNS
    if list_meta is None:
        rv = meta_of(objects[0]).get("resourceVersion") if len(objects) == 1 else None
        metadata = {"resourceVersion": rv} if rv else {}
    else:
        metadata = _list_metadata(list_meta)
    rows: list[dict[str, Any]] = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [c.cell(obj, now) for c in columns]}
        if printer is not None and rt.kind == "Pod" and not rt.group:
            conditions = pod_conditions(obj)
            if conditions:
                row["conditions"] = conditions
        if include_object == "Metadata":
            row["object"] = partial_object_metadata(obj, api_version)
        elif include_object == "Object":
            row["object"] = {"kind": rt.kind, "apiVersion": rt.api_version} | obj
        else:
            row["object"] = None
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": [c.definition() for c in columns] if with_columns else None,
        # printers start from an empty slice; the default convertor from nil.
        "rows": rows if rows or printer is not None else None,
    }

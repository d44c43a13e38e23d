"""Resource types read from upstream's discovery documents and CRDs.

The proxy cannot know every resource a cluster serves: kube-apiserver adds
built-in kinds every release (RuntimeClass, PodCertificateRequest...) and
custom resources come and go. What it needs of each (the kind that names
its lists, whether it is namespaced, its verbs) is what discovery says, so
it is read from there instead of guessed (a guess names RuntimeClass's list
`RuntimeclassesList`, which client-go refuses to decode).

Discovery does not list field selectors. For built-ins the table in
resources.py stays authoritative; for a custom resource they are its CRD's
`spec.versions[].selectableFields` (KEP-4358, GA in 1.32); for anything
else the proxy knows only metadata.name and metadata.namespace and lets
upstream decide (`ResourceType.fields_checked` is False).

Pure parsing, no I/O: cache/resourcetypes.py fetches and keeps the documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import msgspec

from edgeproxy.kube.resources import ResourceType

# A group version's resources, by plural.
GroupVersionTypes = dict[str, ResourceType]


class _Resource(msgspec.Struct):
    """One entry of an APIResourceList (`/api/v1`, `/apis/<group>/<version>`)."""

    name: str
    kind: str = ""
    namespaced: bool = False
    singularName: str = ""
    verbs: list[str] = msgspec.field(default_factory=list)
    shortNames: list[str] = msgspec.field(default_factory=list)


class _Kind(msgspec.Struct):
    kind: str = ""


class _Subresource(msgspec.Struct):
    subresource: str = ""


class _AggregatedResource(msgspec.Struct):
    """apidiscovery.k8s.io/v2 APIResourceDiscovery."""

    resource: str
    responseKind: _Kind = msgspec.field(default_factory=_Kind)
    scope: str = ""
    singularResource: str = ""
    verbs: list[str] = msgspec.field(default_factory=list)
    shortNames: list[str] = msgspec.field(default_factory=list)
    subresources: list[_Subresource] = msgspec.field(default_factory=list)


class _AggregatedVersion(msgspec.Struct):
    version: str
    resources: list[_AggregatedResource] = msgspec.field(default_factory=list)


class _Name(msgspec.Struct):
    name: str = ""


class _AggregatedGroup(msgspec.Struct):
    metadata: _Name = msgspec.field(default_factory=_Name)
    versions: list[_AggregatedVersion] = msgspec.field(default_factory=list)


class _Document(msgspec.Struct):
    kind: str = ""
    groupVersion: str = ""
    resources: list[_Resource] = msgspec.field(default_factory=list)
    items: list[_AggregatedGroup] = msgspec.field(default_factory=list)


_decode_document = msgspec.json.Decoder(_Document).decode


class DiscoveryError(ValueError):
    """A document that is not discovery the proxy can read."""


def split_group_version(group_version: str) -> tuple[str, str]:
    """`node.k8s.io/v1` -> ("node.k8s.io", "v1"); the core group is `v1` alone."""
    group, _, version = group_version.rpartition("/")
    return group, version


def parse_discovery(body: bytes) -> dict[tuple[str, str], GroupVersionTypes]:
    """The resource types an APIResourceList or an APIGroupDiscoveryList declares.

    Subresources (`pods/status` in a list, `subresources` in the aggregated
    form) are kept on their parent; the types are keyed by (group, version).
    """
    try:
        doc = _decode_document(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DiscoveryError(f"not a discovery document: {exc}") from exc
    if doc.kind == "APIResourceList" or (doc.groupVersion and not doc.items):
        group, version = split_group_version(doc.groupVersion)
        if not version:
            raise DiscoveryError("APIResourceList without a groupVersion")
        return {(group, version): _from_resource_list(group, version, doc.resources)}
    if doc.kind == "APIGroupDiscoveryList":
        out: dict[tuple[str, str], GroupVersionTypes] = {}
        for item in doc.items:
            for gv in item.versions:
                out[(item.metadata.name, gv.version)] = _from_aggregated(
                    item.metadata.name, gv.version, gv.resources
                )
        return out
    raise DiscoveryError(f"not a discovery document (kind {doc.kind!r})")


def _from_resource_list(group: str, version: str, entries: list[_Resource]) -> GroupVersionTypes:
    subresources: dict[str, list[str]] = {}
    for entry in entries:
        parent, sep, sub = entry.name.partition("/")
        if sep:
            subresources.setdefault(parent, []).append(sub)
    types: GroupVersionTypes = {}
    for entry in entries:
        if "/" in entry.name or not entry.kind:
            continue
        types[entry.name] = _discovered(
            group,
            version,
            entry.name,
            entry.kind,
            namespaced=entry.namespaced,
            singular=entry.singularName,
            short_names=entry.shortNames,
            verbs=entry.verbs,
            subresources=subresources.get(entry.name, ()),
        )
    return types


def _from_aggregated(
    group: str, version: str, entries: list[_AggregatedResource]
) -> GroupVersionTypes:
    types: GroupVersionTypes = {}
    for entry in entries:
        if not entry.responseKind.kind:
            continue
        types[entry.resource] = _discovered(
            group,
            version,
            entry.resource,
            entry.responseKind.kind,
            namespaced=entry.scope == "Namespaced",
            singular=entry.singularResource,
            short_names=entry.shortNames,
            verbs=entry.verbs,
            subresources=[s.subresource for s in entry.subresources if s.subresource],
        )
    return types


def _discovered(
    group: str,
    version: str,
    resource: str,
    kind: str,
    *,
    namespaced: bool,
    singular: str,
    short_names: list[str],
    verbs: list[str],
    subresources: list[str] | tuple[str, ...],
) -> ResourceType:
    return ResourceType(
        group,
        version,
        resource,
        kind,
        namespaced,
        singular=singular,
        short_names=tuple(short_names),
        verbs=tuple(verbs),
        subresources=tuple(subresources),
        fields_checked=False,
    )


# -- custom resource definitions ---------------------------------------------------


class _SelectableField(msgspec.Struct):
    jsonPath: str = ""


class _CRDVersion(msgspec.Struct):
    name: str = ""
    selectableFields: list[_SelectableField] = msgspec.field(default_factory=list)


class _CRDSpec(msgspec.Struct):
    versions: list[_CRDVersion] = msgspec.field(default_factory=list)


class _CRD(msgspec.Struct):
    kind: str = ""
    spec: _CRDSpec = msgspec.field(default_factory=_CRDSpec)


_decode_crd = msgspec.json.Decoder(_CRD).decode


def crd_name(group: str, resource: str) -> str:
    """A CRD is named `<plural>.<group>`."""
    return f"{resource}.{group}"


def selectable_fields(body: bytes) -> dict[str, list[str]]:
    """A CRD's selectable field labels, by version: `.spec.color` -> `spec.color`.

    The JSON paths are simple field paths, never with array notation (the
    CRD's validation refuses others), so the label is the path's dotted form.
    """
    try:
        crd = _decode_crd(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DiscoveryError(f"not a CustomResourceDefinition: {exc}") from exc
    if crd.kind and crd.kind != "CustomResourceDefinition":
        raise DiscoveryError(f"not a CustomResourceDefinition (kind {crd.kind!r})")
    return {
        v.name: [f.jsonPath.lstrip(".") for f in v.selectableFields if f.jsonPath.lstrip(".")]
        for v in crd.spec.versions
    }


def with_selectable_fields(rt: ResourceType, labels: list[str] | None) -> ResourceType:
    """`rt` with a CRD's selectable fields, which the cache then evaluates locally.

    kube-apiserver renders them as the JSON value's text (integers in
    decimal, booleans `true`/`false`) and an absent field as "" (KEP-4358),
    which is what objects.py renders for any extra field.
    """
    if not labels:
        return rt
    fields: Mapping[str, str] = {label: label for label in labels}
    return replace(rt, extra_fields=fields)

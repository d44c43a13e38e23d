"""Declarations of the API resources the project knows.

Adding a resource is one `ResourceType(...)` line: kind, plural, scope and
the field labels its field selectors accept. The field labels follow
kubernetes/pkg/apis/core/v1/conversion.go (k8s-api-semantics.md sec. 4.2);
each maps a selector name to the dotted JSON path of the value it compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# Field labels every kind supports; cluster-scoped kinds still accept
# metadata.namespace (it is always "").
COMMON_FIELDS: Mapping[str, str] = {
    "metadata.name": "metadata.name",
    "metadata.namespace": "metadata.namespace",
}


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    # selector label -> dotted JSON path of the value it compares. Compared
    # (not hashed): caches keyed by a type (objects.py) must tell apart two
    # versions of one custom resource whose selectable fields differ.
    extra_fields: Mapping[str, str] = field(default_factory=dict, hash=False)
    verbs: tuple[str, ...] = ALL_VERBS
    # Subresources the simulator serves (status is stored with the object).
    subresources: tuple[str, ...] = ()
    # True: `field_paths` is every field label upstream accepts, so the proxy
    # refuses others itself (the table below). False for types learnt from
    # discovery: upstream decides, the proxy evaluates only what it knows.
    fields_checked: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> tuple[str, str]:
        return (self.group, self.version)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def field_paths(self) -> Mapping[str, str]:
        """Every field label this kind supports, with its JSON path."""
        return {**COMMON_FIELDS, **self.extra_fields}

    @property
    def is_builtin(self) -> bool:
        """Built-in kinds omit kind/apiVersion on list items (sec. 2.3)."""
        return True

    def path_prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str = "") -> str:
        if self.namespaced and namespace:
            return f"{self.path_prefix()}/namespaces/{namespace}/{self.resource}"
        return f"{self.path_prefix()}/{self.resource}"

    def item_path(self, namespace: str, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"


_POD_FIELDS = {
    "spec.nodeName": "spec.nodeName",
    "spec.host": "spec.nodeName",  # deprecated alias kept by the conversion funcs
    "spec.restartPolicy": "spec.restartPolicy",
    "spec.schedulerName": "spec.schedulerName",
    "spec.serviceAccountName": "spec.serviceAccountName",
    "spec.hostNetwork": "spec.hostNetwork",
    "status.phase": "status.phase",
    "status.podIP": "status.podIP",
    "status.podIPs": "status.podIPs",
    "status.nominatedNodeName": "status.nominatedNodeName",
}

_EVENT_FIELDS = {
    "involvedObject.kind": "involvedObject.kind",
    "involvedObject.namespace": "involvedObject.namespace",
    "involvedObject.name": "involvedObject.name",
    "involvedObject.uid": "involvedObject.uid",
    "involvedObject.apiVersion": "involvedObject.apiVersion",
    "involvedObject.resourceVersion": "involvedObject.resourceVersion",
    "involvedObject.fieldPath": "involvedObject.fieldPath",
    "reason": "reason",
    "reportingComponent": "reportingComponent",
    "source": "source.component",
    "type": "type",
}

BUILTIN: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        extra_fields={"status.phase": "status.phase"},
        subresources=("status", "finalize"),
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        False,
        short_names=("no",),
        extra_fields={"spec.unschedulable": "spec.unschedulable"},
        subresources=("status",),
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        short_names=("po",),
        extra_fields=_POD_FIELDS,
        subresources=("status",),
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        True,
        short_names=("svc",),
        extra_fields={"spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type"},
        subresources=("status",),
    ),
    ResourceType(
        "", "v1", "endpoints", "Endpoints", True, singular="endpoints", short_names=("ep",)
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, extra_fields={"type": "type"}),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=("sa",)),
    ResourceType(
        "", "v1", "events", "Event", True, short_names=("ev",), extra_fields=_EVENT_FIELDS
    ),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
)


class ResourceRegistry:
    """Lookup of resource types by (group, version, plural)."""

    def __init__(self, types: Iterable[ResourceType] = BUILTIN) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_gvk: dict[tuple[str, str, str], ResourceType] = {}
        for rt in types:
            self._by_gvr[(rt.group, rt.version, rt.resource)] = rt
            self._by_gvk[(rt.group, rt.version, rt.kind)] = rt

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._by_gvr.values())

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def get(self, group: str, version: str, resource: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, resource))

    def by_kind(self, group: str, version: str, kind: str) -> ResourceType | None:
        return self._by_gvk.get((group, version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """Named groups (not core) with their versions, in declaration order."""
        groups: dict[str, list[str]] = {}
        for rt in self._by_gvr.values():
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.group == group and rt.version == version]

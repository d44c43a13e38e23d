"""Discovery documents (/api, /apis, /api/v1, /apis/G/V) and /version.

The legacy (unaggregated) forms: clients that ask for aggregated discovery
(apidiscovery.k8s.io/v2) accept these too when the response Content-Type is
plain application/json (k8s-api-semantics.md sec. 8).
"""

from __future__ import annotations

import base64
import hashlib
import platform
from typing import Any

from edgeproxy.kube.resources import ResourceRegistry, ResourceType

KUBE_VERSION = ("1", "34", "v1.34.0")


def version_info() -> dict[str, str]:
    major, minor, git = KUBE_VERSION
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": f"linux/{arch}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: ResourceRegistry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.group_versions().items()],
    }


def api_group(registry: ResourceRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


# `kubectl get all` reads these; kube-apiserver puts pods and services in "all".
_CATEGORIES = {"pods": ["all"], "services": ["all"]}
# Registries without a DeleteCollection: the route is a 405, discovery omits the verb.
NO_DELETECOLLECTION = frozenset({"namespaces"})
_SUBRESOURCE_VERBS = {"finalize": ["update"]}


def storage_version_hash(rt: ResourceType) -> str:
    """apiserver's StorageVersionHash: base64 of sha256("group/version/kind")[:8]."""
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _resource_entries(rt: ResourceType) -> list[dict[str, Any]]:
    missing = ("deletecollection",) if rt.resource in NO_DELETECOLLECTION else ()
    entry: dict[str, Any] = {
        "name": rt.resource,
        "singularName": rt.singular_name,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": [v for v in rt.verbs if v not in missing],
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.resource in _CATEGORIES:
        entry["categories"] = _CATEGORIES[rt.resource]
    entry["storageVersionHash"] = storage_version_hash(rt)
    entries = [entry]
    for sub in rt.subresources:
        entries.append(
            {
                "name": f"{rt.resource}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": _SUBRESOURCE_VERBS.get(sub, ["get", "patch", "update"]),
            }
        )
    return entries


def api_resource_list(
    registry: ResourceRegistry, group: str, version: str
) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources = [e for rt in types for e in _resource_entries(rt)]
    if not group:  # the legacy core list has no apiVersion
        return {"kind": "APIResourceList", "groupVersion": version, "resources": resources}
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}",
        "resources": resources,
    }

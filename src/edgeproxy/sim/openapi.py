"""OpenAPI v3 documents, as much as kubectl needs.

kubectl's `create -f`/`apply`/`replace` validate objects (`--validate=strict`
by default): they fetch `/openapi/v3`, then the document of the object's
group-version, and look for a `fieldValidation` query parameter on the PATCH
operation tagged with the object's group-version-kind
(cli-runtime QueryParamVerifierV3). When it is there, kubectl leaves
validation to the server and sends `fieldValidation=Strict`; without any
OpenAPI it fails with "failed to download openapi". So each group-version
document lists every resource's paths and operations with their GVK
extension and the standard query parameters, and a permissive schema per
kind. `/openapi/v2` stays 404: client-go asks for it in protobuf only, and
only `kubectl explain` needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import msgspec

from edgeproxy.kube.resources import ResourceRegistry, ResourceType

_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _gvk(rt: ResourceType) -> dict[str, str]:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _schema_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "core"
    return f"io.k8s.api.{group}.{rt.version}.{rt.kind}"


def _operation(rt: ResourceType, action: str, verb: str) -> dict[str, Any]:
    params = [
        {"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for p in _QUERY_PARAMS
    ]
    ref = {"$ref": f"#/components/schemas/{_schema_name(rt)}"}
    return {
        "operationId": f"{verb}{rt.kind}",
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
    }


def _paths(rt: ResourceType) -> dict[str, Any]:
    coll = rt.collection_path("{namespace}" if rt.namespaced else "")
    item = f"{coll}/{{name}}"
    paths = {
        coll: {
            "get": _operation(rt, "list", "list"),
            "post": _operation(rt, "post", "create"),
            "delete": _operation(rt, "deletecollection", "deleteCollection"),
        },
        item: {
            "get": _operation(rt, "get", "read"),
            "put": _operation(rt, "put", "replace"),
            "patch": _operation(rt, "patch", "patch"),
            "delete": _operation(rt, "delete", "delete"),
        },
    }
    for sub in rt.subresources:
        paths[f"{item}/{sub}"] = {
            "get": _operation(rt, "get", f"read{sub.title()}"),
            "put": _operation(rt, "put", f"replace{sub.title()}"),
            "patch": _operation(rt, "patch", f"patch{sub.title()}"),
        }
    return paths


def _gv_document(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in registry.in_group_version(group, version):
        paths.update(_paths(rt))
        schemas[_schema_name(rt)] = {
            "type": "object",
            "description": f"{rt.kind} (the simulator accepts any fields; see the Kubernetes API)",
            "x-kubernetes-group-version-kind": [_gvk(rt)],
            "x-kubernetes-preserve-unknown-fields": True,
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _gv_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


@cache
def _documents(registry: ResourceRegistry) -> dict[str, bytes]:
    docs: dict[str, bytes] = {}
    gvs = sorted({(rt.group, rt.version) for rt in registry})
    for group, version in gvs:
        docs[_gv_key(group, version)] = msgspec.json.encode(_gv_document(registry, group, version))
    index = {
        "paths": {
            key: {
                "serverRelativeURL": f"/openapi/v3/{key}?hash={hashlib.sha512(body).hexdigest()[:128].upper()}"
            }
            for key, body in docs.items()
        }
    }
    docs[""] = msgspec.json.encode(index)
    return docs


def serve(
    registry: ResourceRegistry, parts: Sequence[str], query: Mapping[str, str]
) -> tuple[bytes, str] | None:
    """Body and content type for `/openapi/<parts>`, or None for 404."""
    if not parts or parts[0] != "v3":
        return None
    body = _documents(registry).get("/".join(parts[1:]))
    if body is None:
        return None
    return body, "application/json"

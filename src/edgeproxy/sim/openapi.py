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
kind. kubectl before 1.29 asks `/openapi/v2` instead, in gnostic protobuf
only (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), and
checks the same thing there; `_v2_document` encodes the few gnostic
messages that takes (field numbers from google/gnostic openapiv2/OpenAPIv2.proto).
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


# -- OpenAPI v2 in gnostic protobuf ---------------------------------------------

# Requested as ...spec.v2@v1.0+protobuf; answered with a Content-Type Go can parse.
V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (strings, bytes and sub-messages)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _named_any(name: str, yaml_value: str) -> bytes:
    # NamedAny{1 name, 2 Any{2 yaml}}
    return _field(1, name) + _field(2, _field(2, yaml_value))


def _gvk_yaml(rt: ResourceType) -> str:
    return f'group: "{rt.group}"\nkind: {rt.kind}\nversion: {rt.version}\n'


def _v2_operation(rt: ResourceType, action: str, verb: str) -> bytes:
    op = _field(5, f"{verb}{rt.kind}")
    for name in _QUERY_PARAMS:
        # QueryParameterSubSchema{2 in, 4 name, 6 type} in NonBodyParameter(3)
        # in Parameter(2) in ParametersItem(1), as Operation.parameters(8).
        query = _field(2, "query") + _field(4, name) + _field(6, "string")
        op += _field(8, _field(1, _field(2, _field(3, query))))
    ref = _field(1, f"#/definitions/{_schema_name(rt)}")  # Schema._ref
    response = _field(1, "OK") + _field(2, _field(1, ref))  # Response{description, SchemaItem}
    op += _field(9, _field(1, _field(1, "200") + _field(2, _field(1, response))))
    op += _field(13, _named_any("x-kubernetes-action", f"{action}\n"))
    op += _field(13, _named_any("x-kubernetes-group-version-kind", _gvk_yaml(rt)))
    return op


def _v2_document(registry: ResourceRegistry) -> bytes:
    # PathItem: 2 get, 3 put, 4 post, 5 delete, 8 patch.
    verbs = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}
    named_paths = b""
    definitions = b""
    for rt in registry:
        for path, ops in _paths(rt).items():
            item = b"".join(
                _field(
                    verbs[method],
                    _v2_operation(
                        rt, op["x-kubernetes-action"], op["operationId"].removesuffix(rt.kind)
                    ),
                )
                for method, op in ops.items()
            )
            named_paths += _field(2, _field(1, path) + _field(2, item))
        schema = (
            _field(4, f"{rt.kind} (the simulator accepts any fields)")
            + _field(22, _field(1, "object"))
            + _field(
                31,
                _named_any(
                    "x-kubernetes-group-version-kind",
                    "- " + _gvk_yaml(rt).replace("\n", "\n  ").rstrip() + "\n",
                ),
            )
        )
        definitions += _field(1, _field(1, _schema_name(rt)) + _field(2, schema))
    info = _field(1, "Kubernetes") + _field(2, "v1.34.0")
    return _field(1, "2.0") + _field(2, info) + _field(8, named_paths) + _field(9, definitions)


@cache
def _v2_bytes(registry: ResourceRegistry) -> bytes:
    return _v2_document(registry)


def serve(
    registry: ResourceRegistry, parts: Sequence[str], query: Mapping[str, str]
) -> tuple[bytes, str] | None:
    """Body and content type for `/openapi/<parts>`, or None for 404."""
    if list(parts) == ["v2"]:
        return _v2_bytes(registry), V2_PROTOBUF
    if not parts or parts[0] != "v3":
        return None
    body = _documents(registry).get("/".join(parts[1:]))
    if body is None:
        return None
    return body, "application/json"

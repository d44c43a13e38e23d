"""PATCH semantics the API simulator applies to stored objects.

Clients pick one of kube-apiserver's four patch media types (k8s-api-semantics.md
sec. 6) and rely on its exact results and error codes; this is that behaviour on
decoded JSON, kept out of the request handler. Sources: apiserver
`endpoints/handlers/patch.go`, evanphx/json-patch, apimachinery `strategicpatch`.

Simplifications, on purpose:
- Strategic merge reads its patch strategies from a table keyed by field name
  (and parent field / kind where a name is ambiguous, e.g. `ports`) instead of
  from the Go struct tags; fields missing from the table are replaced.
- Server-side apply (`application/apply-patch+yaml`) merges the applied
  configuration into the object (strategic merge for built-in kinds, RFC 7386
  for the rest). There is no field ownership: no managedFields, no conflicts,
  and fields dropped from a later apply are not removed.
- The result is not decoded into a typed object, so unknown fields survive
  and nothing is defaulted; only patch directives are stripped.
"""

from __future__ import annotations

import base64
import datetime
import math
import re
from collections.abc import Callable
from typing import Any

import msgspec
import yaml

from edgeproxy.kube.status import (
    StatusError,
    bad_request,
    entity_too_large,
    internal_error,
    invalid,
    unsupported_media_type,
)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Kinds served by kube-apiserver itself; only these accept strategic merge
# patches (custom resources have no Go struct to carry patch strategies).
_BUILTIN_KIND_NAMES = (
    "Pod Service Endpoints ConfigMap Secret Namespace Node PersistentVolume "
    "PersistentVolumeClaim ServiceAccount Event LimitRange ResourceQuota "
    "ReplicationController PodTemplate Binding ComponentStatus Deployment ReplicaSet "
    "StatefulSet DaemonSet ControllerRevision Job CronJob HorizontalPodAutoscaler "
    "Ingress IngressClass NetworkPolicy PodDisruptionBudget Role RoleBinding ClusterRole "
    "ClusterRoleBinding StorageClass VolumeAttachment CSIDriver CSINode CSIStorageCapacity "
    "Lease EndpointSlice PriorityClass RuntimeClass CustomResourceDefinition APIService "
    "MutatingWebhookConfiguration ValidatingWebhookConfiguration ValidatingAdmissionPolicy "
    "ValidatingAdmissionPolicyBinding CertificateSigningRequest FlowSchema "
    "PriorityLevelConfiguration Scale"
)
BUILTIN_KINDS = frozenset(_BUILTIN_KIND_NAMES.split())

# evanphx/json-patch via patch.go: maxJSONPatchOperations.
_MAX_JSON_PATCH_OPS = 10000
# NewGenericServerResponse(422, ...) drops the json-patch error text and says this.
_JSON_PATCH_FAILED = "the server rejected our request due to an error in our request"
# Guards YAML alias expansion ("billion laughs") when converting to JSON values.
_MAX_YAML_NODES = 1_000_000

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_PREFIX = "$deleteFromPrimitiveList/"
_ORDER_PREFIX = "$setElementOrder/"

# patchMergeKey of list fields whose name is unambiguous across built-in kinds.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
_CONTAINER_FIELDS = frozenset({"containers", "initContainers", "ephemeralContainers"})
_GO_MAP = "Go value of type map[string]interface {}"
_POINTER_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


def apply_patch(
    content_type: str, original: dict[str, Any], patch_body: bytes, kind: str
) -> dict[str, Any]:
    """Return `original` (never mutated) patched per the Content-Type media type.

    `kind` is the object's Kind (e.g. "Pod"); it selects the strategic-merge
    table and whether strategic merge is accepted at all. Every failure is a
    StatusError carrying the code kube-apiserver answers with.
    """
    media_type = content_type.split(";", 1)[0].strip()
    builtin = kind in BUILTIN_KINDS
    try:
        if media_type == JSON_PATCH:
            return _json_patch(original, patch_body)
        if media_type == MERGE_PATCH:
            return _merge_patch(original, patch_body)
        if media_type == STRATEGIC_MERGE_PATCH and builtin:
            return _strategic_patch(original, patch_body, kind)
        if media_type == APPLY_PATCH:
            return _apply_yaml(original, patch_body, kind, builtin)
    except RecursionError as exc:
        raise bad_request("the patch is nested too deeply") from exc
    if media_type in (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        # Strategic merge on a kind without Go struct tags.
        raise unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join([JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
        )
    # Not a patch type at all: go-restful's own 415, before any handler runs.
    raise StatusError(415, "UnsupportedMediaType", "415: Unsupported Media Type", details={})


# --- shared helpers ----------------------------------------------------------


def _copy_obj(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) for k, v in obj.items()}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's, true != 1 and 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _go_type(value: Any) -> str:
    """The JSON type name encoding/json uses in "cannot unmarshal X" errors."""
    names: dict[type, str] = {bool: "bool", int: "number", float: "number", str: "string"}
    names.update({dict: "object", list: "array"})
    return names.get(type(value), "null")


def _decode_json(body: bytes, on_error: Callable[[str], StatusError]) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise on_error(str(exc)) from exc


def _require_object(result: Any) -> dict[str, Any]:
    """A patch that leaves a non-object fails decoding into the kind: 422 from patch.go."""
    if isinstance(result, dict):
        return result
    text = msgspec.json.encode(msgspec.json.encode(result).decode()).decode()
    detail = f"json: cannot unmarshal {_go_type(result)} into {_GO_MAP}"
    raise invalid("", "", [("FieldValueInvalid", "patch", f"Invalid value: {text}: {detail}")])


# --- RFC 6902 JSON patch -------------------------------------------------------


class _OpError(Exception):
    """One JSON-patch operation does not apply; becomes the generic 422."""


def _json_patch(original: dict[str, Any], body: bytes) -> dict[str, Any]:
    ops = _decode_json(body, bad_request)
    if ops is None:  # Go decodes `null` into an empty Patch: a no-op.
        return _copy_obj(original)
    if not isinstance(ops, list):
        raise bad_request(
            f"json: cannot unmarshal {_go_type(ops)} into Go value of type jsonpatch.Patch"
        )
    for op in ops:
        if not isinstance(op, dict):
            raise bad_request(
                f"json: cannot unmarshal {_go_type(op)} into Go value of type jsonpatch.Operation"
            )
    if len(ops) > _MAX_JSON_PATCH_OPS:
        raise entity_too_large(
            f"The allowed maximum operations in a JSON patch is {_MAX_JSON_PATCH_OPS}, "
            f"got {len(ops)}"
        )
    doc: Any = _copy_obj(original)
    for op in ops:
        try:
            doc = _apply_op(doc, op)
        except _OpError as exc:
            raise StatusError(422, "Invalid", _JSON_PATCH_FAILED, details={}) from exc
    return _require_object(doc)


def _pointer(op: dict[str, Any], field: str) -> list[str]:
    path = op.get(field)
    if not isinstance(path, str):
        raise _OpError(f"operation missing {field} field")
    if path == "":
        return []
    if not path.startswith("/") or re.search(r"~([^01]|$)", path):
        raise _OpError(f"invalid JSON pointer: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(token: str, length: int, *, inserting: bool) -> int:
    if inserting and token == "-":
        return length
    if not _POINTER_INDEX.fullmatch(token):
        raise _OpError(f"invalid array index: {token!r}")
    index = int(token)
    if index > length or (index == length and not inserting):
        raise _OpError(f"array index out of bounds: {index}")
    return index


def _get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(token, len(doc), inserting=False)]
        else:
            raise _OpError(f"doc is missing path: {token!r}")
    return doc


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _get(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(tokens[-1], len(parent), inserting=True), value)
    else:
        raise _OpError("add operation does not apply: parent is not a container")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise _OpError("remove operation does not apply: cannot remove the document root")
    parent = _get(doc, tokens[:-1])
    if isinstance(parent, dict) and tokens[-1] in parent:
        del parent[tokens[-1]]
    elif isinstance(parent, list):
        del parent[_index(tokens[-1], len(parent), inserting=False)]
    else:
        raise _OpError("remove operation does not apply: doc is missing path")
    return doc


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind = op.get("op")
    path = _pointer(op, "path")
    if kind in ("add", "replace", "test") and "value" not in op:
        raise _OpError(f"{kind} operation missing value")
    if kind == "add":
        return _add(doc, path, op["value"])
    if kind == "remove":
        return _remove(doc, path)
    if kind == "replace":
        _get(doc, path)  # replace requires the target to exist
        return op["value"] if not path else _add(_remove(doc, path), path, op["value"])
    if kind in ("move", "copy"):
        source = _pointer(op, "from")
        value = _get(doc, source)
        if kind == "copy":
            return _add(doc, path, _copy(value))
        if path[: len(source)] == source and len(path) > len(source):
            raise _OpError("move operation does not apply: cannot move into a child of itself")
        return _add(_remove(doc, source), path, value) if path != source else doc
    if kind == "test":
        try:
            actual = _get(doc, path)
        except _OpError:
            if op["value"] is None:  # evanphx: a missing path tests equal to null
                return doc
            raise
        if not _equal(actual, op["value"]):
            raise _OpError(f"testing value {op['path']} failed: test failed")
        return doc
    raise _OpError(f"Unexpected kind: {kind}")


# --- RFC 7386 JSON merge patch ---------------------------------------------------


def _merge_patch(original: dict[str, Any], body: bytes) -> dict[str, Any]:
    # evanphx MergePatch reports any undecodable patch as ErrBadJSONPatch.
    patch = _decode_json(body, lambda _: bad_request("Invalid JSON Patch"))
    if isinstance(patch, list):  # RFC 7386: the result is the array itself
        _require_object(patch)
    if not isinstance(patch, dict):
        raise bad_request("Invalid JSON Patch")
    return _merge_into(_copy_obj(original), patch)


def _merge_into(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = _merge_into(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = value
    return target


# --- strategic merge patch ---------------------------------------------------------


def _strategic_patch(original: dict[str, Any], body: bytes, kind: str) -> dict[str, Any]:
    patch = _decode_json(body, bad_request)
    if patch is not None and not isinstance(patch, dict):  # Go decodes null to an empty map
        raise bad_request(f"json: cannot unmarshal {_go_type(patch)} into {_GO_MAP}")
    return _Strategic(kind).merge_map(_copy_obj(original), patch or {}, "")


class _Strategic:
    """Strategic merge of a decoded patch into a private copy of the object."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def list_key(self, field: str, parent: str) -> str | None:
        """Merge key of a list field; "" merges primitives as a set; None replaces."""
        if field == "ports":
            if parent in _CONTAINER_FIELDS:
                return "containerPort"
            return "port" if self.kind == "Service" and parent == "spec" else None
        if field == "addresses":
            return "type" if self.kind == "Node" and parent == "status" else None
        if field == "finalizers":
            return "" if parent == "metadata" else None
        if field == "secrets":
            return "name" if self.kind == "ServiceAccount" and parent == "" else None
        return _MERGE_KEYS.get(field)

    def value(self, current: Any, patch: Any, field: str, parent: str, order: Any) -> Any:
        if isinstance(patch, dict):
            return self.merge_map(current if isinstance(current, dict) else {}, patch, field)
        if isinstance(patch, list):
            key = self.list_key(field, parent)
            if key is None:
                return [self.value(None, item, field, field, None) for item in patch]
            base = current if isinstance(current, list) else []
            return self.merge_list(base, patch, key, field, order)
        return patch

    def merge_map(
        self, target: dict[str, Any], patch: dict[str, Any], field: str
    ) -> dict[str, Any]:
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            if directive == "replace":
                rest = {k: v for k, v in patch.items() if k != _DIRECTIVE}
                return self.merge_map({}, rest, field)
            if directive == "delete":
                return {}
            raise internal_error(f"unknown patch type: {directive} in map: {patch}")
        retain = patch.get(_RETAIN_KEYS, [])
        if not isinstance(retain, list):
            raise bad_request("invalid patch format of retainKeys")
        orders: dict[str, Any] = {}
        for key, value in patch.items():
            if key.startswith(_ORDER_PREFIX):
                if not isinstance(value, list):
                    raise bad_request("invalid patch format of setElementOrder list")
                orders[key[len(_ORDER_PREFIX) :]] = value
            elif (
                _RETAIN_KEYS in patch
                and value is not None
                and key not in [_RETAIN_KEYS, *retain]
                and not key.startswith(_DELETE_PREFIX)
            ):
                raise bad_request("invalid patch format of retainKeys")
        for key, value in patch.items():
            if key == _RETAIN_KEYS or key.startswith((_ORDER_PREFIX, _DELETE_PREFIX)):
                continue
            if value is None:
                target.pop(key, None)
            else:
                target[key] = self.value(target.get(key), value, key, field, orders.get(key))
        for key, value in patch.items():
            name = key.partition("/")[2]
            current = target.get(name)
            if key.startswith(_DELETE_PREFIX):
                if not isinstance(value, list):
                    raise bad_request("invalid patch format of primitive list")
                if isinstance(current, list):
                    target[name] = [x for x in current if not any(_equal(x, d) for d in value)]
            elif key.startswith(_ORDER_PREFIX) and name not in patch:  # reorder only
                merge_key = self.list_key(name, field)
                if merge_key is not None and isinstance(current, list):
                    target[name] = self.merge_list(current, [], merge_key, name, value)
        if _RETAIN_KEYS in patch:
            for key in [k for k in target if k not in retain]:
                del target[key]
        return target

    def merge_list(
        self, current: list[Any], patch: list[Any], key: str, field: str, order: Any
    ) -> list[Any]:
        server = current
        plain: list[Any] = []
        replace = False
        for item in patch:
            if not (isinstance(item, dict) and _DIRECTIVE in item):
                plain.append(item)
            elif item[_DIRECTIVE] == "delete":
                if not key or key not in item:
                    raise internal_error(f"map: {item} does not contain declared merge key: {key}")
                current = [x for x in current if not _same_key(x, item, key)]
            elif item[_DIRECTIVE] == "replace":
                replace = True
            elif item[_DIRECTIVE] == "merge":
                raise internal_error("merging lists cannot yet be specified in the patch")
            else:
                raise internal_error(f"unknown patch type: {item[_DIRECTIVE]} in map: {item}")
        merged = [] if replace else list(current)
        for item in plain:
            if not key:
                if not any(_equal(item, x) for x in merged):
                    merged.append(self.value(None, item, field, field, None))
                continue
            if not isinstance(item, dict) or key not in item:
                raise internal_error(f"map: {item} does not contain declared merge key: {key}")
            found = next((i for i, x in enumerate(merged) if _same_key(x, item, key)), None)
            if found is None:
                merged.append(self.merge_map({}, item, field))
            else:
                merged[found] = self.merge_map(merged[found], item, field)
        patch_order = order if isinstance(order, list) else plain
        return _normalize_order(merged, patch_order, [] if replace else server, key)


def _same_key(item: Any, patch_item: dict[str, Any], key: str) -> bool:
    return isinstance(item, dict) and key in item and _equal(item[key], patch_item[key])


def _normalize_order(
    merged: list[Any], patch_order: list[Any], server: list[Any], key: str
) -> list[Any]:
    """strategicpatch normalizeElementOrder: patch/$setElementOrder order wins
    for the items it names, server order for the rest, interleaved by server
    position where both are known."""

    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    def position(seq: list[Any], item: Any) -> int:
        wanted = ident(item)
        return next((i for i, x in enumerate(seq) if _equal(ident(x), wanted)), -1)

    def rank(seq: list[Any]) -> Callable[[Any], int]:
        return lambda item: position(seq, item) if position(seq, item) >= 0 else len(seq)

    in_patch = sorted((m for m in merged if position(patch_order, m) >= 0), key=rank(patch_order))
    server_only = sorted((m for m in merged if position(patch_order, m) < 0), key=rank(server))
    result: list[Any] = []
    while server_only and in_patch:  # mergeSortedSlice
        left, right = position(server, server_only[0]), position(server, in_patch[0])
        # Unless both are on the server in this order, the patch's item goes
        # first: a new item lands before the server-only ones, as in kube-apiserver.
        left_first = 0 <= left < right
        result.append((server_only if left_first else in_patch).pop(0))
    return result + server_only + in_patch


# --- server-side apply (simplified) ---------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as sigs.k8s.io/yaml does."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def apply_configuration(body: bytes, kind: str) -> dict[str, Any]:
    """An apply body read on its own: the object server-side apply creates when none exists."""
    return _apply_yaml({}, body, kind, kind in BUILTIN_KINDS)


def _apply_yaml(original: dict[str, Any], body: bytes, kind: str, builtin: bool) -> dict[str, Any]:
    try:
        config = _to_json(yaml.load(body, Loader=_YamlLoader), [_MAX_YAML_NODES])
    except Exception as exc:  # any failure to read the body is the client's: 400
        raise bad_request(f"error decoding YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise bad_request(
            f"error decoding YAML: json: cannot unmarshal {_go_type(config)} into {_GO_MAP}"
        )
    if builtin:
        return _Strategic(kind).merge_map(_copy_obj(original), config, "")
    return _merge_into(_copy_obj(original), config)


def _to_json(value: Any, budget: list[int]) -> Any:
    """YAML values as sigs.k8s.io/yaml converts them to JSON."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("document too large")
    if isinstance(value, dict):  # Go's yaml stringifies non-string keys
        return {_yaml_key(k): _to_json(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v, budget) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"unsupported value: {value}")
    if isinstance(value, bytes):  # !!binary
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.date):  # explicit !!timestamp
        return value.isoformat()
    if value is None or isinstance(value, str | int | float):
        return value
    raise ValueError(f"unsupported value of type {type(value).__name__}")


def _yaml_key(key: Any) -> str:
    if key is None:
        return "null"
    return str(key).lower() if isinstance(key, bool) else str(key)
